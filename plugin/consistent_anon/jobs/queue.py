"""Asynchronous anonymizations shown as Orthanc jobs.

A Python plugin cannot create a job in Orthanc's own engine, so the plugin runs its own queue
and answers `/jobs/{id}` for its jobs in native's shape (`Type: "ResourceModification"`). Jobs
are written to Orthanc's database at each change of state (unless Orthanc's "SaveJobs" is false):
after a restart, a job that had not finished is run again from the start, which gives exactly
the result of an uninterrupted run because anonymization is idempotent (a re-stored instance is
recognized, not duplicated). Orthanc's "JobsHistorySize" and "ConcurrentJobs" apply as to
native jobs.
"""
from __future__ import annotations

import heapq
import itertools
import json
import os
import threading
import time
import uuid
from dataclasses import asdict, dataclass, field, fields
from datetime import datetime
from typing import Any, Callable

from ..errors import JobCanceled, PluginError

PENDING, RUNNING, SUCCESS, FAILURE = "Pending", "Running", "Success", "Failure"
CANCELED_JOB = 37  # Orthanc's ErrorCode_CanceledJob
#: The saved jobs' format: {"Version": 2, "Jobs": [record...]}; version 1 was the bare list.
RECORD_VERSION = 2


def _now() -> str:
    return datetime.now().strftime("%Y%m%dT%H%M%S.%f")


@dataclass
class Job:
    level: str
    resource_id: str
    body: str
    priority: int = 0
    id: str = field(default_factory=lambda: str(uuid.uuid4()))
    state: str = PENDING
    progress: int = 0
    creation_time: str = field(default_factory=_now)
    completion_time: str | None = None
    runtime: float = 0.0
    error_code: int = 0
    error_description: str = "Success"
    error_details: str = ""
    content: dict[str, Any] = field(default_factory=dict)
    cancel_requested: bool = False
    user_data: dict[str, Any] = field(default_factory=dict)  # {"UserData": ...} as native shows it, or {}
    user: str | None = None  # who asked, for the audit entry written when the job ends

    def describe(self) -> dict[str, Any]:
        """The job as native's GET /jobs/{id} shows a ResourceModification job."""
        answer = {
            "Content": self.content,
            "CreationTime": self.creation_time,
            "EffectiveRuntime": round(self.runtime, 3),
            "ErrorCode": self.error_code,
            "ErrorDescription": self.error_description,
            "ErrorDetails": self.error_details,
            "ID": self.id,
            "Priority": self.priority,
            "Progress": self.progress,
            "State": self.state,
            "Timestamp": _now(),
            "Type": "ResourceModification",
        }
        if self.completion_time:
            answer["CompletionTime"] = self.completion_time
        answer.update(self.user_data)
        return answer


#: Runs one job: (job, report_progress(done, total), is_canceled) -> the answer native gives.
Runner = Callable[[Job, Callable[[int, int], None], Callable[[], bool]], dict]
#: Told when a job ends (succeeded, failed or canceled): the job, and the error it ended with.
EndHook = Callable[[Job, "BaseException | None"], None]
#: How a job ends: its state, Orthanc error code, description and details.
Ending = tuple[str, int, str, str]


@dataclass(frozen=True)
class JobSettings:
    """Orthanc's settings for its jobs, applied to the plugin's (native's defaults)."""

    save: bool = True  # "SaveJobs": kept in the database across restarts
    history_size: int = 10  # "JobsHistorySize": finished jobs remembered
    concurrent: int = 2  # "ConcurrentJobs": jobs running at once (0: one per core)

    @classmethod
    def of(cls, configuration: dict[str, Any]) -> "JobSettings":
        concurrent = int(configuration.get("ConcurrentJobs", cls.concurrent))
        return cls(save=bool(configuration.get("SaveJobs", cls.save)),
                   history_size=max(0, int(configuration.get("JobsHistorySize", cls.history_size))),
                   concurrent=concurrent if concurrent > 0 else (os.cpu_count() or 1))


def encode_jobs(jobs: list[Job]) -> str:
    return json.dumps({"Version": RECORD_VERSION, "Jobs": [asdict(job) for job in jobs]})


_JOB_FIELDS = {f.name for f in fields(Job)}
_REQUIRED = ("level", "resource_id", "body", "id")


def job_of_record(record: Any) -> Job | None:
    """The job a saved record describes, whichever version of the plugin saved it: fields it
    lacks take their defaults, fields this version does not know are left out; None when the
    record is not a job at all."""
    if not isinstance(record, dict) or not all(isinstance(record.get(name), str) for name in _REQUIRED):
        return None
    if record.get("state", PENDING) not in (PENDING, RUNNING, SUCCESS, FAILURE):
        return None
    try:
        return Job(**{name: value for name, value in record.items() if name in _JOB_FIELDS})
    except TypeError:
        return None


def decode_jobs(text: str) -> tuple[list[Job], list[Any]] | None:
    """The jobs of a saved text (any version), and the records that are not jobs; None when the
    text cannot be read at all."""
    try:
        saved = json.loads(text) if text else []
    except ValueError:
        return None
    if isinstance(saved, dict) and isinstance(saved.get("Version"), int) and isinstance(saved.get("Jobs"), list):
        records = saved["Jobs"]
    elif isinstance(saved, list):  # version 1
        records = saved
    else:
        return None
    jobs, unreadable = [], []
    for record in records:
        job = job_of_record(record)
        if job is None:
            unreadable.append(record)
        else:
            jobs.append(job)
    return jobs, unreadable


class JobQueue:
    """The plugin's jobs: a priority queue served by `ConcurrentJobs` worker threads, persisted on
    each change (where jobs are saved)."""

    def __init__(self, runner: Runner, load: Callable[[], str], save: Callable[[str], None],
                 log_error: Callable[[str], None], settings: JobSettings = JobSettings(),
                 keep_aside: Callable[[str], None] = lambda text: None,
                 on_end: EndHook = lambda job, error: None, *,
                 orthanc_error: Callable[[PluginError], tuple[int, str]]) -> None:
        """`load`/`save` read and write the saved jobs; `keep_aside` keeps a saved text that
        cannot be read, out of the way of the next save, for a person to look at; `on_end` hears
        of each run's end before it is saved (a crash in between runs the job again, and it is
        heard of twice, never not at all); `orthanc_error` gives a failure's ErrorCode and
        description, decided where every error's answer is (the Orthanc-facing layer)."""
        self._runner = runner
        self._load = load
        self._save = save
        self._log_error = log_error
        self._settings = settings
        self._keep_aside = keep_aside
        self._on_end = on_end
        self._orthanc_error = orthanc_error
        self._jobs: dict[str, Job] = {}
        self._queue: list[tuple[int, int, str]] = []
        self._order = itertools.count()
        self._lock = threading.Condition()
        self._workers: list[threading.Thread] = []

    # --- submission and queries ---------------------------------------------------------
    def submit(self, level: str, resource_id: str, body: str, priority: int, content: dict[str, Any],
               user_data: dict[str, Any], user: str | None = None) -> Job:
        """Queue a job; `content` is what it shows until it succeeds, `user_data` its "UserData"."""
        job = Job(level, resource_id, body, priority, content=content, user_data=user_data, user=user)
        with self._lock:
            self._jobs[job.id] = job
            self._enqueue(job)
        self._persist()
        return job

    def get(self, job_id: str) -> Job | None:
        with self._lock:
            return self._jobs.get(job_id)

    def all(self) -> list[Job]:
        with self._lock:
            return sorted(self._jobs.values(), key=lambda j: j.creation_time)

    def cancel(self, job_id: str) -> None:
        with self._lock:
            job = self._jobs[job_id]
            ended = job.state == PENDING
            if ended:
                self._finish(job, FAILURE, CANCELED_JOB, "This job was canceled", "")
            elif job.state == RUNNING:
                job.cancel_requested = True
        if ended:
            self._report(job, JobCanceled())
        self._persist()

    def forget(self, job_id: str) -> None:
        with self._lock:
            self._jobs.pop(job_id, None)
        self._persist()

    def resubmit(self, job_id: str) -> None:
        with self._lock:
            job = self._jobs[job_id]
            if job.state == FAILURE:
                job.state, job.progress, job.cancel_requested = PENDING, 0, False
                job.error_code, job.error_description, job.error_details = 0, "Success", ""
                job.completion_time = None
                self._enqueue(job)
        self._persist()

    # --- restart ---------------------------------------------------------------------
    def restore(self) -> int:
        """Reload the jobs saved before a restart; run again those that had not finished. What
        cannot be read is logged and kept aside, never silently dropped nor overwritten."""
        if not self._settings.save:
            return 0
        text = self._load()
        decoded = decode_jobs(text)
        if decoded is None:
            self._set_aside(text, "the saved anonymization jobs cannot be read: none was restored")
            return 0
        jobs, unreadable = decoded
        if unreadable:
            self._set_aside(json.dumps(unreadable), f"{len(unreadable)} saved anonymization job(s) "
                                                    f"cannot be read and were not restored")
        resumed = 0
        with self._lock:
            for job in jobs:
                if job.id in self._jobs:
                    continue
                self._jobs[job.id] = job
                if job.state in (PENDING, RUNNING):
                    job.state, job.progress = PENDING, 0
                    self._enqueue(job)
                    resumed += 1
        return resumed

    def _set_aside(self, text: str, problem: str) -> None:
        try:
            self._keep_aside(text)
            self._log_error(f"{problem}; the unreadable record was kept aside")
        except Exception as error:  # the log line is then all that is left of it
            self._log_error(f"{problem}; keeping the record aside failed too ({type(error).__name__})")

    # --- internals ---------------------------------------------------------------------
    def _enqueue(self, job: Job) -> None:
        # Higher Priority first, as in Orthanc; first come, first served within a priority.
        heapq.heappush(self._queue, (-job.priority, next(self._order), job.id))
        self._workers = [worker for worker in self._workers if worker.is_alive()]
        if len(self._workers) < self._settings.concurrent:
            worker = threading.Thread(target=self._work, name="consistent-anon-jobs", daemon=True)
            self._workers.append(worker)
            worker.start()
        self._lock.notify()

    def _finish(self, job: Job, state: str, code: int, description: str, details: str) -> None:
        job.state, job.error_code, job.error_description, job.error_details = state, code, description, details
        job.completion_time = _now()
        if state == SUCCESS:
            job.progress = 100

    def _persist(self) -> None:
        """Forget the finished jobs beyond the history size (the oldest finished first, as
        native), then save the rest, where jobs are saved."""
        with self._lock:
            finished = [j for j in self._jobs.values() if j.state in (SUCCESS, FAILURE)]
            kept = self._settings.history_size
            for old in sorted(finished, key=lambda j: j.completion_time or "")[:len(finished) - kept]:
                del self._jobs[old.id]
            if not self._settings.save:
                return
            try:  # under the lock: saves never overtake one another
                self._save(encode_jobs(list(self._jobs.values())))
            except Exception as error:  # the job still runs; only its record after a restart is at risk
                self._log_error(f"could not save the anonymization jobs ({type(error).__name__})")

    def _work(self) -> None:
        while True:
            with self._lock:
                while not self._queue:
                    self._lock.wait()
                _, _, job_id = heapq.heappop(self._queue)
                job = self._jobs.get(job_id)
                if job is None or job.state != PENDING:
                    continue
                job.state = RUNNING
            self._persist()
            error, ending = self._run(job)
            unrecorded = self._report(job, error)  # before the state says it ended: seen done once recorded
            if unrecorded is not None:  # the result stays stored; the job says it went unrecorded
                ending = (FAILURE, *self._orthanc_error(unrecorded), unrecorded.message)
            self._finish(job, *ending)
            self._persist()

    def _report(self, job: Job, error: BaseException | None) -> PluginError | None:
        """Runs the end hook (the audit entry); answers its failure where the job succeeded (the
        job then ends as failed, saying so, as a synchronous call answers 500); logs the others."""
        try:
            self._on_end(job, error)
        except PluginError as failure:
            if error is None:
                return failure
            self._log_error(f"the end of an anonymization job could not be reported ({type(failure).__name__})")
        except Exception as failure:  # the job's own outcome stands; the hook's failure is logged
            self._log_error(f"the end of an anonymization job could not be reported ({type(failure).__name__})")
        return None

    def _run(self, job: Job) -> tuple[BaseException | None, Ending]:
        """Runs the job to its end; answers the error it ended with (None if it succeeded) and
        the state, code, description and details it ends with."""
        started = time.monotonic()

        def progress(done: int, total: int) -> None:
            job.progress = min(99, int(100 * done / total)) if total else 0
            job.runtime = time.monotonic() - started

        try:
            job.content = self._runner(job, progress, lambda: job.cancel_requested)
            return None, (SUCCESS, 0, "Success", "")
        except JobCanceled as error:
            return error, (FAILURE, CANCELED_JOB, "This job was canceled", "")
        except PluginError as error:
            return error, (FAILURE, *self._orthanc_error(error), error.message)
        except Exception as error:  # a bug: the job fails, the worker lives on
            self._log_error(f"anonymization job failed unexpectedly ({type(error).__name__})")
            return error, (FAILURE, -1, "Internal error", type(error).__name__)
        finally:
            job.runtime = time.monotonic() - started
