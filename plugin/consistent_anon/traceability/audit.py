"""Every anonymization request through the plugin, to exactly one entry of the audit log.

The adapter runs a request's work inside `AuditTrail.call` and sends the answer after it: the
entry (audit_log.py) is on disk before the caller hears anything, whether the request succeeded,
was refused or failed. A request that becomes a job writes nothing when it is queued: the job
writes its entry when it ends, with its ID and its real outcome (`job_ended`); a job a stop
interrupted runs again after the restart and writes it then.

What an entry says comes from fixed vocabularies (routes, levels, outcomes and reasons by error
class) and from checked shapes (Orthanc IDs, names): an ID asked for that is not an Orthanc ID's
shape is left out, never logged. The project is the name the configuration declares, whatever
characters it holds. An entry counts the resources a request named and the results it made, and
names a bounded sample of each (audit_log.SAMPLE_SIZE).
"""
from __future__ import annotations

import base64
import binascii
from contextlib import contextmanager
import json
from dataclasses import dataclass
from itertools import islice
from typing import Any, Callable, Iterator

from .audit_log import (LEVELS, PIXEL_STATUSES, ROUTES, SAMPLE_SIZE, AuditEntry, AuditLog, is_count, is_name,
                        is_orthanc_id, is_project_name)
from ..errors import BadRequest, PartlyKept, PluginError
from ..orthanc_ids import ARRIVAL, BULK
from ..jobs.queue import Job
from ..identity.keys import KeyStore
from ..pipeline.options import AnonymizeRequest, parse_request

#: The answers of GET /tools/anonymization-log hold at most this many entries,
MAX_LIMIT = 10000
DEFAULT_LIMIT = 100
#: and at most this many bytes in all: a page of MAX_LIMIT ordinary entries (about 750 bytes each
#: as the route writes them) fits; of the largest (bulk calls naming SAMPLE_SIZE IDs), about 140.
MAX_ANSWER_BYTES = 8 * 1024 * 1024
#: The route writes its answers indented by three spaces, as native does (answers.json_text).
_INDENT = 3
#: How the plugin names itself and its action in Orthanc's audit-log channel (1.12.9+).
SOURCE_PLUGIN = "consistent-anonymization"
ACTION = "anonymize"

#: Outcome and reason by the name of an error's class (the first of its classes found here):
#: names, not classes, so that errors raised anywhere (errors.py, the adapter, keys.py) map alike.
_BY_CLASS = {
    "JobCanceled": ("Canceled", "CanceledByUser"),
    "BadRequest": ("Refused", "BadRequest"),  # BadFileFormat too
    "NotFound": ("Refused", "UnknownResource"),
    "Conflict": ("Refused", "Conflict"),
    "Forbidden": ("Refused", "Forbidden"),
    "SubjectRequired": ("Refused", "Forbidden"),
    "BurnedInPixels": ("Refused", "BurnedInAnnotation"),
    "VerificationFailed": ("Failed", "VerificationFailed"),
    "KeyMismatch": ("Failed", "KeyMismatch"),
    "Refused": ("Refused", "BadRequest"),  # another 4xx Orthanc answered a built-in call with
}


def outcome_of(error: BaseException | None) -> tuple[str, str]:
    """The outcome and reason code of a request that ended with `error` (None: it succeeded)."""
    if error is None:
        return "Success", "Completed"
    if isinstance(error, PartlyKept):  # failed, yet some results stay: never "Refused"
        return "Failed", "PartlyKept"
    cause = getattr(error, "cause", None)  # StoredButUnfinished: the step after storing that failed
    if cause is not None:
        return "Failed", "OrthancError" if getattr(cause, "orthanc_code", None) is not None else "InternalError"
    for name in (cls.__name__ for cls in type(error).__mro__):
        if name in _BY_CLASS:
            return _BY_CLASS[name]
    return "Failed", "OrthancError" if getattr(error, "orthanc_code", None) is not None else "InternalError"


def basic_user(headers: dict[str, str] | None) -> str | None:
    """The user name of an HTTP Basic Authorization header (never its password); None without one,
    or when the name is not a short printable name an entry may hold."""
    scheme, _, credentials = (headers or {}).get("authorization", "").strip().partition(" ")
    if scheme.lower() != "basic":
        return None
    try:
        name = base64.b64decode(credentials.strip(), validate=True).decode("utf-8").partition(":")[0]
    except (binascii.Error, ValueError):
        return None
    return name if is_name(name) else None


@dataclass(frozen=True)
class RequestFacts:
    """What the entry tells of a request's body: its project, the mark of its options, and (bulk)
    the resources it names. Empty when the body cannot be read."""

    project: str | None = None
    options_mark: str | None = None
    resources: tuple[str, ...] = ()


@dataclass
class Call:
    """One request while it runs: the adapter tells how it ended (`succeeded`, `queued`)."""

    level: str
    resource_id: str
    body: Any
    user: str | None
    answer: dict[str, Any] | None = None
    job: str | None = None
    queued_as_job: bool = False
    request: AnonymizeRequest | None = None  # the body as the route parsed it, once known
    sources: tuple[str, ...] = ()  # the sources of a gateway's call (ARRIVAL), which names no resource

    def parsed(self, request: AnonymizeRequest) -> None:
        """The route's parsed request: the entry takes its project and options from it rather
        than parsing the body again."""
        self.request = request

    def succeeded(self, answer: dict[str, Any]) -> None:
        """`answer`: native's answer of the call (for the instance route, {"InstancesCount": 1})."""
        self.answer = answer

    def queued(self) -> None:
        """The request became a job: its entry is written when the job ends."""
        self.queued_as_job = True


class AuditTrail:
    """Writes the entries; `facts` reads a body (it never raises), `emit` also sends each entry to
    Orthanc's audit-log channel where there is one."""

    def __init__(self, log: AuditLog, facts: Callable[[Any, bool, AnonymizeRequest | None], RequestFacts],
                 log_error: Callable[[str], None], emit: Callable[[AuditEntry], None] | None = None) -> None:
        self.log = log
        self._facts = facts
        self._log_error = log_error
        self._emit = emit

    @contextmanager
    def call(self, level: str, resource_id: str, body: Any, user: str | None,
             sources: tuple[str, ...] = ()) -> Iterator[Call]:
        """Around a request's work: the entry is written when it ends, before its answer. If the
        entry cannot be written, the request fails (500): an answered call is always logged.
        `sources`: the instances of a gateway's call (ARRIVAL)."""
        call = Call(level, resource_id, body, user, sources=sources)
        try:
            yield call
        except Exception as error:
            self._write(call, error)
            raise
        if not call.queued_as_job:
            self._write(call, None)

    def job_ended(self, job: Job, error: BaseException | None) -> None:
        """A job's entry, at the end of its run (JobQueue's end hook)."""
        self._write(Call(job.level, job.resource_id, job.body, job.user, job.content if error is None else None,
                         job.id), error)

    def _write(self, call: Call, error: BaseException | None) -> None:
        entry = self.entry(call, error)
        try:
            self.log.append(entry)
        except OSError as failure:
            why = failure.strerror or type(failure).__name__
            self._log_error(f"The anonymization audit log cannot be written ({why})")
            if error is None:  # the work is done; its caller hears that it went unlogged
                raise PluginError("The anonymization was done, but its entry could not be written to the audit "
                                  "log (see Orthanc's log)") from None
            return
        if self._emit is not None:
            try:
                self._emit(entry)
            except Exception as failure:  # the file holds the entry; the channel is a copy
                self._log_error(f"An audit entry could not be emitted to Orthanc's audit logs "
                                f"({type(failure).__name__})")

    def entry(self, call: Call, error: BaseException | None) -> AuditEntry:
        outcome, reason = outcome_of(error)
        # the options' mark needs the project's key: not looked up for refused requests
        facts = self._facts(call.body, outcome != "Refused", call.request)
        sources = facts.resources if call.level == BULK else (call.sources or (call.resource_id,))
        results, result_count, instances, failed = _results(call.level, call.answer)
        if isinstance(error, PartlyKept):  # what stays of a failed call
            results = tuple(s for s in error.series if is_orthanc_id(s))[:SAMPLE_SIZE]
            result_count, instances = len(error.series), error.instances
        return AuditEntry(route=ROUTES[call.level], level=LEVELS[call.level], outcome=outcome, reason=reason,
                          sources=_sample(sources), source_count=len(sources), results=results,
                          result_count=result_count, user=call.user,
                          project=facts.project if is_project_name(facts.project) else None,
                          options_mark=facts.options_mark, instances=instances, failed_instances=failed,
                          job=call.job, pixel_status=_pixel_status(call.answer))


def request_facts(keys: KeyStore, body: Any, with_mark: bool, parsed: AnonymizeRequest | None = None) -> RequestFacts:
    """The project, options' mark and (bulk) resources of a request body, for its audit entry;
    the mark only if asked (it needs the project's key), and only what can be known. `parsed`:
    the body as the route parsed it under its project, if it got that far (else it is parsed here)."""
    try:
        request = parse_request(body) if parsed is None else parsed
        resources = tuple(request.resources) if isinstance(request.resources, list) else ()
        project = keys.project_name(request.project)
    except PluginError:
        return RequestFacts()
    mark = None
    if with_mark and not keys.fresh_per_call:
        try:
            if parsed is None:
                request = request.for_project(keys.settings(project))
            mark = keys.pseudonymizer(project).options_fingerprint(request.output_options)
        except Exception:  # the key cannot be had (changed, unreadable): the entry goes without a mark
            pass
    return RequestFacts(project, mark, resources)


def _sample(values: Any) -> tuple[str, ...]:
    """The first SAMPLE_SIZE of these values that have an Orthanc ID's shape (the rest unread)."""
    return tuple(islice((value for value in values if is_orthanc_id(value)), SAMPLE_SIZE))


def _results(level: str, answer: dict[str, Any] | None) -> tuple[tuple[str, ...], int, int, int]:
    """The results an answer names (the anonymized resource; for bulk calls, every anonymized
    series): a sample and their count; and its instance counts."""
    if answer is None:
        return (), 0, 0, 0
    if level in (BULK, ARRIVAL):
        results = [r.get("ID") for r in answer.get("Resources", []) if r.get("Type") == "Series"]
    else:
        results = [answer.get("ID")]
    return (_sample(results), sum(1 for r in results if is_orthanc_id(r)), _count(answer, "InstancesCount"),
            _count(answer, "FailedInstancesCount"))


def _count(answer: dict[str, Any], name: str) -> int:
    """A count of the answer, 0 where it holds none."""
    value = answer.get(name)
    return value if is_count(value) else 0


def _pixel_status(answer: dict[str, Any] | None) -> dict[str, int]:
    """The answer's "PixelStatusCounts" (engine.with_pixel_status), what of it is well formed."""
    counts = (answer or {}).get("PixelStatusCounts")
    if not isinstance(counts, dict):
        return {}
    return {status: n for status, n in counts.items() if status in PIXEL_STATUSES and is_count(n) and n}


def page(log: AuditLog, args: dict[str, str]) -> dict[str, Any]:
    """GET /tools/anonymization-log?since=&limit=: the entries numbered after `since` (default 0),
    at most `limit` (default 100) and as many as fit in MAX_ANSWER_BYTES; `Last` is the number to
    pass as `since` next, `More` whether more entries follow (fewer than `limit` with `More`:
    the answer was full)."""
    since = _argument(args, "since", 0, 0, None)
    limit = _argument(args, "limit", DEFAULT_LIMIT, 1, MAX_LIMIT)
    # the file's lines are no longer than the route's text of them: this reads all that can fit
    entries = log.read(since, limit + 1, MAX_ANSWER_BYTES)
    shown: list[dict[str, Any]] = []
    room = MAX_ANSWER_BYTES - _answer_size({"Entries": [], "Last": 2 ** 63, "More": False}, 0) - 8
    for entry in entries[:limit]:
        value = json.loads(entry.to_json())  # as the file holds it
        room -= _answer_size(value, 2) + 2  # at depth two, and the separator before the next
        if room < 0 and shown:  # one at least: an entry is far smaller than an answer
            break
        shown.append(value)
    return {"Entries": shown, "Last": shown[-1]["sequence"] if shown else since, "More": len(entries) > len(shown)}


def _answer_size(value: Any, depth: int) -> int:
    """How many bytes `value` takes in the route's answer, written at this depth."""
    text = json.dumps(value, indent=_INDENT)
    return len(text) + depth * _INDENT * (text.count("\n") + 1)


def _argument(args: dict[str, str], name: str, default: int, low: int, high: int | None) -> int:
    text = args.get(name)
    if text is None:
        return default
    value = int(text) if text.isascii() and text.isdigit() else -1
    if value < low or (high is not None and value > high):
        bounds = f"from {low} to {high}" if high is not None else f"at least {low}"
        raise BadRequest(f'Argument "{name}" must be an integer {bounds}')
    return value


def orthanc_emitter(orthanc: Any) -> Callable[[AuditEntry], None] | None:
    """Each entry also sent to Orthanc's audit-log channel (Orthanc 1.12.9+ with an orthanc-python
    that wraps OrthancPluginEmitAuditLog, 6.0 and later): whatever plugin handles audit logs (the
    authorization plugin, which Orthanc Explorer 2's audit page reads) records it. None where
    this Orthanc or orthanc-python has no such call."""
    emit = getattr(orthanc, "EmitAuditLog", None)
    kinds = getattr(orthanc, "ResourceType", None)
    if emit is None or kinds is None:
        return None
    by_level = {"Patient": kinds.PATIENT, "Study": kinds.STUDY, "Series": kinds.SERIES, "Instance": kinds.INSTANCE}

    def send(entry: AuditEntry) -> None:
        single = entry.sources[0] if len(entry.sources) == 1 and entry.level in by_level else ""
        emit(SOURCE_PLUGIN, entry.user or "", by_level.get(entry.level, kinds.NONE) if single else kinds.NONE,
             single, ACTION, entry.to_json().encode("ascii"))
    return send
