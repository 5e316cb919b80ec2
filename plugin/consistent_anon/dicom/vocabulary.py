"""The DICOM vocabulary the plugin speaks: tags, paths to elements, and the attributes it names.

A tag is an int (so that headers, sets and dicts of bare ints from the reader match it) that
prints itself as Orthanc's requests write it (`0020,000d`) and knows whether it is private. A
path names one element at any depth: the (sequence tag, item index) steps down to it, then its
tag; it is a tuple, so a path the reader made and one built here are equal.
"""
from __future__ import annotations

import re
from typing import NamedTuple

from pydicom.datadict import tag_for_keyword

_HEX_TAG = re.compile(r"^\(?([0-9a-fA-F]{4})[,|-]?([0-9a-fA-F]{4})\)?$")


def is_private(tag: int) -> bool:
    """A private data element (odd group, element 0x0100 and up): not a private creator."""
    return bool((tag >> 16) & 1 and tag & 0xFF00)


class Tag(int):
    """A DICOM tag (group << 16 | element)."""

    __slots__ = ()

    @property
    def group(self) -> int:
        return self >> 16

    @property
    def element(self) -> int:
        return self & 0xFFFF

    @property
    def is_private(self) -> bool:
        return is_private(self)

    def __str__(self) -> str:
        return f"{self >> 16:04x},{self & 0xFFFF:04x}"

    def __repr__(self) -> str:
        return f"Tag({self})"

    def parenthesized(self) -> str:
        """As DICOM's documents write it, for people: `(0020,000D)`."""
        return f"({self >> 16:04X},{self & 0xFFFF:04X})"


def parse_tag(name: str) -> Tag | None:
    """A top-level tag from a keyword or `gggg,eeee`; None for a nested path or an unknown name."""
    name = name.strip()
    match = _HEX_TAG.match(name)
    if match:
        return Tag(int(match.group(1) + match.group(2), 16))
    if "." in name or "[" in name:
        return None
    tag = tag_for_keyword(name)
    return Tag(tag) if tag is not None else None


#: One step down a path: (sequence tag, item index).
Step = tuple[int, int]


class Path(NamedTuple):
    """Where an element is: the steps down the sequences to it (none at the top level), its tag."""

    steps: tuple[Step, ...]
    tag: int

    @classmethod
    def top(cls, tag: int) -> "Path":
        """The top-level element with this tag."""
        return tuple.__new__(cls, ((), tag))

    def __str__(self) -> str:
        """As Orthanc's Keep/Replace/Remove accept it: `3006,0010[0].0020,0052`."""
        return orthanc_path(self)


def make_path(steps: tuple[Step, ...], tag: int) -> Path:
    """A path, without NamedTuple's argument handling: the reader makes one for every element."""
    return tuple.__new__(Path, (steps, tag))


def orthanc_path(path: tuple[tuple[Step, ...], int]) -> str:
    """A path as Orthanc's Keep/Replace/Remove accept it: `3006,0010[0].0020,0052`."""
    steps, tag = path
    return ".".join([f"{Tag(sequence)}[{index}]" for sequence, index in steps] + [str(Tag(tag))])


# --- The attributes the plugin names ----------------------------------------------------------
#: The longest value of a Long String (LO: PatientID, IssuerOfPatientID, the clinical-trial IDs...).
MAX_LO = 64

TRANSFER_SYNTAX_UID = Tag(0x00020010)
MEDIA_STORAGE_SOP_INSTANCE_UID = Tag(0x00020003)
SPECIFIC_CHARACTER_SET = Tag(0x00080005)
SOP_INSTANCE_UID = Tag(0x00080018)
CODE_VALUE = Tag(0x00080100)
CODING_SCHEME_DESIGNATOR = Tag(0x00080102)
CODE_MEANING = Tag(0x00080104)
REFERENCED_SOP_CLASS_UID = Tag(0x00081150)
REFERENCED_SOP_INSTANCE_UID = Tag(0x00081155)
SOURCE_IMAGE_SEQUENCE = Tag(0x00082112)
PATIENT_NAME = Tag(0x00100010)
PATIENT_ID = Tag(0x00100020)
ISSUER_OF_PATIENT_ID = Tag(0x00100021)
CLINICAL_TRIAL_SUBJECT_ID = Tag(0x00120040)
PATIENT_IDENTITY_REMOVED = Tag(0x00120062)
DEIDENTIFICATION_METHOD = Tag(0x00120063)
DEIDENTIFICATION_METHOD_CODE_SEQUENCE = Tag(0x00120064)
STUDY_INSTANCE_UID = Tag(0x0020000D)
SERIES_INSTANCE_UID = Tag(0x0020000E)
FRAME_OF_REFERENCE_UID = Tag(0x00200052)
NUMBER_OF_FRAMES = Tag(0x00280008)
ROWS = Tag(0x00280010)
LONGITUDINAL_TEMPORAL_INFORMATION_MODIFIED = Tag(0x00280303)
CONTENT_SEQUENCE = Tag(0x0040A730)
ENCRYPTED_ATTRIBUTES_SEQUENCE = Tag(0x04000500)
ENCRYPTED_CONTENT_TRANSFER_SYNTAX_UID = Tag(0x04000510)
ENCRYPTED_CONTENT = Tag(0x04000520)
MODIFIED_ATTRIBUTES_SEQUENCE = Tag(0x04000550)
PIXEL_DATA = Tag(0x7FE00010)

#: Words that a name, an address or an institution may hold but that free text holds for other
#: reasons: a text of the source that is one of them is found only as an element's whole value,
#: never as a word inside a longer text ("HEAD" for patient HEAD^ANNA stays in "HEAD CT").
#: Titles, common English words, and the anatomy, modality and protocol words of descriptions.
COMMON_WORDS = frozenset("""
mr mrs ms miss dr prof sir jr sr md phd rn the and for with from not but are was has his her its
our you all any new old see per via who why how one two six ten day days year years left right
test here there this that then than into onto over under after before none null unknown other
head neck brain skull face spine chest lung lungs heart breast abdomen abd pelvis hip knee leg
legs arm arms hand hands foot feet ankle wrist elbow shoulder body bone bones liver kidney renal
whole upper lower front back side axial sagittal coronal scan scans study series image images
exam view views contrast with without post pre phase routine protocol survey scout localizer
follow report note notes clinical history patient doctor nurse hospital clinic center centre
general medical health care street road avenue city main north south east west long short
name names first last given family middle maiden prefix suffix enter text value code type mode
observer organization person subject unit service department room floor building level site
""".split())
