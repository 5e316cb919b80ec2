"""The de-identification options' table is data derived from the standard's tables, never typed."""
from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

from pydicom.datadict import keyword_for_tag

from conftest import STANDARD_DATA
from consistent_anon.dicom.option_attributes import (BASIC_PROFILE_CODE, CLEANED_TAGS, KEPT_TAGS, OPTION_CODES,
                                                     is_cleaned, is_safe_private)

REPO = Path(__file__).parents[1]
STANDARD = STANDARD_DATA


def test_the_table_is_derived_from_the_standard_as_committed():
    derived = subprocess.run([sys.executable, str(REPO / "scripts" / "derive_option_table.py")],
                             check=True, capture_output=True, text=True).stdout
    committed = (REPO / "plugin" / "consistent_anon" / "dicom" / "option_attributes.json").read_text()
    assert json.loads(derived) == json.loads(committed)


def test_the_options_and_their_codes_are_those_of_cid_7050():
    assert BASIC_PROFILE_CODE == ("113100", "Basic Application Confidentiality Profile")
    assert OPTION_CODES == {
        "CleanPixelData": "113101", "CleanGraphics": "113103", "CleanStructuredContent": "113104",
        "CleanDescriptors": "113105", "RetainLongitudinalModifiedDates": "113107",
        "RetainPatientCharacteristics": "113108", "RetainDeviceIdentity": "113109", "RetainSafePrivate": "113111",
        "RetainInstitutionIdentity": "113112"}


def test_the_table_follows_the_standards_rows():
    rows = {row["tag"]: row for row in json.loads((STANDARD / "ps3.15-table-e.1-1.json").read_text())}
    assert len(rows) == 621
    for option, column in (("RetainDeviceIdentity", "rtnDevIdOpt"), ("RetainPatientCharacteristics", "rtnPatCharsOpt"),
                           ("RetainInstitutionIdentity", "rtnInstIdOpt")):
        kept = {f"({tag >> 16:04X},{tag & 0xFFFF:04X})" for tag in KEPT_TAGS[option]}
        assert kept == {tag for tag, row in rows.items() if row.get(column) == "K"}, option
    # The special cases as the table gives them: AE titles cleaned under device identity, the
    # patient's sex kept under patient characteristics, overlays and curves by their ranges.
    assert keyword_for_tag(0x00080055) == "StationAETitle" and 0x00080055 in CLEANED_TAGS["RetainDeviceIdentity"]
    assert 0x00100040 in KEPT_TAGS["RetainPatientCharacteristics"]
    assert is_cleaned("CleanGraphics", 0x60024000) and is_cleaned("CleanGraphics", 0x50001234)
    assert not is_cleaned("CleanGraphics", 0x60020010)


def test_safe_private_attributes_match_group_element_in_block_and_creator():
    assert is_safe_private(0x00191023, "GEMS_ACQU_01") and is_safe_private(0x00194123, "GEMS_ACQU_01 ")
    assert not is_safe_private(0x00191023, "GEMS_ACQU_02") and not is_safe_private(0x00191001, "GEMS_ACQU_01")
    assert not is_safe_private(0x00191023, None)
    lines = (STANDARD / "ps3.15-table-e.3.10-1-safe-private.csv").read_text().splitlines()
    assert len([line for line in lines if not line.startswith("#")]) == 1 + 479
