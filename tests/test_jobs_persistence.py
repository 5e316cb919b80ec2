"""The plugin's job queue without a server: saved records of any version restore, an unreadable
one is logged and kept aside, and Orthanc's SaveJobs, JobsHistorySize and ConcurrentJobs apply."""
from __future__ import annotations

import json
import threading
import time

from consistent_anon.orthanc import http_answers
from consistent_anon.jobs.queue import PENDING, RECORD_VERSION, SUCCESS, JobQueue, JobSettings


class Store:
    """The global properties the queue reads and writes, and the error log."""

    def __init__(self, saved: str = "") -> None:
        self.saved = saved
        self.saves = 0
        self.aside: list[str] = []
        self.errors: list[str] = []

    def queue(self, runner=lambda job, progress, canceled: {"ID": job.resource_id},
              settings: JobSettings = JobSettings()) -> JobQueue:
        return JobQueue(runner, lambda: self.saved, self.save, self.errors.append, settings, self.aside.append,
                        orthanc_error=http_answers.orthanc_error)

    def save(self, text: str) -> None:
        self.saved = text
        self.saves += 1


def wait_until(condition, timeout: float = 10) -> None:
    deadline = time.monotonic() + timeout
    while not condition():
        assert time.monotonic() < deadline, "timed out"
        time.sleep(0.01)


OLD_RECORD = {  # as the first version saved it: a bare list, without the fields added since
    "level": "studies", "resource_id": "study-1", "body": "{}", "priority": 0, "id": "job-1",
    "state": "Running", "progress": 40, "creation_time": "20260101T000000.000000",
    "completion_time": None, "runtime": 1.0, "error_code": 0, "error_description": "Success",
    "error_details": "", "content": {}, "cancel_requested": False,
}


def test_a_record_of_the_first_version_restores_and_its_interrupted_job_resumes():
    store = Store(json.dumps([OLD_RECORD, dict(OLD_RECORD, id="job-2", state="Success", progress=100)]))
    queue = store.queue()
    assert queue.restore() == 1
    wait_until(lambda: queue.get("job-1").state == SUCCESS)
    assert queue.get("job-2").state == SUCCESS
    assert not store.errors and not store.aside


def test_fields_a_version_does_not_know_or_lacks_do_not_stop_the_restore():
    newer = dict(OLD_RECORD, id="job-3", a_field_of_a_later_version={"x": 1})
    older = {key: value for key, value in OLD_RECORD.items() if key not in ("runtime", "content", "progress")}
    store = Store(json.dumps({"Version": RECORD_VERSION + 1, "Jobs": [newer, dict(older, id="job-4")]}))
    queue = store.queue()
    assert queue.restore() == 2
    wait_until(lambda: all(queue.get(i).state == SUCCESS for i in ("job-3", "job-4")))
    assert not store.errors


def test_records_are_saved_with_their_version_and_read_back():
    store = Store()
    queue = store.queue()
    queue.restore()
    job = queue.submit("series", "series-1", "{}", 0, {"InstancesCount": 3}, {})
    # the record saved once the job ended (its state is seen a moment before that save)
    wait_until(lambda: json.loads(store.saved or "{}").get("Jobs", [{}])[0].get("state") == SUCCESS)
    saved = json.loads(store.saved)
    assert saved["Version"] == RECORD_VERSION and [r["id"] for r in saved["Jobs"]] == [job.id]
    again = Store(store.saved).queue()
    assert again.restore() == 0 and again.get(job.id).describe()["State"] == SUCCESS


def test_an_unreadable_record_is_logged_and_kept_aside_not_overwritten():
    for corrupt in ("{not json", json.dumps({"Jobs": "?"}), json.dumps(42)):
        store = Store(corrupt)
        queue = store.queue()
        assert queue.restore() == 0
        assert store.aside == [corrupt]
        assert len(store.errors) == 1 and "kept aside" in store.errors[0]
        queue.submit("series", "series-1", "{}", 0, {"InstancesCount": 1}, {})  # the next save replaces the record...
        assert store.aside == [corrupt]  # ...which was kept elsewhere first


def test_unreadable_jobs_in_a_readable_record_are_kept_aside_the_others_restored():
    bad = [{"level": "studies"}, dict(OLD_RECORD, id="job-9", state="Exploded"), "text"]
    store = Store(json.dumps({"Version": RECORD_VERSION, "Jobs": [OLD_RECORD] + bad}))
    queue = store.queue()
    assert queue.restore() == 1
    assert json.loads(store.aside[0]) == bad
    assert len(store.errors) == 1 and "3 saved" in store.errors[0]


def test_save_jobs_false_persists_nothing_and_restores_nothing():
    store = Store(json.dumps([OLD_RECORD]))
    queue = store.queue(settings=JobSettings(save=False))
    assert queue.restore() == 0 and queue.get("job-1") is None
    job = queue.submit("series", "series-1", "{}", 0, {"InstancesCount": 1}, {})
    wait_until(lambda: queue.get(job.id).state == SUCCESS)
    assert store.saves == 0 and json.loads(store.saved) == [OLD_RECORD]


def test_jobs_history_size_keeps_the_last_finished_jobs():
    store = Store()
    queue = store.queue(settings=JobSettings(history_size=2))
    queue.restore()
    ids = []
    for number in range(4):
        ids.append(queue.submit("series", f"series-{number}", "{}", 0, {"InstancesCount": 1}, {}).id)
        wait_until(lambda: queue.get(ids[-1]) is None or queue.get(ids[-1]).state == SUCCESS)
    assert [job.id for job in queue.all()] == ids[-2:]
    none_kept = Store().queue(settings=JobSettings(history_size=0))
    job = none_kept.submit("series", "series-x", "{}", 0, {"InstancesCount": 1}, {})
    wait_until(lambda: none_kept.get(job.id) is None)


def test_concurrent_jobs_run_that_many_jobs_at_once():
    """The jobs are held until released, not for a while: `concurrent` of them run together and
    the others wait their turn, whatever the machine's speed."""
    for concurrent in (1, 2):
        running, most = set(), [0]
        lock = threading.Lock()
        release = threading.Event()

        def runner(job, progress, canceled):
            with lock:
                running.add(job.id)
                most[0] = max(most[0], len(running))
            assert release.wait(10)
            with lock:
                running.discard(job.id)
            return {}
        queue = Store().queue(runner, JobSettings(concurrent=concurrent))
        jobs = [queue.submit("series", f"series-{n}", "{}", 0, {"InstancesCount": 1}, {}) for n in range(3)]
        wait_until(lambda: len(running) == concurrent)
        assert [queue.get(j.id).state for j in jobs].count(PENDING) == 3 - concurrent
        release.set()
        wait_until(lambda: all(queue.get(j.id).state not in (PENDING, "Running") for j in jobs))
        assert all(queue.get(j.id).state == SUCCESS for j in jobs)
        assert most[0] == concurrent


def test_job_settings_read_orthancs_options_with_natives_defaults():
    assert JobSettings.of({}) == JobSettings(save=True, history_size=10, concurrent=2)
    settings = JobSettings.of({"SaveJobs": False, "JobsHistorySize": 0, "ConcurrentJobs": 3})
    assert settings == JobSettings(save=False, history_size=0, concurrent=3)
    assert JobSettings.of({"ConcurrentJobs": 0}).concurrent >= 1
