"""Subject-ID tables: the trial's own identifiers for its patients, from a CSV file the site keeps.

A patient found in the table is anonymized under its SubjectID (and SubjectName) instead of a
keyed pseudonym; UIDs stay keyed, scoped by that SubjectID. The file is read at start and again,
off the request path, whenever its content changes, so a site adds subjects without restarting
Orthanc. Error messages name the file and the line, never a value: the file is a table of
patient identifiers.

The issuer rule: a row matches a source patient when both its PatientID and its
IssuerOfPatientID are equal, an absent issuer counting as the empty one. A row without issuer
therefore matches only a source without IssuerOfPatientID; it never matches a source that has
one. The other reading (a row without issuer matching any issuer) would merge two patients of
different issuers who share a PatientID into one subject; this one cannot: at worst a patient
whose source carries an issuer the table does not name is not found (refused under
RequireSubject, else given a keyed pseudonym).
"""
from __future__ import annotations

import csv
import hashlib
import io
import re
import threading
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable

REQUIRED_COLUMNS = ("PatientID", "SubjectID")
OPTIONAL_COLUMNS = ("SubjectName", "IssuerOfPatientID")
COLUMNS = REQUIRED_COLUMNS + OPTIONAL_COLUMNS
MAX_LO = 64  # PatientID, SubjectID and IssuerOfPatientID are LO: 64 characters at most
#: Not allowed in a value: DICOM's value separator and control characters. The backslash is thus
#: free to join an issuer and a PatientID into one key, and a SubjectID and a name into one value.
_INVALID = re.compile(r"[\\\x00-\x1f\x7f]")
_JOIN = "\\"
#: How often, at most, lookups have the file's content compared with the table's (seconds).
CHECK_INTERVAL = 1.0


class SubjectTableError(ValueError):
    """A subject table that cannot be used as it is; the message names the line, not the value."""


@dataclass(frozen=True)
class Subject:
    subject_id: str
    subject_name: str | None = None


class Subjects:
    """One parsed table, immutable. Kept compact (about 1,000,000 rows are a real trial site's
    order of magnitude): one dict of plain strings, the issuer joined to the PatientID as its key
    and the SubjectName to the SubjectID as its value, rather than an object per row."""

    __slots__ = ("_rows",)

    def __init__(self, rows: dict[str, str]) -> None:
        self._rows = rows

    def __len__(self) -> int:
        return len(self._rows)

    def get(self, patient_id: str, issuer: str = "") -> Subject | None:
        """The subject of a source patient, by the issuer rule (see the module's docstring)."""
        value = self._rows.get(_key(issuer, patient_id))
        if value is None:
            return None
        subject_id, _, name = value.partition(_JOIN)
        return Subject(subject_id, name or None)


def _key(issuer: str, patient_id: str) -> str:
    return f"{issuer}{_JOIN}{patient_id}" if issuer else patient_id


def _check_text(value: str, column: str, line: int, source: str, required: bool) -> None:
    if required and not value:
        raise SubjectTableError(f"{source}, line {line}: {column} is empty")
    if len(value) > MAX_LO or _INVALID.search(value):
        raise SubjectTableError(f"{source}, line {line}: {column} is not a valid DICOM value "
                                f"(at most {MAX_LO} characters, no backslash or control character)")


def _columns(header: list[str], source: str) -> list[int]:
    """The position of each of COLUMNS in the header (-1: absent); a column missing, unknown or
    named twice is refused: a second PatientID column would silently decide who is who."""
    names = [name.strip() for name in header]
    missing = [name for name in REQUIRED_COLUMNS if name not in names]
    if missing:
        raise SubjectTableError(f"{source}, line 1: the header must name the columns "
                                f"{', '.join(REQUIRED_COLUMNS)} (missing: {', '.join(missing)})")
    unknown = [name for name in names if name not in COLUMNS]
    if unknown:
        raise SubjectTableError(f"{source}, line 1: unknown column(s) {', '.join(unknown)}")
    twice = sorted({name for name in names if names.count(name) > 1})
    if twice:
        raise SubjectTableError(f"{source}, line 1: column(s) {', '.join(twice)} named twice")
    return [names.index(name) if name in names else -1 for name in COLUMNS]


def _rows(reader: Any, positions: list[int], width: int, source: str) -> dict[str, str]:
    """The rows after the header, checked: a wrong field count, an empty or invalid value, a
    patient listed twice, a SubjectID given to two patients (two people merged into one subject)."""
    rows: dict[str, str] = {}
    owners: set[str] = set()
    for fields in reader:
        line = reader.line_num
        if not fields:  # an empty line, as editors leave at the end
            continue
        if len(fields) != width:
            raise SubjectTableError(f"{source}, line {line}: not as many fields as the header has columns")
        patient_id, subject_id, name, issuer = (fields[p].strip() if p >= 0 else "" for p in positions)
        for value, column, required in ((patient_id, "PatientID", True), (subject_id, "SubjectID", True),
                                        (name, "SubjectName", False), (issuer, "IssuerOfPatientID", False)):
            _check_text(value, column, line, source, required)
        key = _key(issuer, patient_id)
        if key in rows:
            raise SubjectTableError(f"{source}, line {line}: this patient is already listed on an earlier line")
        if subject_id in owners:
            raise SubjectTableError(f"{source}, line {line}: this SubjectID is already given to another "
                                    f"patient on an earlier line")
        owners.add(subject_id)
        rows[key] = f"{subject_id}{_JOIN}{name}" if name else subject_id
    return rows


def parse_subjects(text: str, source: str) -> Subjects:
    """The table in the CSV text of a subject table; SubjectTableError names the line and why.

    What the csv module refuses (a field over its limit, a stray quote) is refused the same way,
    with the line it stopped at."""
    reader = csv.reader(io.StringIO(text.lstrip("\ufeff"), newline=""), strict=True)
    try:
        header = next(reader, [])
        positions = _columns(header, source)
        return Subjects(_rows(reader, positions, len(header), source))
    except csv.Error as error:  # its messages name no value ("field larger than field limit (131072)")
        raise SubjectTableError(f"{source}, line {reader.line_num}: not a valid CSV file ({error})") from None


def read_subjects(data: bytes, source: str) -> Subjects:
    """The table in a file's bytes, which must be UTF-8 (a byte order mark is allowed)."""
    try:
        text = data.decode("utf-8")
    except UnicodeDecodeError as error:
        line = data.count(b"\n", 0, error.start) + 1
        raise SubjectTableError(f"{source}, line {line}: not UTF-8 text") from None
    return parse_subjects(text, source)


@dataclass(frozen=True)
class LoadedTable:
    """The file as last read: its digest, and its table or why it cannot be used. One call
    looks its patients up in one of these (SubjectTable.pinned), so a reload while it runs never
    gives two instances of a study two different subjects."""

    path: Path
    digest: bytes | None
    table: Subjects | None
    error: SubjectTableError | None

    def lookup(self, patient_id: str, issuer: str = "") -> Subject | None:
        """The subject of a source patient, by the issuer rule (see the module's docstring);
        raises SubjectTableError if the file as read cannot be used."""
        if self.table is None:
            raise self.error or SubjectTableError(f"{self.path}: not read")
        return self.table.get(patient_id, issuer)


def _in_thread(task: Callable[[], None]) -> None:
    threading.Thread(target=task, name="subject-table-reload", daemon=True).start()


class SubjectTable:
    """A subject table kept in step with its file, by content (a hash), not size and time.

    The file is read and parsed at start (an error then stops Orthanc). Afterwards a lookup at
    most every `interval` seconds starts a check in the background (`run`): the file is hashed,
    and only if its content changed, parsed; the table in use is swapped once the new one is
    ready, so a request never waits for a large table to parse. A file that becomes invalid is
    not half-used: once read, lookups raise SubjectTableError until it is mended, so no patient
    is anonymized under a pseudonym where the site meant a SubjectID.
    """

    def __init__(self, path: Path, interval: float = CHECK_INTERVAL,
                 run: Callable[[Callable[[], None]], None] = _in_thread) -> None:
        self._path = path
        self._interval = interval
        self._run = run
        self._lock = threading.Lock()
        self._checking = False
        self._checked_at = time.monotonic()
        self._loaded = self._read(None)
        if self._loaded.error:
            raise self._loaded.error

    def _read(self, known: bytes | None) -> LoadedTable:
        """The file now; the table in use again if its content is the same (digest `known`)."""
        try:
            data = self._path.read_bytes()
        except OSError as error:
            return LoadedTable(self._path, None, None,
                               SubjectTableError(f"{self._path}: cannot be read ({error.strerror})"))
        digest = hashlib.sha256(data).digest()
        if digest == known:
            return self._loaded
        try:
            return LoadedTable(self._path, digest, read_subjects(data, str(self._path)), None)
        except SubjectTableError as error:
            return LoadedTable(self._path, digest, None, error)

    def _check(self) -> None:
        """Start a background check of the file if none runs and the last is `interval` old."""
        with self._lock:
            if self._checking or time.monotonic() - self._checked_at < self._interval:
                return
            self._checking = True
        try:
            self._run(self._reload)
        except RuntimeError:  # no thread to be had now: the table in use serves, the next lookup retries
            with self._lock:
                self._checking = False

    def _reload(self) -> None:
        try:
            self._loaded = self._read(self._loaded.digest)
        finally:
            with self._lock:
                self._checking, self._checked_at = False, time.monotonic()

    def pinned(self) -> LoadedTable:
        """The table as last read, for one call; it may start a background check of the file."""
        self._check()
        return self._loaded

    def lookup(self, patient_id: str, issuer: str = "") -> Subject | None:
        """The subject of a source patient in the table as last read (LoadedTable.lookup)."""
        return self.pinned().lookup(patient_id, issuer)
