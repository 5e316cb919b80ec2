"""/tools/bulk-anonymize under the same consistency rules, with native's answer."""
from __future__ import annotations

from anonymized import AnonymizedSet
from conftest import upload
from test_jobs import finished, wait_for


def test_bulk_anonymize_gives_one_consistent_study_in_natives_shape(orthanc, native, study):
    uploaded = upload(orthanc, study)
    upload(native, study)
    series = sorted({answer["ParentSeries"] for answer in uploaded.values()})
    ours = orthanc.post("/tools/bulk-anonymize", json={"Resources": series})
    theirs = native.post("/tools/bulk-anonymize", json={"Resources": series})
    assert ours.status_code == theirs.status_code == 200
    ours, theirs = ours.json(), theirs.json()
    assert set(ours) == set(theirs)
    if "ParentResources" in theirs:  # Orthanc 1.12
        assert sorted(ours["ParentResources"]) == sorted(theirs["ParentResources"])
    assert ours["InstancesCount"] == theirs["InstancesCount"] == len(study.instances)
    types = [r["Type"] for r in ours["Resources"]]
    assert types == sorted(types, key=["Instance", "Series", "Study", "Patient"].index)
    assert types.count("Study") == types.count("Patient") == 1 and types.count("Series") == len(series)
    assert all(orthanc.get(r["Path"]).status_code == 200 for r in ours["Resources"])
    patient = next(r["ID"] for r in ours["Resources"] if r["Type"] == "Patient")
    result = AnonymizedSet.of_patient(orthanc, patient)
    assert len(result.instances) == len(study.instances) and len(result.studies) == 1
    # The answer lists the results themselves: each instance, series and study of that patient.
    listed = lambda kind: sorted(r["ID"] for r in ours["Resources"] if r["Type"] == kind)
    assert listed("Instance") == sorted(result.instances)
    assert listed("Series") == sorted(s["ID"] for s in orthanc.json(f"/patients/{patient}/series"))
    assert listed("Study") == [s["ID"] for s in orthanc.json(f"/patients/{patient}/studies")]
    assert result.frame_of_reference_of(1) == result.frame_of_reference_of(2) != result.frame_of_reference_of(3)
    # The same study a study-level call gives.
    study_id = next(iter(uploaded.values()))["ParentStudy"]
    assert orthanc.post(f"/studies/{study_id}/anonymize", json={}).json()["PatientID"] == patient


def test_overlapping_resources_are_anonymized_once(orthanc, study):
    uploaded = upload(orthanc, study)
    some = next(iter(uploaded.values()))
    before = set(orthanc.json("/instances"))
    answer = orthanc.post("/tools/bulk-anonymize", json={"Resources": [some["ID"], some["ParentStudy"]]})
    assert answer.status_code == 200  # native fails with 500 here; every instance is done once
    assert answer.json()["InstancesCount"] == len(study.instances)
    made = set(orthanc.json("/instances")) - before
    assert made == {r["ID"] for r in answer.json()["Resources"] if r["Type"] == "Instance"}
    assert len(made) == len(study.instances)
    patient = next(r["ID"] for r in answer.json()["Resources"] if r["Type"] == "Patient")
    assert len(AnonymizedSet.of_patient(orthanc, patient).sop_instance_uids) == len(study.instances)


def test_bulk_errors_and_asynchronous_bulk(orthanc, study):
    uploaded = upload(orthanc, study)
    before, jobs = sorted(orthanc.json("/instances")), orthanc.json("/jobs")
    unknown = orthanc.post("/tools/bulk-anonymize", json={"Resources": [next(iter(uploaded.values()))["ID"], "nope"]})
    assert unknown.status_code == 404
    assert unknown.json()["OrthancStatus"] == 17
    assert unknown.json()["Message"].startswith("Unknown resource nope (if there was one, it was deleted")
    for body in ({"Resources": "nope"}, {}):
        answer = orthanc.post("/tools/bulk-anonymize", json=body)
        assert answer.status_code == 400
        assert answer.json()["Message"] == "List of strings expected in field: Resources"
    assert sorted(orthanc.json("/instances")) == before and orthanc.json("/jobs") == jobs  # nothing done
    series = sorted({answer["ParentSeries"] for answer in uploaded.values()})
    job = orthanc.post("/tools/bulk-anonymize", json={"Resources": series, "Asynchronous": True})
    assert job.status_code == 200 and set(job.json()) == {"ID", "Path"}
    done = wait_for(orthanc, job.json()["Path"], finished)
    assert done["State"] == "Success"
    assert done["Content"]["InstancesCount"] == len(study.instances)
    assert [r["Type"] for r in done["Content"]["Resources"]].count("Study") == 1
