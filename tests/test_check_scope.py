"""What the fail-closed check searches in the file's bytes: everything but raw pixel values.

The header scan reads every element up to the pixel data; after it, the bytes are searched for
source UIDs and identifying texts (a vendor's trailing elements). Pixel values are not text:
searching them cost about a millisecond per 256x256 instance, and a run of pixel bytes that
happens to spell a source UID would refuse an instance that leaks nothing. Compressed pixel
data is searched: its frames carry metadata segments of their own.
"""
from __future__ import annotations

import struct

import pytest

from anonymized import parse
from conftest import upload


def test_pixel_values_that_spell_a_source_uid_are_not_a_leak(orthanc, study):
    image = study.series[0][0]
    pixels = bytearray(image.PixelData)
    for offset, spelled in ((8, image.SOPInstanceUID.encode("ascii")),
                            (160, image.StudyInstanceUID.encode("utf-16-le"))):
        assert offset + len(spelled) <= len(pixels)
        pixels[offset:offset + len(spelled)] = spelled  # same length: the image keeps its size
    image.PixelData = bytes(pixels)
    uploaded = upload(orthanc, study)
    answer = orthanc.post(f"/instances/{uploaded[image.SOPInstanceUID]['ID']}/anonymize", json={})
    assert answer.status_code == 200, answer.text
    assert parse(answer.content).PixelData == bytes(pixels)  # native keeps the pixels as they are


def test_a_source_uid_in_an_element_after_the_pixel_data_is_still_refused(orthanc, study):
    image = study.series[0][1]
    block = image.private_block(0x7FE1, "SYNTHETIC VENDOR", create=True)
    block.add_new(0x01, "LT", f"copied from {image.StudyInstanceUID}")
    uploaded = upload(orthanc, study)
    answer = orthanc.post(f"/instances/{uploaded[image.SOPInstanceUID]['ID']}/anonymize",
                          json={"KeepPrivateTags": True})
    assert answer.status_code == 500
    assert "after the pixel data" in answer.json()["Message"]


def _jpeg_with_comment(image, comment: bytes) -> None:
    """The image's pixel data as one encapsulated JPEG frame whose comment segment holds `comment`
    (Orthanc stores and anonymizes it without decoding it)."""
    from pydicom.encaps import encapsulate
    frame = b"\xff\xd8\xff\xfe" + struct.pack(">H", len(comment) + 2) + comment + b"\xff\xd9"
    image.file_meta.TransferSyntaxUID = "1.2.840.10008.1.2.4.50"
    del image.PixelData
    image.add_new(0x7FE00010, "OB", encapsulate([frame]))


@pytest.mark.parametrize("written", ["StudyInstanceUID", "PatientID"])
def test_a_source_identifier_in_compressed_pixel_data_is_still_refused(orthanc, study, written):
    """Compressed frames carry metadata of their own (a JPEG comment, a JPEG 2000 comment box),
    which is text: the check searches encapsulated pixel data, raw pixel values only are skipped."""
    image = study.series[0][0]
    _jpeg_with_comment(image, f"scanned for {getattr(image, written)}".encode("ascii"))
    uploaded = upload(orthanc, study)
    answer = orthanc.post(f"/instances/{uploaded[image.SOPInstanceUID]['ID']}/anonymize", json={})
    assert answer.status_code == 500, answer.text[:300]
    clean = study.series[0][1]
    _jpeg_with_comment(clean, b"no identifier here")
    uploaded = upload(orthanc, study)
    assert orthanc.post(f"/instances/{uploaded[clean.SOPInstanceUID]['ID']}/anonymize", json={}).status_code == 200


@pytest.mark.parametrize("leak", ["uid", "text"])
def test_a_deflated_file_is_searched_after_its_pixel_data_too(orthanc, study, leak):
    """A deflated file's elements after the pixel data are compressed with the rest: the search
    reads them inflated, as it reads the header (before, it searched the compressed bytes, where
    a source UID or identifier in a vendor's trailing element could not be seen)."""
    from pydicom.uid import DeflatedExplicitVRLittleEndian

    image = study.series[0][1]
    block = image.private_block(0x7FE1, "SYNTHETIC VENDOR", create=True)
    block.add_new(0x01, "LT", f"copied from {image.StudyInstanceUID}" if leak == "uid" else
                  f"patient {image.PatientID.lower()}")
    image.file_meta.TransferSyntaxUID = DeflatedExplicitVRLittleEndian
    uploaded = upload(orthanc, study)
    answer = orthanc.post(f"/instances/{uploaded[image.SOPInstanceUID]['ID']}/anonymize",
                          json={"KeepPrivateTags": True})
    assert answer.status_code == 500, answer.text[:300]
    assert "after the pixel data" in answer.json()["Message"]
    assert image.StudyInstanceUID not in answer.text and image.PatientID not in answer.text


def test_a_deflated_file_without_a_leak_passes(orthanc, study):
    from pydicom.uid import DeflatedExplicitVRLittleEndian

    image = study.series[0][1]
    image.private_block(0x7FE1, "SYNTHETIC VENDOR", create=True).add_new(0x01, "LT", "nothing of the patient")
    image.file_meta.TransferSyntaxUID = DeflatedExplicitVRLittleEndian
    uploaded = upload(orthanc, study)
    answer = orthanc.post(f"/instances/{uploaded[image.SOPInstanceUID]['ID']}/anonymize",
                          json={"KeepPrivateTags": True})
    assert answer.status_code == 200, answer.text[:300]
    assert parse(answer.content).file_meta.TransferSyntaxUID == DeflatedExplicitVRLittleEndian
