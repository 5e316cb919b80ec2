"""The identifier model (dicom/identifiers.py, with the finder of dicom/scanning.py), without a
server: which texts of a source identify its patient, where they are found in an anonymized
header, and how Clean Descriptors replaces them. Each hole of the old model has a case here, and
so has each false positive the model must not make."""
from __future__ import annotations

import pytest
from pydicom.datadict import keyword_for_tag
from pydicom.dataset import Dataset

from consistent_anon.dicom.identifiers import (MARKER, clean_value, cleaning_texts, identifying_dates,
                                               identifying_texts, text_leaks)
from consistent_anon.dicom.scanning import TextFinder
from consistent_anon.identity.dates import is_shifted
from test_set_verification import header


def source(name: str = "SIMPSON^HOMER", patient_id: str = "80422", **attributes: str) -> Dataset:
    ds = Dataset()
    ds.PatientName = name
    ds.PatientID = patient_id
    ds.PatientBirthDate = "19610412"
    for keyword, value in attributes.items():
        setattr(ds, keyword, value)
    return ds


def found_in(src: Dataset, **output_attributes: str) -> set[str]:
    """The keywords of the output's attributes where the model finds the source's identifiers,
    with the source's own values at the same places known (as the check and verify know them)."""
    output = Dataset()
    for keyword, value in output_attributes.items():
        setattr(output, keyword, value)
    source_header = header(src)
    leaks = text_leaks(TextFinder(identifying_texts(source_header)), header(output), source_header)
    return {keyword_for_tag(element.tag) for element, _ in leaks}


def cleaned(src: Dataset, text: str, shifted: bool = False) -> str:
    source_header = header(src)
    dates = identifying_dates(source_header, is_shifted) if shifted else None
    return clean_value(TextFinder(cleaning_texts(source_header, source_dates=dates)), text)


# --- The holes --------------------------------------------------------------------------------

def test_a_source_identifier_that_is_the_whole_value_of_a_kept_attribute_is_found_even_where_the_source_had_it():
    src = source(name="LINDQVIST^ASTRID", patient_id="7734123", BodyPartExamined="7734123",
                 SeriesDescription="Astrid Lindqvist")
    assert found_in(src, BodyPartExamined="7734123", SeriesDescription="Astrid Lindqvist") == \
        {"BodyPartExamined", "SeriesDescription"}


def test_a_name_word_that_is_the_sources_own_value_of_a_plain_attribute_there_still_coincides():
    src = source(name="Chest^Anna", BodyPartExamined="CHEST")
    assert found_in(src, BodyPartExamined="CHEST") == set()


def test_an_institution_name_coincides_with_the_sources_own_value_there_but_not_in_free_text():
    """"TOSHIBA" in the Manufacturer "TOSHIBA_MEC" of a hospital named Toshiba is no leak; the
    hospital's name carried through in a kept description is one, though the source had it there."""
    src = source(InstitutionName="Springfield General", Manufacturer="SPRINGFIELD_MED",
                 StudyDescription="CT at Springfield General")
    assert found_in(src, Manufacturer="SPRINGFIELD_MED", StudyDescription="CT at Springfield General") == \
        {"StudyDescription"}


@pytest.mark.parametrize("name, patient_id, accession, text", [
    ("DOE^JOHN", "7734123", "", "PID7734123_T1_MPRAGE"),
    ("MOREAU^CAMILLE", "123456", "", "MOREAU_CAMILLE_T1"),
    ("DOE^JOHN", "7734125", "", "MRN7734125"),
    ("DOE^JOHN", "123456", "ACC55117", "ACC55117_scan"),
    ("DOE^JOHN", "123456", "55117", "ACC55117 scan"),
    ("Moreau Camille", "123456", "", "Moreau head"),
    ("DOE^JOHN", "123456", "", "born 04/12/1961"),
    ("DOE^JOHN", "123456", "", "born 12.04.1961"),
    ("DOE^JOHN", "123456", "", "born 1961-04-12"),
    ("DOE^JOHN", "123456", "", "Doe-John"),
    ("DOE^JOHN", "123456", "", "john.doe"),
    ("DOE^JOHN", "123456", "", "series/7734123/123456"),
    ("DOE^JOHN", "MRN7734125", "", "ID 7734125"),          # an ID without its own prefix
])
def test_identifiers_are_found_across_separators_glued_prefixes_and_formats(name, patient_id, accession, text):
    src = source(name=name, patient_id=patient_id, AccessionNumber=accession)
    assert found_in(src, ImageComments=text) == {"ImageComments"}


def test_a_utf8_name_in_a_private_ob_under_a_latin1_character_set_is_found():
    src = source(name="Müller^Jürgen")
    src.SpecificCharacterSet = "ISO_IR 100"
    output = Dataset()
    output.SpecificCharacterSet = "ISO_IR 100"
    output.private_block(0x0011, "VENDOR", create=True).add_new(0x01, "OB", "Jürgen Müller".encode("utf-8"))
    source_header = header(src)
    leaks = text_leaks(TextFinder(identifying_texts(source_header)), header(output), source_header)
    assert [element.tag for element, _ in leaks] == [0x00111001]


def test_the_source_dates_in_every_common_format_are_identifying_once_dates_are_shifted():
    ds = Dataset()
    ds.StudyDate = "20240301"
    ds.AcquisitionDateTime = "20240301101010"
    dates = identifying_dates(header(ds), is_shifted)
    assert {"20240301", "03/01/2024", "01.03.2024", "2024-03-01", "20240301101010"} <= set(dates)
    found = TextFinder(dates).find(header(_with(SeriesDescription="FU 20240301")))
    assert [element.tag for element, _ in found] == [0x0008103E]


def _with(**attributes: str) -> Dataset:
    ds = Dataset()
    for keyword, value in attributes.items():
        setattr(ds, keyword, value)
    return ds


# --- The false positives ----------------------------------------------------------------------

@pytest.mark.parametrize("name, text", [
    ("TEST^ANNA", "TESTIS"),            # no match inside a word
    ("SIMPSON^HOMER^^DR", "Dr Jones"),  # shorter than three letters
    ("MR^SMITH", "MR KNEE"),
    ("Head^Anna", "HEAD CT"),           # a common word alone
    ("DOE^JOHN", "Doers"),
])
def test_short_and_common_words_of_a_name_and_words_inside_words_are_not_found(name, text):
    assert found_in(source(name=name, patient_id="998877"), ImageComments=text) == set()
    assert cleaned(source(name=name, patient_id="998877"), text) == text


def test_a_short_number_is_found_only_as_a_whole_value():
    src = source(patient_id="1234")
    assert found_in(src, ImageComments="Series 1234 of 12345", StudyDescription="1234") == {"StudyDescription"}


# --- Cleaning ---------------------------------------------------------------------------------

def test_clean_descriptors_keeps_the_words_and_replaces_the_identifiers():
    assert cleaned(source(), "MR KNEE LEFT for Homer Simpson MRN-80422") == \
        f"MR KNEE LEFT for {MARKER} {MARKER}"


@pytest.mark.parametrize("text, expected", [
    ("SIMPSON^HOMER", MARKER),
    ("Homer J. Simpson", f"{MARKER} J. {MARKER}"),
    ("Simpson, H. follow-up", f"{MARKER}, H. follow-up"),
    ("homer simpson", MARKER),
    ("PID80422_T1_MPRAGE", f"{MARKER}_T1_MPRAGE"),
    ("born 04/12/1961, MR", f"born {MARKER}, MR"),
    ("TESTIS simpsonian", "TESTIS simpsonian"),
])
def test_clean_descriptors_in_every_order_case_and_separator(text, expected):
    assert cleaned(source(), text) == expected


def test_study_dates_are_cleaned_from_descriptors_and_all_dates_once_shifted():
    src = source(StudyDate="20240301", InstanceCreationDate="20240302")
    assert cleaned(src, "FU 20240301 and 2024-03-02") == f"FU {MARKER} and 2024-03-02"
    assert cleaned(src, "FU 20240301 and 2024-03-02", shifted=True) == f"FU {MARKER} and {MARKER}"


def test_institution_physician_operator_address_and_phone_are_cleaned():
    src = source(InstitutionName="Springfield General", ReferringPhysicianName="HIBBERT^JULIUS",
                 OperatorsName="Smithers^Waylon", PatientAddress="742 Evergreen Terrace",
                 PatientTelephoneNumbers="555-0134")
    text = "Springfield General, ref Hibbert, tech Smithers, 742 Evergreen Terrace, tel 555-0134"
    assert cleaned(src, text) == f"{MARKER}, ref {MARKER}, tech {MARKER}, {MARKER}, tel {MARKER}"


def test_the_marker_itself_is_no_identifier():
    src = source(name="Removed^Anna")
    assert found_in(src, ImageComments=f"for {MARKER}") == set()


# --- The check and verify agree ---------------------------------------------------------------

def native_like_output(image: Dataset, plan, pseudonyms) -> Dataset:
    """What native and the plan make of `image` at the top level: the planned UIDs and values,
    the pseudonymous patient, the attributes native removes gone; the rest kept as it is."""
    from consistent_anon.dicom.vocabulary import LONGITUDINAL_TEMPORAL_INFORMATION_MODIFIED
    from test_set_verification import copy_of

    output = copy_of(image)
    for (steps, tag), values in {**plan.expected_uids, **plan.expected_values}.items():
        if not steps and tag != LONGITUDINAL_TEMPORAL_INFORMATION_MODIFIED and tag in output:
            output[tag].value = "\\".join(values)
    if plan.shifted_dates:
        output.LongitudinalTemporalInformationModified = "MODIFIED"
    output.file_meta.MediaStorageSOPInstanceUID = output.SOPInstanceUID
    output.PatientID = plan.patient_id
    output.PatientName = pseudonyms.patient_name(plan.patient_id)
    for keyword in ("AccessionNumber", "InstitutionName", "PatientBirthDate", "ReferringPhysicianName", "StudyID"):
        if keyword in output:
            delattr(output, keyword)
    return output


@pytest.mark.parametrize("body, attributes", [
    (b"{}", {"BodyPartExamined": "{pid}"}),
    (b"{}", {"SeriesDescription": "MRN{pid}_T1"}),
    (b"{}", {"SeriesDescription": "Astrid Lindqvist"}),
    (b"{}", {"SeriesDescription": "T1 MPRAGE"}),
    (b'{"ShiftDates": true}', {"SeriesDescription": "FU 20240301"}),
    (b'{"ShiftDates": true}', {"ImageComments": "acquired 03/01/2024"}),
    (b'{"ShiftDates": true}', {"SeriesDescription": "T1 MPRAGE"}),
])
def test_the_check_and_verify_find_the_same_leaks(body, attributes):
    from consistent_anon.dicom.scanning import describe
    from consistent_anon.dicom.uid_attributes import UID_TAGS
    from consistent_anon.identity.project_settings import ProjectSettings
    from consistent_anon.identity.pseudonyms import Pseudonymizer
    from consistent_anon.pipeline.identities import NativeMarkers, plan_instance
    from consistent_anon.pipeline.options import parse_request
    from consistent_anon.pipeline.output_check import check_output
    from consistent_anon.verification.report import SourceIdentifiers
    from dicom_factory import Patient, to_bytes, two_frame_study

    image = two_frame_study(per_series=1, patient=Patient(patient_id="7734123", name="LINDQVIST^ASTRID")).series[0][0]
    image.StudyDate = "20240301"
    for keyword, value in attributes.items():
        setattr(image, keyword, value.format(pid="7734123"))
    pseudonyms = Pseudonymizer(b"k" * 32)
    request = parse_request(body).for_project(ProjectSettings())
    plan = plan_instance(header(image), request, pseudonyms, NativeMarkers(None, None), UID_TAGS)
    output = native_like_output(image, plan, pseudonyms)
    problems = check_output(to_bytes(output), plan, UID_TAGS)
    assert not [problem for problem in problems if "the source's" not in problem], problems
    checked = {problem.split(" remains in ")[1].split(":")[0] for problem in problems}
    identifiers = SourceIdentifiers()
    identifiers.add(header(image))
    reported = {describe(path) for path, _ in identifiers.finder().find(header(output), header(image))}
    assert checked == reported
    assert bool(checked) == ("T1 MPRAGE" not in attributes.values())


# --- The attributes the Clean options cover ---------------------------------------------------

def test_the_clean_options_cover_the_attributes_the_standard_marks_c():
    from consistent_anon.dicom.option_attributes import CleanedAttributes
    from consistent_anon.dicom.vocabulary import Path

    descriptors = CleanedAttributes({"CleanDescriptors"})
    assert descriptors.option_of(0x00081030) == "CleanDescriptors"      # StudyDescription
    assert descriptors.option_of(0x00204000) == "CleanDescriptors"      # ImageComments
    assert descriptors.option_of(0x00100010) is None                    # PatientName: never kept so
    assert descriptors.option_of(0x0040A730) is None                    # ContentSequence: structured content
    content = CleanedAttributes({"CleanStructuredContent"})
    assert content.covers(Path(((0x0040A730, 0), (0x0040A730, 2)), 0x0040A160))  # a nested TextValue
    graphics = CleanedAttributes({"CleanGraphics"})
    assert graphics.option_of(0x60024000) == "CleanGraphics"            # any overlay group's comments
    assert graphics.option_of(0x50103000) == "CleanGraphics"            # curves
    assert graphics.option_of(0x60014000) is None                       # a private group
    assert not CleanedAttributes({"RetainDeviceIdentity"})
