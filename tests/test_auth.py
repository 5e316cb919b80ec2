"""With Orthanc's authentication on, every plugin route needs credentials; nothing leaks in logs."""
from __future__ import annotations

import re

import pytest

from conftest import TEST_KEY, upload

USER = ("researcher", "a-long-test-password")


@pytest.fixture(scope="module")
def guarded(tmp_path_factory):
    from orthanc_server import OrthancServer
    server = OrthancServer(config={"AuthenticationEnabled": True,
                                   "RegisteredUsers": {USER[0]: USER[1]},
                                   "ConsistentAnonymization": {"Key": TEST_KEY, "OnArrival": {}}})
    server.auth = USER
    server.start()
    yield server
    server.cleanup()


def routes(uploaded: dict[str, dict]) -> list[tuple[str, str, dict]]:
    some = next(iter(uploaded.values()))
    return [
        ("GET", "/tools/generate-uid?level=frame-of-reference", {}),
        ("GET", "/tools/generate-uid?level=study", {}),
        ("POST", f"/instances/{some['ID']}/anonymize", {"json": {}}),
        ("POST", f"/series/{some['ParentSeries']}/anonymize", {"json": {}}),
        ("POST", f"/studies/{some['ParentStudy']}/anonymize", {"json": {}}),
        ("POST", f"/patients/{some['ParentPatient']}/anonymize", {"json": {}}),
        ("POST", "/tools/bulk-anonymize", {"json": {"Resources": [some["ParentSeries"]]}}),
        ("GET", "/jobs", {}),
        ("GET", "/consistent-anonymization/gateway", {}),
        ("POST", "/consistent-anonymization/gateway/retry", {}),
        ("POST", "/consistent-anonymization/gateway/release", {"json": {"Resources": [some["ID"]]}}),
    ]


def test_every_plugin_route_needs_credentials(guarded, study):
    uploaded = upload(guarded, study)
    import requests
    for method, path, kwargs in routes(uploaded):
        anonymous = requests.request(method, guarded.url + path, timeout=60, **kwargs)
        assert anonymous.status_code == 401, path
        wrong = requests.request(method, guarded.url + path, auth=(USER[0], "wrong"), timeout=60, **kwargs)
        assert wrong.status_code == 401, path
        allowed = requests.request(method, guarded.url + path, auth=USER, timeout=300, **kwargs)
        assert allowed.status_code == 200, (path, allowed.text)


def test_no_answer_or_log_line_reveals_the_key_or_a_source_identifier(guarded, study):
    uploaded = upload(guarded, study)
    answers = [guarded.request(method, path, **kwargs).content for method, path, kwargs in routes(uploaded)]
    guarded.stop()
    log = guarded.log()
    guarded.start()
    source = study.study
    identifiers = {source.patient.patient_id, source.patient.name, source.accession, source.study_uid,
                   source.institution} | {str(ds.SOPInstanceUID) for ds in study.instances} \
        | {str(ds.SeriesInstanceUID) for ds in study.instances} \
        | {str(ds.FrameOfReferenceUID) for ds in study.instances if "FrameOfReferenceUID" in ds}
    assert TEST_KEY not in log
    for identifier in identifiers:
        assert identifier not in log, "a source identifier is in Orthanc's log"
    for answer in answers[:2] + answers[3:]:  # [2] is the anonymized file itself
        text = answer.decode("latin-1")
        assert TEST_KEY not in text
        assert not any(identifier in text for identifier in identifiers)
    assert re.search(r"Consistent anonymization plugin ready", log)
