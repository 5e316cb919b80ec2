"""Fail closed in every encoding: the output check and verify-anonymization find source UIDs and
identifiers written in ASCII, UTF-16 (both byte orders) and the file's declared character set,
in private elements of any VR; a UID known only from a private element gets its pseudonym."""
from __future__ import annotations

import io

import pydicom
import pytest
from pydicom.uid import generate_uid

from anonymized import parse
from conftest import upload
from dicom_factory import to_bytes

ENCODINGS = ("ascii", "utf-16-le", "utf-16-be")


def add_private(image, vr: str, value) -> None:
    image.private_block(0x0011, "SYNTHETIC VENDOR", create=True).add_new(0x10, vr, value)


def anonymize_instance(orthanc, uploaded, image, body=None):
    return orthanc.post(f"/instances/{uploaded[image.SOPInstanceUID]['ID']}/anonymize",
                        json=body or {"KeepPrivateTags": True})


@pytest.mark.parametrize("encoding", ENCODINGS)
def test_a_source_uid_in_private_binary_data_is_refused_in_every_encoding(orthanc, study, encoding):
    image = study.series[0][0]
    add_private(image, "OB", f"study {image.StudyInstanceUID} ".encode(encoding))
    answer = anonymize_instance(orthanc, upload(orthanc, study), image)
    assert answer.status_code == 500, encoding
    assert "a source UID remains in (0011,1010)" in answer.json()["Message"]


@pytest.mark.parametrize("encoding", ENCODINGS)
def test_a_source_patient_id_in_a_private_element_is_refused_in_every_encoding(orthanc, study, encoding):
    image = study.series[0][0]
    add_private(image, "OB", f"mrn={image.PatientID};".encode(encoding))
    answer = anonymize_instance(orthanc, upload(orthanc, study), image)
    assert answer.status_code == 500, encoding
    assert "the source's PatientID remains in (0011,1010): add \"Remove\": [\"0011,1010\"]" in answer.json()["Message"]
    assert image.PatientID not in answer.text


@pytest.mark.parametrize("charset, name, encoding", [
    ("ISO_IR 192", "Müller^Jürgen", "utf-8"),
    ("GB18030", "王^小明", "gb18030"),
    ("ISO_IR 100", "Müller^Jürgen", "latin-1"),
])
def test_a_source_name_in_the_declared_character_set_is_found_in_private_binary_data(orthanc, study, charset,
                                                                                       name, encoding):
    for ds in study.instances:
        ds.SpecificCharacterSet = charset
        ds.PatientName = name
    image = study.series[0][0]
    add_private(image, "UN", name.encode(encoding))
    answer = anonymize_instance(orthanc, upload(orthanc, study), image)
    assert answer.status_code == 500, charset
    assert "the source's PatientName remains in (0011,1010)" in answer.json()["Message"]


def test_a_uid_known_only_from_a_private_element_gets_its_pseudonym_in_any_vr(orthanc, study):
    image = study.series[0][0]
    vendor_frame = generate_uid()  # a frame of reference the vendor writes in its own element only
    block = image.private_block(0x0011, "SYNTHETIC VENDOR", create=True)
    block.add_new(0x10, "UI", vendor_frame)
    block.add_new(0x11, "LO", vendor_frame)   # the whole value of an element of another VR
    block.add_new(0x12, "OB", image.SeriesInstanceUID.encode() + b"\x00")
    answer = anonymize_instance(orthanc, upload(orthanc, study), image)
    assert answer.status_code == 200, answer.text
    anonymized = parse(answer.content)

    def text(tag: int) -> str:
        value = anonymized[tag].value
        return (value.decode("latin-1") if isinstance(value, bytes) else str(value)).rstrip("\x00 ")
    assert text(0x00111010) == text(0x00111011) != vendor_frame
    assert text(0x00111010).startswith("2.25.")
    assert text(0x00111012) == anonymized.SeriesInstanceUID
    assert vendor_frame.encode() not in answer.content


def verify(orthanc, source: str, anonymized: str) -> dict:
    answer = orthanc.post("/tools/verify-anonymization", json={"Source": source, "Anonymized": anonymized})
    assert answer.status_code == 200, answer.text
    return answer.json()


def tamper(orthanc, instance_id: str, change) -> None:
    """Replace a stored instance by a changed copy with the same identifiers (another tool's output)."""
    ds = pydicom.dcmread(io.BytesIO(orthanc.get(f"/instances/{instance_id}/file").content))
    change(ds)
    assert orthanc.delete(f"/instances/{instance_id}").status_code == 200
    buffer = io.BytesIO()
    ds.save_as(buffer)
    assert orthanc.upload(buffer.getvalue())["ID"] == instance_id


@pytest.mark.parametrize("leak", ["private-uid", *ENCODINGS, "patient-id-utf-16-le"])
def test_verify_finds_what_another_tool_left_in_any_encoding(orthanc, study, leak):
    image = study.series[0][0]
    vendor_frame = generate_uid()
    add_private(image, "UI", vendor_frame)
    uploaded = upload(orthanc, study)
    source_series = uploaded[image.SOPInstanceUID]["ParentSeries"]
    answer = orthanc.post(f"/series/{source_series}/anonymize", json={"KeepPrivateTags": True})
    assert answer.status_code == 200, answer.text
    anonymized_series = answer.json()["ID"]
    assert verify(orthanc, source_series, anonymized_series)["Clean"] is True

    instance = orthanc.json(f"/series/{anonymized_series}/instances")[0]["ID"]
    if leak == "private-uid":
        value, vr = vendor_frame, "UI"  # the source's vendor frame of reference, left as it was
    elif leak == "patient-id-utf-16-le":
        value, vr = f"id {image.PatientID}".encode("utf-16-le"), "OB"
    else:
        value, vr = f"study={image.StudyInstanceUID}".encode(leak), "OB"
    tamper(orthanc, instance, lambda ds: ds.private_block(0x0013, "OTHER TOOL", create=True).add_new(0x01, vr, value))
    report = verify(orthanc, source_series, anonymized_series)
    assert report["Clean"] is False
    assert [(leak_["Instance"], leak_["Path"]) for leak_ in report["Leaks"]] == [(instance, "(0013,1001)")]


def test_a_utf16_uid_is_found_beside_an_ascii_uid_of_the_same_root():
    from pydicom.dataset import Dataset

    from consistent_anon.dicom.scanning import find_uids, whole_uid_in_bytes
    from test_set_verification import header

    wanted = {"1.2.826.0.1.3680043.8.498.1234567"}
    ds = Dataset()
    ds.SOPInstanceUID = "1.2.826.0.1.3680043.8.498.7654321"  # the same root, another UID
    ds.private_block(0x0011, "X", create=True).add_new(0x01, "OB", b"x" + "1.2.826.0.1.3680043.8.498.1234567".encode("utf-16-be"))
    found = header(ds)
    assert [element.tag for element, _ in find_uids(found, wanted)] == [0x00111001]
    assert whole_uid_in_bytes(found.searchable, wanted)


@pytest.mark.parametrize("encoding", ENCODINGS)
def test_an_identifier_after_the_pixel_data_is_refused_in_every_encoding(orthanc, study, encoding):
    """Elements after the pixel data escape the header scan: the file's bytes still give them away."""
    image = study.series[0][1]
    image.private_block(0x7FE1, "SYNTHETIC VENDOR", create=True).add_new(0x01, "OB", f"id={image.PatientID.lower()}".encode(encoding))
    answer = anonymize_instance(orthanc, upload(orthanc, study), image)
    assert answer.status_code == 500
    assert "identifying text of the source remains in the file outside the header" in answer.json()["Message"]
