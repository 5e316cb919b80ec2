"""Synthetic objects that point at each other through UIDs, as radiotherapy, registration,
segmentation and reports do. Every identifier is invented here; highdicom builds the SEG and the
SR/KOS exactly as a real producer would.

`relationship_study()` gives one patient's study holding all of them, each object (a series) made
to be anonymized in a call of its own: every reference of every object resolves inside the study.
"""
from __future__ import annotations

from dataclasses import dataclass, field

import highdicom as hd
import numpy as np
from pydicom.dataset import Dataset
from pydicom.sequence import Sequence
from pydicom.sr.codedict import codes
from pydicom.uid import generate_uid

from dicom_factory import (CT_IMAGE_STORAGE, MR_IMAGE_STORAGE, Patient, Study, _base, _file_meta, image_series,
                           rtstruct)

PET_IMAGE_STORAGE = "1.2.840.10008.5.1.4.1.1.128"
ENHANCED_CT_IMAGE_STORAGE = "1.2.840.10008.5.1.4.1.1.2.1"
RT_PLAN_STORAGE = "1.2.840.10008.5.1.4.1.1.481.5"
RT_DOSE_STORAGE = "1.2.840.10008.5.1.4.1.1.481.2"
RT_STRUCTURE_SET_STORAGE = "1.2.840.10008.5.1.4.1.1.481.3"
SPATIAL_REGISTRATION_STORAGE = "1.2.840.10008.5.1.4.1.1.66.1"
DEFORMABLE_REGISTRATION_STORAGE = "1.2.840.10008.5.1.4.1.1.66.3"
IDENTITY = [1.0, 0.0, 0.0, 0.0, 0.0, 1.0, 0.0, 0.0, 0.0, 0.0, 1.0, 0.0, 0.0, 0.0, 0.0, 1.0]


def _sop_reference(ds: Dataset) -> Dataset:
    item = Dataset()
    item.ReferencedSOPClassUID = ds.SOPClassUID
    item.ReferencedSOPInstanceUID = ds.SOPInstanceUID
    return item


def _series_reference(images: list[Dataset]) -> Dataset:
    """A ReferencedSeriesSequence item (Common Instance Reference module)."""
    item = Dataset()
    item.SeriesInstanceUID = images[0].SeriesInstanceUID
    item.ReferencedInstanceSequence = Sequence([_sop_reference(image) for image in images])
    return item


def _new_object(study: Study, sop_class: str, modality: str, number: int) -> Dataset:
    ds = _base(study, sop_class, modality)
    ds.SeriesInstanceUID = generate_uid()
    ds.SeriesNumber = number
    ds.InstanceNumber = 1
    ds.ContentDate = study.date
    ds.ContentTime = "120000"
    return ds


def rtplan(study: Study, structure_set: Dataset, frame_of_reference: str, number: int) -> Dataset:
    ds = _new_object(study, RT_PLAN_STORAGE, "RTPLAN", number)
    ds.FrameOfReferenceUID = frame_of_reference
    ds.PositionReferenceIndicator = ""
    ds.RTPlanLabel = "Synthetic plan"
    ds.RTPlanDate = study.date
    ds.RTPlanTime = "130000"
    ds.RTPlanGeometry = "PATIENT"
    ds.ReferencedStructureSetSequence = Sequence([_sop_reference(structure_set)])
    dose_reference = Dataset()
    dose_reference.DoseReferenceNumber = 1
    dose_reference.DoseReferenceUID = generate_uid()
    dose_reference.DoseReferenceStructureType = "SITE"
    dose_reference.DoseReferenceType = "TARGET"
    ds.DoseReferenceSequence = Sequence([dose_reference])
    setup = Dataset()
    setup.PatientSetupNumber = 1
    setup.PatientPosition = "HFS"
    ds.PatientSetupSequence = Sequence([setup])
    fraction_group = Dataset()
    fraction_group.FractionGroupNumber = 1
    fraction_group.NumberOfFractionsPlanned = 30
    fraction_group.NumberOfBeams = 0
    fraction_group.NumberOfBrachyApplicationSetups = 0
    ds.FractionGroupSequence = Sequence([fraction_group])
    return ds


def rtdose(study: Study, plan: Dataset, structure_set: Dataset, frame_of_reference: str, number: int) -> Dataset:
    ds = _new_object(study, RT_DOSE_STORAGE, "RTDOSE", number)
    ds.FrameOfReferenceUID = frame_of_reference
    ds.PositionReferenceIndicator = ""
    referenced_plan = _sop_reference(plan)
    fraction_group = Dataset()
    fraction_group.ReferencedFractionGroupNumber = 1
    referenced_plan.ReferencedFractionGroupSequence = Sequence([fraction_group])
    ds.ReferencedRTPlanSequence = Sequence([referenced_plan])
    ds.ReferencedStructureSetSequence = Sequence([_sop_reference(structure_set)])
    ds.DoseUnits = "GY"
    ds.DoseType = "PHYSICAL"
    ds.DoseSummationType = "PLAN"
    ds.DoseGridScaling = 0.001
    ds.ImagePositionPatient = [0.0, 0.0, 0.0]
    ds.ImageOrientationPatient = [1.0, 0.0, 0.0, 0.0, 1.0, 0.0]
    ds.PixelSpacing = [2.0, 2.0]
    ds.GridFrameOffsetVector = [0.0, 1.0]
    ds.FrameIncrementPointer = 0x3004000C
    ds.NumberOfFrames = 2
    ds.SamplesPerPixel = 1
    ds.PhotometricInterpretation = "MONOCHROME2"
    ds.Rows = ds.Columns = 4
    ds.BitsAllocated = ds.BitsStored = 32
    ds.HighBit = 31
    ds.PixelRepresentation = 0
    ds.PixelData = np.arange(32, dtype=np.uint32).tobytes()
    return ds


def _registration(study: Study, sop_class: str, label: str, fixed: list[Dataset], moving: list[Dataset],
                  number: int) -> Dataset:
    """What both registrations share: on the fixed images' frame of reference, naming both series."""
    ds = _new_object(study, sop_class, "REG", number)
    ds.FrameOfReferenceUID = fixed[0].FrameOfReferenceUID
    ds.PositionReferenceIndicator = ""
    ds.ContentLabel = label
    ds.ReferencedSeriesSequence = Sequence([_series_reference(fixed), _series_reference(moving)])
    return ds


def _rigid(matrix: list[float]) -> Dataset:
    transform = Dataset()
    transform.FrameOfReferenceTransformationMatrixType = "RIGID"
    transform.FrameOfReferenceTransformationMatrix = matrix
    return transform


def spatial_registration(study: Study, fixed: list[Dataset], moving: list[Dataset], number: int) -> Dataset:
    """A rigid registration relating the fixed images' frame of reference to the moving ones'."""
    ds = _registration(study, SPATIAL_REGISTRATION_STORAGE, "REGISTRATION", fixed, moving, number)
    ds.ContentDescription = "Synthetic rigid registration"
    items = []
    for images, matrix in ((fixed, IDENTITY), (moving, IDENTITY[:3] + [10.0] + IDENTITY[4:])):
        item = Dataset()
        item.FrameOfReferenceUID = images[0].FrameOfReferenceUID
        item.ReferencedImageSequence = Sequence([_sop_reference(image) for image in images])
        registration = Dataset()
        registration.MatrixSequence = Sequence([_rigid(matrix)])
        item.MatrixRegistrationSequence = Sequence([registration])
        items.append(item)
    ds.RegistrationSequence = Sequence(items)
    return ds


def deformable_registration(study: Study, fixed: list[Dataset], moving: list[Dataset], number: int) -> Dataset:
    """A deformable registration: the moving images' FoR as SourceFrameOfReferenceUID."""
    ds = _registration(study, DEFORMABLE_REGISTRATION_STORAGE, "DEFORMABLE", fixed, moving, number)
    item = Dataset()
    item.SourceFrameOfReferenceUID = moving[0].FrameOfReferenceUID
    item.ReferencedImageSequence = Sequence([_sop_reference(image) for image in moving])
    grid = Dataset()
    grid.ImageOrientationPatient = [1.0, 0.0, 0.0, 0.0, 1.0, 0.0]
    grid.ImagePositionPatient = [0.0, 0.0, 0.0]
    grid.GridDimensions = [2, 2, 2]
    grid.GridResolution = [4.0, 4.0, 1.0]
    grid.VectorGridData = np.zeros(2 * 2 * 2 * 3, dtype=np.float32).tobytes()
    item.DeformableRegistrationGridSequence = Sequence([grid])
    item.PreDeformationMatrixRegistrationSequence = Sequence([_rigid(IDENTITY)])
    item.PostDeformationMatrixRegistrationSequence = Sequence([_rigid(IDENTITY)])
    ds.DeformableRegistrationSequence = Sequence([item])
    return ds


def enhanced_ct_concatenation(study: Study, sources: list[Dataset], number: int, parts: int = 2) -> list[Dataset]:
    """An Enhanced CT split into a concatenation of `parts` instances: ConcatenationUID,
    SOPInstanceUIDOfConcatenationSource and DimensionOrganizationUID shared, and per-frame
    derivation references to `sources` (one frame per source image)."""
    series_uid = generate_uid()
    concatenation = generate_uid()
    concatenation_source = generate_uid()  # the instance that was split: never stored
    organization = generate_uid()
    frames_per_part = -(-len(sources) // parts)
    result = []
    for part in range(parts):
        frames = sources[part * frames_per_part:(part + 1) * frames_per_part]
        ds = _base(study, ENHANCED_CT_IMAGE_STORAGE, "CT")
        ds.SeriesInstanceUID = series_uid
        ds.SeriesNumber = number
        ds.InstanceNumber = part + 1
        ds.ContentDate = study.date
        ds.ContentTime = "120000"
        ds.AcquisitionDateTime = study.date + "101500"
        ds.FrameOfReferenceUID = sources[0].FrameOfReferenceUID
        ds.PositionReferenceIndicator = ""
        ds.ImageType = ["DERIVED", "PRIMARY", "AXIAL", "NONE"]
        ds.BurnedInAnnotation = "NO"  # blank frames: a derived image the burned-in gate would otherwise flag
        ds.ConcatenationUID = concatenation
        ds.SOPInstanceUIDOfConcatenationSource = concatenation_source
        ds.ConcatenationFrameOffsetNumber = part * frames_per_part
        ds.InConcatenationNumber = part + 1
        ds.InConcatenationTotalNumber = parts
        dimension = Dataset()
        dimension.DimensionOrganizationUID = organization
        ds.DimensionOrganizationSequence = Sequence([dimension])
        index = Dataset()
        index.DimensionOrganizationUID = organization
        index.DimensionIndexPointer = 0x00209056  # StackID... any frame content attribute
        index.FunctionalGroupPointer = 0x00209111
        ds.DimensionIndexSequence = Sequence([index])
        shared = Dataset()
        measures = Dataset()
        measures.PixelSpacing = [1.0, 1.0]
        measures.SliceThickness = 1.0
        shared.PixelMeasuresSequence = Sequence([measures])
        orientation = Dataset()
        orientation.ImageOrientationPatient = [1.0, 0.0, 0.0, 0.0, 1.0, 0.0]
        shared.PlaneOrientationSequence = Sequence([orientation])
        ds.SharedFunctionalGroupsSequence = Sequence([shared])
        per_frame = []
        for offset, source in enumerate(frames):
            group = Dataset()
            content = Dataset()
            content.DimensionIndexValues = [part * frames_per_part + offset + 1]
            group.FrameContentSequence = Sequence([content])
            position = Dataset()
            position.ImagePositionPatient = list(source.ImagePositionPatient)
            group.PlanePositionSequence = Sequence([position])
            derivation = Dataset()
            derivation.SourceImageSequence = Sequence([_sop_reference(source)])
            group.DerivationImageSequence = Sequence([derivation])
            per_frame.append(group)
        ds.PerFrameFunctionalGroupsSequence = Sequence(per_frame)
        ds.NumberOfFrames = len(frames)
        ds.SamplesPerPixel = 1
        ds.PhotometricInterpretation = "MONOCHROME2"
        ds.Rows = ds.Columns = 8
        ds.BitsAllocated = 16
        ds.BitsStored = 12
        ds.HighBit = 11
        ds.PixelRepresentation = 0
        ds.PixelData = np.zeros(len(frames) * 64, dtype=np.uint16).tobytes()
        result.append(ds)
    return result


_DEVICE = dict(manufacturer="Synthetic Devices", manufacturer_model_name="Relationship factory",
               software_versions="1.0", device_serial_number="SN-0001")


def segmentation(images: list[Dataset], number: int) -> Dataset:
    """A binary SEG of `images` made by highdicom: ReferencedSeriesSequence, per-frame
    DerivationImageSequence/SourceImageSequence, the images' FoR, a DimensionOrganizationUID."""
    mask = np.zeros((len(images), images[0].Rows, images[0].Columns), dtype=bool)
    mask[:, 2:5, 2:5] = True
    description = hd.seg.SegmentDescription(
        segment_number=1, segment_label="Synthetic lesion",
        segmented_property_category=codes.SCT.MorphologicallyAbnormalStructure,
        segmented_property_type=codes.SCT.Neoplasm,
        algorithm_type=hd.seg.SegmentAlgorithmTypeValues.MANUAL)
    seg = hd.seg.Segmentation(
        source_images=images, pixel_array=mask, segmentation_type=hd.seg.SegmentationTypeValues.BINARY,
        segment_descriptions=[description], series_instance_uid=generate_uid(), series_number=number,
        sop_instance_uid=generate_uid(), instance_number=1, **_DEVICE)
    return seg


def key_object_selection(images: list[Dataset], number: int) -> Dataset:
    """A Key Object Selection by highdicom: CurrentRequestedProcedureEvidenceSequence and
    ReferencedSOPSequence items in the content tree."""
    content = hd.ko.KeyObjectSelection(document_title=codes.DCM.Manifest, referenced_objects=images)
    return hd.ko.KeyObjectSelectionDocument(
        evidence=images, content=content, series_instance_uid=generate_uid(), series_number=number,
        sop_instance_uid=generate_uid(), instance_number=1, manufacturer="Synthetic Devices",
        institution_name=images[0].InstitutionName)


def measurement_report(images: list[Dataset], number: int) -> Dataset:
    """A Comprehensive 3D SR by highdicom: a planar ROI in the images' FoR (SCOORD3D with
    ReferencedFrameOfReferenceUID), a TrackingUID, image references in the content tree."""
    frame = str(images[0].FrameOfReferenceUID)
    z = float(images[0].ImagePositionPatient[2])
    region = hd.sr.ImageRegion3D(
        graphic_type=hd.sr.GraphicTypeValues3D.POLYGON, frame_of_reference_uid=frame,
        graphic_data=np.array([[1.0, 1.0, z], [4.0, 1.0, z], [4.0, 4.0, z], [1.0, 1.0, z]]))
    measurements = hd.sr.PlanarROIMeasurementsAndQualitativeEvaluations(
        tracking_identifier=hd.sr.TrackingIdentifier(uid=generate_uid(), identifier="Lesion 1"),
        referenced_region=region, finding_type=codes.SCT.Neoplasm)
    observer = hd.sr.ObserverContext(
        observer_type=codes.DCM.Person,
        observer_identifying_attributes=hd.sr.PersonObserverIdentifyingAttributes(name="Reader^Synthetic"))
    report = hd.sr.MeasurementReport(
        observation_context=hd.sr.ObservationContext(observer_person_context=observer),
        procedure_reported=codes.LN.CTUnspecifiedBodyRegion, imaging_measurements=[measurements],
        referenced_images=images)
    return hd.sr.Comprehensive3DSR(
        evidence=images, content=report, series_instance_uid=generate_uid(), series_number=number,
        sop_instance_uid=generate_uid(), instance_number=1, manufacturer="Synthetic Devices")


def finish(ds: Dataset) -> Dataset:
    """Give highdicom's objects (and any other) the file meta Orthanc needs to store them."""
    if getattr(ds, "file_meta", None) is None or "MediaStorageSOPInstanceUID" not in ds.file_meta:
        ds.file_meta = _file_meta(ds.SOPClassUID, ds.SOPInstanceUID)
    return ds


@dataclass
class RelationshipStudy:
    """One patient's study; `objects` maps a name to the instances of one series, each series
    meant to be anonymized in a call of its own."""

    study: Study
    objects: dict[str, list[Dataset]] = field(default_factory=dict)

    @property
    def instances(self) -> list[Dataset]:
        return [ds for instances in self.objects.values() for ds in instances]


def relationship_study(patient: Patient) -> RelationshipStudy:
    """CT + RTSTRUCT + RTPLAN + RTDOSE, an MR on a second FoR with spatial and deformable
    registrations between the two, a PET/CT pair sharing a synchronization FoR, a SEG, a KOS and
    a 3D SR made by highdicom, and an Enhanced CT concatenation derived from the CT."""
    study = Study(patient=patient)
    planning_for, mr_for, pet_ct_for, synchronization = (generate_uid() for _ in range(4))
    result = RelationshipStudy(study)
    ct = image_series(study, CT_IMAGE_STORAGE, "CT", planning_for, 4, 1, size=8)
    mr = image_series(study, MR_IMAGE_STORAGE, "MR", mr_for, 3, 2, size=8)
    pet = image_series(study, PET_IMAGE_STORAGE, "PT", pet_ct_for, 3, 3, size=8, synchronization=synchronization)
    pet_ct = image_series(study, CT_IMAGE_STORAGE, "CT", pet_ct_for, 3, 4, size=8, synchronization=synchronization)
    for ds in pet:
        ds.Units = "BQML"
        ds.DecayCorrection = "START"
        ds.CorrectedImage = ["ATTN", "DECY"]
    structure_set = rtstruct(study, ct)
    structure_set.SeriesNumber = 10
    plan = rtplan(study, structure_set, planning_for, 11)
    dose = rtdose(study, plan, structure_set, planning_for, 12)
    result.objects = {
        "ct": ct, "mr": mr, "pet": pet, "pet_ct": pet_ct,
        "rtstruct": [structure_set], "rtplan": [plan], "rtdose": [dose],
        "spatial_registration": [spatial_registration(study, ct, mr, 20)],
        "deformable_registration": [deformable_registration(study, ct, mr, 21)],
        "enhanced_ct": enhanced_ct_concatenation(study, ct, 30),
        "seg": [segmentation(ct, 40)],
        "kos": [key_object_selection(ct + mr, 41)],
        "sr": [measurement_report(ct, 42)],
    }
    for instances in result.objects.values():
        for ds in instances:
            finish(ds)
    return result
