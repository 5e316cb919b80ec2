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
from array import array
from bisect import bisect_left
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable, Iterator

from ..dicom.vocabulary import MAX_LO  # PatientID, SubjectID and IssuerOfPatientID are LO

REQUIRED_COLUMNS = ("PatientID", "SubjectID")
OPTIONAL_COLUMNS = ("SubjectName", "IssuerOfPatientID")
COLUMNS = REQUIRED_COLUMNS + OPTIONAL_COLUMNS
#: Not allowed in a value: DICOM's value separator and control characters. The backslash is thus
#: free to join an issuer and a PatientID into one key.
_INVALID = re.compile(r"[\\\x00-\x1f\x7f]")
#: How often, at most, lookups have the file's content compared with the table's (seconds).
CHECK_INTERVAL = 1.0


class SubjectTableError(ValueError):
    """A subject table that cannot be used as it is; the message names the line, not the value."""


@dataclass(frozen=True)
class Subject:
    subject_id: str
    subject_name: str | None = None


#: A row's place in a table's index: the hash of its key (40 bits) and its line (24 bits), in one
#: integer, so that sorting the integers sorts the rows by hash.
_LINE_BITS = 24
_LINE_MASK = (1 << _LINE_BITS) - 1
MAX_LINES = _LINE_MASK  # lines of a table, header and empty lines included
_HASH_MASK = (1 << 40) - 1
_LINE_ENDS = re.compile(rb"\r\n?|\n")  # the line ends the text reader splits on (newline="")


def _packed(text: str, line: int) -> int:
    return ((hash(text) & _HASH_MASK) << _LINE_BITS) | line


def _lines_hashed_as(index: array, text: str) -> Iterator[int]:
    """The lines in a sorted index whose hash is that of `text`: candidates, to be compared."""
    wanted = _packed(text, 0) >> _LINE_BITS
    position = bisect_left(index, wanted << _LINE_BITS)
    while position < len(index) and index[position] >> _LINE_BITS == wanted:
        yield index[position] & _LINE_MASK
        position += 1


def _values(fields: list[str], positions: list[int]) -> tuple[str, str, str, str]:
    """(PatientID, SubjectID, SubjectName, IssuerOfPatientID) of a row, as COLUMNS orders them."""
    patient_id, subject_id, name, issuer = (fields[p].strip() if p >= 0 else "" for p in positions)
    return patient_id, subject_id, name, issuer


class Subjects:
    """One parsed table, immutable and compact: a real trial site's table may have about
    1,000,000 rows. It holds the file's bytes, where each line starts, and an index: each row's
    key (issuer and PatientID) hashed and packed with its line, sorted. A lookup finds the lines
    with the key's hash, reads them again and compares their keys: a hash is never trusted
    alone. About 16 bytes a row beside the file's own, where a dict of strings took 200."""

    __slots__ = ("_data", "_starts", "_positions", "_index")

    def __init__(self, data: bytes, starts: array, positions: list[int], index: array) -> None:
        self._data, self._starts, self._positions, self._index = data, starts, positions, index

    def __len__(self) -> int:
        return len(self._index)

    def values(self, line: int) -> tuple[str, str, str, str]:
        """The values of the row on a line (0: the header), as `_values` gives them."""
        text = self._data[self._starts[line]:self._starts[line + 1]].decode("utf-8").rstrip("\r\n")
        return _values(next(csv.reader([text], strict=True)), self._positions)

    def key(self, line: int) -> str:
        """The key (`_key`) of the row on a line."""
        patient_id, _, _, issuer = self.values(line)
        return _key(issuer, patient_id)

    def get(self, patient_id: str, issuer: str = "") -> Subject | None:
        """The subject of a source patient, by the issuer rule (see the module's docstring). A
        value holding a backslash (a multi-valued attribute) is in no table."""
        if "\\" in patient_id or "\\" in issuer:
            return None
        key = _key(issuer, patient_id)
        for line in _lines_hashed_as(self._index, key):
            if self.key(line) == key:
                _, subject_id, name, _ = self.values(line)
                return Subject(subject_id, name or None)
        return None


def _key(issuer: str, patient_id: str) -> str:
    return f"{issuer}\\{patient_id}" if issuer else patient_id


def _check_row(values: tuple[str, str, str, str], line: int, source: str) -> None:
    """A row's values (`_values`): the two required ones present, each a valid DICOM value. The
    whole row is checked at once; a row that fails is checked again value by value, to name the
    column."""
    if values[0] and values[1] and max(map(len, values)) <= MAX_LO and not _INVALID.search("".join(values)):
        return
    for value, column in zip(values, COLUMNS):
        if column in REQUIRED_COLUMNS and not value:
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


def _indexes(reader: Any, positions: list[int], width: int, source: str) -> tuple[array, array]:
    """The rows after the header, checked one by one (a wrong field count, a row over two lines,
    an empty or invalid value), as two unsorted indexes: of their keys and of their SubjectIDs."""
    keys, owners = array("Q"), array("Q")
    previous = reader.line_num
    for fields in reader:
        line, spread, previous = reader.line_num, reader.line_num != previous + 1, reader.line_num
        if not fields:  # an empty line, as editors leave at the end
            continue
        if len(fields) != width:
            raise SubjectTableError(f"{source}, line {line}: not as many fields as the header has columns")
        if spread:
            raise SubjectTableError(f"{source}, line {line}: a quoted field goes over more than one line")
        values = _values(fields, positions)
        _check_row(values, line, source)
        patient_id, subject_id, _, issuer = values
        keys.append(_packed(_key(issuer, patient_id), line - 1))
        owners.append(_packed(subject_id, line - 1))
    return keys, owners


def _first_repeat(index: array, value_of: Callable[[int], str]) -> int | None:
    """The first line (0-based) that repeats the value of an earlier one, in a sorted index:
    only lines of equal hashes (a run) are read again and compared."""
    repeats: list[int] = []
    run: list[int] = []
    previous = -1
    for packed in index:
        hashed, line = packed >> _LINE_BITS, packed & _LINE_MASK
        if hashed != previous:
            previous, run = hashed, [line]
        elif value_of(line) in {value_of(earlier) for earlier in run}:
            repeats.append(line)
        else:
            run.append(line)
    return min(repeats, default=None)


def read_subjects(data: bytes, source: str) -> Subjects:
    """The table in a subject table file's bytes: UTF-8 (a byte order mark is allowed), CSV with
    a header line. SubjectTableError names the line and why: bytes that are not UTF-8, what the
    csv module refuses (a field over its limit, a stray quote), what `_columns` and `_indexes`
    refuse, and `_refuse_repeats`. The whole file is decoded once to check it is UTF-8 (a passing
    copy), the kept table holds its bytes only: rows are decoded as they are read."""
    try:
        data.decode("utf-8")
    except UnicodeDecodeError as error:
        line = data.count(b"\n", 0, error.start) + 1
        raise SubjectTableError(f"{source}, line {line}: not UTF-8 text") from None
    starts = array("Q", [0])  # where each line starts, and where the last one ends
    starts.extend(end.end() for end in _LINE_ENDS.finditer(data))
    if starts[-1] != len(data):
        starts.append(len(data))
    if len(starts) - 1 > MAX_LINES:
        raise SubjectTableError(f"{source}: more than {MAX_LINES} lines")
    reader = csv.reader(io.TextIOWrapper(io.BytesIO(data), encoding="utf-8-sig", newline=""), strict=True)
    try:
        header = next(reader, [])
        positions = _columns(header, source)
        keys, owners = _indexes(reader, positions, len(header), source)
    except csv.Error as error:  # its messages name no value ("field larger than field limit (131072)")
        raise SubjectTableError(f"{source}, line {reader.line_num}: not a valid CSV file ({error})") from None
    index = array("Q", sorted(keys))
    table = Subjects(data, starts, positions, index)
    _refuse_repeats(table, index, array("Q", sorted(owners)), source)
    return table


def _refuse_repeats(table: Subjects, keys: array, owners: array, source: str) -> None:
    """A patient listed twice, or a SubjectID given to two patients (that would merge two people
    into one subject): refused at the first line that repeats an earlier one."""
    repeats = ((_first_repeat(keys, table.key), "this patient is already listed on an earlier line"),
               (_first_repeat(owners, lambda line: table.values(line)[1]),
                "this SubjectID is already given to another patient on an earlier line"))
    found = [(line, reason) for line, reason in repeats if line is not None]
    if found:
        line, reason = min(found)
        raise SubjectTableError(f"{source}, line {line + 1}: {reason}")


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
