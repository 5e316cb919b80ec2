"""generate-uid is no pseudonym oracle by default; when enabled, it checks and decodes what it is asked."""
from __future__ import annotations

import urllib.parse

import pytest

from anonymized import parse
from conftest import new_patient
from dicom_factory import to_bytes, two_frame_study

PSEUDONYM_QUERIES = [
    {"level": "patient", "patient-id": "PID-1"},
    {"level": "study", "uid": "1.2.3.4", "patient-id": "PID-1"},
    {"level": "study", "uid": "1.2.3.4", "anonymized-patient-id": "A"},
    {"level": "study", "project": "default"},
]
#: What each query gets with the lookup on: a pseudonym, but a project without a UID or patient to
#: look up is a bad request.
LOOKUP_STATUS = [200, 200, 200, 400]


@pytest.fixture(scope="module")
def shipped(request):
    """An Orthanc with the plugin as shipped: no PseudonymLookup in its section."""
    from orthanc_server import OrthancServer
    server = OrthancServer(pseudonym_lookup=None)
    section = dict(server.settings["ConsistentAnonymization"])
    del section["PseudonymLookup"]
    server.configure({"ConsistentAnonymization": section})
    server.start()
    request.addfinalizer(server.cleanup)
    return server


@pytest.mark.parametrize("params", PSEUDONYM_QUERIES, ids=lambda p: "&".join(p))
def test_pseudonym_queries_are_off_by_default_with_a_native_shaped_403(shipped, params):
    answer = shipped.get("/tools/generate-uid", params=params)
    assert answer.status_code == 403, answer.text
    error = answer.json()
    assert error["HttpStatus"] == 403 and error["HttpError"] == "Forbidden"
    assert error["Method"] == "GET" and error["Uri"] == "/tools/generate-uid"
    assert '"PseudonymLookup": true' in error["Message"] and "ConsistentAnonymization" in error["Message"]
    assert "PID-1" not in answer.text and "1.2.3.4" not in answer.text


@pytest.mark.parametrize("level", ["patient", "study", "series", "instance", "frame-of-reference"])
def test_new_uids_keep_working_with_the_lookup_off(shipped, level):
    assert shipped.get("/tools/generate-uid", params={"level": level}).status_code == 200


def test_the_lookup_enabled_answers_what_anonymize_writes(orthanc, study):
    instance = orthanc.upload(to_bytes(study.series[0][0]))["ID"]
    written = parse(orthanc.post(f"/instances/{instance}/anonymize", json={}).content)
    source_pid = study.study.patient.patient_id
    assert orthanc.get("/tools/generate-uid", params={"level": "patient", "patient-id": source_pid}).text == \
        written.PatientID
    assert orthanc.get("/tools/generate-uid", params={
        "level": "study", "uid": study.study.study_uid, "patient-id": source_pid}).text == written.StudyInstanceUID


@pytest.mark.parametrize("uid", ["not-a-uid", "", "1" * 200, "1.2." + "3" * 61, "1.02.3", "1..2", ".1.2", "1.2.",
                                 "1.2.3a", "1.2.٣", " 1.2.3"])
def test_a_uid_that_is_not_a_uid_is_400(orthanc, uid):
    answer = orthanc.get("/tools/generate-uid", params={"level": "study", "uid": uid, "patient-id": "PID-1"})
    assert answer.status_code == 400, answer.text
    assert "UID" in answer.json()["Message"]


def test_a_64_character_uid_is_a_uid(orthanc):
    uid = "1.2." + "3" * 60
    answer = orthanc.get("/tools/generate-uid", params={"level": "study", "uid": uid, "patient-id": "PID-1"})
    assert answer.status_code == 200 and answer.text != uid


@pytest.mark.parametrize("uid", ["1.2.840.10008.1.2.1", "1.2.840.10008.5.1.4.1.1.4"])
def test_a_registry_uid_answers_itself_as_anonymize_leaves_it(orthanc, uid):
    answer = orthanc.get("/tools/generate-uid", params={"level": "instance", "uid": uid, "patient-id": "PID-1"})
    assert answer.status_code == 200 and answer.text == uid


ODD_PATIENT_IDS = ["PID 7734 A", "DOE^JOHN", "A/B/C", "12,34", "MRN:5678", "Müller-Ødegård", "患者-42", "a+b %41 c"]


@pytest.mark.parametrize("patient_id", ODD_PATIENT_IDS)
def test_generate_uid_decodes_its_arguments(orthanc, patient_id):
    """The pseudonym of a PatientID holding spaces, ^, /, comma, colon, non-ASCII characters (and a
    literal + or %) is the one /anonymize gives that patient, whether the query is encoded
    %20-style or +-style."""
    study = two_frame_study(per_series=1, patient=new_patient())
    source = study.series[0][0]
    source.PatientID = patient_id
    source.SpecificCharacterSet = "ISO_IR 192"
    instance = orthanc.upload(to_bytes(source))["ID"]
    written = parse(orthanc.post(f"/instances/{instance}/anonymize", json={}).content)
    for quote in (urllib.parse.quote, urllib.parse.quote_plus):
        query = f"level=patient&patient-id={quote(patient_id, safe='')}"
        assert orthanc.get(f"/tools/generate-uid?{query}").text == written.PatientID, (quote.__name__, query)
        query = (f"level=series&patient-id={quote(patient_id, safe='')}"
                 f"&uid={quote(source.SeriesInstanceUID, safe='')}")
        assert orthanc.get(f"/tools/generate-uid?{query}").text == written.SeriesInstanceUID


def test_the_server_survives_the_queries(orthanc, shipped):
    """The queries above, sent here (not relying on their tests having run first): both servers
    answer them as expected and log nothing at error level."""
    for server, lookup in ((orthanc, True), (shipped, False)):
        log_before = len(server.log())
        for params, answered in zip(PSEUDONYM_QUERIES, LOOKUP_STATUS):  # the lookup on: its own status each
            status = server.get("/tools/generate-uid", params=params).status_code
            assert status == (answered if lookup else 403), params
        for uid in ("not-a-uid", "1" * 200, "1.2.٣"):
            answer = server.get("/tools/generate-uid", params={"level": "study", "uid": uid, "patient-id": "PID-1"})
            assert answer.status_code == (400 if lookup else 403)
        query = "level=patient&patient-id=" + urllib.parse.quote("患者 a+b %41", safe="")
        assert server.get(f"/tools/generate-uid?{query}").status_code == (200 if lookup else 403)
        assert server.get("/system").status_code == 200
        assert "Traceback" not in server.log()[log_before:]
        assert server.errors_logged(since=log_before) == []
