"""Subject-ID tables: the trial's own identifiers for its patients, from a CSV file the site keeps.

A patient found in the table is anonymized under its SubjectID (and SubjectName) instead of a
keyed pseudonym; UIDs stay keyed, scoped by that SubjectID. The file is read at start and again
whenever it changes on disk, so a site adds subjects without restarting Orthanc. Error messages
name the file and the line, never a value: the file is a table of patient identifiers.
"""
from __future__ import annotations

import csv
import io
import os
import threading
from dataclasses import dataclass
from pathlib import Path

REQUIRED_COLUMNS = ("PatientID", "SubjectID")
OPTIONAL_COLUMNS = ("SubjectName", "IssuerOfPatientID")
MAX_LO = 64  # PatientID, SubjectID and IssuerOfPatientID are LO: 64 characters at most


class SubjectTableError(ValueError):
    """A subject table that cannot be used as it is; the message names the line, not the value."""


@dataclass(frozen=True)
class Subject:
    subject_id: str
    subject_name: str | None = None


def _check_text(value: str, column: str, line: int, source: str, required: bool) -> None:
    if required and not value:
        raise SubjectTableError(f"{source}, line {line}: {column} is empty")
    if len(value) > MAX_LO or "\\" in value or any(ord(c) < 32 for c in value):
        raise SubjectTableError(f"{source}, line {line}: {column} is not a valid DICOM value "
                                f"(at most {MAX_LO} characters, no backslash or control character)")


def parse_subjects(text: str, source: str) -> dict[tuple[str, str], Subject]:
    """(IssuerOfPatientID or "", PatientID) -> Subject, from the CSV text of a subject table.

    Refused: a missing header or column, an empty or invalid value, a patient listed twice, and a
    SubjectID given to two patients (that would merge two people into one subject).
    """
    reader = csv.DictReader(io.StringIO(text.lstrip("\ufeff"), newline=""))
    columns = [name.strip() for name in (reader.fieldnames or [])]
    missing = [name for name in REQUIRED_COLUMNS if name not in columns]
    if missing:
        raise SubjectTableError(f"{source}, line 1: the header must name the columns "
                                f"{', '.join(REQUIRED_COLUMNS)} (missing: {', '.join(missing)})")
    unknown = [name for name in columns if name not in REQUIRED_COLUMNS + OPTIONAL_COLUMNS]
    if unknown:
        raise SubjectTableError(f"{source}, line 1: unknown column(s) {', '.join(unknown)}")
    reader.fieldnames = columns
    table: dict[tuple[str, str], Subject] = {}
    owners: dict[str, tuple[str, str]] = {}
    for row in reader:
        line = reader.line_num
        if None in row or any(value is None for value in row.values()):
            raise SubjectTableError(f"{source}, line {line}: not as many fields as the header has columns")
        values = {name: row.get(name, "").strip() for name in REQUIRED_COLUMNS + OPTIONAL_COLUMNS}
        for name in REQUIRED_COLUMNS + OPTIONAL_COLUMNS:
            _check_text(values[name], name, line, source, required=name in REQUIRED_COLUMNS)
        key = (values["IssuerOfPatientID"], values["PatientID"])
        if key in table:
            raise SubjectTableError(f"{source}, line {line}: this patient is already listed on an earlier line")
        if values["SubjectID"] in owners:
            raise SubjectTableError(f"{source}, line {line}: this SubjectID is already given to another "
                                    f"patient on an earlier line")
        owners[values["SubjectID"]] = key
        table[key] = Subject(values["SubjectID"], values["SubjectName"] or None)
    return table


class SubjectTable:
    """A subject table kept in step with its file: re-read when its size or time changes.

    A file that becomes invalid is not half-used: lookups raise SubjectTableError until it is
    mended, so no patient is anonymized under a pseudonym where the site meant a SubjectID.
    """

    def __init__(self, path: Path) -> None:
        self._path = path
        self._lock = threading.Lock()
        self._stamp: tuple[int, int] | None = None
        self._table: dict[tuple[str, str], Subject] = {}
        self._error: SubjectTableError | None = None
        self._refresh()
        if self._error:
            raise self._error

    def _refresh(self) -> None:
        try:
            status = os.stat(self._path)
        except OSError as error:
            self._stamp, self._error = None, SubjectTableError(f"{self._path}: cannot be read ({error.strerror})")
            return
        stamp = (status.st_mtime_ns, status.st_size)
        if stamp == self._stamp:
            return
        try:
            text = self._path.read_text(encoding="utf-8")
            self._table, self._error = parse_subjects(text, str(self._path)), None
        except UnicodeDecodeError:
            self._error = SubjectTableError(f"{self._path}: not UTF-8 text")
        except OSError as error:
            self._error = SubjectTableError(f"{self._path}: cannot be read ({error.strerror})")
        except SubjectTableError as error:
            self._error = error
        self._stamp = stamp

    def lookup(self, patient_id: str, issuer: str = "") -> Subject | None:
        """The subject of a source patient: listed with its issuer, else listed without one."""
        with self._lock:
            self._refresh()
            if self._error:
                raise self._error
            return self._table.get((issuer, patient_id)) or self._table.get(("", patient_id))
