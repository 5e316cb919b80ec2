"""Asynchronous anonymizations shown as Orthanc jobs.

A Python plugin cannot create a job in Orthanc's own engine, so the plugin runs its own queue
and answers `/jobs/{id}` for its jobs in native's shape (`Type: "ResourceModification"`). Jobs
are written to Orthanc's database at each change of state: after a restart, a job that had not
finished is run again from the start, which gives exactly the result of an uninterrupted run
because anonymization is idempotent (a re-stored instance is recognized, not duplicated).
"""
from __future__ import annotations

import heapq
import itertools
import json
import threading
import time
import uuid
from dataclasses import asdict, dataclass, field
from datetime import datetime
from typing import Any, Callable

from .errors import JobCanceled, PluginError

PENDING, RUNNING, SUCCESS, FAILURE = "Pending", "Running", "Success", "Failure"
CANCELED_JOB = 37  # Orthanc's ErrorCode_CanceledJob
HISTORY_SIZE = 100



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


class JobQueue:
    """The plugin's jobs: a priority queue served by one worker thread, persisted on each change."""

    def __init__(self, runner: Runner, load: Callable[[], str], save: Callable[[str], None],
                 log_error: Callable[[str], None]) -> None:
        self._runner = runner
        self._load = load
        self._save = save
        self._log_error = log_error
        self._jobs: dict[str, Job] = {}
        self._queue: list[tuple[int, int, str]] = []
        self._order = itertools.count()
        self._lock = threading.Condition()
        self._worker: threading.Thread | None = None

    # --- submission and queries ---------------------------------------------------------
    def submit(self, level: str, resource_id: str, body: str, priority: int, content: dict[str, Any],
               user_data: dict[str, Any]) -> Job:
        """Queue a job; `content` is what it shows until it succeeds, `user_data` its "UserData"."""
        job = Job(level, resource_id, body, priority, content=content, user_data=user_data)
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
            if job.state == PENDING:
                self._finish(job, FAILURE, CANCELED_JOB, "This job was canceled", "")
            elif job.state == RUNNING:
                job.cancel_requested = True
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
        """Reload the jobs saved before a restart; run again those that had not finished."""
        try:
            saved = json.loads(self._load() or "[]")
        except ValueError:
            saved = []
        if not isinstance(saved, list):
            saved = []
        resumed = 0
        with self._lock:
            for record in saved:
                job = Job(**record)
                if job.id in self._jobs:
                    continue
                self._jobs[job.id] = job
                if job.state in (PENDING, RUNNING):
                    job.state, job.progress = PENDING, 0
                    self._enqueue(job)
                    resumed += 1
        return resumed

    # --- internals ---------------------------------------------------------------------
    def _enqueue(self, job: Job) -> None:
        # Higher Priority first, as in Orthanc; first come, first served within a priority.
        heapq.heappush(self._queue, (-job.priority, next(self._order), job.id))
        if self._worker is None or not self._worker.is_alive():
            self._worker = threading.Thread(target=self._work, name="consistent-anon-jobs", daemon=True)
            self._worker.start()
        self._lock.notify()

    def _finish(self, job: Job, state: str, code: int, description: str, details: str) -> None:
        job.state, job.error_code, job.error_description, job.error_details = state, code, description, details
        job.completion_time = _now()
        if state == SUCCESS:
            job.progress = 100

    def _persist(self) -> None:
        with self._lock:
            finished = [j for j in self._jobs.values() if j.state in (SUCCESS, FAILURE)]
            for old in sorted(finished, key=lambda j: j.creation_time)[:-HISTORY_SIZE]:
                del self._jobs[old.id]
            records = [asdict(j) for j in self._jobs.values()]
            try:  # under the lock: saves never overtake one another
                self._save(json.dumps(records))
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
            self._run(job)
            self._persist()

    def _run(self, job: Job) -> None:
        started = time.monotonic()

        def progress(done: int, total: int) -> None:
            job.progress = min(99, int(100 * done / total)) if total else 0
            job.runtime = time.monotonic() - started

        try:
            content = self._runner(job, progress, lambda: job.cancel_requested)
        except JobCanceled:
            self._finish(job, FAILURE, CANCELED_JOB, "This job was canceled", "")
        except PluginError as error:
            self._finish(job, FAILURE, error.orthanc_code, error.description, error.message)
        except Exception as error:  # a bug: the job fails, the worker lives on
            self._finish(job, FAILURE, -1, "Internal error", type(error).__name__)
            self._log_error(f"anonymization job failed unexpectedly ({type(error).__name__})")
        else:
            job.content = content
            self._finish(job, SUCCESS, 0, "Success", "")
        job.runtime = time.monotonic() - started
