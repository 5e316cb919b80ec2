"""The UID table is data derived from native Orthanc and pydicom's dictionary, never typed."""
from __future__ import annotations

import json
import re
from pathlib import Path

from pydicom.datadict import DicomDictionary

import derive_uid_table
from consistent_anon.dicom.uid_attributes import PROFILE_TAGS, UID_TAGS, is_well_known

TABLE = json.loads((Path(__file__).parents[1] / "plugin/consistent_anon/dicom/uid_attributes.json").read_text())


def test_the_table_is_what_this_orthanc_replaces_in_every_profile_it_knows(native):
    version, profiles = derive_uid_table.profiles_of(native.url)
    assert {"2008", "2017c", "2021b"} <= set(profiles)
    for profile, tags in profiles.items():
        assert tags == TABLE["profiles"][profile], f"Orthanc {version}, profile {profile}"


def test_the_added_identifiers_follow_the_stated_rule_on_pydicoms_dictionary():
    rule = re.compile(TABLE["identifier_rule"])
    in_profiles = set().union(*TABLE["profiles"].values())
    for tag in TABLE["identifier_rule_tags"]:
        entry = DicomDictionary[int(tag, 16)]
        assert entry[0] == "UI" and rule.search(entry[4]) and tag not in in_profiles
    assert set(TABLE["uid_tags"]) == in_profiles | set(TABLE["identifier_rule_tags"])
    assert derive_uid_table.identifier_tags(in_profiles) == TABLE["identifier_rule_tags"]


def test_the_plugin_maps_every_profile_and_never_a_class_or_syntax():
    for tags in PROFILE_TAGS.values():
        assert tags <= UID_TAGS
    for keyword in ("FrameOfReferenceUID", "SourceFrameOfReferenceUID", "ReferencedSOPInstanceUID",
                    "SynchronizationFrameOfReferenceUID", "ConcatenationUID", "DimensionOrganizationUID"):
        assert any(DicomDictionary[t][4] == keyword for t in UID_TAGS), keyword
    for tag in UID_TAGS:
        assert not DicomDictionary[tag][4].endswith(("SOPClassUID", "TransferSyntaxUID", "CodingSchemeUID"))
    assert is_well_known("1.2.840.10008.5.1.4.1.1.4") and not is_well_known("1.2.840.1000")
