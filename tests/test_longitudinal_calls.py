"""Longitudinal projects through every way of calling: instance by instance (the file answered,
then stored as a Lua script does), series by series, at every level and in bulk, with an RT
structure set and a SEG, on one node and on two nodes sharing one PostgreSQL index and storage."""
from __future__ import annotations

import io
import time
import uuid
from datetime import date

import pydicom
import pytest
from pydicom.dataset import Dataset
from pydicom.uid import generate_uid

from conftest import TEST_KEY, new_patient
from consistent_anon.identity.pseudonyms import Pseudonymizer, project_key
from dicom_factory import CT_IMAGE_STORAGE, Patient, Study, image_series, rtstruct, to_bytes
from orthanc_server import OrthancServer
from postgres_server import PostgresServer
from relationship_factory import finish, segmentation
from test_longitudinal import DAYS, _explorer2_body, _trial_server
from test_two_nodes import POSTGRESQL_INDEX, _plugin_available

TRIAL = {"SponsorName": "Sponsor", "ProtocolID": "P-7", "ProtocolName": "Follow-up", "SiteID": "07",
         "SiteName": "Site seven"}
FIRST, FOLLOW_UP = "20240301", "20240308"  # seven days apart
WELL_KNOWN = "1.2.840.10008."


def _study(patient: Patient, study_date: str) -> list[Dataset]:
    """Three CT images, an RT structure set on them and a SEG of them made by highdicom."""
    study = Study(patient=patient, date=study_date)
    images = image_series(study, CT_IMAGE_STORAGE, "CT", generate_uid(), 3, 1, size=8)
    for ds in images:
        ds.SeriesDate = ds.AcquisitionDate = ds.ContentDate = study_date
    return images + [rtstruct(study, images), finish(segmentation(images, 40))]


def _upload(server: OrthancServer, instances: list[Dataset]) -> str:
    return [server.upload(to_bytes(ds)) for ds in instances][0]["ParentStudy"]


def _parse(data: bytes) -> Dataset:
    return pydicom.dcmread(io.BytesIO(data))


def _by_instance(server: OrthancServer, study_id: str, body: dict) -> set[str]:
    """Each instance anonymized alone, the file answered stored with POST /instances (as a Lua
    script does); the anonymized studies it made."""
    made = set()
    for instance in server.json(f"/studies/{study_id}/instances"):
        answer = server.post(f"/instances/{instance['ID']}/anonymize", json=body)
        assert answer.status_code == 200, answer.text
        made.add(server.upload(answer.content)["ParentStudy"])
    return made


def _by_series(server: OrthancServer, study_id: str, body: dict) -> set[str]:
    made = set()
    for series in server.json(f"/studies/{study_id}/series"):
        answer = server.post(f"/series/{series['ID']}/anonymize", json=body)
        assert answer.status_code == 200, answer.text
        made.add(server.json(f"/series/{answer.json()['ID']}")["ParentStudy"])
    return made


def _instances(server: OrthancServer, study_id: str) -> list[Dataset]:
    return [_parse(server.get(f"/instances/{i['ID']}/file").content)
            for i in server.json(f"/studies/{study_id}/instances")]


def _days(text: str) -> int:
    return date(int(text[:4]), int(text[4:6]), int(text[6:8])).toordinal()


def _references(ds: Dataset) -> set[str]:
    """Every ReferencedSOPInstanceUID and nested SeriesInstanceUID/FrameOfReferenceUID, any depth."""
    found = set()
    for element in ds.iterall():
        if element.keyword in ("ReferencedSOPInstanceUID", "SeriesInstanceUID", "FrameOfReferenceUID",
                               "ReferencedFrameOfReferenceUID") and element.value:
            found.add(str(element.value))
    return {uid for uid in found if not uid.startswith(WELL_KNOWN)}


def _check_study(server: OrthancServer, source_id: str, anonymized: set[str], source_date: str,
                 offset: int, subject: str) -> int:
    """One anonymized study whose dates all moved by `offset`, whose every reference resolves
    inside it, which the verification route finds clean; answers its shifted StudyDate (days)."""
    assert len(anonymized) == 1, anonymized
    study_id = anonymized.pop()
    instances = _instances(server, study_id)
    assert sorted(ds.Modality for ds in instances) == ["CT", "CT", "CT", "RTSTRUCT", "SEG"]
    identities = {str(ds.SOPInstanceUID) for ds in instances} | {str(ds.SeriesInstanceUID) for ds in instances} \
        | {str(ds.FrameOfReferenceUID) for ds in instances if "FrameOfReferenceUID" in ds} \
        | {str(ds.StudyInstanceUID) for ds in instances}
    for ds in instances:
        assert ds.PatientID == subject and ds.ClinicalTrialSubjectID == subject
        assert _days(ds.StudyDate) - _days(source_date) == offset
        if ds.Modality == "CT":
            for keyword in ("SeriesDate", "AcquisitionDate", "ContentDate"):
                assert _days(ds.data_element(keyword).value) - _days(source_date) == offset, keyword
        if ds.Modality == "RTSTRUCT":
            assert _days(ds.StructureSetDate) - _days(source_date) == offset
        assert ds.LongitudinalTemporalInformationModified == "MODIFIED"
        dangling = _references(ds) - identities
        assert not dangling, f"{ds.Modality}: {len(dangling)} reference(s) outside the anonymized study"
    seg = next(ds for ds in instances if ds.Modality == "SEG")
    ct = [ds for ds in instances if ds.Modality == "CT"]
    assert seg.FrameOfReferenceUID == ct[0].FrameOfReferenceUID
    assert seg.ReferencedSeriesSequence[0].SeriesInstanceUID == ct[0].SeriesInstanceUID
    report = server.post("/tools/verify-anonymization",
                         json={"Source": source_id, "Anonymized": study_id, "Project": "trial"}).json()
    assert report["Clean"], report
    return _days(instances[0].StudyDate)


def _offset(anonymized_patient_id: str) -> int:
    offset = Pseudonymizer(project_key(TEST_KEY.encode(), "trial")).date_offset(anonymized_patient_id, *DAYS)
    assert DAYS[0] <= offset <= DAYS[1] and offset != 0
    return offset


def test_instance_by_instance_then_series_by_series_keep_the_interval_and_every_reference(server_factory):
    patient = new_patient()
    server = _trial_server(server_factory, f"PatientID,SubjectID\n{patient.patient_id},S-101\n",
                           ClinicalTrial=TRIAL)
    first, follow_up = _upload(server, _study(patient, FIRST)), _upload(server, _study(patient, FOLLOW_UP))
    offset = _offset("S-101")
    shifted = [_check_study(server, first, _by_instance(server, first, {"Project": "trial"}), FIRST, offset, "S-101"),
               _check_study(server, follow_up, _by_series(server, follow_up, {"Project": "trial"}), FOLLOW_UP,
                            offset, "S-101")]
    assert shifted[1] - shifted[0] == 7
    assert len(server.json("/patients")) == 2  # the source patient and the one anonymized subject


@pytest.mark.parametrize("level", ["patient", "study", "series", "instance", "bulk"])
def test_clinical_trial_attributes_at_every_level_of_call(server_factory, level):
    server = _trial_server(server_factory, ClinicalTrial=TRIAL)
    patient = new_patient()
    study_id = _upload(server, _study(patient, FIRST))
    source = server.json(f"/studies/{study_id}")
    body = {"Project": "trial"}
    if level == "instance":
        instance = server.json(f"/studies/{study_id}/instances")[0]["ID"]
        answer = server.post(f"/instances/{instance}/anonymize", json=body)
        assert answer.status_code == 200, answer.text
        results = [_parse(answer.content)]
    else:
        if level == "bulk":
            series = [s["ID"] for s in server.json(f"/studies/{study_id}/series")]
            answer = server.post("/tools/bulk-anonymize", json={"Resources": series, **body})
        else:
            route = {"patient": f"/patients/{source['ParentPatient']}", "study": f"/studies/{study_id}",
                     "series": f"/series/{source['Series'][0]}"}[level]
            answer = server.post(f"{route}/anonymize", json=body)
        assert answer.status_code == 200, answer.text
        patients = {p for p in server.json("/patients") if p != source["ParentPatient"]}
        assert len(patients) == 1
        results = [_parse(server.get(f"/instances/{i['ID']}/file").content)
                   for i in server.json(f"/patients/{patients.pop()}/instances")]
    pid = server.get(f"/tools/generate-uid?level=patient&patient-id={patient.patient_id}&project=trial").text
    assert results
    for ds in results:
        assert (ds.ClinicalTrialSponsorName, ds.ClinicalTrialProtocolID, ds.ClinicalTrialProtocolName,
                ds.ClinicalTrialSiteID, ds.ClinicalTrialSiteName) == tuple(TRIAL.values())
        assert ds.PatientID == ds.ClinicalTrialSubjectID == pid


def _wait(server: OrthancServer, job: dict) -> dict:
    deadline = time.monotonic() + 60
    while (state := server.json(job["Path"]))["State"] not in ("Success", "Failure") and time.monotonic() < deadline:
        time.sleep(0.05)
    assert state["State"] == "Success", state
    return state["Content"]


def test_both_explorers_and_a_lua_style_call_land_in_one_project_owned_patient(server_factory):
    """The bodies as the clients send them, without a Project: the default project owns the identity."""
    server = server_factory(start=False)
    server.configure({"ConsistentAnonymization": {"Key": TEST_KEY, "PatientIdentity": "project"}})
    server.start()
    patient = new_patient()
    studies = [_upload(server, _study(patient, day)) for day in (FIRST, FOLLOW_UP, "20240315")]
    # Orthanc Explorer 2's dialog (a random PatientID and name, a job).
    explorer2 = _wait(server, server.post(f"/studies/{studies[0]}/anonymize",
                                          json=_explorer2_body(server.json(f"/studies/{studies[0]}"))).json())
    anonymized = {server.json(f"/studies/{explorer2['ID']}")["ParentPatient"]}
    # The classic Orthanc Explorer's "Anonymize" button.
    classic = server.post(f"/studies/{studies[1]}/anonymize", json={"Keep": ["SeriesDescription", "StudyDescription"]})
    assert classic.status_code == 200, classic.text
    anonymized.add(server.json(f"/studies/{classic.json()['ID']}")["ParentPatient"])
    # A Lua script: each instance anonymized with its own PatientID, then stored.
    lua = {"Replace": {"PatientID": f"LUA-{uuid.uuid4().hex[:8]}", "PatientName": "Lua^Anonymized"}, "Force": True}
    made = _by_instance(server, studies[2], lua)
    anonymized |= {server.json(f"/studies/{study}")["ParentPatient"] for study in made}
    assert len(anonymized) == 1
    pid = server.get(f"/tools/generate-uid?level=patient&patient-id={patient.patient_id}").text
    assert server.json(f"/patients/{anonymized.pop()}")["MainDicomTags"]["PatientID"] == pid


# --- two nodes ------------------------------------------------------------------------------

@pytest.fixture
def trial_nodes():
    """Two Orthancs on one PostgreSQL index and one storage folder, with the same Key and the
    date-shifting project "trial", whose subject table lies in the shared storage folder."""
    if not _plugin_available():
        pytest.skip(f"{POSTGRESQL_INDEX} is missing (Debian package orthanc-postgresql)")
    postgres = PostgresServer().start()

    def configure(server: OrthancServer, number: int) -> None:
        subjects = f"{server.settings['StorageDirectory']}/subjects.csv"
        server.configure({"ConsistentAnonymization": {
            **server.settings["ConsistentAnonymization"], "Key": TEST_KEY,
            "Projects": {"trial": {"ShiftDates": True, "DateShiftDays": DAYS, "ClinicalTrial": TRIAL,
                                   "Subjects": subjects}}}})
    try:
        with postgres.nodes(configure, start=False) as (storage, servers):
            yield storage, servers
    finally:
        postgres.cleanup()


def test_two_nodes_shift_a_patients_studies_by_one_offset_under_one_subject(trial_nodes):
    storage, (node1, node2) = trial_nodes
    patient = new_patient()
    (storage / "subjects.csv").write_text(f"PatientID,SubjectID,SubjectName\n{patient.patient_id},S-202,Subject^Two\n")
    for node in (node1, node2):
        node.start()
        assert node.json("/system")["DatabaseBackendPlugin"], "a node does not use the PostgreSQL index"
    first, follow_up = _upload(node1, _study(patient, FIRST)), _upload(node2, _study(patient, FOLLOW_UP))
    offset = _offset("S-202")
    shifted = [_check_study(node1, first, _by_series(node1, first, {"Project": "trial"}), FIRST, offset, "S-202"),
               _check_study(node2, follow_up, _by_instance(node2, follow_up, {"Project": "trial"}), FOLLOW_UP,
                            offset, "S-202")]
    assert shifted[1] - shifted[0] == 7
    # Either node sees one anonymized subject holding both studies.
    for node in (node1, node2):
        found = node.post("/tools/find", json={"Level": "Patient", "Query": {"PatientID": "S-202"}}).json()
        assert len(found) == 1 and len(node.json(f"/patients/{found[0]}/studies")) == 2
