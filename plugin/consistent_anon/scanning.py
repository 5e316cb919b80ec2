"""Header scanning: where the UIDs and the text of a DICOM file are, with their full paths.

One scanner serves both the fail-closed check of each anonymized file and the verification of
a whole anonymized set, so both see exactly the same attributes (read by `filereader`, which
never reads pixel data).
"""
from __future__ import annotations

import re

import pydicom

from .filereader import Element, Header, Path

MEDIA_STORAGE_SOP_INSTANCE_UID = 0x00020003
SOP_INSTANCE_UID = 0x00080018
_UID_TOKEN = re.compile(r"[0-9]+(?:\.[0-9]+)+")
_UID_TOKEN_BYTES = re.compile(rb"[0-9]+(?:\.[0-9]+)+")
#: The first characters of a UID searched first, as its root (an organization's prefix).
_ROOT_LENGTH = 16


def orthanc_path(path: Path) -> str:
    """The path as Orthanc's Keep/Replace/Remove accept it: `3006,0010[0].0020,0052`."""
    steps, tag = path
    parts = [f"{seq >> 16:04x},{seq & 0xFFFF:04x}[{index}]" for seq, index in steps]
    parts.append(f"{tag >> 16:04x},{tag & 0xFFFF:04x}")
    return ".".join(parts)


def values_of(value: str) -> tuple[str, ...]:
    """A value written as in a request (backslash-separated) as a tuple, without DICOM padding."""
    text = str(value).rstrip("\x00 ")
    return tuple(text.split("\\")) if text else ()


def uid_elements(header: Header, uid_tags: frozenset[int]) -> list[Element]:
    """Elements whose attribute is one of `uid_tags`, at any depth."""
    return [e for e in header.elements if e.tag in uid_tags and e.values]


def uid_tokens(text: str) -> set[str]:
    """Dotted-decimal tokens of a text: the candidates for a UID written into free text."""
    return set(_UID_TOKEN.findall(text))


def in_bytes(data: bytes, wanted: set[str] | frozenset[str]) -> bool:
    """Whether any of `wanted` is somewhere in the file's bytes (pixel data and what follows it
    included, where the header scan does not look).

    A UID is in the bytes only if its first characters are, and the UIDs of one instance mostly
    share their root: one search per distinct root settles most files in one pass instead of
    one per UID.
    """
    encoded = {uid.encode("ascii", "replace") for uid in wanted}
    if not any(root in data for root in {uid[:_ROOT_LENGTH] for uid in encoded}):
        return False
    return any(uid in data for uid in encoded)


def whole_uid_in_bytes(data: bytes, wanted: set[str] | frozenset[str]) -> bool:
    """Whether any of `wanted` stands in the file's bytes as a whole dotted-decimal token (not as
    the start of a longer UID): for the places the header scan does not reach."""
    if not in_bytes(data, wanted):
        return False
    tokens = set(_UID_TOKEN_BYTES.findall(data))
    return any(uid.encode("ascii", "replace") in tokens for uid in wanted)


def find_uids(header: Header, wanted: set[str] | frozenset[str]) -> list[tuple[Element, str]]:
    """Where any of `wanted` appears, as a value or inside text, anywhere in the dataset and its meta.

    A UID that is nowhere in the header's bytes is in no element either, which settles most
    files without decoding a value.
    """
    if not in_bytes(header.searchable, wanted):
        return []
    found = []
    for element in header.all_elements():
        for value in element.values:
            for token in uid_tokens(value) & wanted:
                found.append((element, token))
    return found


#: Value representations that cannot hold identifying text: numbers, binary numbers, UIDs (the
#: UIDs are searched by `find_uids`, token by token), times and ages.
_NOT_TEXT_VRS = frozenset({"UI", "US", "SS", "UL", "SL", "UV", "SV", "FL", "FD", "AT", "OW", "OF",
                           "OD", "OL", "OV", "DS", "IS", "TM", "AS", "US or SS", "US or OW",
                           "US or SS or OW", "OB or OW"})


class TextFinder:
    """Finds given texts (case-insensitive) in any textual element, private and unknown (UN, OB)
    ones included: as a whole word inside a longer text when they have at least `min_word`
    characters, as the whole value of an element when shorter (a short word is everywhere).
    `needles` maps each text to a label."""

    def __init__(self, needles: dict[str, str], min_word: int = 5) -> None:
        self._labels = {text.lower(): label for text, label in needles.items() if text}
        self._whole = {text for text in self._labels if len(text) < min_word}
        words = sorted((t for t in self._labels if t not in self._whole), key=len, reverse=True)
        self._pattern = re.compile(
            r"(?<![0-9A-Za-z_])(?:" + "|".join(re.escape(text) for text in words) + r")(?![0-9A-Za-z_])",
            re.IGNORECASE) if words else None

    def find(self, header: Header) -> list[tuple[Element, str]]:
        """(element, label) for every element holding one of the texts."""
        if self._pattern is None and not self._whole:
            return []
        found = []
        for element in header.all_elements():
            if element.vr in _NOT_TEXT_VRS:
                continue
            labels = set()
            for value in element.values:
                if value.strip().lower() in self._whole:
                    labels.add(self._labels[value.strip().lower()])
                if self._pattern is not None:
                    labels.update(self._labels.get(m.group(0).lower(), "text") for m in self._pattern.finditer(value))
            found.extend((element, label) for label in sorted(labels))
        return found


def describe(path: Path) -> str:
    """A path for people: keywords where pydicom knows them."""
    def name(tag: int) -> str:
        keyword = pydicom.datadict.keyword_for_tag(tag)
        return keyword or f"({tag >> 16:04X},{tag & 0xFFFF:04X})"
    steps, tag = path
    return ".".join([f"{name(seq)}[{index}]" for seq, index in steps] + [name(tag)])
