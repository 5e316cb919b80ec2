"""The fail-closed check of one anonymized file against its plan, before anything is stored."""
from __future__ import annotations

from .filereader import Path, UnreadableHeader, read_header
from .identities import InstancePlan
from .options import PATIENT_ID
from .scanning import MEDIA_STORAGE_SOP_INSTANCE_UID, SOP_INSTANCE_UID, describe, find_uids, whole_uid_in_bytes

SOURCE_IMAGE_SEQUENCE = 0x00082112
REFERENCED_SOP_INSTANCE_UID = 0x00081155


def _transcoder_reference(path: Path, plan: InstancePlan) -> bool:
    """The item Orthanc's lossy transcoding appends to SourceImageSequence ("Uncompressed
    predecessor"), naming a new random UID that identifies nothing: allowed where the request
    asked for Transcode (a source UID there would still be found by the leak check)."""
    steps, tag = path
    return ("Transcode" in plan.native_body and tag == REFERENCED_SOP_INSTANCE_UID and len(steps) == 1
            and steps[0][0] == SOURCE_IMAGE_SEQUENCE)


def check_output(data: bytes, plan: InstancePlan, uid_tags: frozenset[int]) -> list[str]:
    """Problems found in the anonymized file; empty when it may be stored.

    Messages name tag paths only, never a value: they reach the client and the log.
    """
    try:
        header = read_header(data)
    except UnreadableHeader as error:
        return [f"the anonymized file cannot be read ({error})"]
    problems = []
    for element in header.elements:  # one pass: the UID attributes, and the private elements the plan maps
        expected = plan.expected_uids.get(element.path)
        if element.tag in uid_tags and element.values and expected is None \
                and not _transcoder_reference(element.path, plan):
            problems.append(f"{describe(element.path)} carries a UID the plugin did not assign")
        elif expected is not None and element.values != expected:
            problems.append(f"{describe(element.path)} does not carry its pseudonym")
    leaks = find_uids(header, plan.source_uids)
    for element, _ in leaks:
        problems.append(f"a source UID remains in {describe(element.path)}")
    if not leaks and whole_uid_in_bytes(data, plan.source_uids):
        # Where the header scan does not look: elements after the pixel data (private ones, kept).
        problems.append("a source UID remains in the file outside the header (after the pixel data)")
    if header.text(PATIENT_ID) != plan.patient_id:
        problems.append("PatientID is not the one the plugin assigned")
    if MEDIA_STORAGE_SOP_INSTANCE_UID in header and \
            header.values(MEDIA_STORAGE_SOP_INSTANCE_UID) != header.values(SOP_INSTANCE_UID):
        problems.append("MediaStorageSOPInstanceUID differs from SOPInstanceUID")
    return sorted(set(problems))
