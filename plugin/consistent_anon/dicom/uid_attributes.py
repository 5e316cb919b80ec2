"""The UID attributes the plugin gives pseudonyms to, read from the generated table."""
from __future__ import annotations

import json
from pathlib import Path

_TABLE = json.loads((Path(__file__).with_name("uid_attributes.json")).read_text())

#: Every attribute replaced by some PS3.15 profile Orthanc implements, plus the frame-of-reference
#: and instance references no profile lists: mapped under every profile, since a UID one profile
#: keeps is still a link back to the source and a reference the others rewrite.
UID_TAGS: frozenset[int] = frozenset(int(tag, 16) for tag in _TABLE["uid_tags"])

#: Per DicomVersion, what native Orthanc replaces (for the record and the tests).
PROFILE_TAGS: dict[str, frozenset[int]] = {
    profile: frozenset(int(tag, 16) for tag in tags) for profile, tags in _TABLE["profiles"].items()
}

#: UIDs defined by the standard itself (SOP classes, transfer syntaxes, standard palettes...):
#: never an identifier, never rewritten.
DICOM_ROOT = "1.2.840.10008."


def is_well_known(uid: str) -> bool:
    return uid.startswith(DICOM_ROOT)
