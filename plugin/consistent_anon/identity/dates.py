"""Keyed date shifting: PS3.15 E.3.6, Retain Longitudinal Temporal Information with Modified Dates.

Every date of a patient moves by the same whole number of days, so intervals between studies
survive while the real dates do not. The offset comes from the project key and the patient's
scope (see pseudonyms.Pseudonymizer.date_offset): never stored, the same on every node.
Which attributes move is derived from the standard's table (scripts/derive_date_table.py).
"""
from __future__ import annotations

import json
import re
from datetime import date, timedelta
from pathlib import Path

_TABLE = json.loads(Path(__file__).with_name("date_attributes.json").read_text())

#: Dates and date-times the option modifies (Table E.1-1 "C"), shifted.
SHIFTED_TAGS: frozenset[int] = frozenset(int(tag, 16) for tag in _TABLE["shifted"])
#: Times and time zones the option modifies: a shift by whole days leaves them as they are.
KEPT_TAGS: frozenset[int] = frozenset(int(tag, 16) for tag in _TABLE["kept"])
#: Dates the table leaves to the basic profile (removed or emptied there): never shifted.
NOT_SHIFTED_TAGS: frozenset[int] = frozenset(int(tag, 16) for tag in _TABLE["not_shifted"])

DATE_VRS = ("DA", "DT")
#: LongitudinalTemporalInformationModified of shifted dates (their code: option_attributes.py).
LONGITUDINAL_MODIFIED = "MODIFIED"

_DATE = re.compile(r"^(\d{4})\.?(\d{2})\.?(\d{2})$")  # YYYYMMDD, or the old YYYY.MM.DD
_DATETIME = re.compile(r"^(\d{4})(\d{2})(\d{2})(\d{0,6}(?:\.\d{1,6})?)([+-]\d{4})?$")


class InvalidDate(ValueError):
    """A value that is not a complete date: it is cleaned, never passed through."""


def is_shifted(tag: int, vr: str) -> bool:
    """Whether an element's value moves: a date or date-time that the basic profile would keep
    or that the option modifies; not one the table leaves to the basic profile."""
    return vr in DATE_VRS and tag not in NOT_SHIFTED_TAGS


def _shift(year: str, month: str, day: str, days: int) -> str:
    try:
        moved = date(int(year), int(month), int(day)) + timedelta(days=days)
    except (ValueError, OverflowError):
        raise InvalidDate() from None
    if moved.year < 1000:  # strftime would not write four digits
        raise InvalidDate()
    return moved.strftime("%Y%m%d")


def shift_date(value: str, days: int) -> str:
    """A DA value moved by `days`; a partial, malformed or impossible date raises InvalidDate."""
    match = _DATE.match(value.strip())
    if not match:
        raise InvalidDate()
    return _shift(*match.groups(), days)


def shift_datetime(value: str, days: int) -> str:
    """A DT value moved by `days`: the date part moves, the time of day and the UTC offset stay
    (the shift is in the value's own local time). A DT without a full date (YYYY, YYYYMM) cannot
    be shifted by days and raises InvalidDate, as does a malformed one."""
    match = _DATETIME.match(value.strip())
    if not match:
        raise InvalidDate()
    year, month, day, time, zone = match.groups()
    return _shift(year, month, day, days) + time + (zone or "")


def shift_value(vr: str, value: str, days: int) -> str:
    """Each of a multi-valued element's values moved; the whole element is cleaned (empty) as soon
    as one value cannot be shifted, so that no real date passes through."""
    shift = shift_date if vr == "DA" else shift_datetime
    try:
        return "\\".join(shift(part, days) if part.strip() else "" for part in value.split("\\"))
    except InvalidDate:  # cleaned, as the docstring says: no real date passes through
        return ""
