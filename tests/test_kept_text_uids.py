"""Source UIDs in what the de-identification keeps: kept text carries their pseudonyms in their
place; binary content (an encapsulated PDF) is refused, naming the instance and the Remove that
gets past it."""
from __future__ import annotations

from pydicom.dataset import Dataset
from pydicom.sequence import Sequence
from pydicom.uid import generate_uid

from anonymized import parse
from conftest import upload
from dicom_factory import _base, _file_meta, to_bytes

BASIC_TEXT_SR = "1.2.840.10008.5.1.4.1.1.88.11"
ENCAPSULATED_PDF = "1.2.840.10008.5.1.4.1.1.104.1"


def _in_series_of_its_own(ds: Dataset, study, sop_class: str, modality: str) -> Dataset:
    ds.SeriesInstanceUID = generate_uid()
    ds.SeriesNumber = 90
    ds.InstanceNumber = 1
    ds.file_meta = _file_meta(sop_class, ds.SOPInstanceUID)
    return ds


def reference_to(image: Dataset) -> Dataset:
    item = Dataset()
    item.ReferencedSOPClassUID = image.SOPClassUID
    item.ReferencedSOPInstanceUID = image.SOPInstanceUID
    return item


def text_report(study, image: Dataset) -> Dataset:
    """A basic text SR whose finding names the image's SOPInstanceUID, beside an IMAGE reference."""
    sr = _in_series_of_its_own(_base(study.study, BASIC_TEXT_SR, "SR"), study, BASIC_TEXT_SR, "SR")
    text = Dataset()
    text.RelationshipType = "CONTAINS"
    text.ValueType = "TEXT"
    text.TextValue = f"Nodule on image {image.SOPInstanceUID}, see there."
    picture = Dataset()
    picture.RelationshipType = "CONTAINS"
    picture.ValueType = "IMAGE"
    picture.ReferencedSOPSequence = Sequence([reference_to(image)])
    sr.ValueType = "CONTAINER"
    sr.ContinuityOfContent = "SEPARATE"
    sr.ContentSequence = Sequence([text, picture])
    return sr


def pdf_report(study, image: Dataset) -> Dataset:
    """An encapsulated PDF made from the image, whose bytes repeat the image's SOPInstanceUID."""
    pdf = _in_series_of_its_own(_base(study.study, ENCAPSULATED_PDF, "DOC"), study, ENCAPSULATED_PDF, "DOC")
    pdf.MIMETypeOfEncapsulatedDocument = "application/pdf"
    pdf.SourceInstanceSequence = Sequence([reference_to(image)])
    document = b"%PDF-1.4\n1 0 obj << /Subject (" + image.SOPInstanceUID.encode() + b") >> endobj\n%%EOF\n"
    pdf.EncapsulatedDocument = document + b"\x00" * (len(document) % 2)
    return pdf


def test_a_kept_sr_text_value_carries_the_pseudonym_of_the_image_it_names(orthanc, study):
    image = study.series[0][0]
    sr = text_report(study, image)
    uploaded = upload(orthanc, study)
    sr_id = orthanc.upload(to_bytes(sr))["ID"]
    answer = orthanc.post(f"/instances/{sr_id}/anonymize", json={"Keep": ["ContentSequence"]})
    assert answer.status_code == 200, answer.text
    content = parse(answer.content).ContentSequence
    pseudonym = content[1].ReferencedSOPSequence[0].ReferencedSOPInstanceUID
    assert content[0].TextValue == f"Nodule on image {pseudonym}, see there."
    # The same pseudonym the image gets in its own call: the text stays consistent with the images.
    image_answer = orthanc.post(f"/instances/{uploaded[image.SOPInstanceUID]['ID']}/anonymize", json={})
    assert parse(image_answer.content).SOPInstanceUID == pseudonym != image.SOPInstanceUID


def test_a_source_uid_in_an_encapsulated_document_refuses_the_call_naming_the_instance_and_the_way_past(orthanc, study):
    image = study.series[0][0]
    pdf = pdf_report(study, image)
    uploaded = upload(orthanc, study)
    pdf_id = orthanc.upload(to_bytes(pdf))["ID"]
    study_id = uploaded[image.SOPInstanceUID]["ParentStudy"]
    before = sorted(orthanc.json("/instances"))

    # The 2021b profile keeps EncapsulatedDocument on every version (2023b, the default from
    # Orthanc 1.12, empties it): what a call gets on Orthanc 1.10, or with "Keep" on any version.
    profile = {"DicomVersion": "2021b"}
    answer = orthanc.post(f"/studies/{study_id}/anonymize", json=profile)
    assert answer.status_code == 500
    message = answer.json()["Message"]
    assert pdf_id in message and "EncapsulatedDocument" in message
    assert '"Remove": ["EncapsulatedDocument"]' in message
    assert image.SOPInstanceUID not in answer.text
    assert sorted(orthanc.json("/instances")) == before  # nothing stored

    answer = orthanc.post(f"/studies/{study_id}/anonymize", json={**profile, "Remove": ["EncapsulatedDocument"]})
    assert answer.status_code == 200, answer.text
    assert answer.json()["InstancesCount"] == len(study.instances) + 1
