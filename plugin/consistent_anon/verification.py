"""The fail-closed check of one anonymized file against its plan, before anything is stored."""
from __future__ import annotations

from .identities import InstancePlan
from .scanning import (MEDIA_STORAGE_SOP_INSTANCE_UID, SOP_INSTANCE_UID, describe, find_uids,
                       read_header, walk, whole_uid_in_bytes)


def check_output(data: bytes, plan: InstancePlan, uid_tags: frozenset[int]) -> list[str]:
    """Problems found in the anonymized file; empty when it may be stored.

    Messages name tag paths only, never a value: they reach the client and the log.
    """
    try:
        ds = read_header(data)
    except Exception as error:  # pydicom raises many types on a damaged file
        return [f"the anonymized file cannot be read ({type(error).__name__})"]
    problems = []
    for element in walk(ds):  # one pass: the UID attributes, and the private elements the plan maps
        expected = plan.expected_uids.get(element.path)
        if element.tag in uid_tags and element.values and expected is None:
            problems.append(f"{describe(element.path)} carries a UID the plugin did not assign")
        elif expected is not None and element.values != expected:
            problems.append(f"{describe(element.path)} does not carry its pseudonym")
    leaks = find_uids(ds, plan.source_uids, data)
    for element, _ in leaks:
        problems.append(f"a source UID remains in {describe(element.path)}")
    if not leaks and whole_uid_in_bytes(data, plan.source_uids):
        # Where the header scan does not look: elements after the pixel data (private ones, kept).
        problems.append("a source UID remains in the file outside the header (after the pixel data)")
    if str(ds.get("PatientID", "")) != plan.patient_id:
        problems.append("PatientID is not the one the plugin assigned")
    meta = getattr(ds, "file_meta", None)
    sop_instance_uid = str(ds[SOP_INSTANCE_UID].value) if SOP_INSTANCE_UID in ds else ""
    if meta is not None and MEDIA_STORAGE_SOP_INSTANCE_UID in meta and \
            str(meta[MEDIA_STORAGE_SOP_INSTANCE_UID].value) != sop_instance_uid:
        problems.append("MediaStorageSOPInstanceUID differs from SOPInstanceUID")
    return sorted(set(problems))
