"""The re-run shortcut predicts each result's identifiers from the index: planned once per series,
it must give exactly what a whole plan of each instance gives, whatever the request says."""
from __future__ import annotations

import json

import pytest

from consistent_anon.pipeline.identities import NativeMarkers
from consistent_anon.pipeline.options import parse_request
from consistent_anon.identity.pseudonyms import Pseudonymizer
from consistent_anon.pipeline.result_index import _Predictor
from consistent_anon.dicom.uid_attributes import UID_TAGS

STUDY, SERIES = "1.2.826.0.1.3680043.8.498.11", "1.2.826.0.1.3680043.8.498.12"
MEMBERS = ["1.2.826.0.1.3680043.8.498.13", "1.2.826.0.1.3680043.8.498.14",
           "1.2.840.10008.1.2",  # a UID of the standard itself stays as it is
           STUDY]  # one UID for two things: what the caller fixes for one holds for the other

BODIES = [
    {},
    {"Keep": ["SOPInstanceUID"], "Force": True},
    {"Replace": {"SOPInstanceUID": "1.2.3.4"}, "Force": True},
    {"Remove": ["SOPInstanceUID"], "Force": True},
    {"Keep": ["StudyInstanceUID"], "Force": True},
    {"Replace": {"SeriesInstanceUID": "1.2.3.5"}, "Force": True},
    {"Keep": ["PatientID"], "Force": True},
    {"Replace": {"PatientID": "trial-7"}, "Force": True},
    {"Keep": ["ReferencedSeriesSequence[*].SeriesInstanceUID"], "Force": True},
    {"Keep": ["0008,0018"], "Force": True},
]


@pytest.mark.parametrize("body", BODIES, ids=lambda body: str(body))
def test_a_series_planned_once_predicts_what_each_instance_planned_whole_gives(body):
    request = parse_request(json.dumps(body))
    predictor = _Predictor("PAT-1", STUDY, SERIES, "", request, Pseudonymizer(b"k" * 32),
                           NativeMarkers(None, None), UID_TAGS)
    for sop_instance_uid in MEMBERS + [""]:
        assert predictor.targets(sop_instance_uid) == predictor.planned(sop_instance_uid), sop_instance_uid


def test_the_shortcut_plans_the_series_once(monkeypatch):
    plans: list[str] = []
    whole_plan = _Predictor._plan
    monkeypatch.setattr(_Predictor, "_plan", lambda self, sop: plans.append(sop) or whole_plan(self, sop))
    predictor = _Predictor("PAT-1", STUDY, SERIES, "", parse_request("{}"), Pseudonymizer(b"k" * 32),
                           NativeMarkers(None, None), UID_TAGS)
    for sop_instance_uid in MEMBERS[:2]:
        predictor.targets(sop_instance_uid)
    assert plans == [""]
