"""The gate: from the header alone, whether a source instance may carry burned-in text.

`BurnedInAnnotation` (0028,0301) YES is *at risk*; NO is the source's own word that it is clean.
Absent or empty never means clean: on the kinds of images that commonly carry names and dates in
their pixels (burned_in_risk.json: ultrasound, secondary captures, visible light, screen saves,
localizers, images made by software) it is *unknown*; elsewhere (a CT slice, an MR image) *not at
risk*. The gate reads a few top-level values the header already holds: it costs nothing
measurable per instance.
"""
from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path

from ..dicom.filereader import Header
from ..dicom.vocabulary import CODE_VALUE, Tag

AT_RISK, UNKNOWN, NOT_AT_RISK = "AtRisk", "Unknown", "NotAtRisk"

BURNED_IN_ANNOTATION = Tag(0x00280301)
SOP_CLASS_UID = 0x00080016
MODALITY = 0x00080060
IMAGE_TYPE = 0x00080008
MANUFACTURER = 0x00080070
MANUFACTURER_MODEL_NAME = 0x00081090
ROWS, COLUMNS = 0x00280010, 0x00280011

_RISK = json.loads(Path(__file__).with_name("burned_in_risk.json").read_text(encoding="utf-8"))
#: The SOP classes, modalities and ImageType values of images that commonly carry burned-in text.
RISKY_SOP_CLASSES: frozenset[str] = frozenset(_RISK["SOPClasses"])
RISKY_MODALITIES: frozenset[str] = frozenset(_RISK["Modalities"])
#: SOP classes whose values are measures, not pictures (segmentations, parametric maps, dose grids).
SOP_CLASSES_WITHOUT_TEXT: frozenset[str] = frozenset(_RISK["SOPClassesWithoutText"]) - {"_about"}
RISKY_IMAGE_TYPES: frozenset[str] = frozenset(_RISK["ImageTypeValues"])
#: Derivations (CID 7203 codes) that add no text: an image DERIVED by these alone is not judged by it.
DERIVATIONS_WITHOUT_TEXT: frozenset[str] = frozenset(_RISK["DerivationsWithoutText"]) - {"_about"}
DERIVATION_CODE_SEQUENCE = 0x00089215


@dataclass(frozen=True)
class Risk:
    """What the gate decided for one instance, and why (for messages, the audit and verify)."""

    level: str
    reason: str

    @property
    def at_risk_or_unknown(self) -> bool:
        return self.level != NOT_AT_RISK


def classify(header: Header) -> Risk:
    """At risk, unknown or not at risk, from the header (see the module's docstring)."""
    declared = header.text(BURNED_IN_ANNOTATION).strip().upper()
    if declared == "YES":
        return Risk(AT_RISK, "BurnedInAnnotation is YES")
    if declared == "NO":
        return Risk(NOT_AT_RISK, "BurnedInAnnotation is NO")
    why = risky_kind(header)
    if why is None:
        return Risk(NOT_AT_RISK, "not a kind of image that commonly carries burned-in text")
    return Risk(UNKNOWN, f"BurnedInAnnotation is {'empty' if BURNED_IN_ANNOTATION in header else 'absent'} "
                         f"on {why}")


def risky_kind(header: Header) -> str | None:
    """What makes this instance a kind that commonly carries burned-in text; None if nothing.
    Beyond the listed SOP classes, only images (Rows present) are judged, and not those whose
    values are measures (segmentations, parametric maps, dose grids): a structure set or a report
    has no pixels to burn text into."""
    sop_class = header.text(SOP_CLASS_UID).strip()
    if sop_class in RISKY_SOP_CLASSES:
        return f"a {_RISK['SOPClasses'][sop_class]}"
    if ROWS not in header or sop_class in SOP_CLASSES_WITHOUT_TEXT:
        return None
    modality = header.text(MODALITY).strip().upper()
    if modality in RISKY_MODALITIES:
        return f"a {modality} image"
    image_type = {value.strip().upper() for value in header.text(IMAGE_TYPE).split("\\")} & RISKY_IMAGE_TYPES
    if image_type == {"DERIVED"} and _derived_without_text(header):
        image_type = set()
    if image_type:
        return f"an image of ImageType {'/'.join(sorted(image_type))}"
    if not header.text(MANUFACTURER).strip():
        return "an image without Manufacturer"
    return None


def _derived_without_text(header: Header) -> bool:
    """Whether the derivations the instance declares (DerivationCodeSequence) are all of those that
    add no text, such as the lossy compression Orthanc's own transcoding records."""
    codes = [element.values[0] for element in header.elements
             if element.tag == CODE_VALUE and element.values and len(element.path.steps) == 1
             and element.path.steps[0][0] == DERIVATION_CODE_SEQUENCE]
    return bool(codes) and all(code.strip() in DERIVATIONS_WITHOUT_TEXT for code in codes)


def device(header: Header) -> str:
    """The device as a site names it in a rule: manufacturer, model, matrix."""
    manufacturer = header.text(MANUFACTURER).strip() or "no Manufacturer"
    model = header.text(MANUFACTURER_MODEL_NAME).strip() or "no ManufacturerModelName"
    return f"{manufacturer} / {model}, {header.text(ROWS) or '?'}x{header.text(COLUMNS) or '?'} (Rows x Columns)"
