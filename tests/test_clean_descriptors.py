"""Clean Descriptors, Clean Structured Content and Clean Graphics against a real Orthanc: the
words of a kept description stay, the source's identifiers in it are replaced by the marker;
without the option, such an identifier makes the call fail closed; the check and verify agree."""
from __future__ import annotations

import uuid

import pytest
from pydicom.dataset import Dataset
from pydicom.sequence import Sequence

from anonymized import parse
from conftest import upload

from dicom_factory import Patient, two_frame_study

#: The marker docs/clean-descriptors.md names.
MARKER = "[removed]"


def homer() -> tuple[Patient, str]:
    """A patient no other test uses, and the MRN free text writes for him."""
    mrn = str(uuid.uuid4().int % 10**9).rjust(9, "7")
    return Patient(patient_id=mrn, name="SIMPSON^HOMER"), mrn


def mr_study(patient: Patient, **attributes):
    study = two_frame_study(per_series=1, patient=patient)
    for ds in study.instances:
        for keyword, value in attributes.items():
            setattr(ds, keyword, value)
    return study


def anonymize_image(orthanc, study, body: dict):
    image = study.series[0][0]
    uploaded = upload(orthanc, study)
    return orthanc.post(f"/instances/{uploaded[image.SOPInstanceUID]['ID']}/anonymize", json=body), uploaded


def anonymize_and_verify(orthanc, study, body: dict) -> tuple[dict, dict]:
    """The study anonymized and stored under `body`, and verify's report of it."""
    uploaded = upload(orthanc, study)
    source = uploaded[study.series[0][0].SOPInstanceUID]["ParentStudy"]
    answer = orthanc.post(f"/studies/{source}/anonymize", json=body)
    assert answer.status_code == 200, answer.text
    report = orthanc.post("/tools/verify-anonymization", json={"Source": source, "Anonymized": answer.json()["ID"]})
    assert report.status_code == 200, report.text
    return answer.json(), report.json()


def first_instance(orthanc, study_id: str) -> Dataset:
    instance = orthanc.json(f"/studies/{study_id}/instances")[0]["ID"]
    return parse(orthanc.get(f"/instances/{instance}/file").content)


def test_clean_descriptors_keeps_the_words_and_drops_the_name_and_the_mrn(orthanc):
    patient, mrn = homer()
    study = mr_study(patient, StudyDescription=f"MR KNEE LEFT for Homer Simpson MRN-{mrn}",
                     SeriesDescription="T1 SAG Simpson", ImageComments="no identifier here")
    answer, _ = anonymize_image(orthanc, study, {"DeidentificationOptions": ["CleanDescriptors"]})
    assert answer.status_code == 200, answer.text
    anonymized = parse(answer.content)
    assert anonymized.StudyDescription == f"MR KNEE LEFT for {MARKER} {MARKER}"
    assert anonymized.SeriesDescription == f"T1 SAG {MARKER}"
    assert anonymized.ImageComments == "no identifier here"  # kept as it is: nothing to clean


def test_without_clean_descriptors_a_kept_description_with_the_name_fails_closed_as_before(orthanc):
    patient, mrn = homer()
    study = mr_study(patient, StudyDescription=f"MR KNEE LEFT for Homer Simpson MRN-{mrn}")
    answer, _ = anonymize_image(orthanc, study, {"Keep": ["StudyDescription"]})
    assert answer.status_code == 500
    message = answer.json()["Message"]
    assert "StudyDescription" in message and '"DeidentificationOptions": ["CleanDescriptors"]' in message
    assert "Simpson" not in message and mrn not in message
    answer, _ = anonymize_image(orthanc, study, {})
    assert answer.status_code == 200, answer.text
    assert "StudyDescription" not in parse(answer.content)  # native removes it


def test_the_cleaned_study_is_stored_and_verify_calls_it_clean(orthanc):
    patient, mrn = homer()
    study = mr_study(patient, StudyDescription=f"MR KNEE LEFT for Homer Simpson MRN-{mrn}",
                     SeriesDescription=f"PID{mrn}_T1_MPRAGE")
    answer, report = anonymize_and_verify(orthanc, study, {"DeidentificationOptions": ["CleanDescriptors"]})
    assert report["Clean"] is True, report["Leaks"]
    anonymized = first_instance(orthanc, answer["ID"])
    assert anonymized.SeriesDescription == f"{MARKER}_T1_MPRAGE"


@pytest.mark.parametrize("attribute, value", [
    ("SeriesDescription", "{mrn}"),                # the whole value: no exemption
    ("SeriesDescription", "MRN{mrn}"),             # glued to a prefix
    ("SeriesDescription", "Homer Simpson"),        # a name without caret, in another order
    ("SeriesDescription", "born 04/12/1961"),      # the birth date, written otherwise
    ("BodyPartExamined", "{mrn}"),                 # kept by native, the source's own value there
])
def test_an_identifier_the_old_model_let_pass_now_fails_closed(orthanc, attribute, value):
    patient, mrn = homer()
    study = mr_study(patient, **{attribute: value.format(mrn=mrn)})
    answer, _ = anonymize_image(orthanc, study, {"Keep": ["SeriesDescription"]})
    assert answer.status_code == 500, answer.text
    assert attribute in answer.json()["Message"]


def test_under_shifted_dates_the_real_study_date_in_a_description_fails_closed_or_is_cleaned(orthanc):
    patient, _ = homer()
    study = mr_study(patient, SeriesDescription="FU 20240301", StudyDate="20240301")
    answer, _ = anonymize_image(orthanc, study, {"ShiftDates": True, "Keep": ["SeriesDescription"]})
    assert answer.status_code == 500, answer.text
    assert "SeriesDescription" in answer.json()["Message"]
    patient, _ = homer()
    study = mr_study(patient, SeriesDescription="FU 20240301", StudyDate="20240301")
    answer, report = anonymize_and_verify(orthanc, study, {"ShiftDates": True,
                                                           "DeidentificationOptions": ["CleanDescriptors"]})
    assert report["Clean"] is True, report["Leaks"]
    assert first_instance(orthanc, answer["ID"]).SeriesDescription == f"FU {MARKER}"


def test_a_date_native_keeps_unshifted_fails_closed_as_verify_would_report_it(orthanc):
    patient, _ = homer()
    item = Dataset()
    item.Manufacturer = "Vendor"
    item.ContributionDateTime = "20240301101010"
    study = mr_study(patient, ContributingEquipmentSequence=Sequence([item]), StudyDate="20240301")
    answer, _ = anonymize_image(orthanc, study, {"ShiftDates": True, "Keep": ["ContributingEquipmentSequence"]})
    assert answer.status_code == 500, answer.text
    assert "ContributingEquipmentSequence[0].ContributionDateTime" in answer.json()["Message"]


def test_a_utf8_name_in_a_private_element_under_latin1_fails_closed(orthanc):
    patient = Patient(patient_id=str(uuid.uuid4().int % 10**9), name="Müller^Jürgen")
    study = mr_study(patient, SpecificCharacterSet="ISO_IR 100")
    image = study.series[0][0]
    image.private_block(0x0011, "SYNTHETIC VENDOR", create=True).add_new(0x01, "OB", "Jürgen Müller".encode())
    answer, _ = anonymize_image(orthanc, study, {"KeepPrivateTags": True})
    assert answer.status_code == 500, answer.text
    assert "(0011,1001)" in answer.json()["Message"]


def overlay(ds: Dataset, comment: str) -> None:
    ds.add_new(0x60000010, "US", 16)          # OverlayRows
    ds.add_new(0x60000011, "US", 16)          # OverlayColumns
    ds.add_new(0x60000040, "CS", "G")         # OverlayType
    ds.add_new(0x60000050, "SS", [1, 1])      # OverlayOrigin
    ds.add_new(0x60000100, "US", 1)           # OverlayBitsAllocated
    ds.add_new(0x60000102, "US", 0)           # OverlayBitPosition
    ds.add_new(0x60003000, "OW", b"\xff" * 32)
    ds.add_new(0x60004000, "LT", comment)


def graphic_annotation(text: str) -> Sequence:
    text_object = Dataset()
    text_object.UnformattedTextValue = text
    text_object.AnchorPointAnnotationUnits = "PIXEL"
    text_object.AnchorPoint = [1.0, 1.0]
    text_object.AnchorPointVisibility = "N"
    annotation = Dataset()
    annotation.GraphicLayer = "LAYER1"
    annotation.TextObjectSequence = Sequence([text_object])
    return Sequence([annotation])


def test_clean_graphics_removes_overlay_bitmaps_and_curves_and_cleans_their_text(orthanc):
    patient, _ = homer()
    study = mr_study(patient)
    image = study.series[0][0]
    overlay(image, "ROI drawn for Homer Simpson")
    image.GraphicAnnotationSequence = graphic_annotation("Simpson, left knee")
    image.add_new(0x50000005, "US", 2)        # CurveDimensions
    image.add_new(0x50003000, "OW", b"\x01\x00" * 8)  # CurveData
    answer, _ = anonymize_image(orthanc, study, {})
    assert answer.status_code == 500, answer.text  # as native, and the identifier fails closed
    assert "OverlayComments" in answer.json()["Message"] or "(6000,4000)" in answer.json()["Message"]
    answer, _ = anonymize_image(orthanc, study, {"DeidentificationOptions": ["CleanGraphics"]})
    assert answer.status_code == 200, answer.text
    anonymized = parse(answer.content)
    assert anonymized[0x60004000].value == f"ROI drawn for {MARKER}"
    assert 0x60003000 not in anonymized and 0x50003000 not in anonymized and 0x50000005 not in anonymized
    texts = [item.TextObjectSequence[0].UnformattedTextValue for item in anonymized.get("GraphicAnnotationSequence", [])]
    assert texts == [f"{MARKER}, left knee"]  # native keeps the annotation: its text is cleaned


def content_item(value_type: str, **attributes) -> Dataset:
    item = Dataset()
    item.RelationshipType = "CONTAINS"
    item.ValueType = value_type
    for keyword, value in attributes.items():
        setattr(item, keyword, value)
    return item


def test_clean_structured_content_keeps_the_content_tree_and_cleans_its_text(orthanc):
    patient, mrn = homer()
    study = mr_study(patient, StudyDate="20240301")
    study.series[0][0].ContentSequence = Sequence([
        content_item("TEXT", TextValue=f"Findings for Homer Simpson ({mrn}): no effusion"),
        content_item("PNAME", PersonName="SIMPSON^HOMER"),
        content_item("DATE", Date="20240301"),
    ])
    answer, _ = anonymize_image(orthanc, study, {})
    assert answer.status_code == 200, answer.text
    assert not parse(answer.content).get("ContentSequence")  # native empties it
    answer, _ = anonymize_image(orthanc, study, {"DeidentificationOptions": ["CleanStructuredContent"]})
    assert answer.status_code == 200, answer.text
    text, name, date = parse(answer.content).ContentSequence
    assert text.TextValue == f"Findings for {MARKER} ({MARKER}): no effusion"
    assert str(name.PersonName) == MARKER
    assert date.get("Date", "") == ""  # the study's date: emptied, no marker fits a DA


def test_an_attribute_the_caller_keeps_is_cleaned_under_the_option(orthanc):
    patient, mrn = homer()
    study = mr_study(patient, SeriesDescription=f"T2 {mrn} Simpson")
    answer, _ = anonymize_image(orthanc, study, {"Keep": ["SeriesDescription"],
                                                 "DeidentificationOptions": ["CleanDescriptors"]})
    assert answer.status_code == 200, answer.text
    assert parse(answer.content).SeriesDescription == f"T2 {MARKER} {MARKER}"
