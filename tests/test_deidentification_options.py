"""PS3.15 de-identification options by name (issue 24): the request member and the project
setting, the options' mark, the codes every result records, native's Keep of what an option
keeps, Retain Safe Private, and source UIDs held by private elements. Without a server."""
from __future__ import annotations


import pydicom
import pytest
from pydicom.data import get_testdata_file
from pydicom.dataset import Dataset
from pydicom.uid import generate_uid

from consistent_anon.dicom.filereader import Header, read_header
from consistent_anon.dicom.option_attributes import KEPT_TAGS, OPTION_CODES
from consistent_anon.dicom.scanning import instance_uids
from consistent_anon.dicom.uid_attributes import UID_TAGS
from consistent_anon.errors import BadRequest
from consistent_anon.identity.project_settings import ProjectSettings, SettingsError, parse_project_settings
from consistent_anon.identity.pseudonyms import Pseudonymizer
from consistent_anon.pipeline.identities import NativeMarkers, plan_instance
from consistent_anon.pipeline.option_plan import IMPLEMENTED_OPTIONS, cleaned_tags
from consistent_anon.pipeline.options import parse_request
from consistent_anon.verification.report import SourceIdentifiers
from dicom_factory import implicit_with_private_uid, to_bytes, two_frame_study

KEY = b"o" * 32
MARKERS = NativeMarkers("Orthanc - Basic Profile", "YES")
CODES = "0012,0064"


def request(body: str, settings: ProjectSettings = ProjectSettings()):
    return parse_request(body).for_project(settings)


def plan(ds_or_header, body: str = "{}", settings: ProjectSettings = ProjectSettings()):
    header = ds_or_header if isinstance(ds_or_header, Header) else read_header(to_bytes(ds_or_header))
    return plan_instance(header, request(body, settings), Pseudonymizer(KEY), MARKERS, UID_TAGS)


def codes_of(planned) -> list[str]:
    return [item["0008,0100"] for item in planned.native_body["Replace"][CODES]]


# --- The request member and the project setting ----------------------------------------------

def test_the_options_are_read_by_name_and_the_date_option_is_shift_dates():
    parsed = request('{"DeidentificationOptions": ["RetainDeviceIdentity", "CleanDescriptors"]}')
    assert parsed.deidentification_options == {"RetainDeviceIdentity", "CleanDescriptors"}
    assert "DeidentificationOptions" not in parsed.native_body  # native never sees it
    dated = request('{"DeidentificationOptions": ["RetainLongitudinalModifiedDates"]}')
    assert dated.settings.shift_dates and "RetainLongitudinalModifiedDates" in dated.deidentification_options
    assert request('{"ShiftDates": true}').deidentification_options == {"RetainLongitudinalModifiedDates"}


@pytest.mark.parametrize("body", [
    '{"DeidentificationOptions": ["RetainEverything"]}',
    '{"DeidentificationOptions": ["retaindeviceidentity"]}',
    '{"DeidentificationOptions": "RetainDeviceIdentity"}',
    '{"DeidentificationOptions": [1]}',
    '{"DeidentificationOptions": ["RetainLongitudinalModifiedDates"], "ShiftDates": false}',
])
def test_an_unknown_or_malformed_option_is_a_bad_request(body):
    with pytest.raises(BadRequest):
        parse_request(body)


def test_the_request_adds_to_the_projects_options_and_never_removes_one():
    settings = parse_project_settings("P", {"DeidentificationOptions": ["RetainPatientCharacteristics"]})
    merged = request('{"DeidentificationOptions": ["RetainDeviceIdentity"]}', settings)
    assert merged.deidentification_options == {"RetainPatientCharacteristics", "RetainDeviceIdentity"}
    assert request("{}", settings).deidentification_options == {"RetainPatientCharacteristics"}


def test_the_project_setting_is_checked_at_start():
    for value in (["NoSuchOption"], "RetainDeviceIdentity", [None]):
        with pytest.raises(SettingsError):
            parse_project_settings("P", {"DeidentificationOptions": value})
    with pytest.raises(SettingsError):
        parse_project_settings("P", {"ShiftDates": False, "DeidentificationOptions": ["RetainLongitudinalModifiedDates"]})
    assert parse_project_settings("P", {"DeidentificationOptions": ["RetainLongitudinalModifiedDates"]}).shift_dates


def test_retain_safe_private_and_keep_private_tags_contradict_each_other():
    with pytest.raises(BadRequest):
        request('{"KeepPrivateTags": true, "DeidentificationOptions": ["RetainSafePrivate"]}')


def test_the_options_are_part_of_the_options_mark_written_any_way():
    plain = request("{}").output_options
    device = request('{"DeidentificationOptions": ["RetainDeviceIdentity", "CleanDescriptors"]}').output_options
    again = request('{"DeidentificationOptions": ["CleanDescriptors", "RetainDeviceIdentity", "CleanDescriptors"]}')
    assert plain != device == again.output_options
    by_project = parse_project_settings("P", {"DeidentificationOptions": ["CleanDescriptors"]})
    assert request('{"DeidentificationOptions": ["RetainDeviceIdentity"]}', by_project).output_options == device
    assert request('{"DeidentificationOptions": ["RetainLongitudinalModifiedDates"]}').output_options == \
        request('{"ShiftDates": true}').output_options


# --- Codes and native's Keep in the plan -----------------------------------------------------

def test_every_result_records_the_basic_profile_and_each_applied_options_code_once():
    image = two_frame_study(per_series=1).series[0][0]
    assert codes_of(plan(image)) == ["113100"]
    assert codes_of(plan(image, '{"ShiftDates": true}')) == ["113100", "113107"]
    everything = plan(image, '{"ShiftDates": true, "DeidentificationOptions": ["RetainInstitutionIdentity", '
                             '"RetainPatientCharacteristics", "RetainDeviceIdentity", "RetainSafePrivate"]}')
    assert codes_of(everything) == ["113100", "113107", "113108", "113109", "113111", "113112"]
    item = everything.native_body["Replace"][CODES][0]
    assert item == {"0008,0100": "113100", "0008,0102": "DCM", "0008,0104": "Basic Application Confidentiality Profile"}
    # The caller's own decision on the attribute stands.
    assert CODES not in plan(image, '{"Remove": ["DeidentificationMethodCodeSequence"]}').native_body["Replace"]


def test_an_option_whose_work_is_not_done_claims_no_code_and_keeps_nothing():
    image = two_frame_study(per_series=1).series[0][0]
    image.StudyDescription = "Knee"
    for name in ("CleanPixelData",):
        assert name in OPTION_CODES and name not in IMPLEMENTED_OPTIONS
        planned = plan(image, f'{{"DeidentificationOptions": ["{name}"]}}')
        assert codes_of(planned) == ["113100"] and "Keep" not in planned.native_body


def test_the_clean_options_claim_their_codes_once_their_work_is_done():
    image = two_frame_study(per_series=1).series[0][0]
    image.StudyDescription = "Knee"
    for name, code in (("CleanDescriptors", "113105"), ("CleanStructuredContent", "113104"),
                       ("CleanGraphics", "113103")):
        assert name in IMPLEMENTED_OPTIONS
        assert codes_of(plan(image, f'{{"DeidentificationOptions": ["{name}"]}}')) == ["113100", code]
    assert "0008,1030" in plan(image, '{"DeidentificationOptions": ["CleanDescriptors"]}').native_body["Keep"]


def test_what_an_option_keeps_goes_to_natives_keep_unless_the_caller_or_the_plan_decides():
    image = two_frame_study(per_series=1).series[0][0]
    image.StationName, image.DeviceSerialNumber, image.StationAETitle = "CT01", "SN-1", "CTAE"
    image.PatientAge, image.PatientWeight = "045Y", 70
    image.DeviceUID = generate_uid()
    planned = plan(image, '{"DeidentificationOptions": ["RetainDeviceIdentity"], "Remove": ["DeviceSerialNumber"]}')
    keep = planned.native_body["Keep"]
    assert {"0008,1010", "0008,0055"} <= set(keep)  # K, and C (kept for the cleaning step)
    assert "0018,1000" not in keep and "0010,1010" not in keep  # the caller's Remove; another option's
    # A K UID attribute stays itself (written by the plan, which native's Keep would undo).
    assert planned.native_body["Replace"]["0018,1002"] == image.DeviceUID and "0018,1002" not in keep
    assert image.DeviceUID not in planned.source_uids
    assert 0x00080055 in cleaned_tags(request('{"DeidentificationOptions": ["RetainDeviceIdentity"]}'))
    dated = plan(image, '{"ShiftDates": true, "DeidentificationOptions": ["RetainPatientCharacteristics"]}')
    assert {"0010,1010", "0010,1030", "0010,0040"} <= set(dated.native_body["Keep"])


def test_what_an_option_keeps_is_no_leak_for_the_check_but_what_the_caller_did_not_keep_is():
    image = two_frame_study(per_series=1).series[0][0]
    planned = plan(image, '{"DeidentificationOptions": ["RetainInstitutionIdentity"]}')
    assert 0x00080080 in planned.caller_tags and 0x00080080 in KEPT_TAGS["RetainInstitutionIdentity"]
    assert 0x00080080 not in plan(image).caller_tags


# --- Retain Safe Private ---------------------------------------------------------------------

def ct_small() -> Dataset:
    return pydicom.dcmread(get_testdata_file("CT_small.dcm"))


def test_ct_small_holds_170_private_elements_of_which_table_e_3_10_1_lists_5():
    ds = ct_small()
    data = [e for e in ds if e.tag.is_private and e.tag.element >= 0x1000]
    assert len(data) == 170
    planned = plan(read_header(to_bytes(ds)), '{"DeidentificationOptions": ["RetainSafePrivate"]}')
    private = sorted(k for k in planned.native_body["Keep"] if int(k[:4], 16) % 2)
    assert private == ["0019,0010", "0019,1023", "0019,1024", "0019,1027", "0025,0010", "0025,1007",
                       "0043,0010", "0043,1027"]
    assert "Keep" not in plan(read_header(to_bytes(ds))).native_body


# --- Source UIDs in private elements ---------------------------------------------------------

def test_a_uid_only_a_private_element_of_an_implicit_vr_file_holds_is_a_source_uid():
    data, hidden, _ = implicit_with_private_uid()
    header = read_header(data)
    assert header.values(0x00291010) == (hidden,)
    assert hidden in instance_uids(header, UID_TAGS)
    identifiers = SourceIdentifiers()
    identifiers.add(header)
    assert hidden in identifiers.uids  # verify searches the anonymized set for it
    planned = plan(header, '{"KeepPrivateTags": true}')
    pseudonym = Pseudonymizer(KEY).uid(planned.patient_id, hidden)
    assert planned.native_body["Replace"]["0029,1010"] == pseudonym
    assert hidden in planned.source_uids


def test_a_version_or_a_number_in_a_private_element_is_no_uid():
    image = two_frame_study(per_series=1).series[0][0]
    block = image.private_block(0x0029, "ACME IMAGING 1.0", create=True)
    block.add_new(0x10, "LO", "1.2.3")
    block.add_new(0x11, "DS", "1.5")
    header = read_header(to_bytes(image))
    assert not {"1.2.3", "1.5"} & set(instance_uids(header, UID_TAGS))


def test_a_project_of_the_configuration_takes_the_setting():
    from consistent_anon.identity.config import parse_config
    config = parse_config({"ConsistentAnonymization": {
        "Key": "k" * 64, "Projects": {"trial": {"DeidentificationOptions": ["RetainDeviceIdentity"]}}}})
    assert config.project_settings["trial"].deidentification_options == {"RetainDeviceIdentity"}


def test_verify_never_answers_clean_while_a_source_uid_a_private_element_held_stands():
    from consistent_anon.verification.report import VerifyRequest, verify
    from test_set_verification import FakeReader, anonymize_locally
    study = two_frame_study(per_series=1)
    image = study.series[0][0]
    hidden = generate_uid()
    image.private_block(0x0029, "ACME IMAGING 1.0", create=True).add_new(0x10, "UN", hidden.encode())
    pseudonyms = Pseudonymizer(KEY)
    anonymized = anonymize_locally(study, pseudonyms)  # the private element kept as it was
    resources = {"source": [(f"s{n}", f"s-{ds.SeriesNumber}", ds) for n, ds in enumerate(study.instances)],
                 "anonymized": [(f"a{n}", f"a-{ds.SeriesNumber}", ds) for n, ds in enumerate(anonymized)]}
    report = verify(FakeReader(resources), VerifyRequest("source", "anonymized"), pseudonyms, lambda m: None)
    assert not report["Clean"]
    assert {"Instance": "a0", "Path": "(0029,1010)", "Found": "(0029,1010)"} in report["Leaks"] or \
        any(leak["Path"] == "(0029,1010)" for leak in report["Leaks"])
