"""From requests to audit entries (audit.py) without Orthanc: the outcome of each error class, the
user of an Authorization header, one entry per request whatever its end, jobs' entries at their
end, the log route's arguments."""
from __future__ import annotations

import base64
import json
import threading
from dataclasses import replace

import pytest

from consistent_anon.traceability import audit
from consistent_anon.traceability import audit_log
from consistent_anon.orthanc import http_answers
from consistent_anon.orthanc.http_answers import json_text, native_error
from consistent_anon.traceability.audit import AuditTrail, RequestFacts, basic_user, outcome_of, page
from consistent_anon.traceability.audit_log import AuditEntry, FileAuditLog
from consistent_anon.identity.config import ConfigurationError, parse_config
from consistent_anon.errors import (BadFileFormat, BadRequest, Conflict, Forbidden, JobCanceled, NotFound, PluginError,
                                    StoredButUnfinished, SubjectRequired, VerificationFailed)
from consistent_anon.jobs.queue import JobQueue, JobSettings
from consistent_anon.identity.keys import KeyMismatch
from consistent_anon.orthanc_ids import resource_id

SOURCE = resource_id("PID-7734-SYNTH", "1.2.3.4")
RESULT = resource_id("PSEUDO-1", "2.25.99")


@pytest.mark.parametrize("error, expected", [
    (None, ("Success", "Completed")),
    (BadRequest("x"), ("Refused", "BadRequest")),
    (BadFileFormat("x"), ("Refused", "BadRequest")),
    (NotFound("x"), ("Refused", "UnknownResource")),
    (Conflict("x"), ("Refused", "Conflict")),
    (Forbidden("x"), ("Refused", "Forbidden")),
    (SubjectRequired("x"), ("Refused", "Forbidden")),
    (VerificationFailed("x"), ("Failed", "VerificationFailed")),
    (KeyMismatch("x"), ("Failed", "KeyMismatch")),
    (JobCanceled(), ("Canceled", "CanceledByUser")),
    (native_error(17, "x"), ("Refused", "UnknownResource")),
    (native_error(8, "x"), ("Refused", "BadRequest")),
    (native_error(2, "x"), ("Failed", "OrthancError")),  # NotImplemented: a 500
    (StoredButUnfinished(native_error(17, "x")), ("Failed", "OrthancError")),
    (StoredButUnfinished(PluginError("x")), ("Failed", "InternalError")),
    (PluginError("x"), ("Failed", "InternalError")),
    (KeyError("x"), ("Failed", "InternalError")),
])
def test_each_error_class_has_its_outcome(error, expected):
    assert outcome_of(error) == expected


def _basic(credentials: bytes) -> dict[str, str]:
    return {"authorization": "Basic " + base64.b64encode(credentials).decode()}


@pytest.mark.parametrize("headers, user", [
    (_basic(b"alice:secret"), "alice"),
    (_basic(b"alice:pass:with:colons"), "alice"),
    ({"authorization": "basic " + base64.b64encode(b"bob:x").decode()}, "bob"),
    (_basic("J\u00f6rg:x".encode()), "J\u00f6rg"),
    (_basic(b"Doe^Jane:x"), None),       # not a name an entry may hold
    (_basic(b"\xff\xfe:x"), None),
    ({"authorization": "Basic not base64!"}, None),
    ({"authorization": "Bearer abc.def"}, None),
    ({}, None),
    (None, None),
])
def test_the_user_is_the_basic_name_never_the_password(headers, user):
    assert basic_user(headers) == user


class Recorded:
    """A log in memory."""

    def __init__(self, fails: bool = False) -> None:
        self.entries = []
        self.fails = fails

    def append(self, entry):
        if self.fails:
            raise OSError(28, "No space left on device")
        self.entries.append(entry)
        return len(self.entries)

    def read(self, since=0, limit=100):
        return [e for e in self.entries if e.sequence is None or e.sequence > since][:limit]


def _trail(log, facts=RequestFacts("trial-7", "0123456789abcdef", ()), emitted=None, errors=None):
    def read_facts(body, with_mark, parsed=None):
        return facts if with_mark else RequestFacts(facts.project, None, facts.resources)
    return AuditTrail(log, read_facts, (errors if errors is not None else []).append,
                      emitted.append if emitted is not None else None)


def test_a_successful_call_writes_one_entry_before_leaving():
    log, emitted = Recorded(), []
    with _trail(log, emitted=emitted).call("studies", SOURCE, b"{}", "alice") as call:
        call.succeeded({"ID": RESULT, "InstancesCount": 3, "FailedInstancesCount": 0})
        assert log.entries == []
    [entry] = log.entries
    assert (entry.route, entry.level, entry.outcome, entry.reason) == (
        "/studies/{id}/anonymize", "Study", "Success", "Completed")
    assert (entry.sources, entry.results, entry.instances, entry.user) == ((SOURCE,), (RESULT,), 3, "alice")
    assert (entry.project, entry.options_mark, entry.job) == ("trial-7", "0123456789abcdef", None)
    assert emitted == [entry]


def test_a_refused_call_writes_its_entry_and_the_error_goes_on():
    log = Recorded()
    with pytest.raises(NotFound):
        with _trail(log).call("series", "PID-7734-SYNTH", b"{}", None):  # an ID asked for that is no ID
            raise NotFound("Unknown resource")
    [entry] = log.entries
    assert (entry.outcome, entry.reason, entry.sources, entry.options_mark) == (
        "Refused", "UnknownResource", (), None)


def test_a_call_queued_as_a_job_writes_nothing_until_the_job_ends():
    log = Recorded()
    with _trail(log).call("studies", SOURCE, b"{}", "alice") as call:
        call.queued()
    assert log.entries == []


def test_bulk_entries_name_the_requested_resources_and_the_result_series():
    log = Recorded()
    facts = RequestFacts("default", None, (SOURCE, "1.2.840.1234", RESULT))
    answer = {"InstancesCount": 2, "Resources": [{"ID": RESULT, "Type": "Instance"}, {"ID": SOURCE, "Type": "Series"}]}
    with _trail(log, facts).call("bulk", "", b"{}", None) as call:
        call.succeeded(answer)
    [entry] = log.entries
    assert (entry.route, entry.level, entry.sources, entry.results) == (
        "/tools/bulk-anonymize", "Bulk", (SOURCE, RESULT), (SOURCE,))


def test_a_done_call_whose_entry_cannot_be_written_fails_and_says_so():
    errors = []
    with pytest.raises(PluginError, match="audit log"):
        with _trail(Recorded(fails=True), errors=errors).call("studies", SOURCE, b"{}", None) as call:
            call.succeeded({"ID": RESULT})
    assert errors and "No space left" in errors[0]


def test_a_failed_call_whose_entry_cannot_be_written_keeps_its_own_error():
    with pytest.raises(VerificationFailed):
        with _trail(Recorded(fails=True)).call("studies", SOURCE, b"{}", None):
            raise VerificationFailed("x")


def test_a_failing_channel_loses_nothing_from_the_file():
    log, errors = Recorded(), []

    def broken(entry):
        raise RuntimeError("channel down")
    trail = AuditTrail(log, lambda body, mark, parsed: RequestFacts(), errors.append, broken)
    with trail.call("instances", SOURCE, b"{}", None) as call:
        call.succeeded({"InstancesCount": 1})
    assert len(log.entries) == 1 and "emitted" in errors[0]


def _queue(trail: AuditTrail, runner) -> JobQueue:
    return JobQueue(runner, lambda: "", lambda text: None, lambda message: None, JobSettings(save=False, concurrent=1),
                    on_end=trail.job_ended, orthanc_error=http_answers.orthanc_error)


def _wait(queue: JobQueue, job_id: str) -> None:
    for _ in range(500):
        if queue.get(job_id).state in ("Success", "Failure"):
            return
        threading.Event().wait(0.01)
    raise AssertionError("the job did not end")


def test_jobs_write_their_entry_when_they_end_with_their_id_and_outcome():
    log = Recorded()
    trail = _trail(log)
    release = threading.Event()

    def runner(job, progress, canceled):
        release.wait(10)
        if job.level == "series":
            raise VerificationFailed("x")
        return {"ID": RESULT, "InstancesCount": 4}
    queue = _queue(trail, runner)
    done = queue.submit("studies", SOURCE, "{}", 0, {}, {}, "alice")
    failed = queue.submit("series", SOURCE, "{}", 0, {}, {}, None)
    canceled = queue.submit("patients", SOURCE, "{}", 0, {}, {}, "bob")
    queue.cancel(canceled.id)  # still pending: the one worker waits in the first job
    release.set()
    _wait(queue, done.id)
    _wait(queue, failed.id)
    by_job = {entry.job: entry for entry in log.entries}
    assert len(log.entries) == 3
    assert (by_job[done.id].outcome, by_job[done.id].results, by_job[done.id].user) == ("Success", (RESULT,), "alice")
    assert (by_job[failed.id].outcome, by_job[failed.id].reason, by_job[failed.id].results) == (
        "Failed", "VerificationFailed", ())
    assert (by_job[canceled.id].outcome, by_job[canceled.id].user) == ("Canceled", "bob")


def test_a_running_job_canceled_ends_as_canceled():
    log = Recorded()
    started = threading.Event()

    def runner(job, progress, canceled):
        started.set()
        while not canceled():
            threading.Event().wait(0.01)
        raise JobCanceled()
    queue = _queue(_trail(log), runner)
    job = queue.submit("studies", SOURCE, "{}", 0, {}, {})
    started.wait(10)
    queue.cancel(job.id)
    _wait(queue, job.id)
    assert [(e.outcome, e.reason, e.job) for e in log.entries] == [("Canceled", "CanceledByUser", job.id)]


@pytest.mark.parametrize("args", [{"since": "-1"}, {"since": "x"}, {"since": ""}, {"limit": "0"},
                                  {"limit": str(audit.MAX_LIMIT + 1)}, {"limit": "1.5"}, {"since": "\u0661"}])
def test_bad_log_arguments_are_refused(args, tmp_path):
    with pytest.raises(BadRequest):
        page(FileAuditLog(tmp_path / "log"), args)


def test_the_log_pages_by_since_and_limit(tmp_path):
    log = FileAuditLog(tmp_path / "log")
    trail = _trail(log)
    for _ in range(5):
        with trail.call("instances", SOURCE, b"{}", None) as call:
            call.succeeded({"InstancesCount": 1})
    first = page(log, {"limit": "2"})
    assert [e["sequence"] for e in first["Entries"]] == [1, 2] and first["Last"] == 2 and first["More"]
    rest = page(log, {"since": str(first["Last"])})
    assert [e["sequence"] for e in rest["Entries"]] == [3, 4, 5] and rest["Last"] == 5 and not rest["More"]
    assert page(log, {"since": "5"}) == {"Entries": [], "Last": 5, "More": False}
    assert rest["Entries"][0]["sources"] == [SOURCE]


@pytest.mark.parametrize("section", [{"AuditLogRetentionDays": 0}, {"AuditLogRetentionDays": "365"},
                                     {"AuditLogMaxEntries": -5}, {"AuditLogMaxEntries": True},
                                     {"AuditLogFile": ""}, {"AuditLogFile": 7}])
def test_audit_options_are_checked(section):
    with pytest.raises(ConfigurationError, match=next(iter(section))):
        parse_config({"ConsistentAnonymization": section})


def test_audit_options_default_to_a_year_and_a_million_entries_in_the_storage_folder(tmp_path):
    config = parse_config({})
    assert (config.audit_log_file, config.audit_retention_days, config.audit_max_entries) == (None, 365, 1_000_000)
    elsewhere = str(tmp_path / "orthanc" / "anon.jsonl")  # a folder still to be made: checked at start, not made
    unlimited = parse_config({"ConsistentAnonymization": {"AuditLogRetentionDays": None, "AuditLogMaxEntries": None,
                                                          "AuditLogFile": elsewhere}})
    assert (unlimited.audit_log_file, unlimited.audit_retention_days, unlimited.audit_max_entries) == (
        elsewhere, None, None)


def test_the_log_stays_readable_by_its_owner_only_after_a_compaction(tmp_path):
    log = FileAuditLog(tmp_path / "log")
    trail = _trail(log)
    with trail.call("instances", SOURCE, b"{}", None) as call:
        call.succeeded({"InstancesCount": 1})
    assert (tmp_path / "log").stat().st_mode & 0o777 == 0o600
    log.compact()
    assert (tmp_path / "log").stat().st_mode & 0o777 == 0o600


class FakeOrthanc:
    """The part of the `orthanc` module the channel uses, recording each emitted audit log."""

    class ResourceType:
        PATIENT, STUDY, SERIES, INSTANCE, NONE = 0, 1, 2, 3, 4

    def __init__(self) -> None:
        self.emitted = []

    def EmitAuditLog(self, *args):  # noqa: N802  (the SDK's name)
        self.emitted.append(args)


def test_each_entry_goes_to_orthancs_channel_as_the_sdk_takes_it():
    orthanc = FakeOrthanc()
    log = Recorded()
    trail = AuditTrail(log, lambda body, mark, parsed: RequestFacts("default", None, (SOURCE, RESULT)), [].append,
                       audit.orthanc_emitter(orthanc))
    with trail.call("series", SOURCE, b"{}", "alice") as call:
        call.succeeded({"ID": RESULT, "InstancesCount": 2})
    with trail.call("bulk", "", b"{}", None) as call:
        call.succeeded({"Resources": []})
    series, bulk = orthanc.emitted
    assert series[:5] == ("consistent-anonymization", "alice", FakeOrthanc.ResourceType.SERIES, SOURCE, "anonymize")
    assert json.loads(series[5]) == json.loads(log.entries[0].to_json())
    assert bulk[:5] == ("consistent-anonymization", "", FakeOrthanc.ResourceType.NONE, "", "anonymize")


def test_without_the_sdk_call_there_is_no_channel():
    assert audit.orthanc_emitter(object()) is None


def test_a_job_is_seen_to_succeed_only_once_its_entry_is_written():
    """Its entry is written while the job still runs; a success that could not be written ends
    the job as a failure that says so (the result stays stored), as a synchronous call answers 500."""
    seen_when_written = []

    class Watched(Recorded):
        def append(self, entry):
            seen_when_written.append(queue.get(entry.job).state)
            return super().append(entry)
    queue = _queue(_trail(Watched()), lambda job, progress, canceled: {"ID": RESULT, "InstancesCount": 4})
    job = queue.submit("studies", SOURCE, "{}", 0, {}, {})
    _wait(queue, job.id)
    assert seen_when_written == ["Running"] and queue.get(job.id).state == "Success"

    unwritable = _queue(_trail(Recorded(fails=True)), lambda job, progress, canceled: {"ID": RESULT})
    job = unwritable.submit("studies", SOURCE, "{}", 0, {}, {})
    _wait(unwritable, job.id)
    ended = unwritable.get(job.id)
    assert ended.state == "Failure" and "audit log" in ended.error_details


def test_a_bulk_entry_counts_every_named_resource_and_names_a_bounded_sample():
    """100,000 IDs named (and a few that are no ID): one short entry that says how many."""
    log = Recorded()
    base = resource_id("bulk")
    named = ("PID-7734-SYNTH",) + tuple(f"{n:08x}{base[8:]}" for n in range(100_000))
    series = [{"ID": f"{n:08x}{base[8:]}", "Type": "Series"} for n in range(2_000)]
    with _trail(log, RequestFacts("default", None, named)).call("bulk", "", b"{}", None) as call:
        call.succeeded({"Resources": series, "InstancesCount": 2_000})
    [entry] = log.entries
    assert (entry.source_count, entry.result_count) == (100_001, 2_000)
    assert entry.sources == named[1:audit_log.SAMPLE_SIZE + 1]  # the first IDs, the PatientID left out
    assert entry.results == tuple(s["ID"] for s in series[:audit_log.SAMPLE_SIZE])
    assert len(entry.to_json()) + 1 <= audit_log.MAX_ENTRY_BYTES


@pytest.mark.parametrize("project", ["trial#7", "T7 (site A)", "\u00e9tude-\u03a9 \U0001F9EA"])
def test_the_project_is_kept_as_declared(project):
    log = Recorded()
    with _trail(log, RequestFacts(project, None, ())).call("studies", SOURCE, b"{}", None) as call:
        call.succeeded({"ID": RESULT})
    assert [entry.project for entry in log.entries] == [project]


def test_the_log_route_answer_is_bounded_in_bytes_and_pages_on(tmp_path):
    """Entries of the largest kind, more than one answer holds: each answer stays within the
    byte bound with fewer entries than asked, says More, and `Last` leads to the rest."""
    log = FileAuditLog(tmp_path / "log")
    base = resource_id("bulk")
    ids = tuple(f"{n:08x}{base[8:]}" for n in range(audit_log.SAMPLE_SIZE))
    widest = AuditEntry(route="/tools/bulk-anonymize", level="Bulk", outcome="Success", reason="Completed",
                        sources=ids, results=ids, source_count=100_000, project="trial#7")
    total = audit.MAX_ANSWER_BYTES // len(widest.to_json()) + 40
    for _ in range(total):
        log.append(widest)
    for _ in range(3):
        log.append(replace(widest, sources=(SOURCE,), results=(), source_count=None))
    seen, since, answers = [], 0, 0
    while True:
        answer = page(log, {"since": str(since), "limit": str(audit.MAX_LIMIT)})
        assert len(json_text(answer)) <= audit.MAX_ANSWER_BYTES
        seen += [entry["sequence"] for entry in answer["Entries"]]
        since, answers = answer["Last"], answers + 1
        if not answer["More"]:
            break
        assert len(json_text(answer)) > audit.MAX_ANSWER_BYTES - 2 * audit_log.MAX_ENTRY_BYTES  # full, not short
    assert seen == list(range(1, total + 4)) and answers >= 2
    assert page(log, {"since": str(since)}) == {"Entries": [], "Last": since, "More": False}
