"""Keep/Replace/Remove entries as paths, and which elements they cover (no server)."""
from __future__ import annotations

from consistent_anon.pipeline.options import parse_request
from consistent_anon.dicom.paths import KEEP, REMOVE, REPLACE, TagPath, parse_path

SEQ = 0x00081115  # ReferencedSeriesSequence
SOP = 0x00081199  # ReferencedSOPSequence
UID = 0x00081155  # ReferencedSOPInstanceUID


def test_entries_parse_as_native_writes_them():
    assert parse_path("ReferencedSeriesSequence[0].ReferencedSOPSequence[*].ReferencedSOPInstanceUID") == \
        TagPath(((SEQ, 0), (SOP, None)), UID)
    assert parse_path("0008,1115[2].(0011,1010)") == TagPath(((SEQ, 2),), 0x00111010)
    assert parse_path(" StudyInstanceUID ") == TagPath((), 0x0020000D)
    for invalid in ("", "ReferencedSeriesSequence.SeriesInstanceUID", "ReferencedSeriesSequence[x].Modality",
                    "NoSuchKeyword[0].Modality", "ReferencedSeriesSequence[0]."):
        assert parse_path(invalid) is None, invalid


def test_a_path_covers_its_element_and_everything_under_a_sequence_it_names():
    element = (((SEQ, 1), (SOP, 0)), UID)
    assert parse_path("ReferencedSeriesSequence[*].ReferencedSOPSequence[0].ReferencedSOPInstanceUID").covers(element)
    assert parse_path("ReferencedSeriesSequence[1].ReferencedSOPSequence").covers(element)
    assert parse_path("ReferencedSeriesSequence").covers(element)
    assert not parse_path("ReferencedSeriesSequence[0]. ReferencedSOPSequence").covers(element)
    assert not parse_path("ReferencedSOPInstanceUID").covers(element)  # a tag names the root only
    assert parse_path("ReferencedSOPInstanceUID").covers(((), UID))


def test_the_fate_of_a_path_removal_first_and_content_sequence_kept_with_pseudonyms():
    request = parse_request(b'{"Keep": ["ReferencedSeriesSequence", "ContentSequence"], '
                            b'"Replace": {"ReferencedSeriesSequence[0].SeriesInstanceUID": "1.2.3"}, '
                            b'"Remove": ["ReferencedSeriesSequence[1]. ReferencedSOPSequence"]}')
    paths = request.caller_paths
    assert paths.fate((((SEQ, 0),), 0x0020000E)) == (REPLACE, "1.2.3")
    assert paths.fate((((SEQ, 0),), 0x00080060)) == (KEEP, None)
    assert paths.fate((((SEQ, 1), (SOP, 0)), UID)) == (REMOVE, None)
    assert paths.fate((((0x0040A730, 0), (SOP, 0)), UID)) is None
    assert paths.fate(((), 0x0040A730)) == (KEEP, None)
    assert paths.fate(((), UID)) is None

