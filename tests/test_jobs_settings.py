"""Orthanc's jobs settings apply to the plugin's jobs as to native's: SaveJobs false keeps
nothing across a restart (a crash then loses the job, not what it stored: the call, run again,
completes it), JobsHistorySize bounds the finished jobs remembered."""
from __future__ import annotations

from anonymized import AnonymizedSet
from conftest import new_patient, upload
from dicom_factory import two_frame_study
from test_jobs import big_study, finished, wait_for

SETTINGS = {"SaveJobs": False, "JobsHistorySize": 1}


def _run_jobs(server, count: int) -> list[str]:
    """`count` asynchronous study anonymizations, one after the other; their job paths."""
    paths = []
    for _ in range(count):
        uploaded = upload(server, two_frame_study(per_series=1, patient=new_patient()))
        study_id = next(iter(uploaded.values()))["ParentStudy"]
        answer = server.post(f"/studies/{study_id}/anonymize", json={"Asynchronous": True})
        assert answer.status_code == 200, answer.text
        assert wait_for(server, answer.json()["Path"], finished)["State"] == "Success"
        paths.append(answer.json()["Path"])
    return paths


def test_history_size_and_save_jobs_false_as_native(server_factory):
    servers = [server_factory(config=SETTINGS), server_factory(plugin=False, config=SETTINGS)]
    kept = {}
    for server in servers:
        paths = _run_jobs(server, 3)
        kept[server.url] = [server.get(path).status_code for path in paths]
        server.stop()
        server.start()
        kept[server.url] += [server.get(path).status_code for path in paths]
    plugin, native = (kept[server.url] for server in servers)
    assert native == [404, 404, 200, 404, 404, 404]  # one finished job remembered, none saved
    assert plugin == native


def test_a_crash_with_save_jobs_false_loses_the_job_and_a_new_call_completes_its_work(server_factory):
    server = server_factory(config={"SaveJobs": False})
    study, study_id = big_study(server, per_series=60)
    job = server.post(f"/studies/{study_id}/anonymize", json={"Asynchronous": True}).json()
    wait_for(server, job["Path"], lambda j: j["State"] == "Running" and j["Progress"] >= 10)
    server.kill()
    server.start()
    assert server.get(job["Path"]).status_code == 404  # nothing saved: the job is gone
    again = server.post(f"/studies/{study_id}/anonymize", json={})
    assert again.status_code == 200, again.text
    result = AnonymizedSet.of_patient(server, again.json()["PatientID"])
    assert len(result.instances) == len(study.instances) and len(result.studies) == 1
