"""Keyed pseudonyms: the same original under the same key and scope always gives the same value.

A pseudonym is HMAC-SHA256(key, kind | scope | original). Without the key nobody can tell which
original a pseudonym stands for, nor confirm a guess (unlike unkeyed MD5/SHA schemes), and every
Orthanc that shares the key agrees without any shared state.
"""
from __future__ import annotations

import hashlib
import hmac
import os
import uuid
from typing import Callable

from ..lru import LruCache

UUID_ROOT = "2.25"
MAX_UID_LENGTH = 64
MIN_UID_DIGITS = 30  # below this a configured root leaves too little room for collision resistance
#: Pseudonyms a Pseudonymizer remembers (about 200 bytes each).
PSEUDONYMS_REMEMBERED = 4096


def _digest(key: bytes, kind: str, *parts: str) -> bytes:
    message = "\x00".join((kind,) + parts).encode("utf-8")
    return hmac.new(key, message, hashlib.sha256).digest()


def _as_uuid(digest: bytes) -> uuid.UUID:
    """128 bits of the digest shaped as an RFC 9562 version 8 (custom) UUID."""
    value = int.from_bytes(digest[:16], "big")
    value &= ~(0xF << 76)
    value |= 0x8 << 76
    value &= ~(0x3 << 62)
    value |= 0x2 << 62
    return uuid.UUID(int=value)


def is_valid_uid(text: str) -> bool:
    """PS3.5 9.1: at most 64 characters, dot-separated numbers without leading zeros, not empty."""
    components = text.split(".")
    return (0 < len(text) <= MAX_UID_LENGTH
            and all(c.isascii() and c.isdigit() and (c == "0" or not c.startswith("0")) for c in components))


def check_uid_root(root: str) -> str:
    """A root under which pseudonyms are written: dotted decimal, room left for 30 digits."""
    components = root.split(".")
    if not root or not all(c.isdigit() and (c == "0" or not c.startswith("0")) for c in components):
        raise ValueError(f"UidRoot {root!r} is not a dotted decimal UID root")
    if MAX_UID_LENGTH - len(root) - 1 < MIN_UID_DIGITS:
        raise ValueError(f"UidRoot {root!r} is too long: at most {MAX_UID_LENGTH - MIN_UID_DIGITS - 1} characters")
    return root


def uid_from_digest(digest: bytes, root: str = UUID_ROOT) -> str:
    """`2.25.<decimal of a UUID>` (PS3.5 B.2), or `<root>.<decimal>` fitting in 64 characters."""
    if root == UUID_ROOT:
        return f"{UUID_ROOT}.{_as_uuid(digest).int}"
    digits = min(39, MAX_UID_LENGTH - len(root) - 1)
    return f"{root}.{int.from_bytes(digest, 'big') % 10 ** digits}"


def fresh_uid(root: str = UUID_ROOT) -> str:
    """A new random UID under the root, for requests that want no pseudonym."""
    return uid_from_digest(os.urandom(32), root)


class Pseudonymizer:
    """Pseudonyms under one key (one project)."""

    def __init__(self, key: bytes, uid_root: str = UUID_ROOT) -> None:
        self._key = key
        self.uid_root = uid_root
        self._key_check = _digest(key, "key-check")[:16].hex()  # asked at every call (keys.py)
        #: The latest pseudonyms given: the instances of a series share their patient, study,
        #: series and frame of reference, whose pseudonyms are computed once rather than at each.
        self._given: LruCache[tuple[str, ...], str] = LruCache(PSEUDONYMS_REMEMBERED)

    def _remembered(self, make: Callable[[], str], *what: str) -> str:
        value = self._given.get(what)
        if value is None:
            value = make()
            self._given.put(what, value)
        return value

    def patient_id(self, original_patient_id: str) -> str:
        """The anonymized PatientID, shaped like the UUIDs native Orthanc writes there."""
        return self._remembered(lambda: str(_as_uuid(_digest(self._key, "patient-id", original_patient_id))),
                                "patient-id", original_patient_id)

    def patient_name(self, anonymized_patient_id: str) -> str:
        """The anonymized PatientName, following the resulting PatientID as native's does."""
        return self._remembered(
            lambda: "Anonymized-" + _digest(self._key, "patient-name", anonymized_patient_id)[:5].hex().upper(),
            "patient-name", anonymized_patient_id)

    def uid(self, scope: str, original_uid: str) -> str:
        """The pseudonym of a UID within a scope (the resulting PatientID)."""
        return self._remembered(lambda: uid_from_digest(_digest(self._key, "uid", scope, original_uid), self.uid_root),
                                "uid", scope, original_uid)

    def date_offset(self, scope: str, low: int, high: int) -> int:
        """The whole number of days by which a patient's dates move, in [low, high]: the same for
        every call and node under the key, never zero (that would publish the real dates)."""
        count = high - low + 1 - (1 if low <= 0 <= high else 0)
        if count <= 0:
            raise ValueError("the range of days holds no non-zero offset")
        offset = low + int.from_bytes(_digest(self._key, "date-shift", scope), "big") % count
        return offset + 1 if low <= 0 <= offset else offset

    def key_check(self) -> str:
        """A value that tells whether two keys are the same without telling anything of them:
        recorded per project, so that a changed or lost key is noticed before it splits a patient."""
        return self._key_check

    def options_fingerprint(self, output_options: str) -> str:
        """A mark of a request's options, kept beside its results: keyed, so that options which
        name people (a Replace value) cannot be guessed from it."""
        return _digest(self._key, "options", output_options)[:16].hex()

    def __repr__(self) -> str:  # never show the key
        return f"Pseudonymizer(uid_root={self.uid_root!r})"


def project_key(master_key: bytes, project: str) -> bytes:
    """An independent key for a project, derived from the master key."""
    return _digest(master_key, "project", project)
