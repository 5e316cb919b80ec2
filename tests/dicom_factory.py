"""Synthetic DICOM made by the tests: no patient data, every identifier invented here.

Needs pydicom only (no numpy), so that the README's walk-through runs it with the Python `make
run` gave pydicom to: `python3 tests/dicom_factory.py study`.
"""
from __future__ import annotations

import io
import sys
from array import array
from dataclasses import dataclass, field

from pydicom.dataset import Dataset, FileMetaDataset
from pydicom.sequence import Sequence
from pydicom.uid import ExplicitVRLittleEndian, ImplicitVRLittleEndian, generate_uid

MR_IMAGE_STORAGE = "1.2.840.10008.5.1.4.1.1.4"
CT_IMAGE_STORAGE = "1.2.840.10008.5.1.4.1.1.2"
RT_STRUCTURE_SET_STORAGE = "1.2.840.10008.5.1.4.1.1.481.3"
DETACHED_STUDY_MANAGEMENT = "1.2.840.10008.3.1.2.3.1"


def to_bytes(ds: Dataset) -> bytes:
    """Serialize a dataset as a Part 10 file."""
    buffer = io.BytesIO()
    ds.save_as(buffer, enforce_file_format=True) if _pydicom3() else ds.save_as(buffer, write_like_original=False)
    return buffer.getvalue()


def _pydicom3() -> bool:
    import pydicom

    return int(pydicom.__version__.split(".")[0]) >= 3


def _uint16_le(values) -> bytes:
    """Unsigned 16-bit pixel values as little-endian bytes, as the transfer syntax wants them."""
    pixels = array("H", values)
    if sys.byteorder == "big":
        pixels.byteswap()
    return pixels.tobytes()


def _file_meta(sop_class: str, sop_instance: str) -> FileMetaDataset:
    meta = FileMetaDataset()
    meta.MediaStorageSOPClassUID = sop_class
    meta.MediaStorageSOPInstanceUID = sop_instance
    meta.TransferSyntaxUID = ExplicitVRLittleEndian
    return meta


@dataclass
class Patient:
    patient_id: str = "PID-7734-SYNTH"
    name: str = "Doe^Jane^Synthetic"
    birth_date: str = "19610412"
    sex: str = "F"


@dataclass
class Study:
    patient: Patient = field(default_factory=Patient)
    study_uid: str = field(default_factory=generate_uid)
    accession: str = "ACC-55117"
    institution: str = "Synthetic General Hospital"
    date: str = "20240301"


def _base(study: Study, sop_class: str, modality: str) -> Dataset:
    ds = Dataset()
    sop_instance = generate_uid()
    ds.file_meta = _file_meta(sop_class, sop_instance)
    ds.SOPClassUID = sop_class
    ds.SOPInstanceUID = sop_instance
    ds.PatientID = study.patient.patient_id
    ds.PatientName = study.patient.name
    ds.PatientBirthDate = study.patient.birth_date
    ds.PatientSex = study.patient.sex
    ds.StudyInstanceUID = study.study_uid
    ds.StudyDate = study.date
    ds.StudyTime = "101500"
    ds.StudyID = "S1"
    ds.AccessionNumber = study.accession
    ds.InstitutionName = study.institution
    ds.ReferringPhysicianName = "Referrer^Synthetic"
    ds.StudyDescription = "Synthetic study"
    ds.Modality = modality
    ds.Manufacturer = "Synthetic Scanners"  # a device's image: not one the burned-in gate flags (docs/pixels.md)
    return ds


def image_series(study: Study, sop_class: str, modality: str, frame_of_reference: str, count: int,
                 number: int, size: int = 16, description: str | None = None,
                 synchronization: str | None = None) -> list[Dataset]:
    """`count` slices of one series on a frame of reference (and a synchronization FoR if given)."""
    series_uid = generate_uid()
    slices = []
    for index in range(count):
        ds = _base(study, sop_class, modality)
        ds.SeriesInstanceUID = series_uid
        ds.SeriesNumber = number
        ds.SeriesDescription = description or f"Synthetic {modality} series {number}"
        ds.InstanceNumber = index + 1
        ds.FrameOfReferenceUID = frame_of_reference
        ds.PositionReferenceIndicator = ""
        if synchronization:
            ds.SynchronizationFrameOfReferenceUID = synchronization
            ds.SynchronizationTrigger = "NO TRIGGER"
            ds.AcquisitionTimeSynchronized = "Y"
        ds.ImageType = ["ORIGINAL", "PRIMARY", "AXIAL"]
        ds.ImagePositionPatient = [0.0, 0.0, float(index)]
        ds.ImageOrientationPatient = [1.0, 0.0, 0.0, 0.0, 1.0, 0.0]
        ds.PixelSpacing = [1.0, 1.0]
        ds.SliceThickness = 1.0
        ds.SamplesPerPixel = 1
        ds.PhotometricInterpretation = "MONOCHROME2"
        ds.Rows = ds.Columns = size
        ds.BitsAllocated = 16
        ds.BitsStored = 12
        ds.HighBit = 11
        ds.PixelRepresentation = 0
        ds.RescaleIntercept = 0
        ds.RescaleSlope = 1
        ds.PixelData = _uint16_le((pixel + index * 7) % 4096 for pixel in range(size * size))
        slices.append(ds)
    return slices


def mr_series(study: Study, frame_of_reference: str, count: int, number: int,
              size: int = 16, description: str | None = None) -> list[Dataset]:
    """One MR series of `count` slices on the given frame of reference."""
    return image_series(study, MR_IMAGE_STORAGE, "MR", frame_of_reference, count, number, size, description)


def rtstruct(study: Study, images: list[Dataset]) -> Dataset:
    """An RT Structure Set whose contours lie on `images` (one series, one frame of reference)."""
    first = images[0]
    ds = _base(study, RT_STRUCTURE_SET_STORAGE, "RTSTRUCT")
    ds.SeriesInstanceUID = generate_uid()
    ds.SeriesNumber = 99
    ds.InstanceNumber = 1
    ds.StructureSetLabel = "Synthetic"
    ds.StructureSetDate = study.date
    ds.StructureSetTime = "120000"

    def contour_image(image: Dataset) -> Dataset:
        item = Dataset()
        item.ReferencedSOPClassUID = image.SOPClassUID
        item.ReferencedSOPInstanceUID = image.SOPInstanceUID
        return item

    series_item = Dataset()
    series_item.SeriesInstanceUID = first.SeriesInstanceUID
    series_item.ContourImageSequence = Sequence([contour_image(image) for image in images])
    study_item = Dataset()
    study_item.ReferencedSOPClassUID = DETACHED_STUDY_MANAGEMENT
    study_item.ReferencedSOPInstanceUID = study.study_uid
    study_item.RTReferencedSeriesSequence = Sequence([series_item])
    for_item = Dataset()
    for_item.FrameOfReferenceUID = first.FrameOfReferenceUID
    for_item.RTReferencedStudySequence = Sequence([study_item])
    ds.ReferencedFrameOfReferenceSequence = Sequence([for_item])

    roi = Dataset()
    roi.ROINumber = 1
    roi.ReferencedFrameOfReferenceUID = first.FrameOfReferenceUID
    roi.ROIName = "Synthetic ROI"
    roi.ROIGenerationAlgorithm = "MANUAL"
    ds.StructureSetROISequence = Sequence([roi])

    contours = []
    for image in images:
        contour = Dataset()
        contour.ContourImageSequence = Sequence([contour_image(image)])
        contour.ContourGeometricType = "CLOSED_PLANAR"
        contour.NumberOfContourPoints = 3
        z = float(image.ImagePositionPatient[2])
        contour.ContourData = [1.0, 1.0, z, 5.0, 1.0, z, 3.0, 4.0, z]
        contours.append(contour)
    roi_contour = Dataset()
    roi_contour.ReferencedROINumber = 1
    roi_contour.ROIDisplayColor = [255, 0, 0]
    roi_contour.ContourSequence = Sequence(contours)
    ds.ROIContourSequence = Sequence([roi_contour])
    observation = Dataset()
    observation.ObservationNumber = 1
    observation.ReferencedROINumber = 1
    observation.RTROIInterpretedType = "ORGAN"
    observation.ROIInterpreter = ""
    ds.RTROIObservationsSequence = Sequence([observation])
    return ds


@dataclass
class TwoFrameStudy:
    """Three MR series, the first two on one frame of reference, the third on another, and an RTSTRUCT."""
    study: Study
    series: list[list[Dataset]]
    structure_set: Dataset

    @property
    def instances(self) -> list[Dataset]:
        return [ds for series in self.series for ds in series] + [self.structure_set]


def two_frame_study(per_series: int = 3, size: int = 16, patient: Patient | None = None) -> TwoFrameStudy:
    study = Study(patient=patient or Patient())
    frame_a, frame_b = generate_uid(), generate_uid()
    series = [
        mr_series(study, frame_a, per_series, 1, size),
        mr_series(study, frame_a, per_series, 2, size),
        mr_series(study, frame_b, per_series, 3, size),
    ]
    return TwoFrameStudy(study, series, rtstruct(study, series[0]))


def implicit_with_private_uid(patient: Patient | None = None) -> tuple[bytes, str, Dataset]:
    """An implicit VR file whose private element (read as UN) holds a frame of reference that no
    public attribute names: (the file, that UID, the dataset)."""
    image = two_frame_study(per_series=1, patient=patient).series[0][0]
    hidden = generate_uid()
    block = image.private_block(0x0029, "ACME IMAGING 1.0", create=True)
    block.add_new(0x10, "LO", hidden)
    image.file_meta.TransferSyntaxUID = ImplicitVRLittleEndian
    buffer = io.BytesIO()
    image.save_as(buffer, enforce_file_format=True, implicit_vr=True, little_endian=True)
    return buffer.getvalue(), hidden, image


def write_study(folder: str, per_series: int = 3) -> None:
    """Write a two-frame study as files, for the README's walk-through."""
    from pathlib import Path

    target = Path(folder)
    target.mkdir(parents=True, exist_ok=True)
    made = two_frame_study(per_series=per_series)
    for index, ds in enumerate(made.instances):
        (target / f"{index:03d}.dcm").write_bytes(to_bytes(ds))


if __name__ == "__main__":
    write_study(sys.argv[1] if len(sys.argv) > 1 else "study")
