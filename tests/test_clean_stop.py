"""Orthanc stops cleanly with the plugin loaded: a SIGTERM ends it with exit code 0, after calls,
jobs and their worker threads, as it does without the plugin. (orthanc-python 5.0 and 7.1 crash
at their finalization when a REST callback is anything but a plain module-level function.)"""
from __future__ import annotations

import signal
import time

from conftest import new_patient
from dicom_factory import to_bytes, two_frame_study


def _stopped(server) -> int:
    process = server.process
    server.stop()
    assert process.returncode != -signal.SIGKILL, "Orthanc did not stop on SIGTERM"
    return process.returncode


def test_an_idle_orthanc_with_the_plugin_stops_with_exit_code_0(server_factory):
    assert _stopped(server_factory()) == 0


def test_orthanc_stops_with_exit_code_0_after_calls_and_a_job(server_factory):
    server = server_factory()
    study = [server.upload(to_bytes(ds)) for ds in two_frame_study(per_series=2, patient=new_patient()).instances]
    assert server.post(f"/studies/{study[0]['ParentStudy']}/anonymize", json={}).status_code == 200
    job = server.post(f"/series/{study[0]['ParentSeries']}/anonymize", json={"Asynchronous": True}).json()
    deadline = time.monotonic() + 60
    while server.get(f"/jobs/{job['ID']}").json()["State"] != "Success" and time.monotonic() < deadline:
        time.sleep(0.1)
    assert server.get("/tools/anonymization-log").status_code == 200
    assert _stopped(server) == 0
