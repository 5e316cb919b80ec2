"""The verification route's work per instance does not grow with the set (no server): counted
as Python and built-in calls, which time on a shared machine could not show reliably."""
from __future__ import annotations

import sys
from types import SimpleNamespace

from pydicom.uid import generate_uid

from consistent_anon.pseudonyms import Pseudonymizer
from consistent_anon.scanning import in_bytes
from dicom_factory import Study, mr_series
from test_set_verification import KEY, anonymize_locally, as_resource, run

SMALL, LARGE = 60, 480


def calls_per_instance(count: int) -> float:
    """Calls made by `verify` over a set of `count` MR images and its anonymized copy, per
    instance. Each image lies on a frame of reference of its own (unrelated images): the frames
    grow with the set too."""
    images = mr_series(Study(), generate_uid(), count, 1, size=4)
    for ds in images:
        ds.FrameOfReferenceUID = generate_uid()
    pseudonyms = Pseudonymizer(KEY)
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


def test_the_calls_per_instance_do_not_grow_with_the_set():
    # Before, every anonymized file encoded every source UID again before searching its bytes,
    # and each frame of reference counted its instances over the whole source set.
    # About 16,000 calls per instance go to reading and scanning its header; the old code added
    # about 4 per instance of the set (12 % more per instance at 480 than at 60).
    small, large = calls_per_instance(SMALL), calls_per_instance(LARGE)
    assert large <= 1.03 * small, (small, large)


def test_prepared_uids_are_found_as_the_plain_search_finds_them():
    from consistent_anon.scanning import UidNeedles  # imported here: the test above runs without it

    wanted = {"1.2.3.4", "1.2.826.0.1.3680043.8.498.1", "9.9\ufffd9", "77.88"}
    needles = UidNeedles(wanted)
    cases = [b"", b"x1.2.3.4y", b"11.2.3.45", b"1.2.3", b"\x001.2.826.0.1.3680043.8.498.12\x00",
             b"9.9?9", b"7.88", b"177.889", "1.2.3.4".encode("utf-16-le"), "77.88".encode("utf-16-be"),
             b"1.2.3..4"]
    for data in cases:
        plain = any(uid.encode("ascii", "replace") in data for uid in wanted)
        utf16 = any(uid.encode("utf-16-le") in data or uid.encode("utf-16-be") in data
                    for uid in wanted if uid.isascii())
        assert needles.in_bytes(data) == in_bytes(data, wanted) == (plain or utf16), data
