"""Orthanc's resource levels and IDs. Orthanc derives an ID from the DICOM identifiers (SHA-1 of
them joined by "|"): that lets the plugin know where an anonymized instance is stored before
storing it."""
from __future__ import annotations

import hashlib

#: The REST API's name of each level, and the "Type" its answers give it.
LEVEL_TYPES = {"patients": "Patient", "studies": "Study", "series": "Series", "instances": "Instance"}


def resource_id(*identifiers: str) -> str:
    """The ID of the patient (PatientID), study (+ StudyInstanceUID), series (+ SeriesInstanceUID)
    or instance (+ SOPInstanceUID) with these identifiers."""
    digest = hashlib.sha1("|".join(identifiers).encode("utf-8")).hexdigest()
    return "-".join(digest[i:i + 8] for i in range(0, 40, 8))
