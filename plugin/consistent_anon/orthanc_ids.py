"""Orthanc's resource levels and IDs. Orthanc derives an ID from the DICOM identifiers (SHA-1 of
them joined by "|"): that lets the plugin know where an anonymized instance is stored before
storing it."""
from __future__ import annotations

import hashlib
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from .identity.pseudonyms import Pseudonymizer

#: The REST API's name of each level, and the "Type" its answers give it.
LEVEL_TYPES = {"patients": "Patient", "studies": "Study", "series": "Series", "instances": "Instance"}
#: The "level" of /tools/bulk-anonymize's calls, jobs and audit entries, beside the REST levels.
BULK = "bulk"
#: The "level" of the gateway's anonymizations (OnArrival) in audit entries: one instance each.
ARRIVAL = "on-arrival"
#: The member of a stored instance's record (Orthanc's answer to a store) naming its resource at each level.
PARENT_FIELD = {"patients": "ParentPatient", "studies": "ParentStudy", "series": "ParentSeries", "instances": "ID"}


def resource_id(*identifiers: str) -> str:
    """The ID of the patient (PatientID), study (+ StudyInstanceUID), series (+ SeriesInstanceUID)
    or instance (+ SOPInstanceUID) with these identifiers."""
    digest = hashlib.sha1("|".join(identifiers).encode("utf-8")).hexdigest()
    return "-".join(digest[i:i + 8] for i in range(0, 40, 8))


def anonymized_counterpart(pseudonyms: "Pseudonymizer", patient_id: str, *uids: str) -> str:
    """The ID of what the plugin's anonymization (its own PatientID, no UID of the caller's) makes
    of the study (StudyInstanceUID) or series (StudyInstanceUID, SeriesInstanceUID) of a patient:
    the explorer's verification finds a source's anonymized counterpart by it, never by a search."""
    anonymized_patient = pseudonyms.patient_id(patient_id)
    return resource_id(anonymized_patient, *(pseudonyms.uid(anonymized_patient, uid) for uid in uids))
