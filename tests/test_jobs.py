"""Asynchronous anonymization as Orthanc jobs: native shape, cancel, priority, restarts, OE2."""
from __future__ import annotations

import time
import uuid

import pytest

from anonymized import AnonymizedSet, find_patient, parse
from conftest import new_patient, upload
from dicom_factory import two_frame_study

JOB_FIELDS = {"CreationTime", "EffectiveRuntime", "ErrorCode", "ErrorDescription", "ErrorDetails", "ID",
              "Priority", "Progress", "State", "Timestamp", "Type", "Content"}


def wait_for(server, path: str, until, timeout: float = 120) -> dict:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        job = server.json(path)
        if until(job):
            return job
        time.sleep(0.05)
    raise AssertionError(f"{path} never reached the expected state: {job}")


def finished(job: dict) -> bool:
    return job["State"] in ("Success", "Failure")


#: Sizes (instances per series) of the jobs a fault test interrupts: it tries a larger one when the
#: job ended before the fault arrived, so that it never passes without exercising the fault.
LARGER_AND_LARGER = (80, 240, 720)


def big_study(server, per_series: int = 60):
    study = two_frame_study(per_series=per_series, patient=new_patient())
    uploaded = upload(server, study)
    return study, next(iter(uploaded.values()))["ParentStudy"]


@pytest.mark.parametrize("flag", [{"Asynchronous": True}, {"Synchronous": False}])
def test_asynchronous_calls_answer_a_job_in_natives_shape(orthanc, native, study, flag):
    uploaded = upload(orthanc, study)
    upload(native, study)
    study_id = next(iter(uploaded.values()))["ParentStudy"]
    answer = orthanc.post(f"/studies/{study_id}/anonymize", json=flag)
    reference = native.post(f"/studies/{study_id}/anonymize", json=flag)
    assert answer.status_code == reference.status_code == 200
    assert set(answer.json()) == set(reference.json()) == {"ID", "Path"}
    assert answer.json()["Path"] == f"/jobs/{answer.json()['ID']}"

    job = wait_for(orthanc, answer.json()["Path"], finished)
    native_job = wait_for(native, reference.json()["Path"], finished)
    assert job["State"] == native_job["State"] == "Success"
    assert JOB_FIELDS <= set(job) and set(job) == set(native_job)
    assert job["Type"] == "ResourceModification" and job["Progress"] == 100
    assert set(job["Content"]) == set(native_job["Content"])
    assert job["Content"]["InstancesCount"] == len(study.instances)
    # The same anonymized study a synchronous call lands on.
    again = orthanc.post(f"/studies/{study_id}/anonymize", json={}).json()
    assert again["ID"] == job["Content"]["ID"] and again["PatientID"] == job["Content"]["PatientID"]
    assert orthanc.get(job["Content"]["Path"]).status_code == 200
    listed = orthanc.json("/jobs")
    assert job["ID"] in listed
    expanded = {j["ID"]: j for j in orthanc.json("/jobs?expand")}
    assert expanded[job["ID"]]["State"] == "Success"


def test_native_jobs_stay_reachable(orthanc, study):
    uploaded = upload(orthanc, study)
    study_id = next(iter(uploaded.values()))["ParentStudy"]
    answer = orthanc.post(f"/studies/{study_id}/modify",
                          json={"Replace": {"StudyDescription": "modified"}, "Asynchronous": True})
    assert answer.status_code == 200
    job = wait_for(orthanc, answer.json()["Path"], finished)
    assert job["State"] == "Success" and job["Type"] == "ResourceModification"
    assert job["Content"]["IsAnonymization"] is False
    assert job["ID"] in orthanc.json("/jobs")
    assert orthanc.get("/jobs/no-such-job").status_code == 404


def test_bad_asynchronous_requests_are_refused_at_once(orthanc, study):
    uploaded = upload(orthanc, study)
    study_id = next(iter(uploaded.values()))["ParentStudy"]
    jobs_before = orthanc.json("/jobs")
    assert orthanc.post("/studies/none/anonymize", json={"Asynchronous": True}).status_code == 404
    assert orthanc.post(f"/studies/{study_id}/anonymize",
                        json={"Asynchronous": True, "Replace": {"StudyInstanceUID": "1.2"}}).status_code == 400
    assert orthanc.post(f"/studies/{study_id}/anonymize",
                        json={"Asynchronous": True, "Keep": ["NoSuchTagAtAll"]}).status_code == 500
    assert orthanc.json("/jobs") == jobs_before


def test_cancel_leaves_nothing_behind_and_priority_orders_the_queue(server_factory):
    # One job at a time, so that the two queued ones wait and Priority decides which goes first.
    orthanc = server_factory(config={"ConcurrentJobs": 1})
    for per_series in LARGER_AND_LARGER:
        first, first_id = big_study(orthanc, per_series)
        second, second_id = big_study(orthanc, per_series=2)
        third, third_id = big_study(orthanc, per_series=2)
        running = orthanc.post(f"/studies/{first_id}/anonymize", json={"Asynchronous": True}).json()
        low = orthanc.post(f"/studies/{second_id}/anonymize", json={"Asynchronous": True, "Priority": 0}).json()
        high = orthanc.post(f"/studies/{third_id}/anonymize", json={"Asynchronous": True, "Priority": 10}).json()
        wait_for(orthanc, running["Path"], lambda j: j["State"] == "Running" and j["Progress"] > 0 or finished(j))
        assert orthanc.post(running["Path"] + "/cancel", json={}).status_code == 200
        canceled = wait_for(orthanc, running["Path"], finished)
        if canceled["State"] != "Success":
            break
        print(f"\ncancel: the job of {len(first.instances)} instances ended before the cancel arrived; again, larger")
    else:
        raise AssertionError(f"every job ended before its cancel arrived, the last of {len(first.instances)} instances")
    assert canceled["State"] == "Failure" and canceled["ErrorCode"] == 37
    patient = orthanc.get("/tools/generate-uid", params={"level": "patient",
                                                         "patient-id": first.study.patient.patient_id}).text
    assert find_patient(orthanc, patient) == []  # what it had stored was removed again
    assert len(orthanc.json(f"/studies/{first_id}/instances")) == len(first.instances)

    low_job = wait_for(orthanc, low["Path"], finished)
    high_job = wait_for(orthanc, high["Path"], finished)
    assert low_job["State"] == high_job["State"] == "Success"
    assert high_job["CompletionTime"] < low_job["CompletionTime"]

    resubmitted = orthanc.post(running["Path"] + "/resubmit", json={})
    assert resubmitted.status_code == 200
    assert wait_for(orthanc, running["Path"], finished)["State"] == "Success"
    assert len(find_patient(orthanc, patient)) == 1


def test_a_killed_orthanc_resumes_the_job_and_gives_the_uninterrupted_result(server_factory):
    server = server_factory()
    for per_series in LARGER_AND_LARGER:
        study, study_id = big_study(server, per_series)
        before = sorted(server.json("/instances"))
        job = server.post(f"/studies/{study_id}/anonymize", json={"Asynchronous": True}).json()
        wait_for(server, job["Path"], lambda j: j["Progress"] >= 10 or finished(j))
        server.kill()
        log_before_restart = len(server.log())
        server.start()
        # Read through a native route, which does not wake the plugin's resume: what the job had
        # stored when it was killed. All of it: it had ended already; again, with a larger one.
        stored_at_kill = len(server.json("/instances")) - len(before)
        if stored_at_kill < len(study.instances):
            break
        print(f"\nrestart: the job of {len(study.instances)} instances ended before the kill; again, larger")
    else:
        raise AssertionError(f"every job ended before the kill, the last of {len(study.instances)} instances")
    resumed = wait_for(server, job["Path"], finished)
    assert "resuming 1 job(s) interrupted by the previous stop" in server.log()[log_before_restart:]
    assert resumed["State"] == "Success", resumed
    assert set(before) <= set(server.json("/instances"))  # the source is intact
    result = AnonymizedSet.of_patient(server, resumed["Content"]["PatientID"])
    assert len(result.instances) == len(study.instances)
    assert len(result.studies) == 1
    assert result.frame_of_reference_of(1) == result.frame_of_reference_of(2) != result.frame_of_reference_of(3)
    rerun = server.post(f"/studies/{study_id}/anonymize", json={}).json()  # what an uninterrupted run gives
    assert rerun["ID"] == resumed["Content"]["ID"]
    assert len(server.json(f"/studies/{rerun['ID']}/instances")) == len(study.instances)
    print(f"\nrestart: {len(study.instances)} instances, killed with {stored_at_kill} stored, resumed, errors: 0")


def test_orthanc_explorer_2_request_sequence(orthanc, study):
    """Replayed as OE2 sends it: a random PatientID and name, Remove, KeepSource, Force, async."""
    uploaded = upload(orthanc, study)
    study_id = next(iter(uploaded.values()))["ParentStudy"]
    patient_id = str(uuid.uuid4())
    body = {"Replace": {"PatientID": patient_id, "PatientName": f"Anonymized {patient_id[:4]}"},
            "Remove": ["InstitutionName"], "KeepSource": True, "Force": True, "Synchronous": False}
    answer = orthanc.post(f"/studies/{study_id}/anonymize", json=body)
    assert answer.status_code == 200
    job = wait_for(orthanc, answer.json()["Path"], finished)  # as OE2 polls: until the job has ended
    assert job["State"] == "Success"
    anonymized = orthanc.json(f"/studies/{job['Content']['ID']}")
    assert anonymized["PatientMainDicomTags"]["PatientID"] == patient_id
    result = AnonymizedSet.of_patient(orthanc, job["Content"]["PatientID"])
    assert len(result.instances) == len(study.instances) and len(result.studies) == 1
    assert result.frame_of_reference_of(1) == result.frame_of_reference_of(2) != result.frame_of_reference_of(3)
    assert all("InstitutionName" not in ds for ds in result.instances.values())
    assert len(orthanc.json(f"/studies/{study_id}/instances")) == len(study.instances)  # KeepSource


def test_keep_source_false_deletes_the_source_only_after_the_result_is_stored(orthanc, study):
    uploaded = upload(orthanc, study)
    study_id = next(iter(uploaded.values()))["ParentStudy"]
    answer = orthanc.post(f"/studies/{study_id}/anonymize", json={"KeepSource": False})
    assert answer.status_code == 200
    assert orthanc.get(f"/studies/{study_id}").status_code == 404
    assert len(orthanc.json(f"/studies/{answer.json()['ID']}/instances")) == len(study.instances)



def test_transcode_works_as_native(orthanc, native, study):
    uploaded = upload(orthanc, study)
    upload(native, study)
    some = next(iter(uploaded.values()))
    body = {"Transcode": "1.2.840.10008.1.2"}  # Implicit VR Little Endian
    version = tuple(int(p) for p in orthanc.json("/system")["Version"].split(".")[:2])
    for server in (orthanc, native):
        # Instance level: the same file syntax as native's (1.10 ignores Transcode there).
        single = server.post(f"/instances/{some['ID']}/anonymize", json=body)
        assert single.status_code == 200
        syntax = str(parse(single.content).file_meta.TransferSyntaxUID)
        assert syntax == ("1.2.840.10008.1.2" if version >= (1, 12) else "1.2.840.10008.1.2.1")
    # Resource level: transcoded as native's job does (on 1.10 the plugin runs Orthanc's transcoder).
    for server in (orthanc, native):
        answer = server.post(f"/series/{some['ParentSeries']}/anonymize", json=body)
        assert answer.status_code == 200, answer.text
        for instance in server.json(f"/series/{answer.json()['ID']}/instances"):
            assert server.get(f"/instances/{instance['ID']}/metadata/TransferSyntax").text == "1.2.840.10008.1.2"
