"""Fail closed: an output that keeps a source UID is never stored, not even in part."""
from __future__ import annotations

import pytest

from anonymized import find_patient, parse
from conftest import upload


def pseudonymous_patient(orthanc, study) -> str:
    return orthanc.get("/tools/generate-uid", params={
        "level": "patient", "patient-id": study.study.patient.patient_id}).text


def test_a_source_uid_in_kept_free_text_gets_its_pseudonym_in_its_place(orthanc, study):
    leaky = study.series[0][0]
    leaky.ImageComments = f"copied from {leaky.SOPInstanceUID}, on {leaky.FrameOfReferenceUID}."
    uploaded = upload(orthanc, study)
    answer = orthanc.post(f"/instances/{uploaded[leaky.SOPInstanceUID]['ID']}/anonymize",
                          json={"Keep": ["ImageComments"]})
    assert answer.status_code == 200, answer.text
    anonymized = parse(answer.content)
    assert anonymized.ImageComments == \
        f"copied from {anonymized.SOPInstanceUID}, on {anonymized.FrameOfReferenceUID}."


def test_one_bad_instance_stores_nothing_of_the_whole_call(orthanc, study):
    series = study.series[0]
    leaky = series[-1]  # the last one: its siblings are anonymized and stored before it fails
    block = leaky.private_block(0x0011, "SYNTHETIC VENDOR", create=True)
    block.add_new(0x10, "OB", f"see {leaky.FrameOfReferenceUID}".encode())  # binary: not rewritten
    uploaded = upload(orthanc, study)
    source_series = uploaded[leaky.SOPInstanceUID]["ParentSeries"]
    before = sorted(orthanc.json("/instances"))
    source_files = {i["ID"]: orthanc.get(f"/instances/{i['ID']}/file").content
                    for i in orthanc.json(f"/series/{source_series}/instances")}

    answer = orthanc.post(f"/series/{source_series}/anonymize",
                          json={"KeepPrivateTags": True, "KeepSource": False})
    assert answer.status_code == 500
    assert find_patient(orthanc, pseudonymous_patient(orthanc, study)) == []
    assert sorted(orthanc.json("/instances")) == before
    for instance, content in source_files.items():  # the source is untouched, KeepSource or not
        assert orthanc.get(f"/instances/{instance}/file").content == content


def anonymize_with_a_private_element(orthanc, study, image, group: int, vr: str, value: str, **body):
    """Add a private element to `image`, store the study, anonymize the image keeping private tags."""
    block = image.private_block(group, "SYNTHETIC VENDOR", create=True)
    block.add_new(0x10 if group == 0x0011 else 0x01, vr, value)
    uploaded = upload(orthanc, study)
    return orthanc.post(f"/instances/{uploaded[image.SOPInstanceUID]['ID']}/anonymize",
                        json={"KeepPrivateTags": True, **body})


@pytest.mark.parametrize("attribute,body", [("PatientName", {"Replace": {"PatientName": "S-001"}, "Force": True}),
                                            ("PatientName", {"Remove": ["PatientName"], "Force": True}),
                                            ("PatientID", {"Replace": {"PatientID": "S-001"}, "Force": True})],
                         ids=["PatientName replaced", "PatientName removed", "PatientID replaced"])
def test_an_identifier_the_caller_replaced_or_removed_is_still_searched_everywhere_else(orthanc, study, attribute,
                                                                                        body):
    """Only what the caller keeps is the caller's to leave in the output, at its own place: a
    Replace or Remove of PatientName does not make the source's name welcome in a private text."""
    image = study.series[1][0]
    identifier = str(image.PatientName).split("^")[0] if attribute == "PatientName" else image.PatientID
    answer = anonymize_with_a_private_element(orthanc, study, image, 0x0011, "LO", f"for {identifier} only", **body)
    assert answer.status_code == 500, answer.text
    assert "(0011,1010)" in answer.json()["Message"] and identifier not in answer.text


def test_a_uid_of_the_instance_in_a_kept_private_tag_gets_its_pseudonym(orthanc, study):
    image = study.series[1][0]
    answer = anonymize_with_a_private_element(orthanc, study, image, 0x0011, "UI", image.SOPInstanceUID)
    assert answer.status_code == 200, answer.text
    anonymized = parse(answer.content)
    value = anonymized[0x00111010].value  # native writes it back with VR UN
    value = value.decode("ascii") if isinstance(value, bytes) else str(value)
    assert value.rstrip("\x00 ") == str(anonymized.SOPInstanceUID) != image.SOPInstanceUID


def test_a_source_uid_in_kept_private_text_gets_its_pseudonym(orthanc, study):
    image = study.series[1][0]
    answer = anonymize_with_a_private_element(orthanc, study, image, 0x0011, "LT", f"uid={image.SOPInstanceUID}")
    assert answer.status_code == 200, answer.text
    anonymized = parse(answer.content)
    value = anonymized[0x00111010].value  # native writes it back with VR UN
    value = value.decode("ascii") if isinstance(value, bytes) else str(value)
    assert value.rstrip("\x00 ") == f"uid={anonymized.SOPInstanceUID}"


def test_a_source_uid_in_private_binary_data_is_refused_naming_what_gets_past_it(orthanc, study):
    image = study.series[1][0]
    answer = anonymize_with_a_private_element(orthanc, study, image, 0x0011, "OB",
                                              f"uid={image.SOPInstanceUID}".encode())
    assert answer.status_code == 500
    message = answer.json()["Message"]
    assert "(0011,1010)" in message and '"Remove": ["0011,1010"]' in message
    assert image.SOPInstanceUID not in answer.text


def test_without_the_leak_the_same_requests_succeed(orthanc, study):
    uploaded = upload(orthanc, study)
    image = study.series[0][0]
    for options in ({"Keep": ["ImageComments"]}, {"KeepPrivateTags": True}):
        answer = orthanc.post(f"/instances/{uploaded[image.SOPInstanceUID]['ID']}/anonymize", json=options)
        assert answer.status_code == 200, answer.text


def test_a_source_uid_after_the_pixel_data_is_refused(orthanc, study):
    """Elements after the pixel data escape the header scan: the file's bytes still give them away."""
    image = study.series[0][1]
    answer = anonymize_with_a_private_element(orthanc, study, image, 0x7FE1, "UI", image.SOPInstanceUID)
    assert answer.status_code == 500
    assert "after the pixel data" in answer.json()["Message"]
