"""A synchronous call a crash interrupts leaves no partial result behind unmarked.

Orthanc is killed (SIGKILL) while a synchronous study call of 300 instances is storing its
results; after the restart, the first call to any of the plugin's routes completes the
interrupted call (as a job), so the anonymized study ends complete and the source intact.
Before the fix, the partial study stayed as it was, looking finished.
"""
from __future__ import annotations

import threading
import time

from conftest import new_patient
from dicom_factory import to_bytes
from holdings import holdings, study_of_series

SERIES, PER_SERIES = 3, 100


def _count(server) -> int:
    return int(server.json("/statistics")["CountInstances"])


def test_a_synchronous_call_killed_midway_is_completed_after_the_restart(server_factory):
    server = server_factory()
    patient = new_patient()
    series = study_of_series(SERIES, PER_SERIES, patient)
    total = SERIES * PER_SERIES
    study_id = [server.upload(to_bytes(ds)) for members in series for ds in members][0]["ParentStudy"]
    server.get("/tools/generate-uid?level=study")  # the plugin's first call: its key exists

    answered: list = []
    call = threading.Thread(target=lambda: answered.append(
        _safe_post(server, f"/studies/{study_id}/anonymize", {"Keep": ["StudyDescription"]})))
    call.start()
    deadline = time.monotonic() + 120
    while _count(server) < total + total // 10 and time.monotonic() < deadline:
        time.sleep(0.01)
    server.kill()
    call.join(60)
    assert answered and answered[0] is None, f"the call ended before the kill: {answered}"

    server.start()
    stored = _count(server) - total
    assert 0 < stored < total, f"the call was not in flight when killed ({stored} results stored)"
    assert server.get("/jobs").status_code == 200  # any route of the plugin
    deadline = time.monotonic() + 180
    while time.monotonic() < deadline:
        jobs = server.json("/jobs?expand")
        if all(job["State"] in ("Success", "Failure") for job in jobs):
            break
        time.sleep(0.2)
    held = holdings(server, patient.patient_id)
    assert sum(held.sources.values()) == total, "the source was touched"
    assert sum(held.results.values()) == total and all(n == 1 for n in held.results.values()), \
        f"the interrupted result holds {sum(held.results.values())} instances of {total}"
    assert len(held.result_series) == SERIES


def _safe_post(server, path: str, body: dict):
    """The answer, or None when the server died under the call."""
    try:
        return server.post(path, json=body)
    except Exception:
        return None
