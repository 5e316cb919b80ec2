"""The /jobs routes: the plugin's own jobs in native's shape, every other job forwarded as is."""
from __future__ import annotations

import json
from typing import Any, Callable
from urllib.parse import urlencode

from .http_answers import json_text
from ..errors import BadRequest
from ..jobs.queue import FAILURE, SUCCESS, JobQueue
from .rest_routes import SEGMENT, register_route

#: The global property where the plugin's jobs are kept across restarts. Orthanc keeps it per
#: server (its own database with SQLite; per DatabaseServerIdentifier with a database plugin),
#: so each node keeps its own jobs, as it does with its native ones. (Global properties and
#: metadata are numbered apart: the series metadata 9732 of config.DEFAULT_OPTIONS_METADATA is
#: another thing; neither number can change without losing what is stored under it.)
JOBS_PROPERTY = 9732
#: Where a saved-jobs record that cannot be read is kept (the last one), out of the next save's way.
JOBS_ASIDE_PROPERTY = 9734


class JobRoutes:
    def __init__(self, orthanc: Any, queue: JobQueue, call_native: Callable) -> None:
        self._orthanc = orthanc
        self._queue = queue
        self._native = call_native  # RestPort.call: built-in API errors become native's statuses

    def register(self, guarded: Callable[[Callable], Callable]) -> None:
        register_route(self._orthanc, "/jobs", ("GET",), guarded(self.list_jobs))
        register_route(self._orthanc, f"/jobs/{SEGMENT}", ("GET", "DELETE"), guarded(self.one_job))
        register_route(self._orthanc, f"/jobs/{SEGMENT}/(cancel|pause|resume|resubmit)", ("POST",),
                       guarded(self.action))

    def _answer_json(self, output: Any, value: Any) -> None:
        output.AnswerBuffer(json_text(value), "application/json")

    def _query(self, request: dict[str, Any]) -> str:
        args = request.get("get") or {}
        return "?" + urlencode(args) if args else ""

    def list_jobs(self, output: Any, uri: str, **request: Any) -> None:
        native = json.loads(self._native(self._orthanc.RestApiGet, "/jobs" + self._query(request)))
        expand = "expand" in (request.get("get") or {})
        ours = [job.describe() if expand else job.id for job in self._queue.all()]
        self._answer_json(output, native + ours)

    def one_job(self, output: Any, uri: str, **request: Any) -> None:
        job_id = request["groups"][0]
        job = self._queue.get(job_id)
        method = request["method"]
        if job is None:  # a native job, or none at all: native answers
            if method == "GET":
                self._answer_json(output, json.loads(self._native(self._orthanc.RestApiGet, uri + self._query(request))))
            else:  # DELETE
                self._native(self._orthanc.RestApiDelete, uri)
                output.AnswerBuffer("", "text/plain")
            return
        if method == "GET":
            self._answer_json(output, job.describe())
        else:  # DELETE
            if job.state not in (SUCCESS, FAILURE):
                raise BadRequest("Only a finished job can be deleted; cancel it first")
            self._queue.forget(job_id)
            output.AnswerBuffer("", "text/plain")

    def action(self, output: Any, uri: str, **request: Any) -> None:
        job_id, verb = request["groups"]
        job = self._queue.get(job_id)
        if job is None:
            self._answer_json(output, json.loads(self._native(self._orthanc.RestApiPost, uri, request.get("body") or b"{}")))
            return
        if verb == "cancel":
            self._queue.cancel(job_id)
        elif verb == "resubmit":
            self._queue.resubmit(job_id)
        elif job.state not in (SUCCESS, FAILURE):  # pause, resume
            raise BadRequest(f"Anonymization jobs of the consistent anonymization plugin cannot {verb}: "
                             f"cancel the job, then resubmit it")
        self._answer_json(output, {})
