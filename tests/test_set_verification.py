"""The pure core of the verification (set_verification.py, the scanner it shares with the
fail-closed check) and the private-tag plan, without a server."""
from __future__ import annotations

import io

import pydicom
import pytest
from pydicom.dataset import Dataset
from pydicom.sequence import Sequence

from consistent_anon.errors import BadRequest, NotFound
from consistent_anon.pipeline.identities import NativeMarkers, plan_instance
from consistent_anon.pipeline.options import parse_request
from consistent_anon.identity.pseudonyms import Pseudonymizer
from consistent_anon.dicom.filereader import Header, read_header
from consistent_anon.dicom.scanning import TextFinder
from consistent_anon.verification.report import (INSTANCE, Progress, SourceIdentifiers,
                                                 VerifyRequest, frames_of_reference, parse_verify_request,
                                                 summarize, verify)
from consistent_anon.dicom.uid_attributes import UID_TAGS
from consistent_anon.pipeline.output_check import check_output
from dicom_factory import Patient, to_bytes, two_frame_study

KEY = b"v" * 32
MARKERS = NativeMarkers(None, None)


def header(ds: Dataset) -> Header:
    """The dataset as the plugin reads it: through a file (a bare dataset when it has no file meta)."""
    if "file_meta" in ds.__dict__:
        return read_header(to_bytes(ds))
    buffer = io.BytesIO()
    pydicom.dcmwrite(buffer, ds, implicit_vr=False, little_endian=True)
    return read_header(buffer.getvalue())


def copy_of(ds: Dataset) -> Dataset:
    """A copy made through the file, as pydicom reads it back."""
    return pydicom.dcmread(io.BytesIO(to_bytes(ds)))


# --- The shared scanner: text -------------------------------------------------------------

def test_text_finder_matches_whole_words_case_insensitively_in_any_textual_element():
    ds = Dataset()
    ds.ImageComments = "Scanned at synthetic general hospital, then moved"
    ds.StudyDescription = "Synthetic General Hospitality"       # not a whole word
    ds.SeriesDescription = "Synthetic_General Hospital"          # written otherwise: another text
    ds.private_block(0x0011, "X", create=True).add_new(0x01, "OB", b"SYNTHETIC GENERAL HOSPITAL\x00")
    ds.SOPInstanceUID = "1.2.19610412.3"                         # UIDs are searched as UIDs only
    ds.ContentDate = "19610412"
    found = TextFinder({"Synthetic General Hospital": "InstitutionName", "19610412": "PatientBirthDate"}).find(header(ds))
    assert sorted((e.tag, label) for e, label in found) == [
        (0x00080023, "PatientBirthDate"), (0x00111001, "InstitutionName"), (0x00204000, "InstitutionName")]


def test_short_texts_are_found_only_as_whole_values():
    ds = Dataset()
    ds.Manufacturer = "Manufacturer name here"
    ds.StationName = "HERE"
    found = TextFinder({"Here": "InstitutionName"}).find(header(ds))
    assert [e.tag for e, _ in found] == [0x00081010]


def test_source_identifiers_cover_uids_names_dates_and_institutions():
    study = two_frame_study(per_series=1, patient=Patient(patient_id="PID-1234", name="Smithers^Waylon"))
    identifiers = SourceIdentifiers()
    for ds in reversed(study.instances):  # the structure set, which refers to the images, first
        identifiers.add(header(ds))
    assert identifiers.uids[study.series[0][0].SOPInstanceUID] == "SOPInstanceUID"
    assert identifiers.uids[study.study.study_uid] == "StudyInstanceUID"
    assert identifiers.uids[study.series[0][0].FrameOfReferenceUID] == "FrameOfReferenceUID"
    assert "1.2.840.10008.5.1.4.1.1.4" not in identifiers.uids  # a SOP class
    texts = identifiers.texts
    assert {texts[t] for t in ("PID-1234", "Smithers^Waylon", "Waylon Smithers", "Smithers, Waylon",
                               "Smithers", "19610412", "1961-04-12", "ACC-55117",
                               "Synthetic General Hospital")} == \
        {"PatientID", "PatientName", "PatientBirthDate", "AccessionNumber", "InstitutionName"}


def test_leak_finder_reports_paths_in_private_nested_and_meta_elements():
    study = two_frame_study(per_series=1)
    identifiers = SourceIdentifiers()
    for ds in study.instances:
        identifiers.add(header(ds))
    anonymized = Dataset()
    anonymized.PatientID = "someone else"
    item = Dataset()
    item.private_block(0x0013, "V", create=True).add_new(0x01, "UI", study.series[2][0].SOPInstanceUID)
    anonymized.ReferencedImageSequence = Sequence([item])
    anonymized.ImageComments = "Jane Doe, born 1961.04.12"
    found = identifiers.finder().find(header(anonymized))
    assert [(p[0], p[1], label) for p, label in found] == [
        ((), 0x00204000, "PatientBirthDate"), ((), 0x00204000, "PatientName"),
        (((0x00081140, 0),), 0x00131001, "SOPInstanceUID")]


# --- One instance, pairs, comparison ------------------------------------------------------

def test_summary_lists_identities_and_references_with_their_kind():
    study = two_frame_study(per_series=2)
    rt = summarize("rt", "rt-series", header(study.structure_set))
    kinds = {}
    for path, (kind, values) in rt.references.items():
        kinds.setdefault(kind, set()).update(values)
    assert kinds["Study"] == {study.study.study_uid}  # RTReferencedStudySequence: a study, by its class
    assert kinds["Series"] == {study.series[0][0].SeriesInstanceUID}
    assert kinds["FrameOfReference"] == {study.series[0][0].FrameOfReferenceUID}
    assert kinds["Instance"] == {ds.SOPInstanceUID for ds in study.series[0]}
    assert rt.root == {"Instance": study.structure_set.SOPInstanceUID, "Study": study.study.study_uid,
                       "Series": study.structure_set.SeriesInstanceUID}
    image = summarize("i", "s", header(study.series[0][0]))
    assert image.root["FrameOfReference"] == study.series[0][0].FrameOfReferenceUID
    assert image.references == {}


class FakeReader:
    """A SetReader over datasets in memory: {level ID: [(instance ID, series ID, dataset)]}."""

    def __init__(self, resources: dict[str, list[tuple[str, str, Dataset]]], origins: dict[str, str] | None = None):
        self.resources = resources
        self.origins = origins or {}
        self.files = {i: to_bytes(ds) for items in resources.values() for i, _, ds in items}

    def level_of(self, resource_id: str) -> str:
        if resource_id not in self.resources:
            raise NotFound("Unknown resource")
        return "studies"

    def instances_of(self, level: str, resource_id: str) -> list[dict[str, str]]:
        return [{"ID": i, "ParentSeries": s} for i, s, _ in self.resources[resource_id]]

    def header(self, instance_id: str) -> Header:
        return read_header(self.files[instance_id])

    def anonymized_from(self, instance_id: str) -> str | None:
        return self.origins.get(instance_id)

    def pixel_status(self, instance_id: str) -> str | None:
        return None  # no pixel status stored: verify judges the header alone


def anonymize_locally(study, pseudonyms: Pseudonymizer, patient_id: str = "ANON") -> list[Dataset]:
    """What the plugin would write, made here: every UID of the table replaced by its pseudonym."""
    result = []
    for ds in study.instances:
        copy = copy_of(ds)
        for element in copy.iterall():
            if int(element.tag) in UID_TAGS and element.value and not str(element.value).startswith("1.2.840.10008."):
                element.value = pseudonyms.uid(patient_id, str(element.value))
        copy.file_meta.MediaStorageSOPInstanceUID = copy.SOPInstanceUID
        copy.PatientID, copy.PatientName = patient_id, "Anonymized"
        copy.PatientIdentityRemoved = "YES"
        for keyword in ("PatientBirthDate", "AccessionNumber", "InstitutionName", "ReferringPhysicianName"):
            del copy[keyword]
        result.append(copy)
    return result


def as_resource(prefix: str, datasets: list[Dataset]) -> list[tuple[str, str, Dataset]]:
    return [(f"{prefix}{index}", f"{prefix}-series-{ds.SeriesNumber}", ds) for index, ds in enumerate(datasets)]


@pytest.fixture
def sets():
    study = two_frame_study(per_series=2)
    pseudonyms = Pseudonymizer(KEY)
    return study, pseudonyms, as_resource("s", study.instances), as_resource("a", anonymize_locally(study, pseudonyms))


def run(source, anonymized, pseudonyms, origins=None, log=None):
    reader = FakeReader({"source": source, "anonymized": anonymized}, origins)
    return verify(reader, VerifyRequest("source", "anonymized"), pseudonyms, log or (lambda m: None))


def test_a_correct_set_is_clean_and_every_reference_resolves(sets):
    study, pseudonyms, source, anonymized = sets
    messages = []
    report = run(source, anonymized, pseudonyms, log=messages.append)
    assert report["Clean"], report
    assert report["PairedBy"] == {"Pseudonym": len(source), "AnonymizedFrom": 0, "Attributes": 0}
    assert report["ReferencesCount"] == 2 + 2 + 1 + 1 + 2  # contour images twice, FoR twice, study, series
    assert [f["OneToOne"] for f in report["FramesOfReference"]] == [True, True]
    assert messages[-1].endswith(f"{len(anonymized)}/{len(anonymized)} instances read")


def test_pairs_come_from_pseudonyms_then_anonymized_from_then_unambiguous_attributes(sets):
    study, pseudonyms, source, anonymized = sets
    report = run(source, anonymized, None, origins={anonymized[0][0]: source[0][0]})
    assert report["PairedBy"] == {"Pseudonym": 0, "AnonymizedFrom": 1, "Attributes": len(source) - 1}
    assert report["Clean"]
    # Two instances that nothing but their UIDs tells apart stay unpaired, and say so.
    twins = [item for item in anonymized if item[2].get("SeriesNumber") == 1]
    for _, _, ds in twins:
        ds.InstanceNumber = 1
        ds.ImagePositionPatient = [0, 0, 0]
    for _, _, ds in source:
        if ds.get("SeriesNumber") == 1:
            ds.InstanceNumber = 1
            ds.ImagePositionPatient = [0, 0, 0]
    report = run(as_resource("s", [ds for _, _, ds in source]), anonymized, None)
    assert not report["Clean"]
    assert len(report["UnpairedSourceInstances"]) == len(report["UnpairedAnonymizedInstances"]) == 2


def test_a_split_frame_of_reference_and_a_dangling_reference_are_reported(sets):
    study, pseudonyms, source, anonymized = sets
    image = next(ds for _, _, ds in anonymized if ds.get("SeriesNumber") == 2)
    image.FrameOfReferenceUID = "2.25.1"
    rt_id, _, rt = next(item for item in anonymized if item[2].Modality == "RTSTRUCT")
    rt.ROIContourSequence[0].ContourSequence[0].ContourImageSequence[0].ReferencedSOPInstanceUID = "2.25.2"
    del rt.StructureSetROISequence[0].ReferencedFrameOfReferenceUID
    report = run(source, anonymized, pseudonyms)
    assert not report["Clean"]
    shared = next(f for f in report["FramesOfReference"] if f["Source"] == study.series[0][0].FrameOfReferenceUID)
    assert not shared["OneToOne"] and "2.25.1" in shared["Anonymized"]
    assert shared["SourceInstancesCount"] == 4 and shared["AnonymizedInstancesCount"] == 4
    assert report["UnresolvedReferences"] == [{
        "Instance": rt_id, "Kind": INSTANCE, "InSource": "Resolved",
        "Path": "ROIContourSequence[0].ContourSequence[0].ContourImageSequence[0].ReferencedSOPInstanceUID"}]
    assert report["RemovedReferences"] == [{"Instance": rt_id, "Kind": "FrameOfReference",
                                            "Path": "StructureSetROISequence[0].ReferencedFrameOfReferenceUID"}]
    problems = sorted(i["Problem"] for i in report["InconsistentUids"])
    assert problems == ["OneSourceUidBecameSeveral", "OneSourceUidBecameSeveral"]


def test_a_reference_already_dangling_in_the_source_is_listed_but_not_a_problem(sets):
    study, pseudonyms, source, anonymized = sets
    only_rt = [item for item in source if item[2].Modality == "RTSTRUCT"]
    report = run(only_rt, anonymized, pseudonyms)
    assert report["Clean"]  # the images are in the anonymized set: they resolve
    report = run(only_rt, [item for item in anonymized if item[2].Modality == "RTSTRUCT"], pseudonyms)
    assert report["Clean"]
    assert {r["InSource"] for r in report["UnresolvedReferences"]} == {"Unresolved"}
    assert report["UnresolvedReferencesCount"] == 7  # all but the RTSTRUCT's own study


def test_source_uids_and_identifiers_left_in_the_anonymized_set_are_leaks(sets):
    study, pseudonyms, source, anonymized = sets
    planted_id, _, planted = anonymized[1]
    planted.ImageComments = f"from {study.series[0][0].SeriesInstanceUID}"
    planted.private_block(0x0011, "V", create=True).add_new(0x01, "LO", study.study.accession)
    report = run(source, anonymized, pseudonyms)
    assert not report["Clean"]
    assert report["Leaks"] == [
        {"Instance": planted_id, "Path": "(0011,1001)", "Found": "AccessionNumber"},
        {"Instance": planted_id, "Path": "ImageComments", "Found": "SeriesInstanceUID"}]


def test_frames_of_reference_groups_series_and_referrers():
    study = two_frame_study(per_series=2)
    summaries = [summarize(f"i{n}", f"series-{ds.SeriesNumber}", header(ds)) for n, ds in enumerate(study.instances)]
    frames = {f["FrameOfReferenceUID"]: f for f in frames_of_reference(summaries)}
    shared = frames[study.series[0][0].FrameOfReferenceUID]
    assert shared["InstancesCount"] == 4
    assert [(s["ID"], s["SeriesNumber"], s["Modality"], s["InstancesCount"]) for s in shared["Series"]] == \
        [("series-1", "1", "MR", 2), ("series-2", "2", "MR", 2)]
    rtstruct = study.structure_set
    assert shared["ReferencedBy"] == [{"ID": "series-99", "SeriesInstanceUID": rtstruct.SeriesInstanceUID,
                                       "SeriesNumber": "99", "Modality": "RTSTRUCT",
                                       "SeriesDescription": rtstruct.get("SeriesDescription", ""), "InstancesCount": 1}]
    assert [s["SeriesDescription"] for s in shared["Series"]] == ["Synthetic MR series 1", "Synthetic MR series 2"]
    assert frames[study.series[2][0].FrameOfReferenceUID]["ReferencedBy"] == []


def test_verify_request_parsing():
    assert parse_verify_request(b'{"Source": "a", "Anonymized": "b", "Project": "p"}') == VerifyRequest("a", "b", "p")
    for body in (b"", b"[]", b'{"Source": "a"}', b'{"Source": "a", "Anonymized": ""}',
                 b'{"Source": "a", "Anonymized": "b", "Project": 1}', b'{"Source": "a", "Anonymized": "b", "X": 1}'):
        with pytest.raises(BadRequest):
            parse_verify_request(body)


def test_progress_is_logged_every_hundred_instances_and_at_the_end():
    messages = []
    progress = Progress(messages.append, "job", 250, seconds=3600)
    for done in range(1, 251):
        progress.step(done)
    assert messages == ["job: 100/250 instances read", "job: 200/250 instances read", "job: 250/250 instances read"]


# --- Private tags in the plan (KeepPrivateTags) --------------------------------------------

def private_image() -> Dataset:
    study = two_frame_study(per_series=1)
    image = study.series[0][0]
    block = image.private_block(0x0011, "VENDOR", create=True)
    block.add_new(0x10, "UI", image.SOPInstanceUID)
    block.add_new(0x11, "UI", [image.SeriesInstanceUID, "1.2.3.999"])
    block.add_new(0x12, "UI", "1.2.3.888")                       # known only from this private element
    block.add_new(0x13, "LO", image.StudyInstanceUID)            # any VR: its whole value is a UID
    block.add_new(0x16, "UI", [image.SOPClassUID, "1.2.3.777"])  # a registry UID stays
    image.CodingSchemeUID = "1.2.3.777"                          # a constant: a public unmapped UI has it
    block.add_new(0x14, "UN", (image.FrameOfReferenceUID + "\x00").encode())  # an implicit VR file's
    block.add_new(0x15, "UN", f"{image.FrameOfReferenceUID}\\9.9.9".encode())  # not only UIDs
    return image


def test_private_uids_the_instance_maps_get_their_pseudonyms_only_with_keep_private_tags():
    image = private_image()
    pseudonyms = Pseudonymizer(KEY)
    plan = plan_instance(header(image), parse_request(b"{}"), pseudonyms, MARKERS, UID_TAGS)
    assert not [path for path in plan.native_body["Replace"] if path.startswith("0011,")]

    plan = plan_instance(header(image), parse_request(b'{"KeepPrivateTags": true}'), pseudonyms, MARKERS, UID_TAGS)
    replace = {path: value for path, value in plan.native_body["Replace"].items() if path.startswith("0011,")}
    pid = plan.patient_id
    assert replace == {
        "0011,1010": pseudonyms.uid(pid, image.SOPInstanceUID),
        "0011,1011": pseudonyms.uid(pid, image.SeriesInstanceUID) + "\\" + pseudonyms.uid(pid, "1.2.3.999"),
        "0011,1012": pseudonyms.uid(pid, "1.2.3.888"),
        "0011,1013": pseudonyms.uid(pid, image.StudyInstanceUID),
        "0011,1014": pseudonyms.uid(pid, image.FrameOfReferenceUID),
    }
    assert plan.expected_uids[((), 0x00111010)] == (pseudonyms.uid(pid, image.SOPInstanceUID),)
    assert {"1.2.3.888", "1.2.3.999"} <= plan.source_uids and "1.2.3.777" not in plan.source_uids

    # The caller's own decision on a private tag stands.
    plan = plan_instance(header(image), parse_request(b'{"KeepPrivateTags": true, "Replace": {"0011,1010": "x"}}'),
                         pseudonyms, MARKERS, UID_TAGS)
    assert plan.native_body["Replace"]["0011,1010"] == "x" and plan.expected_uids[((), 0x00111010)] == ("x",)


def test_the_check_refuses_a_private_uid_that_does_not_carry_its_planned_pseudonym():
    image = private_image()
    del image[0x00111015]  # the mixed element, refused anyway
    pseudonyms = Pseudonymizer(KEY)
    plan = plan_instance(header(image), parse_request(b'{"KeepPrivateTags": true}'), pseudonyms, MARKERS, UID_TAGS)
    output = copy_of(image)
    for element in output.iterall():
        if int(element.tag) in UID_TAGS and not str(element.value).startswith("1.2.840.10008."):
            element.value = "\\".join(plan.expected_uids[((), int(element.tag))])
    output.file_meta.MediaStorageSOPInstanceUID = output.SOPInstanceUID
    output.PatientID = plan.patient_id
    output.PatientName = pseudonyms.patient_name(plan.patient_id)
    del output.AccessionNumber, output.InstitutionName, output.PatientBirthDate  # native removes them
    del output.ReferringPhysicianName  # native empties it; a physician's name identifies too
    output[0x00111010].value = plan.expected_uids[((), 0x00111010)][0]
    output[0x00111011].value = list(plan.expected_uids[((), 0x00111011)])
    output[0x00111012].value = plan.expected_uids[((), 0x00111012)][0]
    output[0x00111013].value = plan.expected_uids[((), 0x00111013)][0]
    output[0x00111014].value = plan.expected_uids[((), 0x00111014)][0].encode()
    assert check_output(to_bytes(output), plan, UID_TAGS) == []
    output[0x00111014].value = b"2.25.4"
    assert check_output(to_bytes(output), plan, UID_TAGS) == ["(0011,1014) does not carry its pseudonym"]


def test_swapped_sides_are_reported_as_not_anonymized(sets):
    """The anonymized set as Source and the identifiable one as Anonymized: no instance of the
    Anonymized side carries a de-identification marker, so the report is not Clean."""
    study, pseudonyms, source, anonymized = sets
    report = run(anonymized, source, pseudonyms)
    assert report["Clean"] is False
    assert report["NotAnonymizedInstancesCount"] == len(source)
    assert run(source, anonymized, pseudonyms)["NotAnonymizedInstances"] == []
