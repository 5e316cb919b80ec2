"""What the plugin changes in every instance beyond identities, one transform per concern.

Native Orthanc de-identifies; the identity plan (identities.py) gives every UID and the patient
their pseudonyms; each transform here then adds what native must also write (`Replace` paths,
`Remove` entries) and what the output must then hold (`InstancePlan.expected_values`, checked by
the fail-closed check like the UIDs). A new capability is a new transform and one entry in
`TRANSFORMS`: it sees the source's header, the request (with its project's settings) and the plan.
"""
from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Protocol

from ..identity import dates
from ..dicom.filereader import Header
from ..dicom.option_attributes import CleanedAttributes
from .option_plan import method_codes
from .options import AnonymizeRequest
from ..identity.pseudonyms import Pseudonymizer
from ..dicom.vocabulary import (CLINICAL_TRIAL_SUBJECT_ID, DEIDENTIFICATION_METHOD_CODE_SEQUENCE,
                                LONGITUDINAL_TEMPORAL_INFORMATION_MODIFIED, Path, Tag, orthanc_path)


@dataclass
class Changes:
    """What the transforms add to native's request for one instance."""

    replace: dict[str, Any] = field(default_factory=dict)
    remove: list[str] = field(default_factory=list)
    #: Attributes native must keep though its profile removes them (keep_cleaned).
    keep: list[str] = field(default_factory=list)
    expected: dict[Path, tuple[str, ...]] = field(default_factory=dict)

    def set(self, path: Path, value: Any, expected: tuple[str, ...] | None = None) -> None:
        """Have native write `value` at `path`; the output must then hold `expected` there."""
        self.replace[orthanc_path(path)] = value
        if expected is not None:
            self.expected[path] = expected


class InstanceTransform(Protocol):
    def __call__(self, source: Header, request: AnonymizeRequest, patient_id: str,
                 pseudonyms: Pseudonymizer, changes: Changes) -> None: ...


def _untouched_by_caller(request: AnonymizeRequest, path: Path) -> bool:
    """The caller's own Keep, Replace or Remove of a place wins over any transform."""
    return request.caller_paths.fate(path) is None and not (not path[0] and request.mentions(path[1]))


def shift_dates(source: Header, request: AnonymizeRequest, patient_id: str, pseudonyms: Pseudonymizer,
                changes: Changes) -> None:
    """Keyed date shifting (PS3.15 E.3.6): every date of the instance moves by the patient's
    offset; times of day stay (a shift by whole days keeps them); the marker says so (and
    `record_options` the option's code)."""
    settings = request.settings
    if not settings.shift_dates:
        return
    offset = pseudonyms.date_offset(patient_id, *settings.date_shift_days)
    for element in source.elements:
        if not _untouched_by_caller(request, element.path):
            continue
        if dates.is_shifted(element.tag, element.vr) and element.values:
            shifted = dates.shift_value(element.vr, "\\".join(element.values), offset)
            changes.set(element.path, shifted, tuple(shifted.split("\\")) if shifted else ())
        elif element.tag in dates.KEPT_TAGS and element.values:
            changes.set(element.path, "\\".join(element.values), element.values)
    path = Path.top(LONGITUDINAL_TEMPORAL_INFORMATION_MODIFIED)
    if _untouched_by_caller(request, path):
        changes.set(path, dates.LONGITUDINAL_MODIFIED, (dates.LONGITUDINAL_MODIFIED,))


def clinical_trial(source: Header, request: AnonymizeRequest, patient_id: str, pseudonyms: Pseudonymizer,
                   changes: Changes) -> None:
    """The project's Clinical Trial Subject module, with the anonymized PatientID as the subject."""
    attributes = request.settings.clinical_trial
    if not attributes:
        return
    for tag, value in {**attributes, CLINICAL_TRIAL_SUBJECT_ID: patient_id}.items():
        if _untouched_by_caller(request, Path.top(tag)):
            changes.set(Path.top(tag), value, (value,) if value else ())


def record_options(source: Header, request: AnonymizeRequest, patient_id: str, pseudonyms: Pseudonymizer,
                   changes: Changes) -> None:
    """Every result names the Basic Profile and each option applied to it (option_plan.py) in
    DeidentificationMethodCodeSequence, unless the caller decides that attribute."""
    path = Path.top(DEIDENTIFICATION_METHOD_CODE_SEQUENCE)
    if _untouched_by_caller(request, path):
        changes.set(path, method_codes(request))


#: Graphics that cannot be cleaned, removed under Clean Graphics: overlay bitmaps (a burned-in
#: name cannot be told from a drawing) and curves (a retired module of binary data).
_OVERLAY_DATA = 0x3000
_OVERLAY_GROUPS = range(0x6000, 0x6020, 2)
_CURVE_GROUPS = range(0x5000, 0x5020, 2)


def _removed_graphic(tag: int) -> bool:
    group, element = tag >> 16, tag & 0xFFFF
    return group in _CURVE_GROUPS or (group in _OVERLAY_GROUPS and element == _OVERLAY_DATA)


def keep_cleaned(source: Header, request: AnonymizeRequest, patient_id: str, pseudonyms: Pseudonymizer,
                 changes: Changes) -> None:
    """Under a Clean option, native keeps each top-level attribute the option cleans (its C
    attributes: native removes most descriptions), unless the caller or another transform decides
    its fate; under Clean Graphics, overlay bitmaps and curves are removed."""
    attributes = CleanedAttributes(request.deidentification_options)
    if not attributes:
        return
    tops = {element.path[0][0][0] if element.path[0] else element.tag for element in source.elements}
    for tag in sorted(tops):
        name = str(Tag(tag))
        if request.mentions(tag) or name in changes.replace:
            continue
        if "CleanGraphics" in request.deidentification_options and _removed_graphic(tag):
            changes.remove.append(name)
        elif attributes.option_of(tag) is not None:
            changes.keep.append(name)


#: Applied in this order to every instance, after its identities are planned; `keep_cleaned`
#: last, as it keeps only what no other transform replaces.
TRANSFORMS: tuple[InstanceTransform, ...] = (shift_dates, clinical_trial, record_options, keep_cleaned)
