"""Decide the identities of one anonymized instance: the plugin's half of the work.

Native Orthanc de-identifies (its profile, the caller's Keep/Replace/Remove); this module says
which value every UID, PatientID and PatientName must get, as explicit `Replace` paths that
override native's random choices at any depth, and what the output must then contain.
"""
from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from .filereader import Element, Header, Path
from .options import (DEIDENTIFICATION_METHOD, PATIENT_ID, PATIENT_IDENTITY_REMOVED, PATIENT_NAME,
                      AnonymizeRequest)
from .pseudonyms import Pseudonymizer
from .scanning import orthanc_path, uid_elements, values_of
from .uid_attributes import is_well_known


@dataclass(frozen=True)
class NativeMarkers:
    """What native Orthanc writes in DeidentificationMethod and PatientIdentityRemoved for a request
    (None: it leaves the attribute out); learnt once per set of options by a probe."""

    deidentification_method: str | None
    patient_identity_removed: str | None


@dataclass
class InstancePlan:
    """The request to send to native Orthanc for one instance, and what its output must hold."""

    native_body: dict[str, Any]
    patient_id: str
    expected_uids: dict[Path, tuple[str, ...]] = field(default_factory=dict)
    source_uids: set[str] = field(default_factory=set)


def _private_uid_values(element: Element, known: dict[str, str]) -> tuple[str, ...] | None:
    """The values a private element gets when it holds UIDs the instance maps, else None.

    A UI element gets the pseudonym of each value the instance maps elsewhere (other values,
    vendor constants, stay). An element of unknown VR (UN: implicit VR files, or an element
    written back by native Orthanc) is taken for UIDs only if every value is one the instance maps.
    """
    tag = element.tag
    if not (tag >> 16) & 1 or not tag & 0xFF00 or not element.values:
        return None  # a standard element, a private creator, or empty
    if element.vr == "UI" or (element.vr == "UN" and all(v in known for v in element.values)):
        new_values = tuple(known.get(v, v) for v in element.values)
        return new_values if new_values != element.values else None
    return None


def resulting_patient_id(header: Header, request: AnonymizeRequest, pseudonyms: Pseudonymizer) -> str:
    """The PatientID of the anonymized instance: the caller's choice, else the keyed pseudonym."""
    original = header.text(PATIENT_ID)
    if PATIENT_ID in request.replaced_tags:
        return str(request.replaced_tags[PATIENT_ID])
    if PATIENT_ID in request.kept_tags:
        return original
    return pseudonyms.patient_id(original)


def plan_instance(header: Header, request: AnonymizeRequest, pseudonyms: Pseudonymizer,
                  markers: NativeMarkers, uid_tags: frozenset[int]) -> InstancePlan:
    patient_id = resulting_patient_id(header, request, pseudonyms)

    # Originals whose target the caller fixed with a top-level Keep or Replace: the same target
    # then applies to every nested reference to that original.
    fixed: dict[str, str] = {}
    for tag in request.kept_tags & uid_tags:
        fixed.update((v, v) for v in header.values(tag))
    caller_uids = {tag: value for tag, value in request.replaced_tags.items() if tag in uid_tags}
    for tag, value in caller_uids.items():
        for original, target in zip(header.values(tag), values_of(value)):
            fixed[original] = target

    def target(original: str) -> str:
        if is_well_known(original):
            return original
        return fixed.get(original) or pseudonyms.uid(patient_id, original)

    replace: dict[str, Any] = {}
    plan = InstancePlan(native_body={}, patient_id=patient_id)
    removed_by_caller = request.removed_tags
    elements = uid_elements(header, uid_tags)
    for element in elements:
        steps, tag = element.path
        new_values = tuple(target(v) for v in element.values)
        plan.source_uids.update(v for v, n in zip(element.values, new_values) if v != n)
        if not steps and tag in removed_by_caller:
            continue
        plan.expected_uids[element.path] = new_values
        if not steps and request.mentions(tag):
            continue  # the caller's own Keep/Replace of this attribute stands as written
        replace[orthanc_path(element.path)] = "\\".join(new_values)
    for tag, value in caller_uids.items():
        plan.expected_uids[((), tag)] = values_of(value)

    if request.native_body.get("KeepPrivateTags") is True:
        # Private elements that native keeps as they are: those holding a UID this instance maps
        # elsewhere get its pseudonym too (native writes them back with VR UN).
        known = {v: target(v) for element in elements for v in element.values}
        for element in header.elements:
            steps, tag = element.path
            new_values = _private_uid_values(element, known)
            if new_values is None or (not steps and request.mentions(tag)):
                continue
            plan.expected_uids[element.path] = new_values
            replace[orthanc_path(element.path)] = "\\".join(new_values)

    if not request.mentions(PATIENT_ID):
        replace[orthanc_path(((), PATIENT_ID))] = patient_id
    if not request.mentions(PATIENT_NAME):
        replace[orthanc_path(((), PATIENT_NAME))] = pseudonyms.patient_name(patient_id)

    remove = list(request.remove)
    for tag, value in ((DEIDENTIFICATION_METHOD, markers.deidentification_method),
                       (PATIENT_IDENTITY_REMOVED, markers.patient_identity_removed)):
        if request.mentions(tag):
            continue
        if value is None:
            remove.append(orthanc_path(((), tag)))
        elif tag == DEIDENTIFICATION_METHOD:
            # Native drops a Replace of DeidentificationMethod equal to its own profile string
            # whenever the request has any Replace. A trailing space, which DICOM defines as
            # padding of a LO value, keeps the value exactly as native writes it when read.
            replace[orthanc_path(((), tag))] = value + " "
        else:
            replace[orthanc_path(((), tag))] = value

    body = dict(request.native_body)
    body["Force"] = True
    body["Replace"] = {**replace, **request.replace}
    if remove:
        body["Remove"] = remove
    plan.native_body = body
    return plan
