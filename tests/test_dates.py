"""Keyed date shifting, without a server: the values, the offsets, and the table's derivation."""
from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

from consistent_anon.identity import dates
from consistent_anon.identity.dates import InvalidDate, shift_date, shift_datetime, shift_value
from consistent_anon.identity.pseudonyms import Pseudonymizer

REPO = Path(__file__).resolve().parents[1]


@pytest.mark.parametrize("value, days, expected", [
    ("20240301", -1, "20240229"),      # leap day
    ("20231231", 1, "20240101"),       # year boundary
    ("19000101", -365, "18990101"),
    ("2024.03.01", -1, "20240229"),    # the old ACR-NEMA form, written back in the standard one
])
def test_a_date_moves_by_whole_days(value, days, expected):
    assert shift_date(value, days) == expected


@pytest.mark.parametrize("value", ["2024", "202403", "20241340", "20240230", "2024-03-01",
                                   "20240301-20240305", "abcdefgh", "00010101"])
def test_a_partial_malformed_or_impossible_date_is_refused(value):
    with pytest.raises(InvalidDate):
        shift_date(value, -400)


@pytest.mark.parametrize("value, expected", [
    ("20240301", "20240229"),
    ("2024030112", "2024022912"),
    ("20240301235959.123456", "20240229235959.123456"),
    ("20240301000000+0100", "20240229000000+0100"),   # the UTC offset stays: local time moves
    ("20240301120000.5-0500", "20240229120000.5-0500"),
])
def test_a_datetime_moves_its_date_and_keeps_time_and_zone(value, expected):
    assert shift_datetime(value, -1) == expected


@pytest.mark.parametrize("value", ["2024", "202403", "2024030", "20240301+01", "20240301T1200"])
def test_a_datetime_without_a_full_date_is_refused(value):
    with pytest.raises(InvalidDate):
        shift_datetime(value, -1)


def test_an_element_that_cannot_be_shifted_whole_is_cleaned():
    assert shift_value("DA", "20240301\\20240302", -1) == "20240229\\20240301"
    assert shift_value("DA", "20240301\\2024", -1) == ""      # no real date passes through
    assert shift_value("DT", "2024", -1) == ""
    assert shift_value("DA", "", -1) == ""


def test_which_elements_move():
    assert dates.is_shifted(0x00080020, "DA")          # StudyDate: the option's "C"
    assert dates.is_shifted(0x0008002A, "DT")          # AcquisitionDateTime
    assert dates.is_shifted(0x00080012, "DA")          # InstanceCreationDate: kept by the basic profile
    assert not dates.is_shifted(0x00100030, "DA")      # PatientBirthDate: left to the basic profile
    assert not dates.is_shifted(0x00080030, "TM")      # StudyTime: a whole-day shift keeps it
    assert 0x00080030 in dates.KEPT_TAGS


def test_the_offset_is_keyed_scoped_never_zero_and_in_range():
    one, other = Pseudonymizer(b"k" * 32), Pseudonymizer(b"j" * 32)
    offsets = [one.date_offset(f"patient-{n}", -3, 3) for n in range(300)]
    assert set(offsets) == {-3, -2, -1, 1, 2, 3}
    assert one.date_offset("p", -730, -30) == one.date_offset("p", -730, -30)
    assert [one.date_offset(f"p{n}", -730, -30) for n in range(20)] != \
        [other.date_offset(f"p{n}", -730, -30) for n in range(20)]
    assert all(-730 <= one.date_offset(f"p{n}", -730, -30) <= -30 for n in range(200))
    with pytest.raises(ValueError):
        one.date_offset("p", 0, 0)


def test_the_table_is_derived_from_the_standard_as_committed():
    """The committed table is exactly what the derivation gives from the standard's table as
    shipped by the dicom-standard package (tests/requirements.txt)."""
    derived = subprocess.run([sys.executable, str(REPO / "scripts" / "derive_date_table.py")],
                             check=True, capture_output=True, text=True).stdout
    committed = (REPO / "plugin" / "consistent_anon" / "identity" / "date_attributes.json").read_text()
    assert json.loads(derived) == json.loads(committed)
