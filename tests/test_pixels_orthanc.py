"""Burned-in text on a real Orthanc, with public files that carry it (pixel_files.py): the gate's
decision for each, refusal before anything is stored, Clean Pixel Data by rules (the field's, from
the `deid` package's file, and a site's), what is stored and marked, and what verify says."""
from __future__ import annotations

import io
import json
import shutil
from pathlib import Path

import numpy as np
import pydicom
import pytest
from pydicom.data import get_testdata_file
from pydicom.pixels import pixel_array
from pydicom.uid import generate_uid

from orthanc_server import RUNTIME, OrthancServer
from test_jobs import finished, wait_for
from pixel_files import real_files, rule_file

CLEAN = {"DeidentificationOptions": ["CleanPixelData"]}
STATUS_METADATA = "9735"
#: A site's own rules (docs/pixels.md), for devices the field's file does not know.
SITE_RULES = [
    {"Name": "Regions only", "Match": {"ManufacturerModelName": "REGIONS ONLY$"}, "KeepUltrasoundRegions": True},
    {"Name": "Affiniti 70G cine", "Match": {"Manufacturer": "Philips", "ManufacturerModelName": "Affiniti 70G",
                                            "Rows": 600}, "Rectangles": [[0, 0, 800, 60]]},
    {"Name": "Aloka SSD-4000", "Match": {"ManufacturerModelName": "SSD-4000"},
     "Rectangles": [[0, 0, 640, 40], [500, 440, 700, 480]]},
    {"Name": "Test secondary capture", "Match": {"PhotometricInterpretation": "^YBR_FULL$", "Modality": "OT"},
     "Rectangles": [[10, 10, 60, 40]]},
    {"Name": "LOGIQ 700", "Match": {"ManufacturerModelName": "LOGIQ 700"}, "Rectangles": [[0, 0, 640, 30]]},
]
#: Each file, the rule that cleans it under CleanPixelData, and that rule's rectangles.
CLEANED = {
    "GREYSCALE_IMAGE.dcm": ("EPIQ 7G", [(0, 0, 1024, 49)]),  # deid's file: "name and DOB in its top 49 rows"
    "RGB_IMAGE.dcm": ("SIEMMENS", [(0, 0, 1024, 60)]),  # deid's file, spelt as it is there
    "ultrasound-multiframe.dcm": ("Affiniti 70G cine", [(0, 0, 800, 60)]),
    "gdcm-US-ALOKA-16.dcm": ("Aloka SSD-4000", [(0, 0, 640, 40), (500, 440, 700, 480)]),
    "gdcm-US-ALOKA-16_big.dcm": ("Aloka SSD-4000", [(0, 0, 640, 40), (500, 440, 700, 480)]),
    "SC_ybr_full_uncompressed.dcm": ("Test secondary capture", [(10, 10, 60, 40)]),
    "US1_UNCR.dcm": ("LOGIQ 700", [(0, 0, 640, 30)]),
}


@pytest.fixture(scope="module")
def files():
    return real_files()


def with_deid_rules(**settings) -> OrthancServer:
    """An Orthanc with the plugin and the `deid` package's rule file, and these settings of the
    plugin's section; started."""
    made = OrthancServer()
    rules = made.workdir / "deid.dicom"
    shutil.copy(rule_file(), rules)
    section = {**made.settings["ConsistentAnonymization"], "PixelRuleFiles": [RUNTIME.inside(rules)], **settings}
    made.configure({"ConsistentAnonymization": section})
    return made.start()


@pytest.fixture(scope="module")
def server():
    """An Orthanc with the plugin, the `deid` package's rule file and the site's rules."""
    made = with_deid_rules(PixelRules=SITE_RULES)
    yield made
    made.cleanup()


def variant(data: bytes, **changes) -> bytes:
    """The file as another patient's, with new UIDs, then `changes`: a source no other test used."""
    ds = pydicom.dcmread(io.BytesIO(data))
    ds.PatientID = "PIX-" + generate_uid()[-12:]
    ds.StudyInstanceUID, ds.SeriesInstanceUID = generate_uid(), generate_uid()
    ds.SOPInstanceUID = ds.file_meta.MediaStorageSOPInstanceUID = generate_uid()
    for keyword, value in changes.items():
        setattr(ds, keyword, value)
    ds.file_meta.MediaStorageSOPInstanceUID = ds.SOPInstanceUID
    out = io.BytesIO()
    ds.save_as(out, enforce_file_format=True)
    return out.getvalue()


def frames(data: bytes) -> np.ndarray:
    """The stored values as frames x rows x columns (x samples), as stored (YBR_FULL not made RGB)."""
    ds = pydicom.dcmread(io.BytesIO(data))
    array = pixel_array(ds, raw=True)
    return array if int(ds.get("NumberOfFrames", 1) or 1) > 1 else array[np.newaxis]


def anonymize_instance(server, data: bytes, body: dict):
    instance = server.upload(data)["ID"]
    return instance, server.post(f"/instances/{instance}/anonymize", json=body)


def pixel_bytes(data: bytes) -> bytes:
    return pydicom.dcmread(io.BytesIO(data)).PixelData


def assert_blanked(source: bytes, result: bytes, rectangles) -> None:
    """The rectangles are zero in every frame; every other stored value is the source's."""
    before, after = frames(source), frames(result)
    assert before.shape == after.shape
    outside = np.ones(before.shape[:3], dtype=bool)
    for x0, y0, x1, y1 in rectangles:
        outside[:, y0:y1, x0:x1] = False
        assert not after[:, y0:y1, x0:x1].any()
    assert np.array_equal(before[outside], after[outside])
    assert before[~outside].any()  # there was something to blank
    assert len(pixel_bytes(source)) == len(pixel_bytes(result))


@pytest.mark.parametrize("name, reason", [("GREYSCALE_IMAGE.dcm", "BurnedInAnnotation is YES"),
                                          ("ultrasound-multiframe.dcm", "BurnedInAnnotation is YES")])
def test_an_instance_at_risk_is_refused_by_default_before_native_saying_how_to_proceed(server, files, name, reason):
    instance, answer = anonymize_instance(server, files[name].read_bytes(), {})
    assert answer.status_code == 400, answer.text
    message = answer.json()["Message"] if "Message" in answer.json() else answer.text
    assert instance in answer.text and reason in answer.text and "CleanPixelData" in answer.text
    assert '"BurnedInAnnotation": "Accept"' in message


@pytest.mark.parametrize("name", ["RGB_IMAGE.dcm", "US1_UNCR.dcm", "gdcm-US-ALOKA-16.dcm",
                                  "SC_ybr_full_uncompressed.dcm", "MR2_UNCR.dcm", "CT_small.dcm"])
def test_unknown_and_not_at_risk_instances_keep_their_pixels_byte_for_byte_without_the_option(server, files, name):
    """Without CleanPixelData, nothing of the pixels changes (unknown instances are stored, flagged)."""
    data = (files[name] if name in files else Path(get_testdata_file(name))).read_bytes()
    _, answer = anonymize_instance(server, data, {})
    assert answer.status_code == 200, answer.text
    assert pixel_bytes(answer.content) == pixel_bytes(data)


@pytest.mark.parametrize("name", ["MR2_UNCR.dcm", "CT_small.dcm"])
def test_a_plain_mr_and_ct_keep_their_pixels_byte_for_byte_under_clean_pixel_data(server, files, name):
    data = (files[name] if name in files else Path(get_testdata_file(name))).read_bytes()
    _, answer = anonymize_instance(server, data, CLEAN)
    assert answer.status_code == 200, answer.text
    assert pixel_bytes(answer.content) == pixel_bytes(data)
    result = pydicom.dcmread(io.BytesIO(answer.content))
    assert "BurnedInAnnotation" not in result
    assert [item.CodeValue for item in result.DeidentificationMethodCodeSequence] == ["113100"]  # no 113101


@pytest.mark.parametrize("name", sorted(CLEANED))
def test_clean_pixel_data_blanks_the_rules_rectangles_in_every_frame_and_nothing_else(server, files, name):
    data = files[name].read_bytes()
    _, answer = anonymize_instance(server, data, CLEAN)
    assert answer.status_code == 200, answer.text
    assert_blanked(data, answer.content, CLEANED[name][1])
    result = pydicom.dcmread(io.BytesIO(answer.content))
    assert result.BurnedInAnnotation == "NO"
    assert [item.CodeValue for item in result.DeidentificationMethodCodeSequence] == ["113100", "113101"]


def test_a_compressed_source_is_refused_under_clean_pixel_data_with_a_clear_message(server, files):
    _, answer = anonymize_instance(server, files["US1_J2KR.dcm"].read_bytes(), CLEAN)
    assert answer.status_code == 400, answer.text
    assert "compressed" in answer.text and "LOGIQ 700" in answer.text


def test_no_matching_rule_under_clean_pixel_data_is_refused_naming_the_device(server, files):
    data = variant(files["GREYSCALE_IMAGE.dcm"].read_bytes(), ManufacturerModelName="EXAMPLE 9Z")
    instance, answer = anonymize_instance(server, data, CLEAN)
    assert answer.status_code == 400, answer.text
    assert instance in answer.text and "Philips Medical Systems / EXAMPLE 9Z, 768x1024" in answer.text
    assert "PixelRules" in answer.text


def test_a_refused_instance_stores_nothing_of_a_series_call(server, files):
    """One instance at risk in a series: the call is refused, none of the series' results stay (the
    instance declared clean comes first by SOPInstanceUID: it is stored, then removed again)."""
    at_risk = variant(files["GREYSCALE_IMAGE.dcm"].read_bytes())
    ds = pydicom.dcmread(io.BytesIO(at_risk))
    same_series = dict(PatientID=ds.PatientID, StudyInstanceUID=ds.StudyInstanceUID,
                       SeriesInstanceUID=ds.SeriesInstanceUID)
    clean_one = variant(at_risk, BurnedInAnnotation="NO", SOPInstanceUID="1.2.3", **same_series)
    series = server.upload(at_risk)["ParentSeries"]
    assert server.upload(clean_one)["ParentSeries"] == series
    before = set(server.get("/instances").json())
    answer = server.post(f"/series/{series}/anonymize", json={})
    assert answer.status_code == 400, answer.text
    assert set(server.get("/instances").json()) == before
    entry = server.get("/tools/anonymization-log?limit=10000").json()["Entries"][-1]
    assert (entry["outcome"], entry["reason"]) == ("Refused", "BurnedInAnnotation")


def stored_result(server, data: bytes, body: dict) -> tuple[str, str, str, dict]:
    """The source series, its anonymized series and instance, stored by a series call, and its answer."""
    series = server.upload(data)["ParentSeries"]
    answer = server.post(f"/series/{series}/anonymize", json=body)
    assert answer.status_code == 200, answer.text
    result = answer.json()["ID"]
    (instance,) = server.get(f"/series/{result}/instances").json()
    return series, result, instance["ID"], answer.json()


def verify(server, source: str, result: str) -> dict:
    answer = server.post("/tools/verify-anonymization", json={"Source": source, "Anonymized": result})
    assert answer.status_code == 200, answer.text
    return answer.json()


@pytest.mark.parametrize("name, body, stored, status, clean", [
    ("RGB_IMAGE.dcm", {}, "Flagged", "NotCleaned", False),  # unknown: stored, flagged
    ("GREYSCALE_IMAGE.dcm", {"BurnedInAnnotation": "Flag"}, "Flagged", "NotCleaned", False),
    ("GREYSCALE_IMAGE.dcm", {"BurnedInAnnotation": "Accept"}, "Accepted", "Accepted", True),
    ("RGB_IMAGE.dcm", {"BurnedInAnnotation": "Accept"}, "Accepted", "Accepted", True),
    ("GREYSCALE_IMAGE.dcm", CLEAN, "Cleaned: EPIQ 7G", "Cleaned: EPIQ 7G", True),
])
def test_what_is_stored_is_marked_and_verify_is_never_clean_over_pixels_not_cleaned(server, files, name, body,
                                                                                     stored, status, clean):
    source, result, instance, answer = stored_result(server, variant(files[name].read_bytes()), body)
    assert server.get(f"/instances/{instance}/metadata/{STATUS_METADATA}").text == stored
    assert answer["PixelStatusCounts"] == {stored.split(":")[0]: 1}  # the answer says so, and the audit entry
    entry = server.get("/tools/anonymization-log?limit=10000").json()["Entries"][-1]
    assert (entry["results"], entry["pixel_status"]) == ([result], {stored.split(":")[0]: 1})
    report = verify(server, source, result)
    assert [entry["Status"] for entry in report["PixelStatus"]] == [status]
    assert report["PixelStatusCounts"] == {status.split(":")[0]: 1}
    if not clean:
        assert report["Clean"] is False


@pytest.mark.parametrize("name", ["GREYSCALE_IMAGE.dcm", "ultrasound-multiframe.dcm"])
def test_a_rule_may_keep_only_the_declared_ultrasound_regions(server, files, name):
    data = variant(files[name].read_bytes(), ManufacturerModelName="X REGIONS ONLY")
    _, answer = anonymize_instance(server, data, CLEAN)
    assert answer.status_code == 200, answer.text
    before, after = frames(data), frames(answer.content)
    kept = np.zeros(before.shape[:3], dtype=bool)
    for region in pydicom.dcmread(io.BytesIO(data)).SequenceOfUltrasoundRegions:
        kept[:, region.RegionLocationMinY0:region.RegionLocationMaxY1 + 1,
             region.RegionLocationMinX0:region.RegionLocationMaxX1 + 1] = True
    assert kept.any() and not kept.all()
    assert np.array_equal(before[kept], after[kept]) and not after[~kept].any() and before[~kept].any()


def test_bulk_and_asynchronous_calls_refuse_an_instance_at_risk_and_keep_nothing(server, files):
    """The bulk route refuses at once; a job fails with the same message, and its content counts
    what an unknown instance's result is (flagged) when it succeeds."""
    at_risk = server.upload(variant(files["GREYSCALE_IMAGE.dcm"].read_bytes()))
    unknown = server.upload(variant(files["RGB_IMAGE.dcm"].read_bytes()))
    before = set(server.get("/instances").json())
    answer = server.post("/tools/bulk-anonymize", json={"Resources": [unknown["ParentSeries"], at_risk["ID"]]})
    assert answer.status_code == 400 and at_risk["ID"] in answer.text, answer.text
    assert set(server.get("/instances").json()) == before
    job = server.post(f"/series/{at_risk['ParentSeries']}/anonymize", json={"Asynchronous": True}).json()
    ended = wait_for(server, job["Path"], finished)
    assert ended["State"] == "Failure" and "BurnedInAnnotation is YES" in json.dumps(ended)
    assert set(server.get("/instances").json()) == before
    job = server.post(f"/series/{unknown['ParentSeries']}/anonymize", json={"Asynchronous": True}).json()
    ended = wait_for(server, job["Path"], finished)
    assert ended["State"] == "Success" and ended["Content"]["PixelStatusCounts"] == {"Flagged": 1}


@pytest.mark.parametrize("name, body, status", [
    ("RGB_IMAGE.dcm", {}, "Flagged"),  # unknown
    ("GREYSCALE_IMAGE.dcm", {"BurnedInAnnotation": "Accept"}, "Accepted"),
    ("GREYSCALE_IMAGE.dcm", CLEAN, "Cleaned"),
    ("MR2_UNCR.dcm", {}, None),  # not at risk: nothing to say
])
def test_the_instance_route_says_what_it_did_with_the_pixels_in_its_answer_and_audit_entry(server, files, name,
                                                                                           body, status):
    """The one call that stores nothing: the file it answers carries no mark, so the answer's
    header says it (docs/pixels.md), and so does the audit entry."""
    _, answer = anonymize_instance(server, variant(files[name].read_bytes()), body)
    assert answer.status_code == 200, answer.text
    assert answer.headers.get("Consistent-Anonymization-Pixel-Status") == status
    entry = server.get("/tools/anonymization-log?limit=10000").json()["Entries"][-1]
    assert entry.get("pixel_status") == ({status: 1} if status else {})
