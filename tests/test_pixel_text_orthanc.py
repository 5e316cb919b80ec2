"""Text read in the pixels by verify, on a real Orthanc with the real text reader (ocr/text_service.py,
RapidOCR) and public ultrasounds whose pixels carry their patient's name, birth date and
institution (pixel_files.py): what verify finds where the caller accepted the pixels as they
are, what it finds once a rule cleaned them, what it reads by default, and that a frame it
cannot read leaves the set not clean."""
from __future__ import annotations

import pytest

from orthanc_server import OrthancServer, free_port
from pixel_files import real_files
from test_pixels_orthanc import CLEAN, stored_result, variant, with_deid_rules
from text_service import TextService

ACCEPT = {"BurnedInAnnotation": "Accept"}


@pytest.fixture(scope="module")
def files():
    return real_files()


@pytest.fixture(scope="module")
def reader():
    service = TextService()
    yield service
    service.stop()


def plugin_server(url: str) -> OrthancServer:
    """An Orthanc with the plugin, deid's rule file, and the text reader at `url`."""
    return with_deid_rules(PixelTextReader={"Url": url, "FramesPerInstance": 2})


@pytest.fixture(scope="module")
def server(reader):
    made = plugin_server(reader.url)
    yield made
    made.cleanup()


def verify(server, source: str, result: str, **members) -> dict:
    answer = server.post("/tools/verify-anonymization", json={"Source": source, "Anonymized": result, **members})
    assert answer.status_code == 200, answer.text
    return answer.json()


@pytest.mark.parametrize("name, labels, top", [
    # "ZZZDOWNTIME,MARY", "120907058" (its AccessionNumber), "CCHS CLEVELAND CLINIC"
    ("RGB_IMAGE.dcm", {"PatientName", "AccessionNumber", "InstitutionName"}, 60),
    ("GREYSCALE_IMAGE.dcm", {"PatientBirthDate"}, 49),  # "DOB:08/29/1951"
])
def test_identifiers_in_pixels_the_caller_accepted_are_found_and_the_set_is_not_clean(server, files, name,
                                                                                   labels, top):
    source, result, instance, _ = stored_result(server, variant(files[name].read_bytes()), ACCEPT)
    report = verify(server, source, result)
    text = report["PixelText"]
    assert (text["Scope"], text["InstancesRead"], text["FramesRead"], text["UnreadCount"]) == ("AtRisk", 1, 1, 0)
    assert {leak["Label"] for leak in text["Leaks"]} == labels
    assert all(leak["Instance"] == instance and leak["Box"][3] <= top for leak in text["Leaks"])
    assert report["PixelStatusCounts"] == {"Accepted": 1}  # the header alone would call it clean
    assert report["Clean"] is False


@pytest.mark.parametrize("name", ["RGB_IMAGE.dcm", "GREYSCALE_IMAGE.dcm"])
def test_once_a_rule_cleaned_the_pixels_no_identifier_is_read_in_them(server, files, name):
    source, result, _, _ = stored_result(server, variant(files[name].read_bytes()), CLEAN)
    report = verify(server, source, result)
    assert (report["PixelText"]["InstancesRead"], report["PixelText"]["LeaksCount"]) == (1, 0)
    assert report["PixelText"]["Leaks"] == [] and report["Clean"] is True


def test_by_default_only_instances_that_may_carry_text_are_read_and_all_on_request(server, files):
    source, result, _, _ = stored_result(server, variant(files["MR2_UNCR.dcm"].read_bytes()), {})
    assert verify(server, source, result)["PixelText"]["InstancesRead"] == 0
    everything = verify(server, source, result, PixelText="All")
    assert (everything["PixelText"]["InstancesRead"], everything["PixelText"]["LeaksCount"]) == (1, 0)
    assert "PixelText" not in verify(server, source, result, PixelText="None")


def test_a_multi_frame_instance_is_read_in_as_many_frames_as_configured(server, files):
    data = variant(files["ultrasound-multiframe.dcm"].read_bytes())
    source, result, _, _ = stored_result(server, data, ACCEPT)
    assert verify(server, source, result)["PixelText"]["FramesRead"] == 2  # FramesPerInstance


def test_a_reader_that_cannot_be_reached_leaves_the_set_not_clean(files):
    made = plugin_server(f"http://127.0.0.1:{free_port()}")  # nothing listens there
    try:
        source, result, instance, _ = stored_result(made, variant(files["RGB_IMAGE.dcm"].read_bytes()), ACCEPT)
        text = verify(made, source, result)
    finally:
        made.cleanup()
    assert text["Clean"] is False
    assert text["PixelText"]["UnreadCount"] == 1 and text["PixelText"]["Unread"][0]["Instance"] == instance
    assert "cannot be reached" in text["PixelText"]["Unread"][0]["Reason"]


def test_asking_for_text_without_a_reader_is_refused(orthanc, files):
    source, result, _, _ = stored_result(orthanc, variant(files["RGB_IMAGE.dcm"].read_bytes()), ACCEPT)
    answer = orthanc.post("/tools/verify-anonymization",
                          json={"Source": source, "Anonymized": result, "PixelText": "AtRisk"})
    assert answer.status_code == 400 and "PixelTextReader" in answer.text
    assert "PixelText" not in verify(orthanc, source, result)



def encapsulated_pdf() -> bytes:
    """A scanned document as an Encapsulated PDF: a kind that may show the patient (the gate's
    list), with no pixel data for the reader (the PDF is not rendered: not read, not unread)."""
    from pydicom.uid import generate_uid as new_uid
    from dicom_factory import Study, _base, to_bytes
    from conftest import new_patient
    ds = _base(Study(patient=new_patient()), "1.2.840.10008.5.1.4.1.1.104.1", "DOC")
    ds.SeriesInstanceUID, ds.InstanceNumber = new_uid(), 1
    ds.MIMETypeOfEncapsulatedDocument = "application/pdf"
    ds.EncapsulatedDocument = b"%PDF-1.4\n%%EOF\n"
    return to_bytes(ds)


def test_an_instance_without_pixel_data_is_not_read_and_holds_back_nothing(server):
    source, result, _, _ = stored_result(server, encapsulated_pdf(), ACCEPT)
    report = verify(server, source, result)
    assert report["PixelStatusCounts"] == {"Accepted": 1}
    text = report["PixelText"]
    assert (text["InstancesWithoutPixels"], text["InstancesRead"], text["UnreadCount"]) == (1, 0, 0)
    assert report["Clean"] is True


def test_what_the_options_keep_is_no_leak_in_pixels_either(server, files):
    """Under Retain Institution Identity the institution's name is kept in the header, and its
    burned-in copy is no leak either (as verify judges headers); the patient's name still is."""
    body = {**ACCEPT, "DeidentificationOptions": ["RetainInstitutionIdentity"]}
    source, result, _, _ = stored_result(server, variant(files["RGB_IMAGE.dcm"].read_bytes()), body)
    labels = {leak["Label"] for leak in verify(server, source, result)["PixelText"]["Leaks"]}
    assert "InstitutionName" not in labels and "PatientName" in labels


def test_the_reader_answers_what_it_cannot_read_and_a_silent_client_blocks_no_other(reader):
    import socket
    import requests
    silent = socket.create_connection(("127.0.0.1", int(reader.url.rsplit(":", 1)[1])))
    silent.sendall(b"POST /read-text HTTP/1.1\r\nHost: x\r\nContent-Length: 1000\r\n\r\n")  # and nothing more
    try:
        assert requests.post(reader.url + "/read-text", data=b"not an image", timeout=30).status_code == 400
        answer = requests.post(reader.url + "/read-text", data=b"x", headers={"Content-Length": "x"}, timeout=30)
        assert answer.status_code == 400
    finally:
        silent.close()
