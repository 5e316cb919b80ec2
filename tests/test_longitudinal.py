"""Longitudinal research and trials against a real Orthanc: keyed date shifting, subject tables,
clinical-trial attributes and a project-owned patient identity, on every supported version."""
from __future__ import annotations

import io
import time
import uuid
from datetime import date

import pydicom
import pytest
from pydicom.uid import generate_uid

from conftest import TEST_KEY, new_patient
from consistent_anon.identity.pseudonyms import Pseudonymizer, project_key
from dicom_factory import Study, mr_series, rtstruct, to_bytes
from orthanc_server import RUNTIME

DAYS = [-40, -2]


def _trial_server(server_factory, subjects: str | None = None, **project):
    """A server with the project "trial" (dates shifted within DAYS) and "other"; `subjects`, the
    text of a subject table, is written in the server's folder (where a chroot's Orthanc sees it)."""
    server = server_factory(start=False)
    if subjects is not None:
        (server.workdir / "subjects.csv").write_text(subjects)
        project["Subjects"] = RUNTIME.inside(server.workdir / "subjects.csv")
    settings = {"Key": TEST_KEY, "PseudonymLookup": True,
                "Projects": {"trial": {"ShiftDates": True, "DateShiftDays": DAYS, **project},
                             "other": {"ShiftDates": True}}}
    server.configure({"ConsistentAnonymization": settings})
    return server.start()


def _study(patient, study_date: str, per_series: int = 2) -> list:
    study = Study(patient=patient, date=study_date)
    frame = generate_uid()
    images = mr_series(study, frame, per_series, 1) + mr_series(study, frame, per_series, 2)
    for ds in images:
        ds.SeriesDate = ds.AcquisitionDate = ds.ContentDate = ds.InstanceCreationDate = study_date
        ds.AcquisitionDateTime = study_date + "101500.25+0100"
    structure = rtstruct(study, images[:per_series])
    structure.StructureSetDate = study_date
    return images + [structure]


def _upload(server, instances) -> str:
    return [server.upload(to_bytes(ds)) for ds in instances][0]["ParentStudy"]


def _instances(server, study_id: str) -> list:
    return [pydicom.dcmread(io.BytesIO(server.get(f"/instances/{i['ID']}/file").content))
            for i in server.json(f"/studies/{study_id}/instances")]


def _days(text: str) -> int:
    return date(int(text[:4]), int(text[4:6]), int(text[6:8])).toordinal()


def test_dates_move_by_one_keyed_offset_per_patient_and_keep_their_interval(server_factory):
    server = _trial_server(server_factory)
    patient = new_patient()
    first, follow_up = _study(patient, "20240301"), _study(patient, "20240308")
    first_id, follow_up_id = _upload(server, first), _upload(server, follow_up)
    # The first study series by series, the follow-up instance by instance stored by hand.
    for series in server.json(f"/studies/{first_id}/series"):
        assert server.post(f"/series/{series['ID']}/anonymize", json={"Project": "trial"}).status_code == 200
    answer = server.post(f"/studies/{follow_up_id}/anonymize", json={"Project": "trial"})
    assert answer.status_code == 200, answer.text
    results = {}
    for source_id, study_date in ((first_id, "20240301"), (follow_up_id, "20240308")):
        pid = server.json(f"/studies/{source_id}")["PatientMainDicomTags"]["PatientID"]
        anonymized_pid = server.get(f"/tools/generate-uid?level=patient&patient-id={pid}&project=trial").text
        uid = server.json(f"/studies/{source_id}")["MainDicomTags"]["StudyInstanceUID"]
        anonymized_uid = server.get(f"/tools/generate-uid?level=study&uid={uid}&patient-id={pid}&project=trial").text
        study = next(s for s in server.json("/studies?expand") if s["MainDicomTags"]["StudyInstanceUID"] == anonymized_uid)
        results[study_date] = (anonymized_pid, _instances(server, study["ID"]))
    pids = {pid for pid, _ in results.values()}
    assert len(pids) == 1
    expected = Pseudonymizer(project_key(TEST_KEY.encode(), "trial")).date_offset(pids.pop(), *DAYS)
    assert DAYS[0] <= expected <= DAYS[1] and expected != 0
    for study_date, (_, instances) in results.items():
        for ds in instances:
            for keyword in ("StudyDate", "SeriesDate", "AcquisitionDate", "ContentDate", "InstanceCreationDate",
                            "StructureSetDate"):
                if keyword in ds and ds.Modality == ("RTSTRUCT" if keyword == "StructureSetDate" else ds.Modality):
                    assert _days(ds.data_element(keyword).value) - _days(study_date) == expected, keyword
            if ds.Modality == "MR":
                assert ds.AcquisitionDateTime[8:] == "101500.25+0100"  # time and zone kept
                assert _days(ds.AcquisitionDateTime) - _days(study_date) == expected
            assert ds.StudyTime == "101500"
            assert not ds.get("PatientBirthDate")
            assert ds.LongitudinalTemporalInformationModified == "MODIFIED"
            codes = [(item.CodeValue, item.CodingSchemeDesignator) for item in ds.DeidentificationMethodCodeSequence]
            assert codes == [("113100", "DCM"), ("113107", "DCM")]
    shifted = [_days(results[d][1][0].StudyDate) for d in ("20240301", "20240308")]
    assert shifted[1] - shifted[0] == 7
    # Re-runs are idempotent; another shift setting on the same result is refused.
    again = server.post(f"/studies/{follow_up_id}/anonymize", json={"Project": "trial"})
    assert again.json()["ID"] == answer.json()["ID"]
    refused = server.post(f"/studies/{follow_up_id}/anonymize", json={"Project": "trial", "ShiftDates": False})
    assert refused.status_code == 409


def test_another_project_gives_another_offset_and_verification_stays_clean(server_factory):
    server = _trial_server(server_factory)
    offsets = set()
    for _ in range(3):  # three patients: the chance that every one of them collides is negligible
        study_id = _upload(server, _study(new_patient(), "20240301", per_series=1))
        per_project = []
        for project in ("trial", "other"):
            answer = server.post(f"/studies/{study_id}/anonymize", json={"Project": project}).json()
            ds = _instances(server, answer["ID"])[0]
            per_project.append(_days(ds.StudyDate) - _days("20240301"))
            report = server.post("/tools/verify-anonymization",
                                 json={"Source": study_id, "Anonymized": answer["ID"], "Project": project}).json()
            assert report["Clean"], report
        assert all(offset != 0 for offset in per_project)
        offsets.add(tuple(per_project))
    assert any(a != b for a, b in offsets)


def test_a_subject_table_names_the_anonymized_patient(server_factory):
    listed, unlisted = new_patient(), new_patient()
    server = _trial_server(server_factory, f"PatientID,SubjectID,SubjectName\n{listed.patient_id},S-001,Subject^One\n",
                           RequireSubject=True, ClinicalTrial={"SponsorName": "Sponsor", "ProtocolID": "P-7", "SiteID": "07"})
    table = server.workdir / "subjects.csv"
    study_id = _upload(server, _study(listed, "20240301", per_series=1))
    answer = server.post(f"/studies/{study_id}/anonymize", json={"Project": "trial"})
    assert answer.status_code == 200, answer.text
    instances = _instances(server, answer.json()["ID"])
    uid = server.json(f"/studies/{study_id}")["MainDicomTags"]["StudyInstanceUID"]
    scoped = server.get(f"/tools/generate-uid?level=study&uid={uid}&anonymized-patient-id=S-001&project=trial").text
    for ds in instances:
        assert (ds.PatientID, str(ds.PatientName), ds.StudyInstanceUID) == ("S-001", "Subject^One", scoped)
        assert (ds.ClinicalTrialSponsorName, ds.ClinicalTrialProtocolID, ds.ClinicalTrialSiteID) == ("Sponsor", "P-7", "07")
        assert ds.ClinicalTrialSubjectID == "S-001"
    # A patient outside the table: refused, naming the project and not the patient; nothing stored.
    other_id = _upload(server, _study(unlisted, "20240301", per_series=1))
    before = set(server.json("/instances"))
    refused = server.post(f"/studies/{other_id}/anonymize", json={"Project": "trial"})
    assert refused.status_code == 403 and '"trial"' in refused.json()["Message"]
    assert unlisted.patient_id not in refused.text
    assert set(server.json("/instances")) == before
    # Listing the patient takes effect without a restart, once the file has been read again in
    # the background (the table in use serves meanwhile: the patient is still refused).
    with open(table, "a") as file:
        file.write(f"{unlisted.patient_id},S-002,\n")
    deadline = time.monotonic() + 30
    while (answer := server.post(f"/studies/{other_id}/anonymize", json={"Project": "trial"})).status_code == 403:
        assert time.monotonic() < deadline and set(server.json("/instances")) == before, "the new row was never seen"
        time.sleep(0.2)
    assert answer.status_code == 200, answer.text
    ds = _instances(server, answer.json()["ID"])[0]
    assert (ds.PatientID, str(ds.PatientName)) == ("S-002", "S-002")


def _explorer2_body(study: dict) -> dict:
    """Exactly what Orthanc Explorer 2's anonymize dialog sends."""
    patient_id = str(uuid.uuid4())
    return {"Replace": {"PatientID": patient_id, "PatientName": f"Anonymized {patient_id[:8]}",
                        "PatientBirthDate": "", "PatientSex": "",
                        "StudyDescription": study["MainDicomTags"].get("StudyDescription", "")},
            "Remove": [], "KeepSource": True, "Force": True, "Synchronous": False}


@pytest.mark.parametrize("identity, patients", [("project", 1), ("caller", 2)])
def test_explorer2_clicks_link_under_a_project_owned_identity(server_factory, identity, patients):
    server = _trial_server(server_factory, PatientIdentity=identity)
    patient = new_patient()
    anonymized = set()
    for study_date in ("20240301", "20240308"):
        study_id = _upload(server, _study(patient, study_date, per_series=1))
        body = {**_explorer2_body(server.json(f"/studies/{study_id}")), "Project": "trial"}
        job = server.post(f"/studies/{study_id}/anonymize", json=body).json()
        deadline = time.monotonic() + 60
        while (state := server.json(job["Path"]))["State"] not in ("Success", "Failure") and time.monotonic() < deadline:
            time.sleep(0.05)
        assert state["State"] == "Success", state
        anonymized.add(server.json(f"/studies/{state['Content']['ID']}")["ParentPatient"])
    assert len(anonymized) == patients
    if identity == "project":
        pid = server.get(f"/tools/generate-uid?level=patient&patient-id={patient.patient_id}&project=trial").text
        assert server.json(f"/patients/{anonymized.pop()}")["MainDicomTags"]["PatientID"] == pid


def test_verification_finds_a_date_left_unshifted(server_factory):
    server = _trial_server(server_factory)
    study_id = _upload(server, _study(new_patient(), "20240301", per_series=1))
    answer = server.post(f"/studies/{study_id}/anonymize", json={"Project": "trial"}).json()
    clean = server.post("/tools/verify-anonymization",
                        json={"Source": study_id, "Anonymized": answer["ID"], "Project": "trial"}).json()
    assert clean["Clean"] and not clean["Leaks"], clean
    # One anonymized instance stored again with its real ContentDate, as a careless edit would.
    instance = server.json(f"/studies/{answer['ID']}/instances")[0]["ID"]
    ds = pydicom.dcmread(io.BytesIO(server.get(f"/instances/{instance}/file").content))
    ds.ContentDate = "20240301"
    assert server.delete(f"/instances/{instance}").status_code == 200
    server.upload(to_bytes(ds))
    report = server.post("/tools/verify-anonymization",
                         json={"Source": study_id, "Anonymized": answer["ID"], "Project": "trial"}).json()
    assert not report["Clean"]
    assert [leak["Path"] for leak in report["Leaks"]] == ["ContentDate"]  # named, never the value


@pytest.mark.parametrize("identity", ["caller", "project"])
def test_require_subject_holds_whatever_the_body_says(server_factory, identity):
    """A Replace or Keep of PatientID never lets a patient outside the table in, nor gives a listed
    patient another ID than its own SubjectID; nothing is stored when refused."""
    listed, unlisted = new_patient(), new_patient()
    server = _trial_server(server_factory, f"PatientID,SubjectID\n{listed.patient_id},T-001\n",
                           RequireSubject=True, PatientIdentity=identity)
    outside = _upload(server, _study(unlisted, "20240301", per_series=1))
    inside = _upload(server, _study(listed, "20240301", per_series=1))
    before = set(server.json("/instances"))
    for body in ({"Project": "trial", "Replace": {"PatientID": "T-001"}, "Force": True},
                 {"Project": "trial", "Replace": {"PatientID": "T-001"}}):
        refused = server.post(f"/studies/{outside}/anonymize", json=body)
        assert refused.status_code in (400, 403), (body, refused.text)
        if "Force" in body:
            assert refused.status_code == 403 and '"trial"' in refused.json()["Message"], refused.text
        assert unlisted.patient_id not in refused.text
        assert set(server.json("/instances")) == before
    other = {"Project": "trial", "Replace": {"PatientID": "T-999"}, "Force": True}
    answer = server.post(f"/studies/{inside}/anonymize", json=other)
    if identity == "caller":  # the caller's choice would give the subject another ID: refused
        assert answer.status_code == 400 and "SubjectID" in answer.json()["Message"], answer.text
        assert set(server.json("/instances")) == before
        answer = server.post(f"/studies/{inside}/anonymize",
                             json={"Project": "trial", "Replace": {"PatientID": "T-001"}, "Force": True})
    assert answer.status_code == 200, answer.text  # under "project", the caller's PatientID is ignored
    assert {ds.PatientID for ds in _instances(server, answer.json()["ID"])} == {"T-001"}


@pytest.mark.parametrize("text, reason", [
    ("PatientID,SubjectID,PatientID\nMRN-1,T-001,MRN-2\n", "line 1: column(s) PatientID named twice"),
    ("PatientID,SubjectID\nMRN-1,T-001\nMRN-2," + "x" * 200_000 + "\n", "line 3: not a valid CSV file (field larger"),
    ("PatientID,SubjectID\nMRN-1,T-001\nMRN-\xe9,T-002\n", "line 3: not UTF-8 text"),
])
def test_a_wrong_subject_table_stops_orthanc_at_start(server_factory, text, reason):
    server = server_factory(start=False)
    (server.workdir / "subjects.csv").write_bytes(text.encode("latin-1"))
    table = RUNTIME.inside(server.workdir / "subjects.csv")
    server.configure({"ConsistentAnonymization": {"Key": TEST_KEY, "Projects": {"trial": {"Subjects": table}}}})
    with pytest.raises(RuntimeError) as stopped:
        server.start()
    assert f"ConsistentAnonymization.Projects.trial.Subjects: {table}, {reason}" in str(stopped.value)


def test_a_subject_table_broken_under_a_running_orthanc_answers_500_naming_it(server_factory):
    """The calls of the project are refused, naming the project, the file, the line and why,
    until the file is mended; the table in use serves until the new content has been read."""
    listed = new_patient()
    server = _trial_server(server_factory, f"PatientID,SubjectID\n{listed.patient_id},T-001\n")
    table = server.workdir / "subjects.csv"
    study_id = _upload(server, _study(listed, "20240301", per_series=1))
    table.write_text(f"PatientID,SubjectID\n{listed.patient_id},T-001\nMRN-2," + "x" * 200_000 + "\n")
    before = set(server.json("/instances"))
    deadline = time.monotonic() + 30
    while (answer := server.post(f"/studies/{study_id}/anonymize", json={"Project": "trial"})).status_code == 200:
        assert time.monotonic() < deadline, "the broken table was never seen"
        assert server.delete(f"/studies/{answer.json()['ID']}").status_code == 200
        time.sleep(0.2)
    message = answer.json()["Message"]
    assert answer.status_code == 500, answer.text
    assert (f'The subject table of project "trial" cannot be used: {RUNTIME.inside(table)}, line 3: '
            f'not a valid CSV file (field larger') in message
    assert listed.patient_id not in answer.text
    assert set(server.json("/instances")) == before
