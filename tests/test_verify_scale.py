"""The verification route's work per instance does not grow with the set (no server): counted
as Python and built-in calls, which time on a shared machine could not show reliably."""
from __future__ import annotations

import sys
from types import SimpleNamespace

import pytest
from pydicom.uid import PYDICOM_ROOT_UID as PYDICOM_ROOT, generate_uid

from consistent_anon.identity.pseudonyms import UUID_ROOT, Pseudonymizer
from consistent_anon.dicom.filereader import Header
from consistent_anon.dicom import scanning
from consistent_anon.dicom.scanning import TextFinder, UidNeedles
from dicom_factory import Study, mr_series
from test_set_verification import KEY, anonymize_locally, as_resource, run

SMALL, LARGE = 60, 480


def calls_per_instance(count: int, uid_root: str) -> float:
    """Calls made by `verify` over a set of `count` MR images and its anonymized copy (its
    pseudonyms under `uid_root`), per instance. Each image lies on a frame of reference of its own
    (unrelated images): the frames grow with the set too."""
    images = mr_series(Study(), generate_uid(), count, 1, size=4)
    for ds in images:
        ds.FrameOfReferenceUID = generate_uid()
    pseudonyms = Pseudonymizer(KEY, uid_root)
    source = as_resource("s", images)
    anonymized = as_resource("a", anonymize_locally(SimpleNamespace(instances=images), pseudonyms))
    calls = 0

    def count_call(frame, event, arg) -> None:
        nonlocal calls
        if event in ("call", "c_call"):
            calls += 1

    sys.setprofile(count_call)
    try:
        report = run(source, anonymized, pseudonyms)
    finally:
        sys.setprofile(None)
    assert report["Clean"] and report["PairedInstancesCount"] == count, report
    assert len(report["FramesOfReference"]) == count
    return calls / count


@pytest.mark.parametrize("uid_root", [UUID_ROOT, PYDICOM_ROOT.rstrip(".")], ids=["2.25", "the source's root"])
def test_the_calls_per_instance_do_not_grow_with_the_set(uid_root):
    # Before, every anonymized file encoded every source UID again before searching its bytes
    # (and searched them one by one where the pseudonyms share the source's root), and each
    # frame of reference counted its instances over the whole source set.
    # About 16,000 calls per instance go to reading and scanning its header; the old code added
    # about 4 per instance of the set (12 % more per instance at 480 than at 60).
    small, large = calls_per_instance(SMALL, uid_root), calls_per_instance(LARGE, uid_root)
    assert large <= 1.03 * small, (small, large)


FEW_ROOTS = {"1.2.3.4", "1.2.826.0.1.3680043.8.498.1", "9.9\ufffd9", "77.88"}
MANY_ROOTS = FEW_ROOTS | {f"2.25.{index}{index * 7919}" for index in range(1, 100)}  # each its own root
#: A set's UIDs under one organization's root: more than are searched one by one.
ONE_ROOT = FEW_ROOTS | {f"1.2.826.0.1.3680043.8.498.{index}" for index in range(100, 200)}


@pytest.mark.parametrize("wanted", [FEW_ROOTS, MANY_ROOTS, ONE_ROOT], ids=["few", "many roots", "one root"])
def test_prepared_uids_are_found_as_the_plain_search_finds_them(wanted):
    needles = UidNeedles(wanted)
    cases = [b"", b"x1.2.3.4y", b"11.2.3.45", b"1.2.3", b"\x001.2.826.0.1.3680043.8.498.12\x00",
             b"9.9?9", b"7.88", b"177.889", "1.2.3.4".encode("utf-16-le"), "77.88".encode("utf-16-be"),
             b"1.2.3..4", b"2.25.115838", b"12.25.2158388.", b"2.25.215838", b"2.25.3237577",
             b"1.2.826.0.1.3680043.8.498.150", b"1.2.826.0.1.3680043.8.498.1500", b"x1.2.826.0.1.3680043.8.498.99y"]
    for data in cases:
        plain = any(uid.encode("ascii", "replace") in data for uid in wanted)
        utf16 = any(uid.encode("utf-16-le") in data or uid.encode("utf-16-be") in data
                    for uid in wanted if uid.isascii())
        assert needles.in_bytes(data) == (plain or utf16), data


def date_times(count: int) -> dict[str, str]:
    """`count` distinct date-times, as a set whose instances each have their own acquisition time."""
    return {f"2024{1 + i % 12:02d}{1 + i % 28:02d}{i % 24:02d}{i % 60:02d}{i // 60 % 60:02d}.{i:06d}": "AcquisitionDateTime"
            for i in range(count)}


def test_the_search_for_dates_does_not_grow_with_their_count(monkeypatch):
    # One pattern of alternatives tried each of them at every place: 20,000 dates took about
    # 200 times as long as 50 (timed once, outside the suite). Dates are now looked up where a
    # number starts: no pattern holds them, so none grows with their count.
    compiled: list[int] = []
    compile_pattern = scanning.re.compile
    monkeypatch.setattr(scanning.re, "compile", lambda pattern, *flags: compiled.append(len(pattern))
                        or compile_pattern(pattern, *flags))
    finder = TextFinder(date_times(20000))
    header = Header.of_values({0x00204000: "Acquired 20240101000000.000000 then 20240317 at 1015"})
    assert [text for _, _, text in finder.matches(header)] == ["20240101000000.000000"]
    assert max(compiled, default=0) < 1000, compiled


@pytest.mark.parametrize("text", [
    "20240301", "x20240301", "20240301a", "_20240301", "20240301_", "20240301.5", "1920240301",
    "20240301120000", "20240301120000.5+0100", "20240301120000.5+01000", "2024.03.01", "2024.03.012",
    "\u017f20240301", "20240301\u212a", "\u013020240301 \u0131", "20240301.20240301", "20240301-20240302",
    "on 20240301, 20240301120000 and 20240301120000.5 and 2024.03.01.", "20240301\\20240301120000",
    "0x20240301 20240301-0500 20240301120000-0500 +20240301+",
])
def test_numbers_are_found_as_the_pattern_of_words_finds_them(text):
    dates = {"20240301": "StudyDate", "20240301120000": "AcquisitionDateTime",
             "20240301120000.5+0100": "AcquisitionDateTime", "2024.03.01": "StudyDate",
             "20240301120000-0500": "AcquisitionDateTime", "2024030112": "AcquisitionDateTime"}
    header = Header.of_values({0x00204000: text})
    with_pattern = TextFinder({**dates, "never-written": "InstitutionName"})  # a word: the pattern
    assert TextFinder(dates).matches(header) == with_pattern.matches(header)


def test_short_numbers_alone_are_found_as_whole_values_only():
    header = Header.of_values({0x00204000: "1961 and 19610", 0x00081030: "1961"})
    assert [(e.tag, label) for e, label in TextFinder({"1961": "PatientBirthDate"}).find(header)] == \
        [(0x00081030, "PatientBirthDate")]
