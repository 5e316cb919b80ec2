"""The header reader (filereader.py) against pydicom: on every file pydicom ships, on the
project's own objects in every transfer syntax the reader takes, on random nested datasets
(hypothesis), it must see the same elements, at the same paths, with the same values."""
from __future__ import annotations

import io
import struct
from pathlib import Path
from typing import Iterator

import pydicom
import pytest
import requests
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from pydicom.dataelem import RawDataElement
from pydicom.datadict import dictionary_VR
from pydicom.dataset import Dataset, FileMetaDataset
from pydicom.sequence import Sequence
from pydicom.uid import (DeflatedExplicitVRLittleEndian, ExplicitVRBigEndian, ExplicitVRLittleEndian,
                         ImplicitVRLittleEndian)

from consistent_anon.dicom.filereader import (DEFLATED_EXPLICIT_VR_LITTLE_ENDIAN, Header, Span, UnreadableHeader,
                                              read_header, read_layout)
from dicom_factory import rtstruct, to_bytes, two_frame_study

PIXEL_DATA = 0x7FE00010


# --- The reference: what pydicom reads ---------------------------------------------------------

def _normalized(values, vr: str) -> tuple[str, ...]:
    """Values compared without padding or empty entries (the two readers differ there only; and
    pydicom writes a person name without its empty trailing component groups)."""
    padding = " \x00=" if vr == "PN" else " \x00"
    return tuple(v.strip(padding) for v in values if v.strip(padding))


def _reference_values(ds: Dataset, tag: int, raw: RawDataElement | None) -> tuple[str, ...]:
    """pydicom's values of an element, as texts. A value pydicom cannot convert fails the test:
    a comparison is never skipped (pydicom 3.0.2 converts every value the tests meet)."""
    value = ds[tag].value
    if value is None:
        return ()
    if isinstance(value, bytes):
        return (value.decode("latin-1"),)
    if isinstance(value, (list, tuple)) or type(value).__name__ == "MultiValue":
        return tuple(str(v) for v in value)
    return tuple(str(value).split("\\"))


def reference_walk(ds: Dataset, steps: tuple = ()) -> Iterator[tuple[tuple, str, tuple[str, ...]]]:
    """(path, VR, values) of every non-sequence element, as pydicom reads the file: sequences
    are read as pydicom reads them, other elements keep the VR written in the file."""
    for key in list(ds.keys()):
        tag = int(key)
        if tag == PIXEL_DATA:
            continue
        item = ds.get_item(key)
        if isinstance(item, RawDataElement):
            vr = item.VR
            if vr is None:
                try:
                    vr = dictionary_VR(tag)
                except KeyError:
                    vr = "UN"
            if vr != "SQ" and item.length != 0xFFFFFFFF:
                yield (steps, tag), str(vr), _reference_values(ds, tag, item)
                continue
            item = ds[key]
        if item.VR == "SQ":
            for index, child in enumerate(item.value or ()):
                yield from reference_walk(child, steps + ((tag, index),))
        else:
            yield (steps, tag), str(item.VR), _reference_values(ds, tag, None)


def assert_same_as_pydicom(data: bytes) -> Header:
    expected_ds = pydicom.dcmread(io.BytesIO(data), stop_before_pixels=True, force=True)
    expected = list(reference_walk(expected_ds))
    header = read_header(data)
    assert [e.path for e in header.elements] == [path for path, _, _ in expected]
    for element, (path, vr, values) in zip(header.elements, expected):
        if vr != "UN" and element.vr != "UN":  # a UN of pydicom's may have been given its dictionary VR
            assert element.vr == vr, path
        if vr not in ("OB", "OW", "UN", "OB or OW", "US or OW"):
            assert _normalized(element.values, vr) == _normalized(values, vr), path
    meta = getattr(expected_ds, "file_meta", None)
    if meta is not None:
        assert [e.tag for e in header.meta] == [int(tag) for tag in meta.keys()]
    return header


def _leaves(data: bytes, spans, steps: tuple = ()) -> Iterator[tuple[tuple, bytes]]:
    """(path, value) of the non-sequence elements the spans hold, at every depth, in file order;
    nested pixel data aside, as read_header leaves it."""
    for span in spans:
        if span.items is not None:
            for index, item in enumerate(span.items):
                yield from _leaves(data, item, steps + ((span.tag, index),))
        elif span.tag != PIXEL_DATA:
            yield (steps, span.tag), data[span.value_start:span.end]


def assert_layout_as_header(data: bytes) -> None:
    """read_layout, which re-identification copies and splices elements by, walks a file as
    read_header does: the same elements at the same paths, each span's bytes its value, one after
    another up to the pixel data; a deflated file refused (its bytes are not its elements)."""
    header = read_header(data)
    syntax = next((e.values[0] for e in header.meta if e.tag == 0x00020010 and e.values), None)
    if syntax == DEFLATED_EXPLICIT_VR_LITTLE_ENDIAN:
        with pytest.raises(UnreadableHeader, match="deflated"):
            read_layout(data)
        return
    layout = read_layout(data)
    assert list(_leaves(data, layout.elements.values())) == [(e.path, e.raw) for e in header.elements]
    spans: list[Span] = list(layout.elements.values())
    assert all(before.end == after.start for before, after in zip(spans, spans[1:]))
    assert header.searchable.startswith(data[:layout.end])


# --- Files pydicom ships ---------------------------------------------------------------------

#: Damaged files pydicom reads anyway, which the reader refuses (Orthanc refuses to store them
#: too: see the test below; a source the plugin could not read would fail its call, nothing stored).
REFUSED = {
    "no_meta.dcm": "a stray byte before the first element: pydicom reads one junk element",
    "rtplan_truncated.dcm": "cut off inside a sequence: pydicom keeps what it read",
}


def _shipped_files() -> list[str]:
    """The DICOM files in pydicom's package (its data manager would also try to download more)."""
    data = Path(pydicom.__file__).parent / "data"
    return sorted(str(f) for folder in ("test_files", "charset_files") for f in (data / folder).rglob("*.dcm"))


@pytest.mark.parametrize("path", _shipped_files(), ids=lambda p: p.rsplit("/", 1)[-1])
def test_a_file_pydicom_ships_is_read_as_pydicom_reads_it(path):
    """pydicom reads every file it ships (its files of damaged data included): a file it could
    not read would fail here, never pass without a comparison."""
    data = open(path, "rb").read()
    pydicom_walk = list(reference_walk(pydicom.dcmread(io.BytesIO(data), stop_before_pixels=True, force=True)))
    name = path.rsplit("/", 1)[-1]
    if name in REFUSED:
        assert pydicom_walk  # pydicom reads something of it
        with pytest.raises(UnreadableHeader):
            read_header(data)
        with pytest.raises(UnreadableHeader):
            read_layout(data)
    else:
        assert_same_as_pydicom(data)
        assert_layout_as_header(data)


def test_enough_shipped_files_are_compared():
    assert len(_shipped_files()) >= 60


def test_every_shipped_file_orthanc_stores_is_read(native):
    """The plugin meets only what Orthanc stored: whatever Orthanc takes, the reader must read."""
    stored, refused = [], []
    for path in _shipped_files():
        data = open(path, "rb").read()
        answer = requests.post(native.url + "/instances", data=data, timeout=60)
        name = path.rsplit("/", 1)[-1]
        if answer.status_code != 200:
            refused.append(name)
            continue
        stored.append(name)
        header = read_header(data)
        assert header.elements, name
        requests.delete(native.url + f"/instances/{answer.json()['ID']}", timeout=60)
    assert set(REFUSED) <= set(refused)
    assert len(stored) >= 50, (len(stored), refused)


# --- The project's objects, in every transfer syntax -------------------------------------------

def _as(ds: Dataset, syntax: str) -> bytes:
    """The dataset written as a Part 10 file in this transfer syntax (pydicom 3, the tests' own)."""
    ds = pydicom.dcmread(io.BytesIO(to_bytes(ds)))
    ds.file_meta.TransferSyntaxUID = syntax
    if syntax == ExplicitVRBigEndian and PIXEL_DATA in ds:
        del ds[PIXEL_DATA]  # 16-bit pixels would need swapping; the header is what matters
    buffer = io.BytesIO()
    if syntax == ExplicitVRBigEndian:  # pydicom converts to big endian only when forced
        pydicom.dcmwrite(buffer, ds, implicit_vr=False, little_endian=False, force_encoding=True)
    else:
        pydicom.dcmwrite(buffer, ds, enforce_file_format=True)
    return buffer.getvalue()


SYNTAXES = [ExplicitVRLittleEndian, ImplicitVRLittleEndian, ExplicitVRBigEndian, DeflatedExplicitVRLittleEndian]


@pytest.mark.parametrize("syntax", SYNTAXES, ids=lambda s: s.name)
def test_the_projects_objects_are_read_in_every_transfer_syntax(syntax):
    study = two_frame_study(per_series=2)
    objects = study.instances + [rtstruct(study.study, study.instances[:2])]
    for ds in objects:
        header = assert_same_as_pydicom(_as(ds, syntax))
        assert_layout_as_header(_as(ds, syntax))
        assert header.values(0x00080018) == (str(ds.SOPInstanceUID),)
        assert header.text(0x00100020) == str(ds.PatientID)


def test_the_scan_stops_at_the_pixel_data_and_skips_nested_pixel_data():
    ds = two_frame_study(per_series=1).instances[0]
    icon = Dataset()
    icon.Rows, icon.Columns = 2, 2
    icon.add_new(PIXEL_DATA, "OB", b"1.2.3.4.5.6\x00\x00")
    ds.IconImageSequence = Sequence([icon])
    data = to_bytes(ds)
    paths = [e.path for e in read_header(data).elements]
    assert (((0x00880200, 0),), 0x00280010) in paths  # the icon's Rows: the item is read
    assert all(tag != PIXEL_DATA for _, tag in paths)  # but not its pixels, nor the image's
    # Whatever follows the pixel data is not read: a damaged tail does not matter.
    assert read_header(data + b"\xff" * 20).values(0x00080018) == (str(ds.SOPInstanceUID),)


def test_sequences_and_items_of_undefined_length_are_walked():
    ds = two_frame_study(per_series=1).instances[0]
    ds.file_meta.TransferSyntaxUID = ExplicitVRLittleEndian
    item = Dataset()
    item.ReferencedSOPInstanceUID = "1.2.3.4"
    inner = Dataset()
    inner.ReferencedSOPInstanceUID = "1.2.3.5"
    item.ReferencedImageSequence = Sequence([inner])
    ds.ReferencedSeriesSequence = Sequence([item])
    ds["ReferencedSeriesSequence"].is_undefined_length = True
    item.is_undefined_length_sequence_item = True
    header = assert_same_as_pydicom(to_bytes(ds))
    paths = {e.path: e.values for e in header.elements}
    assert paths[(((0x00081115, 0),), 0x00081155)] == ("1.2.3.4",)
    assert paths[(((0x00081115, 0), (0x00081140, 0)), 0x00081155)] == ("1.2.3.5",)


def _explicit(tag: int, vr: bytes, value: bytes) -> bytes:
    """One explicit VR little endian element with a 2-byte length."""
    return struct.pack("<HH", tag >> 16, tag & 0xFFFF) + vr + struct.pack("<H", len(value)) + value


def _part10(dataset: bytes, syntax: str = ExplicitVRLittleEndian) -> bytes:
    uid = syntax.encode() + (b"\x00" if len(syntax) % 2 else b"")
    return b"\x00" * 128 + b"DICM" + _explicit(0x00020010, b"UI", uid) + dataset


def test_a_un_of_undefined_length_is_read_as_an_implicit_sequence():
    """PS3.5 6.2.2: a sequence written back as UN keeps its items, in implicit VR."""
    nested = struct.pack("<HHI", 0x0008, 0x1155, 8) + b"1.2.3.4\x00"
    items = struct.pack("<HHI", 0xFFFE, 0xE000, len(nested)) + nested + struct.pack("<HHI", 0xFFFE, 0xE0DD, 0)
    un = struct.pack("<HH", 0x0009, 0x1010) + b"UN" + struct.pack("<HI", 0, 0xFFFFFFFF) + items
    header = read_header(_part10(_explicit(0x00080018, b"UI", b"1.2.9\x00") +
                                 _explicit(0x00090010, b"LO", b"VENDOR") + un))
    assert {e.path: e.values for e in header.elements}[(((0x00091010, 0),), 0x00081155)] == ("1.2.3.4",)


def _nested_too_deep(depth: int = 5000) -> bytes:
    opening = struct.pack("<HH", 0x0008, 0x1115) + b"SQ" + struct.pack("<HI", 0, 0xFFFFFFFF) + \
        struct.pack("<HHI", 0xFFFE, 0xE000, 0xFFFFFFFF)
    closing = struct.pack("<HHI", 0xFFFE, 0xE00D, 0) + struct.pack("<HHI", 0xFFFE, 0xE0DD, 0)
    return opening * depth + closing * depth


@pytest.mark.parametrize("damage", ["value past the end", "bad VR", "item outside sequence", "runaway sequence",
                                    "nested too deep"])
def test_a_malformed_header_is_refused(damage):
    good = _explicit(0x00080018, b"UI", b"1.2.9\x00") + _explicit(0x00100020, b"LO", b"PID1")
    broken = {
        "value past the end": good + struct.pack("<HH", 0x0010, 0x0030) + b"DA" + struct.pack("<H", 8) + b"1970",
        "bad VR": good + _explicit(0x00100030, b"d\x01", b"19700101"),
        "item outside sequence": good + struct.pack("<HHI", 0xFFFE, 0xE000, 0),
        "runaway sequence": good + struct.pack("<HH", 0x0008, 0x1115) + b"SQ" + struct.pack("<HI", 0, 4000),
        "nested too deep": good + _nested_too_deep(),
    }[damage]
    assert read_header(_part10(good)).text(0x00100020) == "PID1"
    with pytest.raises(UnreadableHeader):
        read_header(_part10(broken))


@pytest.mark.parametrize("charset", ["ISO_IR 192", "ISO_IR 100"])
def test_texts_are_decoded_in_the_files_character_set(charset):
    ds = two_frame_study(per_series=1).instances[0]
    ds.SpecificCharacterSet = charset
    ds.PatientName = "Müller^Jürgen"
    ds.InstitutionName = "Hôpital Sainte-Thérèse"
    data = to_bytes(ds)
    assert "Müller".encode("utf-8" if charset == "ISO_IR 192" else "latin-1") in data
    header = read_header(data)
    assert header.text(0x00100010) == "Müller^Jürgen"
    assert header.text(0x00080080) == "Hôpital Sainte-Thérèse"


def test_a_header_of_values_answers_like_a_read_one():
    header = Header.of_values({0x00100020: "PID", 0x00080018: "1.2.3"})
    assert header.text(0x00100020) == "PID" and header.values(0x00080018) == ("1.2.3",)
    assert 0x00100010 not in header and header.values(0x00100010) == ()


# --- Random nested datasets --------------------------------------------------------------------

_UIDS = st.from_regex(r"\A[1-9][0-9]{0,3}(\.[1-9][0-9]{0,5}){1,6}\Z")
_TEXTS = st.text(alphabet=st.characters(min_codepoint=0x20, max_codepoint=0x7E, blacklist_characters="\\"),
                 max_size=20)
_LEAVES = {"ReferencedSOPInstanceUID": _UIDS, "ReferencedSOPClassUID": _UIDS, "StudyInstanceUID": _UIDS,
           "SeriesInstanceUID": _UIDS, "FrameOfReferenceUID": _UIDS, "CodeMeaning": _TEXTS,
           "InstanceNumber": st.integers(0, 9999).map(str), "Rows": st.integers(0, 65535),
           "ImageComments": _TEXTS}
_SEQUENCES = ["ReferencedSeriesSequence", "ReferencedImageSequence", "SourceImageSequence",
              "ConceptNameCodeSequence"]


@st.composite
def nested_datasets(draw, depth: int = 0) -> Dataset:
    ds = Dataset()
    for keyword in draw(st.lists(st.sampled_from(sorted(_LEAVES)), max_size=4, unique=True)):
        setattr(ds, keyword, draw(_LEAVES[keyword]))
    if depth < 3:
        for keyword in draw(st.lists(st.sampled_from(_SEQUENCES), max_size=2, unique=True)):
            items = draw(st.lists(nested_datasets(depth + 1), max_size=3))
            setattr(ds, keyword, Sequence(items))
            ds[keyword].is_undefined_length = draw(st.booleans())
            for item in items:
                item.is_undefined_length_sequence_item = draw(st.booleans())
    return ds


@settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(body=nested_datasets(), syntax=st.sampled_from(SYNTAXES))
def test_random_nested_datasets_are_read_as_pydicom_reads_them(body, syntax):
    ds = Dataset()
    ds.file_meta = FileMetaDataset()
    ds.file_meta.MediaStorageSOPClassUID = "1.2.840.10008.5.1.4.1.1.4"
    ds.file_meta.MediaStorageSOPInstanceUID = "1.2.3.4.5"
    ds.file_meta.TransferSyntaxUID = ExplicitVRLittleEndian
    ds.SOPClassUID, ds.SOPInstanceUID = "1.2.840.10008.5.1.4.1.1.4", "1.2.3.4.5"
    ds.PatientID = "RANDOM"
    ds.update(body)
    assert_same_as_pydicom(_as(ds, syntax))
    assert_layout_as_header(_as(ds, syntax))


@pytest.mark.parametrize("syntax", ["1.2.840.10008.1.2", "1.2.840.10008.1.2.1"])
def test_the_reader_knows_where_the_file_goes_on_after_the_pixel_data(syntax):
    """The fail-closed check searches what follows the pixel data (a vendor's trailing elements),
    not the pixels themselves: the reader gives that offset, encapsulated values included."""
    from pydicom.dataset import Dataset, FileMetaDataset
    from pydicom.encaps import encapsulate
    for encapsulated in (False, True):
        ds = Dataset()
        ds.file_meta = FileMetaDataset()
        ds.file_meta.MediaStorageSOPClassUID = "1.2.840.10008.5.1.4.1.1.7"
        ds.file_meta.MediaStorageSOPInstanceUID = "1.2.3"
        ds.file_meta.TransferSyntaxUID = "1.2.840.10008.1.2.4.50" if encapsulated else syntax
        ds.SOPInstanceUID = "1.2.3"
        if encapsulated:
            ds.add_new(0x7FE00010, "OB", encapsulate([b"\xff\xd8" + b"\x00" * 30 + b"\xff\xd9"]))
        else:
            ds.add_new(0x7FE00010, "OW", b"\x01\x02" * 64)
        ds.add_new(0x7FE10010, "LO", "TRAILER")
        buffer = io.BytesIO()
        ds.save_as(buffer, enforce_file_format=True)
        data = buffer.getvalue()
        header = read_header(data)
        assert data[header.after_pixel_data:].startswith(b"\xe1\x7f\x10\x00"), (syntax, encapsulated)
        assert b"TRAILER" not in data[:header.after_pixel_data]


def test_a_deflated_file_is_read_inflated_with_where_its_pixel_data_ends_there():
    """The fail-closed check searches a file's bytes after the pixel data: a deflated file's are
    compressed, so the header keeps them inflated, with the pixel data's end in those; its own
    offsets stay unknown (blanking reads them in the file's bytes)."""
    ds = two_frame_study(per_series=1).instances[0]
    ds.private_block(0x7FE1, "SYNTHETIC VENDOR", create=True).add_new(0x01, "LT", "trailing words")
    header = read_header(_as(ds, DeflatedExplicitVRLittleEndian))
    assert header.after_pixel_data is None and header.inflated is not None
    tail = header.inflated.data[header.inflated.after_pixel_data:]
    assert tail.startswith(b"\xe1\x7f\x10\x00") and b"trailing words" in tail
    assert header.inflated.data.startswith(header.searchable)
    assert read_header(_as(ds, ExplicitVRLittleEndian)).inflated is None
