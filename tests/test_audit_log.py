"""The audit log's pure part: entries that cannot hold identifiers, and a file log that several
processes share without gaps or duplicates, durable, crash-safe and bounded. No Orthanc needed."""
from __future__ import annotations

import json
import multiprocessing
import os
import stat
import threading
import time
from datetime import datetime, timedelta, timezone
from pathlib import Path

import pytest

from consistent_anon.traceability import audit_log
from consistent_anon.traceability.audit_log import AuditEntry, FileAuditLog, Retention
from consistent_anon.orthanc_ids import resource_id

SOURCE = resource_id("PID-7734-SYNTH", "1.2.3.4")
RESULT = resource_id("PSEUDO-1", "2.25.99")
JOB = "0b0e4d37-2f5a-4ce5-9a35-3b8d1b1a4c2e"


def entry(**changes) -> AuditEntry:
    values = dict(route="/studies/{id}/anonymize", level="Study", outcome="Success", reason="Completed",
                  sources=(SOURCE,), results=(RESULT,), user="alice", project="trial-7",
                  options_mark="0123456789abcdef", instances=12, job=JOB)
    values.update(changes)
    return AuditEntry(**values)


def test_an_entry_holds_every_field_as_json():
    written = entry()
    line = written.to_json()
    assert json.loads(line) == {
        "route": "/studies/{id}/anonymize", "level": "Study", "outcome": "Success", "reason": "Completed",
        "sources": [SOURCE], "results": [RESULT], "source_count": 1, "result_count": 1, "user": "alice",
        "project": "trial-7",
        "options_mark": "0123456789abcdef", "instances": 12, "failed_instances": 0, "job": JOB,
        "pixel_status": {}, "time": written.time, "sequence": None}
    assert AuditEntry.from_json(line) == written
    flagged = entry(pixel_status={"Flagged": 2, "Cleaned": 1})
    assert AuditEntry.from_json(flagged.to_json()) == flagged
    for wrong in ({"Unseen": 1}, {"Flagged": -1}, ["Flagged"]):
        with pytest.raises(ValueError):
            entry(pixel_status=wrong)
    assert datetime.strptime(written.time, "%Y-%m-%dT%H:%M:%S.%fZ")


@pytest.mark.parametrize("field, value", [
    ("sources", ("PID-7734-SYNTH",)),           # a PatientID where an Orthanc ID belongs
    ("results", ("1.2.840.113619.2.55.3",)),     # a UID
    ("sources", (SOURCE.upper(),)),
    ("user", "Doe^Jane"),                         # a DICOM name
    ("user", "alice\nforged line"),
    ("project", "a" * 257),                        # longer than a configuration may declare
    ("project", 7),
    ("source_count", -1),
    ("options_mark", "not a mark"),
    ("job", "PID-7734-SYNTH"),
    ("reason", "Patient Doe^Jane not found"),    # free text
    ("reason", "CanceledByUser"),                # a reason of another outcome
    ("outcome", "Partial"),
    ("route", "/studies/PID-7734/anonymize"),
    ("level", "Frame"),
    ("instances", -1),
    ("failed_instances", True),
    ("time", "yesterday"),
])
def test_entries_refuse_what_could_be_an_identifier(field, value):
    with pytest.raises(ValueError) as refused:
        entry(**{field: value})
    assert field in str(refused.value)
    assert str(value) not in str(refused.value)  # the refused value is not repeated anywhere


def test_appends_are_numbered_and_read_in_order(tmp_path):
    log = FileAuditLog(tmp_path / "audit.jsonl")
    assert log.read() == []
    assert [log.append(entry(instances=n)) for n in range(5)] == [1, 2, 3, 4, 5]
    assert [(e.sequence, e.instances) for e in log.read()] == [(n + 1, n) for n in range(5)]
    assert [e.sequence for e in log.read(since=2, limit=2)] == [3, 4]
    assert log.read(since=5) == [] and log.read(limit=0) == []
    # another process (a new log object on the same file) goes on with the numbering
    assert FileAuditLog(tmp_path / "audit.jsonl").append(entry()) == 6


def test_every_append_is_on_disk_before_it_returns(tmp_path, monkeypatch):
    synced = []
    real_fsync = os.fsync
    monkeypatch.setattr(audit_log.os, "fsync", lambda descriptor: (synced.append(descriptor), real_fsync(descriptor)))
    log = FileAuditLog(tmp_path / "audit.jsonl")
    log.append(entry())
    assert len(synced) == 2  # the line, and the folder that got a new file
    log.append(entry())
    assert len(synced) == 3  # the second append's own line


def _append_many(path: str, worker: int, count: int) -> None:
    log = FileAuditLog(path, Retention(check_every=25))
    for index in range(count):
        log.append(entry(project=f"node-{worker}", instances=index))


def test_concurrent_appends_from_processes_have_no_gaps_or_duplicates(tmp_path):
    path = str(tmp_path / "audit.jsonl")
    context = multiprocessing.get_context("spawn")
    workers = [context.Process(target=_append_many, args=(path, worker, 60)) for worker in range(4)]
    for process in workers:
        process.start()
    for process in workers:
        process.join(120)
        assert process.exitcode == 0
    entries = FileAuditLog(path).read(limit=10_000)
    assert [e.sequence for e in entries] == list(range(1, 241))
    for worker in range(4):  # each process's entries all there, in its own order
        assert [e.instances for e in entries if e.project == f"node-{worker}"] == list(range(60))


def test_a_torn_last_line_is_ignored_then_cut_off(tmp_path):
    path = tmp_path / "audit.jsonl"
    log = FileAuditLog(path)
    for _ in range(3):
        log.append(entry())
    whole = path.read_bytes()
    torn = entry().to_json()[:40]
    path.write_bytes(whole + torn.encode())  # a crash in the middle of a write
    assert [e.sequence for e in log.read()] == [1, 2, 3]
    assert log.append(entry(instances=7)) == 4
    lines = path.read_bytes().split(b"\n")
    assert path.read_bytes().startswith(whole) and lines[-1] == b"" and len(lines) == 5
    assert all(AuditEntry.from_json(line.decode()) for line in lines[:-1])
    assert [(e.sequence, e.instances) for e in log.read()][-1] == (4, 7)


def test_a_log_that_is_only_a_torn_line_starts_again(tmp_path):
    path = tmp_path / "audit.jsonl"
    path.write_bytes(b'{"route":"/stu')
    assert FileAuditLog(path).append(entry()) == 1
    assert [e.sequence for e in FileAuditLog(path).read()] == [1]


def test_retention_by_count_keeps_the_numbers(tmp_path):
    log = FileAuditLog(tmp_path / "audit.jsonl", Retention(days=None, entries=10, check_every=4))
    for _ in range(12):
        log.append(entry())
    # checked at 4 and 8 (10 entries at most: nothing to do), at 12 (12 entries: 9 kept)
    assert [e.sequence for e in log.read()] == list(range(4, 13))
    assert [log.append(entry()) for _ in range(3)] == [13, 14, 15]
    assert [e.sequence for e in log.read()] == list(range(4, 16))  # over 10 until the next check
    assert log.append(entry()) == 16
    assert [e.sequence for e in log.read()] == list(range(8, 17))


def test_retention_by_age_drops_old_entries_and_the_numbering_goes_on(tmp_path):
    now = datetime(2026, 11, 30, 12, 0, tzinfo=timezone.utc)
    log = FileAuditLog(tmp_path / "audit.jsonl", Retention(days=30, entries=None), now=lambda: now)
    stamp = lambda when: when.strftime("%Y-%m-%dT%H:%M:%S.%f")[:-3] + "Z"  # noqa: E731
    for age in (90, 31, 29, 1):
        log.append(entry(time=stamp(now - timedelta(days=age))))
    log.compact()
    assert [e.sequence for e in log.read()] == [3, 4]
    now = now + timedelta(days=60)
    log.compact()
    assert log.read() == []
    assert log.append(entry()) == 5  # no number given twice, even with every entry dropped
    assert [e.sequence for e in log.read()] == [5]


def test_compaction_leaves_no_draft_behind(tmp_path):
    log = FileAuditLog(tmp_path / "audit.jsonl", Retention(entries=2, check_every=3))
    for _ in range(6):
        log.append(entry())
    assert sorted(p.name for p in Path(tmp_path).iterdir()) == ["audit.jsonl", "audit.jsonl.lock"]


def test_reading_from_the_middle_of_a_long_log(tmp_path, monkeypatch):
    """The bisection that finds where to start gives what a full read gives, torn line included."""
    monkeypatch.setattr(audit_log, "_TAIL", 256)
    path = tmp_path / "audit.jsonl"
    log = FileAuditLog(path, Retention(days=None, entries=150, check_every=100))
    for n in range(200):  # compacted at 200: a first line without entry, then 65 to 200
        log.append(entry(instances=n, sources=(SOURCE,) * (n % 7)))
    with open(path, "ab") as file:
        file.write(b'{"route":"/studies/{id}/anon')
    everything = log.read(0, 10_000)
    assert [e.sequence for e in everything] == list(range(66, 201))
    for since in (0, 65, 66, 100, 133, 199, 200, 500):
        for limit in (1, 7, 1000):
            assert log.read(since, limit) == [e for e in everything if e.sequence > since][:limit]


def test_a_long_bulk_entry_is_found_beyond_the_tail(tmp_path, monkeypatch):
    monkeypatch.setattr(audit_log, "_TAIL", 64)
    log = FileAuditLog(tmp_path / "audit.jsonl")
    many = tuple(resource_id(str(n)) for n in range(30))
    assert log.append(entry(route="/tools/bulk-anonymize", level="Bulk", sources=many)) == 1
    assert log.append(entry()) == 2
    assert log.read()[0].sources == many


def _ids(count: int, seed: str = "bulk") -> tuple[str, ...]:
    """`count` well-shaped Orthanc IDs (quick: variations of one hash)."""
    base = resource_id(seed)
    return tuple(f"{n:08x}{base[8:]}" for n in range(count))


def test_a_bulk_entry_keeps_its_counts_and_a_bounded_sample_of_its_resources():
    named, made = _ids(100_000), _ids(3_000, "results")
    written = entry(route="/tools/bulk-anonymize", level="Bulk", sources=named, results=made)
    assert (written.source_count, written.result_count) == (100_000, 3_000)
    assert written.sources == named[:audit_log.SAMPLE_SIZE] and written.results == made[:audit_log.SAMPLE_SIZE]
    assert len(written.to_json()) + 1 <= audit_log.MAX_ENTRY_BYTES
    assert AuditEntry.from_json(written.to_json()) == written
    assert (entry().source_count, entry(sources=()).source_count, entry().result_count) == (1, 0, 1)
    with pytest.raises(ValueError, match="source_count"):
        entry(sources=_ids(3), source_count=2)  # a count below what the entry names


def test_the_largest_entry_fits_in_64_kib():
    """Every field at its longest, each character of the names escaped at its longest (a
    character outside the BMP is two \\u escapes): the line, newline included, stays within the bound."""
    widest = entry(route="/instances/{id}/anonymize", outcome="Refused", reason="UnknownResource",
                   sources=_ids(10 ** 6), results=_ids(10 ** 6, "r"), user="\U00010400" * 64,
                   project="\U0001F9EA" * audit_log.MAX_PROJECT_NAME, options_mark="f" * 128,
                   instances=2 ** 63, failed_instances=2 ** 63, source_count=2 ** 63, result_count=2 ** 63,
                   sequence=2 ** 63)
    assert len(widest.to_json()) + 1 <= audit_log.MAX_ENTRY_BYTES


def test_an_entry_read_from_an_older_unbounded_line_is_bounded_with_its_count(tmp_path):
    path = tmp_path / "audit.jsonl"
    line = json.loads(entry(sequence=1).to_json())
    line.update(sources=list(_ids(5_000)), route="/tools/bulk-anonymize", level="Bulk")
    del line["source_count"], line["result_count"]  # as older versions wrote entries
    path.write_text(json.dumps(line) + "\n")
    [read] = FileAuditLog(path).read()
    assert (read.source_count, len(read.sources), read.result_count) == (5_000, audit_log.SAMPLE_SIZE, 1)


@pytest.mark.parametrize("name", ["trial#7", "T7 (site A)", "\u00e9tude-\u03a9 \U0001F9EA", "a/b?c=d&e;f", "x\ny",
                                  "", "p" * 256])
def test_a_project_is_kept_whatever_characters_its_name_holds(tmp_path, name):
    """A project name comes from the configuration, never from a caller (an undeclared one is
    refused before any entry): it is kept as declared, escaped to stay one ASCII line."""
    log = FileAuditLog(tmp_path / "audit.jsonl")
    log.append(entry(project=name))
    assert [e.project for e in log.read()] == [name]
    assert len((tmp_path / "audit.jsonl").read_bytes().split(b"\n")) == 2
    with pytest.raises(ValueError, match="project"):
        entry(project="p" * (audit_log.MAX_PROJECT_NAME + 1))


def _bytes_read_by_append(monkeypatch, log: FileAuditLog) -> int:
    """What one append reads of the log file (it reads through os.pread only)."""
    counted = []
    real_pread = os.pread

    def pread(descriptor: int, size: int, offset: int) -> bytes:
        counted.append(real_pread(descriptor, size, offset))
        return counted[-1]
    monkeypatch.setattr(audit_log.os, "pread", pread)
    try:
        log.append(entry())
    finally:
        monkeypatch.setattr(audit_log.os, "pread", real_pread)
    return sum(len(chunk) for chunk in counted)


def test_an_append_reads_about_one_entry_whatever_the_length_of_the_log(tmp_path, monkeypatch):
    """After another process's append, it reads the last line backwards from the end (its sequence
    number): not the file, not a fixed tail that a long last entry would outgrow into a read of
    the whole file."""
    def other() -> FileAuditLog:  # another process's log: it has not seen the last append
        return FileAuditLog(tmp_path / "audit.jsonl", Retention(check_every=10 ** 9))
    log = other()
    short = _bytes_read_by_append(monkeypatch, other())
    for _ in range(3):
        log.append(entry(route="/tools/bulk-anonymize", level="Bulk", sources=_ids(100_000)))
    for _ in range(2_000):
        log.append(entry())
    long = _bytes_read_by_append(monkeypatch, other())
    log.append(entry(route="/tools/bulk-anonymize", level="Bulk", sources=_ids(100_000), results=_ids(100_000)))
    after_bulk = _bytes_read_by_append(monkeypatch, other())
    assert (tmp_path / "audit.jsonl").stat().st_size > 1_000_000
    assert short <= long <= 2 * audit_log.READ_BLOCK, (short, long)
    assert after_bulk <= audit_log.MAX_ENTRY_BYTES + audit_log.READ_BLOCK


def test_a_read_stops_once_the_entries_it_holds_pass_a_byte_budget(tmp_path):
    log = FileAuditLog(tmp_path / "audit.jsonl")
    sizes = [len(entry(sequence=n + 1, sources=_ids(n * 10)).to_json()) + 1 for n in range(20)]
    for n in range(20):
        log.append(entry(sources=_ids(n * 10)))
    budget = sum(sizes[:5]) + 1
    assert [e.sequence for e in log.read(0, 100, max_bytes=budget)] == [1, 2, 3, 4, 5, 6]  # the one that passes it
    assert [e.sequence for e in log.read(4, 100, max_bytes=1)] == [5]  # always one: an entry is bounded
    assert len(log.read(0, 100)) == 20


def test_the_latest_entries_are_read_from_the_end(tmp_path, monkeypatch):
    """The landing page's latest entries: the newest, oldest first, without reading the whole
    log, a torn last line and a compaction's first line ignored; a short window grows."""
    monkeypatch.setattr(audit_log, "_TAIL", 256)
    path = tmp_path / "audit.jsonl"
    log = FileAuditLog(path, Retention(days=None, entries=150, check_every=100))
    assert log.latest(5) == []
    for n in range(200):
        log.append(entry(instances=n, sources=(SOURCE,) * (n % 7)))
    with open(path, "ab") as file:
        file.write(b'{"route":"/studies/{id}/anon')
    everything = log.read(0, 10_000)
    for count in (1, 5, 40, 135, 1000):
        assert log.latest(count) == everything[-count:]
    assert path.read_bytes().endswith(b'{"route":"/studies/{id}/anon')  # a reader cuts nothing off


def test_an_append_after_this_process_own_reads_nothing_back(tmp_path, monkeypatch):
    """Where the file is as this process's last append left it (same file, same size), the last
    number is known: nothing is read. Another process's append in between is seen (the size changed)."""
    path = tmp_path / "audit.jsonl"
    log = FileAuditLog(path)
    log.append(entry())
    assert [_bytes_read_by_append(monkeypatch, log) for _ in range(5)] == [0] * 5
    assert FileAuditLog(path).append(entry()) == 7  # another process
    assert _bytes_read_by_append(monkeypatch, log) > 0
    assert [e.sequence for e in log.read(limit=100)] == list(range(1, 9))
    log.compact()  # rewritten: another file, read again
    assert _bytes_read_by_append(monkeypatch, log) > 0
    assert [e.sequence for e in log.read(limit=100)] == list(range(1, 10))


def test_concurrent_appends_share_syncs_and_each_returns_after_its_own_line_is_synced(tmp_path, monkeypatch):
    """Group commit: calls that end while an entry is being synced have theirs written and synced
    together by the next sync; none returns before a sync that covers its own line."""
    events, events_lock = [], threading.Lock()
    real_fsync = os.fsync

    def slow_fsync(descriptor: int) -> None:
        time.sleep(0.02)  # a slow disk: entries arriving meanwhile wait for the next sync
        real_fsync(descriptor)
        status = os.fstat(descriptor)
        if stat.S_ISREG(status.st_mode):  # the log's own file (not the folder of a new file)
            with events_lock:
                events.append(("synced", status.st_size))
    monkeypatch.setattr(audit_log.os, "fsync", slow_fsync)
    log = FileAuditLog(tmp_path / "audit.jsonl")
    callers = 16
    start = threading.Barrier(callers)

    def call(index: int) -> None:
        start.wait()
        sequence = log.append(entry(instances=index))
        with events_lock:
            events.append(("returned", sequence))
    threads = [threading.Thread(target=call, args=(index,)) for index in range(callers)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(60)
    line_ends, offset = {}, 0
    for line in (tmp_path / "audit.jsonl").read_bytes().splitlines(keepends=True):
        offset += len(line)
        line_ends[json.loads(line)["sequence"]] = offset
    assert sorted(line_ends) == list(range(1, callers + 1))
    synced, returned = 0, []
    for kind, value in events:
        if kind == "synced":
            synced = max(synced, value)
        else:
            assert line_ends[value] <= synced, f"entry {value} answered before its line was synced"
            returned.append(value)
    assert sorted(returned) == list(range(1, callers + 1))
    syncs = sum(1 for kind, _ in events if kind == "synced")
    assert syncs < callers, f"{syncs} syncs for {callers} concurrent entries"


def test_a_failed_sync_fails_every_entry_it_held_and_the_next_append_works(tmp_path, monkeypatch):
    log = FileAuditLog(tmp_path / "audit.jsonl")
    log.append(entry())
    real_fsync = os.fsync

    def failing(descriptor: int) -> None:
        raise OSError(5, "Input/output error")
    monkeypatch.setattr(audit_log.os, "fsync", failing)
    with pytest.raises(OSError):
        log.append(entry())
    monkeypatch.setattr(audit_log.os, "fsync", real_fsync)
    assert log.append(entry()) == 3  # the unsynced line may be there: its number is not reused


def test_a_compaction_that_fails_after_the_append_fails_no_call(tmp_path, monkeypatch):
    """The entries are on disk (synced) before the retention's compaction runs: if the compaction
    fails (a full disk for the rewritten copy), the calls whose entries were written are not
    told they went unlogged; the failure is said at the error level, the log keeps everything,
    and the next due append tries the compaction again."""
    errors: list[str] = []
    log = FileAuditLog(tmp_path / "audit.jsonl", Retention(entries=2, check_every=1), log_error=errors.append)

    def full_disk(path, lines):
        raise OSError(28, "No space left on device")
    monkeypatch.setattr(audit_log, "replace_atomically", full_disk)
    assert [log.append(entry()) for _ in range(4)] == [1, 2, 3, 4]
    assert len(log.read(limit=10)) == 4
    assert errors and all("could not be compacted" in error and "No space left" in error for error in errors)
    monkeypatch.undo()
    log.append(entry())
    assert [e.sequence for e in log.read(limit=10)] == [5]  # compacted at last: the newest nine tenths of 2
