"""The pixels' pure logic: the gate, the rules (the `deid` format and a site's), the blanking of
rectangles in every frame, and the decision per policy. No Orthanc (test_pixels_orthanc.py has it)."""
from __future__ import annotations

import io

import numpy as np
import pydicom
import pydicom.encaps
import pytest
from pydicom.dataset import Dataset, FileMetaDataset
from pydicom.uid import ExplicitVRBigEndian, ExplicitVRLittleEndian, ImplicitVRLittleEndian, JPEGBaseline8Bit

from consistent_anon.dicom.filereader import Header, read_header
from consistent_anon.errors import BadRequest, BurnedInPixels
from consistent_anon.identity.project_settings import ProjectSettings
from consistent_anon.pipeline.options import parse_request
from consistent_anon.pixels import gate
from consistent_anon.pixels.blanking import CannotBlank, blank
from consistent_anon.pixels.decision import ACCEPTED, CLEANED, FLAGGED, decide
from consistent_anon.pixels.rules import RuleError, RuleSet, deid_rules, load_rules, site_rule
from pixel_files import real_files, rule_file

US, SC, CT = "1.2.840.10008.5.1.4.1.1.6.1", "1.2.840.10008.5.1.4.1.1.7", "1.2.840.10008.5.1.4.1.1.2"


def header(**values: str) -> Header:
    """A header of top-level values by keyword."""
    return Header.of_values({pydicom.datadict.tag_for_keyword(k): v for k, v in values.items()})


@pytest.mark.parametrize("values, level", [
    (dict(BurnedInAnnotation="YES", SOPClassUID=CT, Rows="512", Manufacturer="GE"), gate.AT_RISK),
    (dict(BurnedInAnnotation="NO", SOPClassUID=US, Rows="600", Manufacturer="X"), gate.NOT_AT_RISK),
    (dict(SOPClassUID=US, Rows="600", Manufacturer="X"), gate.UNKNOWN),
    (dict(BurnedInAnnotation="", SOPClassUID=SC, Rows="600", Manufacturer="X"), gate.UNKNOWN),
    (dict(SOPClassUID=CT, Rows="512", Manufacturer="GE", ImageType="ORIGINAL\\PRIMARY\\LOCALIZER"), gate.UNKNOWN),
    (dict(SOPClassUID=CT, Rows="512", Manufacturer="GE", Modality="OT"), gate.UNKNOWN),
    (dict(SOPClassUID=CT, Rows="512"), gate.UNKNOWN),  # no Manufacturer: made by software
    (dict(SOPClassUID=CT, Rows="512", Manufacturer="GE", ImageType="ORIGINAL\\PRIMARY\\AXIAL"), gate.NOT_AT_RISK),
    (dict(SOPClassUID="1.2.840.10008.5.1.4.1.1.481.3"), gate.NOT_AT_RISK),  # a structure set: no pixels
])
def test_the_gate_reads_the_header_alone(values, level):
    assert gate.classify(header(**values)).level == level


DEID_TEXT = """FORMAT dicom
%filter whitelist
LABEL Clean # marked clean
  contains BurnedInAnnotation No
%filter graylist
LABEL Flag only
  missing Manufacturer || empty Manufacturer
LABEL Philips US # (somebody)
  contains Modality US
  + contains Manufacturer Philips
  + equals Rows 768 || equals Rows 600
  ctpcoordinates 0,0,1024,49
LABEL Screen save
  contains ImageType DERIVED+SECONDARY || contains SeriesDescription Dose
  + notcontains OverlayDescription anything
coordinates 10,20,30, 40
%filter blacklist
LABEL Never cleaned
  contains Modality OT
  coordinates 0,0,5,5
%header
REMOVE PatientID
"""


def test_the_deid_format_is_read_left_to_right_and_only_graylist_rectangles_are_kept():
    rules = deid_rules(DEID_TEXT, "test")
    assert [(r.name, r.rectangles) for r in rules] == [("Philips US", ((0, 0, 1024, 49),)),
                                                       ("Screen save", ((10, 20, 30, 40),))]
    philips = rules[0]
    assert philips.matches(header(Modality="US", Manufacturer="Philips Medical Systems", Rows="768"))
    assert philips.matches(header(Modality="CT", Rows="600"))  # ((US and Philips) and 768) or 600
    assert not philips.matches(header(Modality="US", Manufacturer="philips", Rows="480"))
    screen = rules[1]  # a "+" inside a value is the value's; an unknown attribute is never present
    assert screen.matches(header(SeriesDescription="Dose report"))
    assert not screen.matches(header(SeriesDescription="Abdomen"))


def test_the_field_rule_file_is_read_whole():
    rules = deid_rules(rule_file().read_text(), "deid.dicom")
    assert len(rules) > 90 and all(rule.rectangles for rule in rules)
    assert RuleSet.of(rules).match(header(Modality="US", Manufacturer="Philips Medical Systems",
                                          ManufacturerModelName="EPIQ 5G", Rows="768")).name == "EPIQ 7G"


@pytest.mark.parametrize("entry, message", [
    ({"Name": "x", "Match": {"NoSuchAttribute": "a"}, "Rectangles": [[0, 0, 1, 1]]}, "unknown attribute"),
    ({"Name": "x", "Match": {"Modality": "("}, "Rectangles": [[0, 0, 1, 1]]}, "regular expression"),
    ({"Name": "x", "Match": {"Modality": "US"}, "Rectangles": [[5, 0, 1, 1]]}, "not a rectangle"),
    ({"Name": "x", "Match": {}, "Rectangles": [[0, 0, 1, 1]]}, "at least one attribute"),
    ({"Name": "x", "Match": {"Modality": "US"}, "Rectangles": [[0, 0, 1]]}, "xmin"),
    ({"Name": "x", "Match": {"Modality": "US"}, "Rectangles": [[0, 0, 1, 1]], "Other": 1}, "must be an object"),
])
def test_a_site_rule_that_cannot_be_used_is_refused_naming_it(entry, message):
    with pytest.raises(RuleError, match=message):
        load_rules([], [entry], "Section")


def test_site_rules_come_before_the_files_and_match_every_attribute(tmp_path):
    path = tmp_path / "rules.dicom"
    path.write_text(DEID_TEXT)
    own = {"Name": "Station 7", "Match": {"StationName": "^US7$", "Rows": 768}, "Rectangles": [[0, 0, 9, 9]]}
    rules = load_rules([str(path)], [own], "Section")
    station = header(Modality="US", Manufacturer="Philips", Rows="768", StationName="us7")
    assert rules.match(station).name == "Station 7"
    assert rules.match(header(Modality="US", Manufacturer="Philips", Rows="768", StationName="US8")).name == "Philips US"
    with pytest.raises(RuleError, match="cannot read"):
        load_rules([str(tmp_path / "missing")], [], "Section")
    assert site_rule(own, "x").matches(station)


def image(syntax: str, photometric: str, frames: int, bits: int, planar: int = 0) -> bytes:
    """A small uncompressed image whose every stored value is non-zero."""
    samples = 1 if photometric.startswith("MONOCHROME") else 3
    rows, columns = 6, 8
    meta = FileMetaDataset()
    meta.MediaStorageSOPClassUID, meta.MediaStorageSOPInstanceUID = SC, pydicom.uid.generate_uid()
    meta.TransferSyntaxUID = syntax
    ds = Dataset()
    ds.file_meta = meta
    ds.SOPClassUID, ds.SOPInstanceUID = SC, meta.MediaStorageSOPInstanceUID
    ds.Rows, ds.Columns, ds.SamplesPerPixel, ds.PhotometricInterpretation = rows, columns, samples, photometric
    ds.BitsAllocated = ds.BitsStored = bits
    ds.HighBit, ds.PixelRepresentation, ds.NumberOfFrames = bits - 1, 0, frames
    if samples == 3:
        ds.PlanarConfiguration = planar
    dtype = np.uint8 if bits == 8 else np.uint16
    values = np.arange(1, frames * rows * columns * samples + 1) % 250 + 1
    big = syntax == ExplicitVRBigEndian
    ds.PixelData = values.astype(dtype).astype(">u2" if big and bits == 16 else dtype).tobytes()
    out = io.BytesIO()
    ds.save_as(out, enforce_file_format=True, implicit_vr=syntax == ImplicitVRLittleEndian,
               little_endian=not big)
    return out.getvalue()


def stored_values(data: bytes) -> np.ndarray:
    ds = pydicom.dcmread(io.BytesIO(data))
    return pydicom.pixels.pixel_array(ds, raw=True).reshape(int(ds.NumberOfFrames), ds.Rows, ds.Columns, -1)


@pytest.mark.parametrize("syntax, photometric, frames, bits, planar", [
    (ExplicitVRLittleEndian, "MONOCHROME2", 3, 16, 0),
    (ImplicitVRLittleEndian, "MONOCHROME2", 1, 8, 0),
    (ExplicitVRBigEndian, "MONOCHROME2", 2, 16, 0),
    (ExplicitVRLittleEndian, "RGB", 2, 8, 0),
    (ExplicitVRLittleEndian, "RGB", 2, 8, 1),
    (ExplicitVRLittleEndian, "YBR_FULL", 2, 8, 1),
])
def test_blanking_zeroes_the_rectangles_in_every_frame_and_leaves_every_other_byte(syntax, photometric, frames,
                                                                                  bits, planar):
    data = image(syntax, photometric, frames, bits, planar)
    rectangles = ((1, 0, 4, 2), (6, 4, 99, 99))  # the second runs off the image: clipped
    result = blank(data, read_header(data), rectangles)
    before, after = stored_values(data), stored_values(result)
    outside = np.ones(before.shape[:3], dtype=bool)
    outside[:, 0:2, 1:4] = outside[:, 4:, 6:] = False
    assert not after[~outside].any() and before[~outside].all()
    assert np.array_equal(before[outside], after[outside])
    changed = [i for i, (a, b) in enumerate(zip(data, result)) if a != b]
    assert len(result) == len(data) and min(changed) > len(read_header(data).searchable)


def test_what_cannot_be_blanked_says_why():
    data = image(ExplicitVRLittleEndian, "MONOCHROME2", 1, 8)
    ds = pydicom.dcmread(io.BytesIO(data))
    ds.file_meta.TransferSyntaxUID = JPEGBaseline8Bit
    ds.PixelData = pydicom.encaps.encapsulate([ds.PixelData])
    out = io.BytesIO()
    ds.save_as(out)
    with pytest.raises(CannotBlank, match="compressed"):
        blank(out.getvalue(), read_header(out.getvalue()), ((0, 0, 1, 1),))
    ds = pydicom.dcmread(io.BytesIO(data))
    ds.PhotometricInterpretation = "YBR_FULL_422"
    out = io.BytesIO()
    ds.save_as(out)
    with pytest.raises(CannotBlank, match="YBR_FULL_422"):
        blank(out.getvalue(), read_header(out.getvalue()), ((0, 0, 1, 1),))


def test_rectangles_that_all_lie_outside_the_image_blank_nothing_and_say_so():
    """A rule written for a larger screen matched a smaller image: nothing would be blanked, so
    nothing may be marked cleaned (113101, BurnedInAnnotation NO)."""
    data = image(ExplicitVRLittleEndian, "MONOCHROME2", 1, 8)
    with pytest.raises(CannotBlank, match="outside"):
        blank(data, read_header(data), ((200, 0, 300, 49), (0, 500, 8, 600)))


RULES = RuleSet.of(deid_rules(DEID_TEXT, "test"))
PHILIPS = dict(Modality="US", Manufacturer="Philips", Rows="768", Columns="1024", SOPClassUID=US,
               TransferSyntaxUID=ExplicitVRLittleEndian, PhotometricInterpretation="RGB", BitsAllocated="8")


@pytest.mark.parametrize("values, policy, clean, status", [
    (dict(PHILIPS, BurnedInAnnotation="YES"), "Flag", False, FLAGGED),
    (dict(PHILIPS, BurnedInAnnotation="YES"), "Accept", False, ACCEPTED),
    (dict(PHILIPS), "Refuse", False, FLAGGED),  # unknown: stored, flagged
    (dict(PHILIPS), "Accept", False, ACCEPTED),
    (dict(PHILIPS, BurnedInAnnotation="YES"), "Refuse", True, CLEANED),
    (dict(PHILIPS, ManufacturerModelName="Z", Rows="480"), "Accept", True, ACCEPTED),
    (dict(PHILIPS, BurnedInAnnotation="NO"), "Refuse", True, None),
])
def test_the_decision_follows_the_policy(values, policy, clean, status):
    decided = decide(header(**values), "id", policy, clean, RULES)
    assert (decided.status if decided else None) == status


@pytest.mark.parametrize("values, clean, words", [
    (dict(PHILIPS, BurnedInAnnotation="YES"), False, ["Instance id", "BurnedInAnnotation is YES", "CleanPixelData"]),
    (dict(PHILIPS, Rows="480", ManufacturerModelName="Z"), True, ["Philips / Z, 480x1024", "PixelRules"]),
    (dict(PHILIPS, TransferSyntaxUID=JPEGBaseline8Bit), True, ['"Philips US"', "compressed"]),
])
def test_a_refusal_names_the_instance_the_reason_and_the_way_out(values, clean, words):
    with pytest.raises(BurnedInPixels) as refused:
        decide(header(**values), "id", "Refuse", clean, RULES)
    assert all(word in refused.value.message for word in words), refused.value.message


@pytest.mark.parametrize("body", ['{"DeidentificationOptions": "CleanPixelData"}',
                                  '{"DeidentificationOptions": [1]}', '{"BurnedInAnnotation": "Maybe"}'])
def test_the_members_are_checked(body):
    with pytest.raises(BadRequest):
        parse_request(body)


def test_the_members_are_the_plugins_not_natives():
    request = parse_request('{"DeidentificationOptions": ["CleanPixelData"], "BurnedInAnnotation": "Flag"}')
    assert request.deidentification_options == {"CleanPixelData"} and request.burned_in == "Flag"
    assert not {"DeidentificationOptions", "BurnedInAnnotation"} & set(request.native_body)
    assert "CleanPixelData" in request.output_options  # results cleaned are other results


def test_the_policy_is_part_of_the_options_mark():
    """Results stored under Accept are not what a call under Refuse would store: a re-run under
    another policy must not find them as its own (it would skip the gate and answer success)."""
    settings = ProjectSettings()
    marks = {policy: parse_request(f'{{"BurnedInAnnotation": "{policy}"}}').for_project(settings).output_options
             for policy in ("Refuse", "Flag", "Accept")}
    assert len(set(marks.values())) == 3
    assert marks["Refuse"] == parse_request("{}").for_project(settings).output_options  # the default: as before


@pytest.mark.parametrize("name, level", [
    ("GREYSCALE_IMAGE.dcm", gate.AT_RISK), ("ultrasound-multiframe.dcm", gate.AT_RISK),
    ("RGB_IMAGE.dcm", gate.UNKNOWN), ("US1_UNCR.dcm", gate.UNKNOWN), ("gdcm-US-ALOKA-16.dcm", gate.UNKNOWN),
    ("SC_ybr_full_uncompressed.dcm", gate.UNKNOWN), ("MR2_UNCR.dcm", gate.NOT_AT_RISK),
])
def test_the_gate_on_the_public_files(name, level):
    assert gate.classify(read_header(real_files()[name].read_bytes())).level == level


def test_an_image_derived_only_by_lossy_compression_is_not_judged_by_it():
    ds = Dataset()
    ds.SOPClassUID, ds.Rows, ds.Manufacturer, ds.ImageType = CT, 512, "GE", ["DERIVED", "PRIMARY", "AXIAL"]
    code = Dataset()
    code.CodeValue, code.CodingSchemeDesignator, code.CodeMeaning = "113040", "DCM", "Lossy Compression"
    ds.DerivationCodeSequence = [code]
    out = io.BytesIO()
    ds.save_as(out, implicit_vr=False, little_endian=True)
    assert gate.classify(read_header(out.getvalue())).level == gate.NOT_AT_RISK
    code.CodeValue = "113072"  # Multiplanar reformatting: it may carry text
    out = io.BytesIO()
    ds.save_as(out, implicit_vr=False, little_endian=True)
    assert gate.classify(read_header(out.getvalue())).level == gate.UNKNOWN


def test_verify_judges_a_result_by_its_source_where_they_are_paired():
    """Orthanc marks a lossily transcoded result DERIVED: its source, not at risk, decides."""
    from consistent_anon.verification.pixel_report import PixelReport
    report = PixelReport(lambda instance: {"accepted": "Accepted", "cleaned": "Cleaned: R"}.get(instance))
    report.add_source("plain", header(SOPClassUID=CT, Rows="512", Manufacturer="GE"))
    report.add_source("echo", header(SOPClassUID=US, Rows="512", Manufacturer="GE"))
    derived = dict(SOPClassUID=CT, Rows="512", Manufacturer="GE", ImageType="DERIVED")
    report.add("transcoded", header(**derived))
    report.add("unpaired", header(**derived))
    report.add("accepted", header(SOPClassUID=US, Rows="512", Manufacturer="GE"))
    report.add("cleaned", header(SOPClassUID=US, Rows="512", Manufacturer="GE", BurnedInAnnotation="NO"))
    report.conclude({"transcoded": "plain", "accepted": "echo", "cleaned": "echo"})
    assert report.counts == {"NotAtRisk": 1, "NotCleaned": 1, "Accepted": 1, "Cleaned": 1}
    assert not report.clean


def test_the_settings_are_checked_at_start(tmp_path):
    from consistent_anon.errors import ConfigurationError
    from consistent_anon.identity.config import parse_config
    from consistent_anon.identity.project_settings import SettingsError, parse_project_settings
    from consistent_anon.orthanc.plugin import pixel_settings
    assert parse_project_settings("S", {}).burned_in == "Refuse"
    assert parse_project_settings("S", {"BurnedInAnnotation": "Accept"}).burned_in == "Accept"
    with pytest.raises(SettingsError, match="Refuse, Flag, Accept"):
        parse_project_settings("S", {"BurnedInAnnotation": "accept"})
    for section in ({"PixelRules": {}}, {"PixelRuleFiles": "deid.dicom"}):
        with pytest.raises(ConfigurationError):
            parse_config({"ConsistentAnonymization": section})
    (tmp_path / "rules.dicom").write_text(DEID_TEXT)
    config = parse_config({"ConsistentAnonymization": {"PixelRuleFiles": ["rules.dicom"]}}, tmp_path)
    assert [rule.name for rule in pixel_settings(config).rules.rules] == ["Philips US", "Screen save"]
    assert pixel_settings(config).status_metadata == 9735
    broken = parse_config({"ConsistentAnonymization": {"PixelRules": [{"Name": "x"}]}})
    with pytest.raises(ConfigurationError, match=r"PixelRules\[0\]"):
        pixel_settings(broken)
    moved = parse_config({"ConsistentAnonymization": {"PixelStatusMetadata": 5000}})
    assert pixel_settings(moved).status_metadata == 5000
    for index in (9732, 80, True):
        with pytest.raises(ConfigurationError, match="PixelStatusMetadata"):
            parse_config({"ConsistentAnonymization": {"PixelStatusMetadata": index}})


def test_keeping_regions_blanks_everything_else():
    from consistent_anon.pixels.blanking import outside
    keep = ((2, 1, 5, 3), (4, 2, 7, 5))
    mask = np.zeros((6, 8), dtype=bool)
    for x0, y0, x1, y1 in outside(keep, 8, 6):
        assert not mask[y0:y1, x0:x1].any()  # no overlap
        mask[y0:y1, x0:x1] = True
    kept = np.zeros((6, 8), dtype=bool)
    for x0, y0, x1, y1 in keep:
        kept[y0:y1, x0:x1] = True
    assert np.array_equal(mask, ~kept)
    rule = site_rule({"Name": "r", "Match": {"Modality": "US"}, "KeepUltrasoundRegions": True}, "x")
    assert rule.keep_regions and rule.rectangles == ()
    assert deid_rules("%filter graylist\nLABEL k\n  contains Modality US\n"
                      "  keepcoordinates from:SequenceOfUltrasoundRegions\n", "t")[0].keep_regions
    with pytest.raises(BurnedInPixels, match="SequenceOfUltrasoundRegions"):
        decide(header(**dict(PHILIPS, BurnedInAnnotation="YES")), "id", "Refuse", True, RuleSet((rule,)))
