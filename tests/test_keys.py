"""The key: configured or generated once in the database; never shown; projects; fresh mode."""
from __future__ import annotations

import pytest

from anonymized import AnonymizedSet, parse
from conftest import TEST_KEY, new_patient, upload
from dicom_factory import to_bytes, two_frame_study
from orthanc_server import RUNTIME

CONFIGURED = {"ConsistentAnonymization": {"Key": TEST_KEY}}


def anonymized_uids(server, instance_id: str, **body) -> tuple[str, str, str]:
    answer = server.post(f"/instances/{instance_id}/anonymize", json=body)
    assert answer.status_code == 200, answer.text
    ds = parse(answer.content)
    return str(ds.PatientID), str(ds.StudyInstanceUID), str(ds.FrameOfReferenceUID)


def load_one(server, study) -> str:
    return server.upload(to_bytes(study.series[0][0]))["ID"]


def test_servers_sharing_a_configured_key_agree_without_sharing_anything_else(server_factory, study):
    first = server_factory(config=CONFIGURED)
    second = server_factory(config=CONFIGURED)
    assert anonymized_uids(first, load_one(first, study)) == anonymized_uids(second, load_one(second, study))


def test_a_key_file_is_the_same_key(server_factory, study):
    inline = server_factory(config=CONFIGURED)
    from_file = server_factory(start=False)
    key_file = from_file.workdir / "project.key"
    key_file.write_text(TEST_KEY + "\n")
    from_file.configure({"ConsistentAnonymization": {"KeyFile": RUNTIME.inside(key_file)}})
    from_file.start()
    assert anonymized_uids(inline, load_one(inline, study)) == anonymized_uids(from_file, load_one(from_file, study))


def test_a_generated_key_survives_restarts_and_differs_between_databases(server_factory, study):
    first = server_factory()
    other = server_factory()
    instance = load_one(first, study)
    before = anonymized_uids(first, instance)
    first.stop()
    first.start()
    assert anonymized_uids(first, instance) == before
    assert anonymized_uids(other, load_one(other, study)) != before


def test_the_key_never_appears_in_answers_logs_or_files(server_factory, study):
    server = server_factory(config=CONFIGURED)
    uploaded = upload(server, study)
    some = next(iter(uploaded.values()))
    anonymized = server.post(f"/studies/{some['ParentStudy']}/anonymize", json={})
    blobs = [
        anonymized.content,
        server.post(f"/instances/{some['ID']}/anonymize", json={}).content,
        server.get("/tools/generate-uid", params={"level": "study", "uid": "1.2.3", "patient-id": "x"}).content,
        server.post(f"/series/{some['ParentSeries']}/anonymize", data=b"{bad").content,
    ]
    blobs += [server.get(f"/instances/{i['ID']}/file").content
              for i in server.json(f"/studies/{anonymized.json()['ID']}/instances")]
    server.stop()
    blobs.append(server.log().encode())
    for blob in blobs:
        assert TEST_KEY.encode() not in blob
        assert TEST_KEY.encode().hex().encode() not in blob


def test_projects_have_independent_pseudonyms(server_factory, study):
    server = server_factory(config={"ConsistentAnonymization": {
        "Key": TEST_KEY, "Projects": {"trial-a": {}, "trial-b": {"Key": TEST_KEY[::-1]}},
        "DefaultProject": "trial-a"}})
    instance = load_one(server, study)
    default = anonymized_uids(server, instance)
    assert anonymized_uids(server, instance, Project="trial-a") == default
    trial_b = anonymized_uids(server, instance, Project="trial-b")
    assert trial_b[0] != default[0] and trial_b[1] != default[1]
    assert anonymized_uids(server, instance, Project="trial-b") == trial_b
    unknown = server.post(f"/instances/{instance}/anonymize", json={"Project": "nobody"})
    assert unknown.status_code == 400
    assert "Projects" in unknown.json()["Message"]


def test_fresh_pseudonyms_per_call_are_consistent_only_inside_one_call(server_factory):
    server = server_factory(config={"ConsistentAnonymization": {"FreshPseudonymsPerCall": True}})
    study = two_frame_study(per_series=2, patient=new_patient())
    uploaded = upload(server, study)
    study_id = next(iter(uploaded.values()))["ParentStudy"]
    first = server.post(f"/studies/{study_id}/anonymize", json={}).json()
    second = server.post(f"/studies/{study_id}/anonymize", json={}).json()
    assert first["ID"] != second["ID"]
    for answer in (first, second):
        result = AnonymizedSet.of_patient(server, answer["PatientID"])
        assert len(result.instances) == len(study.instances)
        assert len(result.studies) == 1
        assert result.frame_of_reference_of(1) == result.frame_of_reference_of(2)
        assert result.frame_of_reference_of(1) != result.frame_of_reference_of(3)
    refused = server.get("/tools/generate-uid", params={"level": "study", "uid": "1.2.3", "patient-id": "x"})
    assert refused.status_code == 400


def test_a_weak_configured_key_stops_orthanc_rather_than_pseudonymize_with_it(server_factory):
    with pytest.raises(RuntimeError, match="at least 32 characters"):
        server_factory(config={"ConsistentAnonymization": {"Key": "short"}})
