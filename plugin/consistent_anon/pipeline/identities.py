"""Decide the identities of one anonymized instance: the plugin's half of the work.

Native Orthanc de-identifies (its profile, the caller's Keep/Replace/Remove); this module says
which value every UID, PatientID and PatientName must get, as explicit `Replace` paths that
override native's random choices at any depth, and what the output must then contain.
"""
from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Callable

from ..errors import BadRequest, PluginError, SubjectRequired
from ..dicom.filereader import Element, Header
from .options import AnonymizeRequest
from ..dicom.paths import KEEP, REMOVE
from ..identity.pseudonyms import Pseudonymizer
from ..pixels.decision import CLEANED, PixelDecision
from ..dicom.scanning import instance_uids, values_of
from ..identity.subjects import Subject, SubjectTableError
from .option_plan import keeps_private, kept_tags, native_keeps
from .cleaning import Cleaning, cleaning_for
from .transforms import TRANSFORMS, Changes
from ..dicom.uid_attributes import is_well_known
from ..dicom.vocabulary import (DEIDENTIFICATION_METHOD, ISSUER_OF_PATIENT_ID, PATIENT_ID, PATIENT_IDENTITY_REMOVED,
                                PATIENT_NAME, Path, is_private, orthanc_path)


@dataclass(frozen=True)
class NativeMarkers:
    """What native Orthanc writes in DeidentificationMethod and PatientIdentityRemoved for a request
    (None: it leaves the attribute out); learnt once per set of options by a probe."""

    deidentification_method: str | None
    patient_identity_removed: str | None


@dataclass
class InstancePlan:
    """The request to send to native Orthanc for one instance, and what its output must hold.

    `targets` maps each UID of the instance to what it becomes (its pseudonym, or the caller's
    choice for that original); `source_uids` are those that change, which must then be found
    nowhere in the output but at `caller_paths`, where the caller's own Keep or Replace put a
    UID; `source` is the header planned from, whose identifying texts the output must not hold
    anywhere but at `caller_paths` (what the caller wrote there is the caller's) and, for the
    attributes the caller keeps at the top level or an option keeps (`caller_tags`), nowhere at
    all: their values are meant to stay. A Replace or Remove exempts nothing beyond its own place."""

    native_body: dict[str, Any]
    patient_id: str
    expected_uids: dict[Path, tuple[str, ...]] = field(default_factory=dict)
    source_uids: set[str] = field(default_factory=set)
    targets: dict[str, str] = field(default_factory=dict)
    caller_paths: set[Path] = field(default_factory=set)
    source: Header | None = None
    caller_tags: frozenset[int] = frozenset()
    #: What the transforms (transforms.py) have native write, to be found where it is present.
    expected_values: dict[Path, tuple[str, ...]] = field(default_factory=dict)
    #: Whether the dates are shifted: the source's own dates are then identifying too.
    shifted_dates: bool = False
    #: Under a Clean option, what the check cleans in the output (cleaning.py).
    cleaning: Cleaning | None = None
    #: What is done with the pixels of an instance at risk or unknown (None: not at risk).
    pixels: PixelDecision | None = None

    @property
    def clean_pixel_data_applied(self) -> bool:
        """Whether this instance's pixels are blanked by a rule (113101 in
        DeidentificationMethodCodeSequence, BurnedInAnnotation NO)."""
        return self.pixels is not None and self.pixels.status == CLEANED


def _private_uid_values(element: Element, targets: dict[str, str]) -> tuple[str, ...] | None:
    """The values a private element gets when it holds UIDs of the instance, else None.

    An element of VR UI gets the target of each of its values; an element of any other VR (UN
    in implicit VR files, OB, LO...) only if its whole value consists of the instance's UIDs.
    """
    if not is_private(element.tag) or not element.values:
        return None
    if element.vr == "UI" or all(v in targets for v in element.values):
        new_values = tuple(targets.get(v, v) for v in element.values)
        return new_values if new_values != element.values else None
    return None


def resulting_patient(header: Header, request: AnonymizeRequest, pseudonyms: Pseudonymizer) -> tuple[str, str]:
    """The PatientID and PatientName of the anonymized instance: the project's subject table
    first, else the caller's choice (unless the project owns the identity, see
    AnonymizeRequest.for_project), else keyed pseudonyms.

    The table is consulted whatever the body says: a Keep or Replace of PatientID never lets a
    patient outside a required table in (SubjectRequired), nor gives a listed patient another
    PatientID than its SubjectID (refused: the trial would hold one subject under two IDs)."""
    original = header.text(PATIENT_ID)
    subject = _subject(header, request)
    chosen = _caller_patient_id(original, request)
    if subject is not None:
        if chosen != subject.subject_id and (chosen is not None or request.mentions(PATIENT_ID)):
            raise BadRequest(f'The patient is in the subject table of project "{request.settings.name}": its '
                             f'PatientID can only be its SubjectID; leave PatientID out of Keep, Replace and '
                             f'Remove (or replace it with that SubjectID); nothing was stored')
        return subject.subject_id, subject.subject_name or subject.subject_id
    patient_id = pseudonyms.patient_id(original) if chosen is None else chosen
    return patient_id, pseudonyms.patient_name(patient_id)


def _caller_patient_id(original: str, request: AnonymizeRequest) -> str | None:
    """The PatientID the caller's Replace or Keep gives, None if the caller leaves it to the plugin
    (or removes it)."""
    if PATIENT_ID in request.replaced_tags:
        return str(request.replaced_tags[PATIENT_ID])
    if PATIENT_ID in request.kept_tags:
        return original
    return None


def _subject(header: Header, request: AnonymizeRequest) -> Subject | None:
    """The patient's subject in the project's table; refused when required and not found."""
    settings = request.settings
    if settings.subjects is None:
        return None
    try:
        subject = settings.subjects.lookup(header.text(PATIENT_ID), header.text(ISSUER_OF_PATIENT_ID))
    except SubjectTableError as error:  # the file broke since it was last read: refuse, never guess
        raise PluginError(f'The subject table of project "{settings.name}" cannot be used: {error}') from None
    if subject is None and settings.require_subject:
        raise SubjectRequired(f'The patient is not in the subject table of project "{settings.name}", '
                              f'which requires one (RequireSubject); nothing was stored')
    return subject


def _caller_targets(header: Header, request: AnonymizeRequest, uid_tags: frozenset[int]) -> dict[str, str]:
    """Originals whose target the caller fixed with a top-level Keep or Replace of a UID
    attribute, or an option keeps (Device UID under Retain Device Identity): the same target then
    applies to every nested reference to that original. A nested path names one place only (as
    in native): it fixes nothing elsewhere."""
    fixed: dict[str, str] = {}
    for tag in (request.kept_tags | kept_tags(request) - request.mentioned_tags) & uid_tags:
        fixed.update((v, v) for v in header.values(tag))
    for tag, value in request.replaced_tags.items():
        if tag in uid_tags:
            fixed.update(zip(header.values(tag), values_of(value)))
    return fixed


@dataclass(frozen=True)
class _UidTargets:
    """What each UID of the instance becomes: the caller's fixed target, else its pseudonym in the
    anonymized patient's scope; UIDs of the standard itself stay."""

    fixed: dict[str, str]
    pseudonyms: Pseudonymizer
    patient_id: str

    def __call__(self, original: str) -> str:
        if is_well_known(original):
            return original
        return self.fixed.get(original) or self.pseudonyms.uid(self.patient_id, original)


def uid_target(header: Header, request: AnonymizeRequest, pseudonyms: Pseudonymizer, uid_tags: frozenset[int],
               patient_id: str) -> Callable[[str], str]:
    """What a UID of an instance with this header's fixed values becomes where the caller says
    nothing of its place, as `plan_instance` decides it: the index's re-run shortcut predicts
    each instance's SOPInstanceUID with it, without planning every instance whole."""
    return _UidTargets(_caller_targets(header, request, uid_tags), pseudonyms, patient_id)


def plan_instance(header: Header, request: AnonymizeRequest, pseudonyms: Pseudonymizer,
                  markers: NativeMarkers, uid_tags: frozenset[int]) -> InstancePlan:
    """One instance's plan, step by step: its UIDs, its patient, native's markers, then the
    transforms (transforms.py); all of it becomes one request to native."""
    patient_id, patient_name = resulting_patient(header, request, pseudonyms)
    plan = InstancePlan(native_body={}, patient_id=patient_id, source=header,
                        caller_tags=request.kept_tags | kept_tags(request),
                        shifted_dates=request.settings.shift_dates, cleaning=cleaning_for(header, request))
    changes = Changes(remove=list(request.remove))
    _plan_uids(plan, header, request, _UidTargets(_caller_targets(header, request, uid_tags), pseudonyms, patient_id),
               uid_tags, changes)
    if not request.mentions(PATIENT_ID):
        changes.replace[str(PATIENT_ID)] = patient_id
    if not request.mentions(PATIENT_NAME):
        changes.replace[str(PATIENT_NAME)] = patient_name
    _plan_markers(request, markers, changes)
    for transform in TRANSFORMS:
        transform(header, request, patient_id, pseudonyms, changes)
    plan.expected_values = changes.expected
    body = dict(request.native_body)
    body["Force"] = True
    body["Replace"] = {**changes.replace, **request.replace}
    if changes.keep:
        body["Keep"] = [*request.native_body.get("Keep", []), *changes.keep]
    if changes.remove:
        body["Remove"] = changes.remove
    keeps = native_keeps(header, request, body["Replace"])
    if keeps:
        body["Keep"] = list(request.native_body.get("Keep", [])) + keeps
    plan.native_body = body
    return plan


def _plan_uids(plan: InstancePlan, header: Header, request: AnonymizeRequest, target: _UidTargets,
               uid_tags: frozenset[int], changes: Changes) -> None:
    """Every UID of the instance, at every path: its target, unless the caller's own Keep or
    Replace stands there; private elements holding UIDs too, where native keeps them."""
    plan.targets = {v: target(v) for v in instance_uids(header, uid_tags)}
    plan.source_uids = {v for v, new in plan.targets.items() if v != new}
    caller = request.caller_paths
    for element in header.elements:
        if element.tag in uid_tags and element.values:
            new_values = tuple(target(v) for v in element.values)
        elif is_private(element.tag) and keeps_private(header, request, element):
            # native keeps these private elements as they are: those holding UIDs get theirs
            new_values = _private_uid_values(element, plan.targets)
            if new_values is None:
                continue
        else:
            continue
        fate = caller.fate(element.path)
        if fate is None:
            plan.expected_uids[element.path] = new_values
            changes.replace[orthanc_path(element.path)] = "\\".join(new_values)
        elif fate[0] != REMOVE:  # the caller's own Keep or Replace stands as written, at that place
            plan.caller_paths.add(element.path)
            plan.expected_uids[element.path] = element.values if fate[0] == KEEP else values_of(fate[1])
    for tag, value in request.replaced_tags.items():  # a UID attribute the source did not have
        if tag in uid_tags:
            plan.expected_uids[Path.top(tag)] = values_of(value)
            plan.caller_paths.add(Path.top(tag))


def _plan_markers(request: AnonymizeRequest, markers: NativeMarkers, changes: Changes) -> None:
    """DeidentificationMethod and PatientIdentityRemoved as native writes them for these options
    (the plugin's Replace of identities would otherwise change them), unless the caller decides."""
    for tag, value in ((DEIDENTIFICATION_METHOD, markers.deidentification_method),
                       (PATIENT_IDENTITY_REMOVED, markers.patient_identity_removed)):
        if request.mentions(tag):
            continue
        if value is None:
            changes.remove.append(str(tag))
        elif tag == DEIDENTIFICATION_METHOD:
            # Native drops a Replace of DeidentificationMethod equal to its own profile string
            # whenever the request has any Replace. A trailing space, which DICOM defines as
            # padding of a LO value, keeps the value exactly as native writes it when read.
            changes.replace[str(tag)] = value + " "
        else:
            changes.replace[str(tag)] = value
