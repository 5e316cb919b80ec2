"""The audit log of anonymizations: who anonymized what, when, with which options, and how it ended.

An entry names resources by their Orthanc IDs only, and everything else it holds comes from fixed
lists or checked shapes: it cannot carry a PatientID, a name, a UID or a key, whatever a caller
passes (a value of the wrong shape is refused, not logged). Orthanc IDs are hashes of the DICOM
identifiers: a reader who already has a source's identifiers can confirm it, none can read them.
An entry is bounded (MAX_ENTRY_BYTES): it counts the resources a call named and made, and names
the first SAMPLE_SIZE of each, so that a bulk call naming 100,000 resources writes one short line.

`FileAuditLog` keeps the log in a JSON-lines file that several processes (two Orthanc nodes sharing
a storage folder) append to: each append takes an exclusive `flock` on a lock file beside the log,
numbers the entry after the last one written, and returns only once the line is on disk (fsync),
so the sequence has neither gaps nor duplicates and an answered call is never lost. The number is
found by reading the file backwards from its end to the start of its last line: an append reads
about one entry, however long the log. A line torn by a crash is cut off by the next append, and
never read. Retention (entry age and count) is applied by a compaction that rewrites the file
under the same lock; entries keep their numbers, and the numbering goes on after the dropped ones.
"""
from __future__ import annotations

import fcntl
import json
import os
import re
import threading
from contextlib import contextmanager
from dataclasses import dataclass, field, fields
from datetime import datetime, timedelta, timezone
from pathlib import Path
from typing import BinaryIO, Callable, Iterator, Protocol

from ..identity.config import MAX_PROJECT_NAME
from ..files import replace_atomically, sync_folder
from ..orthanc_ids import ARRIVAL, BULK, LEVEL_TYPES

#: How each outcome may be explained.
REASONS = {
    "Success": frozenset({"Completed"}),
    "Refused": frozenset({"BadRequest", "UnknownResource", "Conflict", "Forbidden", "BurnedInAnnotation"}),
    "Failed": frozenset({"VerificationFailed", "KeyMismatch", "OrthancError", "InternalError", "PartlyKept"}),
    "Canceled": frozenset({"CanceledByUser"}),
}
#: An entry's level, and its route, by the REST API's name of the level called.
LEVELS = {**LEVEL_TYPES, BULK: "Bulk", ARRIVAL: "Instance"}
ROUTES = {**{level: f"/{level}/{{id}}/anonymize" for level in LEVEL_TYPES}, BULK: "/tools/bulk-anonymize",
          ARRIVAL: "OnArrival"}
#: What an entry may count of its results' pixels (pixels/decision.py).
PIXEL_STATUSES = frozenset({"Cleaned", "Accepted", "Flagged"})

_ORTHANC_ID = re.compile(r"[0-9a-f]{8}(?:-[0-9a-f]{8}){4}")
_JOB_ID = re.compile(r"[0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12}")
_MARK = re.compile(r"[0-9a-f]{16,128}")
#: A user is an HTTP login: a short printable name.
_NAME = re.compile(r"[\w.@+ -]{1,64}")
#: How many of the resources a call named (and of its results) an entry names; it counts them all.
SAMPLE_SIZE = 500
#: An entry's line, newline included, is at most this long: 2 x 500 IDs of 47 bytes, and the
#: longest names escaped (test_audit_log.py measures the widest entry).
MAX_ENTRY_BYTES = 65536
#: Bytes read at once when reading the log backwards from its end.
READ_BLOCK = 8192
_TIME = re.compile(r"\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d\.\d{3}Z")
_TAIL = 65536  # the last step of a bisection: read at once


def _format(moment: datetime) -> str:
    """The time of an entry: UTC, ISO 8601, milliseconds (its text sorts as the time does)."""
    return moment.astimezone(timezone.utc).strftime("%Y-%m-%dT%H:%M:%S.%f")[:-3] + "Z"


def utc_now() -> str:
    return _format(datetime.now(timezone.utc))


@dataclass(frozen=True)
class AuditEntry:
    """One anonymization request and its end. `sequence` is given by the log when appended."""

    route: str
    level: str
    outcome: str
    reason: str
    sources: tuple[str, ...] = ()  # the first SAMPLE_SIZE of them: the rest are counted only
    results: tuple[str, ...] = ()
    source_count: int | None = None  # how many resources the call named (None: as many as `sources`)
    result_count: int | None = None
    user: str | None = None
    project: str | None = None
    options_mark: str | None = None
    instances: int = 0
    failed_instances: int = 0
    job: str | None = None
    #: How many results' pixels were cleaned, accepted as they are, or flagged (pixels/decision.py).
    pixel_status: dict[str, int] = field(default_factory=dict)
    time: str = field(default_factory=utc_now)
    sequence: int | None = None

    def __post_init__(self) -> None:
        named = {"sources": tuple(self.sources), "results": tuple(self.results)}
        for names, count in (("sources", "source_count"), ("results", "result_count")):
            if getattr(self, count) is None:
                object.__setattr__(self, count, len(named[names]))
            object.__setattr__(self, names, named[names][:SAMPLE_SIZE])
        problems = [name for name, good in (
            ("route", self.route in ROUTES.values()),
            ("level", self.level in LEVELS.values()),
            ("outcome", self.outcome in REASONS),
            ("reason", self.reason in REASONS.get(self.outcome, ())),
            ("sources", all(_is(_ORTHANC_ID, value) for value in self.sources)),
            ("results", all(_is(_ORTHANC_ID, value) for value in self.results)),
            ("source_count", is_count(self.source_count) and self.source_count >= len(named["sources"])),
            ("result_count", is_count(self.result_count) and self.result_count >= len(named["results"])),
            ("user", self.user is None or _is(_NAME, self.user)),
            ("project", self.project is None or is_project_name(self.project)),
            ("options_mark", self.options_mark is None or _is(_MARK, self.options_mark)),
            ("instances", is_count(self.instances)),
            ("failed_instances", is_count(self.failed_instances)),
            ("job", self.job is None or _is(_JOB_ID, self.job)),
            ("pixel_status", isinstance(self.pixel_status, dict) and all(
                status in PIXEL_STATUSES and is_count(count) for status, count in self.pixel_status.items())),
            ("time", _is(_TIME, self.time)),
            ("sequence", self.sequence is None or (is_count(self.sequence) and self.sequence > 0)),
        ) if not good]
        if problems:  # the values are not repeated: they may be what must not be logged
            raise ValueError("An audit entry refused: malformed " + ", ".join(problems))

    def to_json(self, sequence: int | None = None) -> str:
        """The entry's line; with `sequence`, under that number (the log's next one: a positive
        count, so the entry needs no second check). The fields as they are (asdict would copy
        each first): tuples are written as lists."""
        values = {name: getattr(self, name) for name in _FIELDS}
        if sequence is not None:
            values["sequence"] = sequence
        return json.dumps(values, separators=(",", ":"), ensure_ascii=True)

    @classmethod
    def from_json(cls, line: str) -> "AuditEntry":
        return cls(**json.loads(line))


_FIELDS = tuple(field.name for field in fields(AuditEntry))


def _is(pattern: re.Pattern, value: object) -> bool:
    return isinstance(value, str) and pattern.fullmatch(value) is not None


def is_orthanc_id(value: object) -> bool:
    """Whether an entry may name this value as a resource (an ID asked for may be any text)."""
    return _is(_ORTHANC_ID, value)


def is_name(value: object) -> bool:
    """Whether an entry may hold this value as a user."""
    return _is(_NAME, value)


def is_project_name(value: object) -> bool:
    """Whether an entry may hold this value as a project: any name a configuration can declare
    (it comes from there, never from a caller), escaped in the entry's one ASCII line."""
    return isinstance(value, str) and len(value) <= MAX_PROJECT_NAME


def is_count(value: object) -> bool:
    """A whole number of things: an int, not a bool, not negative."""
    return isinstance(value, int) and not isinstance(value, bool) and value >= 0


class AuditLog(Protocol):
    def append(self, entry: AuditEntry) -> int:
        """Write the entry durably; answers its sequence number."""

    def read(self, since: int = 0, limit: int = 100, max_bytes: int | None = None) -> list[AuditEntry]:
        """The entries numbered after `since`, in order, at most `limit`; with `max_bytes`, they
        stop after the first entry that brings their lines past it (so one at least)."""

    def latest(self, count: int) -> list[AuditEntry]:
        """The newest `count` entries, in order."""


@dataclass(frozen=True)
class Retention:
    """What the log keeps: entries younger than `days`, and at most `entries` (None: no limit).
    Past `entries`, a compaction keeps the newest nine tenths, so that it does not run again
    at the next check."""

    days: int | None = 365
    entries: int | None = 1_000_000
    #: Appends between two checks of the retention (cheap: the first entry and the count).
    check_every: int = 1000

    def oldest_time(self, now: datetime) -> str | None:
        """The time of the oldest entry kept, in the entries' format."""
        return None if self.days is None else _format(now - timedelta(days=self.days))


class FileAuditLog:
    """The log as a JSON-lines file shared by processes, see the module's docstring."""

    def __init__(self, path: str | Path, retention: Retention = Retention(),
                 now: Callable[[], datetime] = lambda: datetime.now(timezone.utc),
                 log_error: Callable[[str], None] = lambda message: None) -> None:
        self.path = Path(path)
        self._lock_path = self.path.with_name(self.path.name + ".lock")
        self._retention = retention
        self._now = now
        self._log_error = log_error  # Orthanc's error level
        self._turn = threading.Condition()  # the group commit's queue (see append)
        self._queue: list[_Pending] = []
        self._writing = False
        #: The file as this process's last append left it (see _identity), and its last number.
        self._end: tuple[tuple[int, ...], int] | None = None

    @contextmanager
    def _locked(self, mode: int) -> Iterator[None]:
        descriptor = os.open(self._lock_path, os.O_RDWR | os.O_CREAT, 0o600)
        try:
            fcntl.flock(descriptor, mode)
            yield
        finally:
            os.close(descriptor)  # releases the lock

    def append(self, entry: AuditEntry) -> int:
        """Group commit: the entries of this process's calls that end while another batch is
        being written wait, then are written and synced together by one of them; each call
        returns once the sync that covers its own line is done (or raises its failure)."""
        pending = _Pending(entry)
        with self._turn:
            self._queue.append(pending)
            while not pending.done and self._writing:
                self._turn.wait()
            batch = None if pending.done else self._queue
            if batch is not None:
                self._queue, self._writing = [], True
        if batch is not None:
            self._write_batch(batch)
        if pending.failure is not None:
            raise pending.failure
        return pending.sequence  # type: ignore[return-value]

    def _write_batch(self, batch: list[_Pending]) -> None:
        """Writes and syncs the batch's lines under the shared lock, then tells their callers."""
        try:
            first = self._append_lines([pending.entry for pending in batch])
            for offset, pending in enumerate(batch):
                pending.sequence = first + offset
        except BaseException as failure:  # each caller hears it (an OSError: its call fails, 500)
            for pending in batch:
                pending.failure = failure
        finally:
            with self._turn:
                for pending in batch:
                    pending.done = True
                self._writing = False
                self._turn.notify_all()

    def _append_lines(self, entries: list[AuditEntry]) -> int:
        """Numbers the entries after the last one written, appends them and syncs the file: the
        number of the first."""
        self.path.parent.mkdir(parents=True, exist_ok=True)
        with self._locked(fcntl.LOCK_EX):
            created = not self.path.exists()
            descriptor = os.open(self.path, os.O_RDWR | os.O_CREAT | os.O_APPEND, 0o600)
            try:
                first = self._last_sequence(descriptor) + 1
                self._end = None  # unknown until synced
                text = "".join(entry.to_json(first + offset) + "\n"
                               for offset, entry in enumerate(entries))
                _write_all(descriptor, text.encode("ascii"))
                os.fsync(descriptor)
                self._end = (_identity(descriptor), first + len(entries) - 1)
            finally:
                os.close(descriptor)
            if created:
                sync_folder(self.path.parent)
            last = first + len(entries) - 1
            every = self._retention.check_every
            if (first - 1) // every != last // every:
                self._apply_retention(last)
        return first

    def _apply_retention(self, last: int) -> None:
        """After the entries are synced: a compaction that fails fails none of their calls (they
        are logged); it is said, and tried again at the next check."""
        try:
            if self._beyond_retention(last):
                self._compact()
        except OSError as error:
            self._log_error(f"The anonymization audit log could not be compacted "
                            f"({error.strerror or type(error).__name__}); it keeps every entry meanwhile")

    def _last_sequence(self, descriptor: int) -> int:
        """The last number written: known without reading where the file is as this process's
        last append left it (the same file, the same size: nobody appended, cut or replaced it)."""
        if self._end is not None and self._end[0] == _identity(descriptor):
            return self._end[1]
        return _last_sequence(descriptor)

    def read(self, since: int = 0, limit: int = 100, max_bytes: int | None = None) -> list[AuditEntry]:
        """Finds where to start by bisection (entries are in sequence order), so that polling
        the end of a long log reads little of it; see AuditLog.read for `max_bytes`."""
        with self._locked(fcntl.LOCK_SH):
            return self._read(since, limit, max_bytes)

    def _read(self, since: int, limit: int, max_bytes: int | None = None) -> list[AuditEntry]:
        entries: list[AuditEntry] = []
        if limit <= 0:
            return entries
        budget = max_bytes if max_bytes is not None else float("inf")
        try:
            file = open(self.path, "rb")
        except FileNotFoundError:
            return entries
        with file:
            file.seek(_start_of_entries_after(file, since))
            for line in file:
                if not line.endswith(b"\n"):
                    break  # torn by a crash: no entry
                parsed = _parse(line.decode("ascii", "replace"))
                if isinstance(parsed, AuditEntry) and parsed.sequence > since:
                    entries.append(parsed)
                    budget -= len(line)
                    if len(entries) == limit or budget < 0:
                        break
        return entries

    def latest(self, count: int) -> list[AuditEntry]:
        """The newest `count` entries, oldest first (the plugin's landing page shows them). Reads
        the end of the file, a window twice as long each time it holds too few whole lines;
        cuts nothing off (a torn line is the next append's business, under its lock)."""
        with self._locked(fcntl.LOCK_SH):
            try:
                file = open(self.path, "rb")
            except FileNotFoundError:
                return []
            with file:
                size = file.seek(0, os.SEEK_END)
                window = _TAIL
                while True:
                    start = max(0, size - window)
                    file.seek(start)
                    lines = file.read(size - start).split(b"\n")[:-1]  # after the last newline: torn
                    if start:
                        lines = lines[1:]  # the window may start inside a line
                    parsed = (_parse(line.decode("ascii", "replace")) for line in lines)
                    entries = [entry for entry in parsed if isinstance(entry, AuditEntry)]
                    if len(entries) >= count or not start:
                        return entries[len(entries) - count:] if count > 0 else []
                    window *= 2

    def compact(self) -> None:
        """Drop what the retention no longer keeps (also done, when due, on appends)."""
        with self._locked(fcntl.LOCK_EX):
            self._compact()

    def _beyond_retention(self, last: int) -> bool:
        """Whether the oldest entry is too old, or there are too many entries (under the lock)."""
        first = self._read(0, 1)
        if not first:
            return False
        oldest = self._retention.oldest_time(self._now())
        too_many = self._retention.entries is not None and last - first[0].sequence + 1 > self._retention.entries
        return too_many or (oldest is not None and first[0].time < oldest)

    def _entries(self) -> tuple[list[AuditEntry], int]:
        """The complete entries of the file (a torn last line is no entry), and the last
        sequence number given (that of a dropped entry, after a compaction)."""
        try:
            text = self.path.read_text("ascii", errors="replace")
        except FileNotFoundError:
            return [], 0
        entries, last = [], 0
        for line in text.split("\n")[:-1]:  # what follows the last newline is torn
            parsed = _parse(line)
            if isinstance(parsed, AuditEntry):
                entries.append(parsed)
                last = max(last, parsed.sequence)
            elif isinstance(parsed, int):
                last = max(last, parsed)
        return entries, last

    def _compact(self) -> None:
        self._end = None  # another file from now on
        entries, last = self._entries()
        oldest = self._retention.oldest_time(self._now())
        if oldest is not None:
            entries = [entry for entry in entries if entry.time >= oldest]
        limit = self._retention.entries
        if limit is not None and len(entries) > limit:
            entries = entries[len(entries) - limit * 9 // 10:]
        # the first line keeps the numbering going when every entry was dropped
        replace_atomically(self.path, [json.dumps({"last_sequence": last}) + "\n",
                                       *(entry.to_json() + "\n" for entry in entries)])


@dataclass
class _Pending:
    """An entry waiting for the group commit, and how its append ended."""

    entry: AuditEntry
    done: bool = False
    sequence: int | None = None
    failure: BaseException | None = None


def _identity(descriptor: int) -> tuple[int, ...]:
    """Which file this is and how long: appends change its size, a compaction's replacement its
    inode and times."""
    status = os.fstat(descriptor)
    return status.st_dev, status.st_ino, status.st_size, status.st_mtime_ns, status.st_ctime_ns


def _write_all(descriptor: int, data: bytes) -> None:
    view = memoryview(data)
    while view:
        view = view[os.write(descriptor, view):]


def _start_of_entries_after(file: BinaryIO, since: int) -> int:
    """A line start at or before the first entry numbered after `since`, within _TAIL bytes of
    it: the lines from `low` on are all numbered after `since`, or are within the last probe."""
    low, high = 0, file.seek(0, os.SEEK_END)
    while high - low > _TAIL:
        middle = (low + high) // 2
        file.seek(middle)
        file.readline()  # to the start of the next line
        start = file.tell()
        line = file.readline()
        parsed = _parse(line.decode("ascii", "replace")) if line.endswith(b"\n") else None
        if isinstance(parsed, AuditEntry) and parsed.sequence <= since and start < high:
            low = start + len(line)
        else:
            high = middle
    return low


def _parse(line: str) -> AuditEntry | int | None:
    """An entry, the last sequence number of a compaction's first line, or None (not a line of
    this log)."""
    try:
        value = json.loads(line)
        if set(value) == {"last_sequence"}:
            return int(value["last_sequence"])
        return AuditEntry(**value)
    except (ValueError, TypeError):
        return None


def _last_sequence(descriptor: int) -> int:
    """The last sequence number in the open log; cuts off a line torn by a crash first. Reads the
    file backwards from its end, a block at a time, to the start of its last line that parses:
    about one entry, however long the file (entries are bounded, MAX_ENTRY_BYTES)."""
    end = os.lseek(descriptor, 0, os.SEEK_END)
    if end and os.pread(descriptor, 1, end - 1) != b"\n":  # a torn last line: no entry, cut it off
        end = _line_before(descriptor, end)[0]
        os.ftruncate(descriptor, end)
    while end > 0:
        end, line = _line_before(descriptor, end)
        parsed = _parse(line.decode("ascii", "replace"))
        if parsed is not None:
            return parsed.sequence if isinstance(parsed, AuditEntry) else parsed
    return 0  # no line of this log (an empty file, or only lines that do not parse)


def _line_before(descriptor: int, end: int) -> tuple[int, bytes]:
    """The line that ends at `end` (its own newline included) and where it starts: just after the
    newline before it, or 0. Read backwards, READ_BLOCK bytes at a time."""
    chunks: list[bytes] = []
    position = end
    while position > 0:
        start = max(0, position - READ_BLOCK)
        chunk = os.pread(descriptor, position - start, start)
        newline = chunk.rfind(b"\n", 0, len(chunk) - 1 if position == end else len(chunk))
        if newline >= 0:
            chunks.append(chunk[newline + 1:])
            return start + newline + 1, b"".join(reversed(chunks))
        chunks.append(chunk)
        position = start
    return 0, b"".join(reversed(chunks))
