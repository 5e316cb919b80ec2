"""An answer never counts what was not stored: each source instance gets its own result.

A constant SOPInstanceUID for several instances would make them overwrite one another (Orthanc
keeps one); a constant SeriesInstanceUID cannot hold across studies. Such requests are refused
with 400 before anything is stored; native answers the first with 500.
"""
from __future__ import annotations

from conftest import new_patient
from dicom_factory import to_bytes, two_frame_study


def _count(server) -> int:
    return int(server.json("/statistics")["CountInstances"])


def test_a_constant_sop_instance_uid_for_several_instances_is_refused_before_storing(orthanc):
    study = two_frame_study(per_series=2, patient=new_patient())
    answers = [orthanc.upload(to_bytes(ds)) for ds in study.instances]
    before = _count(orthanc)
    answer = orthanc.post(f"/studies/{answers[0]['ParentStudy']}/anonymize",
                          json={"Replace": {"SOPInstanceUID": "1.2.3.4.6"}, "Force": True})
    assert answer.status_code == 400, answer.text
    assert "SOPInstanceUID" in answer.json()["Message"]
    assert _count(orthanc) == before, "something was stored"


def test_a_constant_sop_instance_uid_for_one_instance_is_fine(orthanc):
    study = two_frame_study(per_series=2, patient=new_patient())
    answers = [orthanc.upload(to_bytes(ds)) for ds in study.instances]
    answer = orthanc.post(f"/series/{answers[-1]['ParentSeries']}/anonymize",
                          json={"Replace": {"SOPInstanceUID": "1.2.3.4.7"}, "Force": True})
    assert answer.status_code == 200, answer.text
    assert answer.json()["InstancesCount"] == 1
    assert len(orthanc.json(f"/series/{answer.json()['ID']}/instances")) == 1


def test_a_constant_series_instance_uid_across_studies_is_refused_before_storing(orthanc):
    first = two_frame_study(per_series=1, patient=new_patient())
    second = two_frame_study(per_series=1, patient=new_patient())
    one = [orthanc.upload(to_bytes(ds)) for ds in first.instances]
    other = [orthanc.upload(to_bytes(ds)) for ds in second.instances]
    before = _count(orthanc)
    answer = orthanc.post("/tools/bulk-anonymize", json={
        "Resources": [one[0]["ParentStudy"], other[0]["ParentStudy"]],
        "Replace": {"SeriesInstanceUID": "1.2.3.4.8"}, "Force": True})
    assert answer.status_code == 400, answer.text
    assert "SeriesInstanceUID" in answer.json()["Message"]
    assert _count(orthanc) == before, "something was stored"
    # Within one study, one series UID for all is what the caller asked, and holds.
    answer = orthanc.post(f"/studies/{one[0]['ParentStudy']}/anonymize",
                          json={"Replace": {"SeriesInstanceUID": "1.2.3.4.9"}, "Force": True})
    assert answer.status_code == 200, answer.text
    assert len(orthanc.json(f"/studies/{answer.json()['ID']}/instances")) == len(first.instances)
