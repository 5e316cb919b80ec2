"""Keep, Replace and Remove by path (`Seq[0].Tag`, `Seq[*].Tag`, private tags in items, whole
sequences) behave as in native Orthanc: the caller's choice stands at that place, compared with
native on the same file; everything else keeps its pseudonym."""
from __future__ import annotations

import pytest
from pydicom.dataset import Dataset
from pydicom.sequence import Sequence
from pydicom.uid import generate_uid

from anonymized import parse
from conftest import new_patient
from dicom_factory import to_bytes, two_frame_study

DIMENSION_ORGANIZATION = "DimensionOrganizationSequence[0].DimensionOrganizationUID"
DERIVATION = ("PerFrameFunctionalGroupsSequence[*].DerivationImageSequence[*]."
              "SourceImageSequence[*].ReferencedSOPInstanceUID")
PRIVATE_IN_ITEM = "DimensionOrganizationSequence[0].0011,1010"


class Shapes:
    """An image holding the nested shapes of real multi-frame and derived files, stored on both
    servers."""

    def __init__(self) -> None:
        study = two_frame_study(per_series=2, patient=new_patient())
        self.study = study
        self.image, self.other = study.series[0][0], study.series[0][1]
        image, other = self.image, self.other
        self.dimension_uid = generate_uid()
        organization = Dataset()
        organization.DimensionOrganizationUID = self.dimension_uid
        organization.private_block(0x0011, "SYNTHETIC VENDOR", create=True).add_new(0x10, "UI", image.FrameOfReferenceUID)
        image.DimensionOrganizationSequence = Sequence([organization])
        index = Dataset()
        index.DimensionOrganizationUID = self.dimension_uid
        index.DimensionIndexPointer = 0x00209157
        index.FunctionalGroupPointer = 0x00209111
        image.DimensionIndexSequence = Sequence([index])
        referenced = Dataset()
        referenced.ReferencedSOPClassUID = other.SOPClassUID
        referenced.ReferencedSOPInstanceUID = other.SOPInstanceUID
        series = Dataset()
        series.SeriesInstanceUID = image.SeriesInstanceUID
        series.ReferencedSOPSequence = Sequence([referenced])
        evidence = Dataset()
        evidence.StudyInstanceUID = image.StudyInstanceUID
        evidence.ReferencedSeriesSequence = Sequence([series])
        image.ReferencedImageEvidenceSequence = Sequence([evidence])
        source = Dataset()
        source.ReferencedSOPClassUID = other.SOPClassUID
        source.ReferencedSOPInstanceUID = other.SOPInstanceUID
        derivation = Dataset()
        derivation.SourceImageSequence = Sequence([source])
        frame = Dataset()
        frame.DerivationImageSequence = Sequence([derivation])
        image.PerFrameFunctionalGroupsSequence = Sequence([frame, frame])
        self.ids: dict[str, dict[str, str]] = {}

    def store(self, name: str, server) -> None:
        self.ids[name] = {ds.SOPInstanceUID: server.upload(to_bytes(ds))["ID"] for ds in self.study.instances}

    def anonymize(self, name: str, server, body: dict, instance: Dataset | None = None) -> Dataset:
        instance = instance or self.image
        answer = server.post(f"/instances/{self.ids[name][instance.SOPInstanceUID]}/anonymize", json=body)
        assert answer.status_code == 200, answer.text
        return parse(answer.content)


@pytest.fixture(scope="module")
def shapes(orthanc, native) -> Shapes:
    shapes = Shapes()
    shapes.store("plugin", orthanc)
    shapes.store("native", native)
    return shapes


def both(shapes: Shapes, orthanc, native, body: dict) -> tuple[Dataset, Dataset]:
    return shapes.anonymize("plugin", orthanc, body), shapes.anonymize("native", native, body)


def derivation_uids(ds: Dataset) -> list[str]:
    return [frame.DerivationImageSequence[0].SourceImageSequence[0].ReferencedSOPInstanceUID
            for frame in ds.PerFrameFunctionalGroupsSequence]


def evidence_uids(ds: Dataset) -> tuple[str, str, str]:
    evidence = ds.ReferencedImageEvidenceSequence[0]
    series = evidence.ReferencedSeriesSequence[0]
    return (evidence.get("StudyInstanceUID"), series.SeriesInstanceUID,
            series.ReferencedSOPSequence[0].ReferencedSOPInstanceUID)


def pseudonym_of_other(shapes: Shapes, orthanc) -> str:
    return str(shapes.anonymize("plugin", orthanc, {}, shapes.other).SOPInstanceUID)


def test_a_kept_nested_uid_stays_at_every_path_the_wildcards_name(shapes, orthanc, native):
    original, pseudonym = shapes.other.SOPInstanceUID, pseudonym_of_other(shapes, orthanc)
    plugin, reference = both(shapes, orthanc, native, {"Keep": [DERIVATION]})
    assert derivation_uids(plugin) == derivation_uids(reference) == [original, original]
    # Elsewhere the same original keeps its pseudonym, the one the other image's own call gives.
    assert evidence_uids(plugin)[2] == pseudonym != original

    one_frame = DERIVATION.replace("*", "0").replace("[0]", "[1]", 1)  # the second frame only
    plugin, reference = both(shapes, orthanc, native, {"Keep": [one_frame]})
    assert derivation_uids(reference)[1] == derivation_uids(plugin)[1] == original
    assert derivation_uids(reference)[0] != original and derivation_uids(plugin)[0] == pseudonym


def test_a_nested_replace_of_a_uid_takes_the_callers_value_there_only(shapes, orthanc, native):
    body = {"Replace": {DIMENSION_ORGANIZATION: "1.2.3.4"}}
    plugin, reference = both(shapes, orthanc, native, body)
    assert plugin.DimensionOrganizationSequence[0].DimensionOrganizationUID == \
        reference.DimensionOrganizationSequence[0].DimensionOrganizationUID == "1.2.3.4"
    # As in native, a path names one place: the same original elsewhere is not replaced.
    assert reference.DimensionIndexSequence[0].DimensionOrganizationUID not in ("1.2.3.4", shapes.dimension_uid)
    unchanged = shapes.anonymize("plugin", orthanc, {})
    assert plugin.DimensionIndexSequence[0].DimensionOrganizationUID == \
        unchanged.DimensionIndexSequence[0].DimensionOrganizationUID != shapes.dimension_uid


def test_a_kept_sequence_keeps_its_content_as_native_keeps_it(shapes, orthanc, native):
    plugin, reference = both(shapes, orthanc, native, {"Keep": ["DimensionIndexSequence"]})
    assert plugin.DimensionIndexSequence == reference.DimensionIndexSequence
    assert plugin.DimensionIndexSequence[0].DimensionOrganizationUID == shapes.dimension_uid
    assert plugin.DimensionOrganizationSequence[0].DimensionOrganizationUID != shapes.dimension_uid

    plugin, reference = both(shapes, orthanc, native, {"Keep": ["ReferencedImageEvidenceSequence"], "Force": True})
    assert evidence_uids(plugin) == evidence_uids(reference) == (
        shapes.image.StudyInstanceUID, shapes.image.SeriesInstanceUID, shapes.other.SOPInstanceUID)
    # The instance itself is not kept in its source study: the root UIDs keep their pseudonyms.
    assert plugin.StudyInstanceUID != shapes.image.StudyInstanceUID
    assert plugin.SOPInstanceUID != shapes.image.SOPInstanceUID


def test_a_nested_remove_removes_as_native_does(shapes, orthanc, native):
    body = {"Remove": ["ReferencedImageEvidenceSequence[0].StudyInstanceUID"], "Force": True}
    plugin, reference = both(shapes, orthanc, native, body)
    assert evidence_uids(reference)[0] is None
    assert evidence_uids(plugin)[0] is None


def test_private_tags_inside_items_follow_keep_and_replace(shapes, orthanc, native):
    frame_of_reference = shapes.image.FrameOfReferenceUID

    def private(ds: Dataset) -> str:
        value = ds.DimensionOrganizationSequence[0][0x00111010].value
        return (value.decode("ascii") if isinstance(value, bytes) else str(value)).rstrip("\x00 ")

    plugin, reference = both(shapes, orthanc, native, {"KeepPrivateTags": True, "Keep": [PRIVATE_IN_ITEM]})
    assert private(plugin) == private(reference) == frame_of_reference
    plugin, reference = both(shapes, orthanc, native, {"KeepPrivateTags": True, "Replace": {PRIVATE_IN_ITEM: "1.2.3.5"}})
    assert private(plugin) == private(reference) == "1.2.3.5"
    plugin = shapes.anonymize("plugin", orthanc, {"KeepPrivateTags": True})
    assert private(plugin) == str(plugin.FrameOfReferenceUID) != frame_of_reference


def test_a_series_call_with_nested_paths_stores_what_the_instance_call_answers(shapes, orthanc):
    body = {"Keep": [DERIVATION, "DimensionIndexSequence"], "Replace": {DIMENSION_ORGANIZATION: "1.2.3.4"}}
    expected = shapes.anonymize("plugin", orthanc, body)
    series = orthanc.json(f"/instances/{shapes.ids['plugin'][shapes.image.SOPInstanceUID]}/series")["ID"]
    answer = orthanc.post(f"/series/{series}/anonymize", json=body)
    assert answer.status_code == 200, answer.text
    stored = orthanc.post("/tools/find", json={"Level": "Instance", "Query": {
        "SOPInstanceUID": str(expected.SOPInstanceUID)}}).json()
    assert len(stored) == 1
    file = parse(orthanc.get(f"/instances/{stored[0]}/file").content)
    assert derivation_uids(file) == derivation_uids(expected) == [shapes.other.SOPInstanceUID] * 2
    assert file.DimensionIndexSequence == expected.DimensionIndexSequence
