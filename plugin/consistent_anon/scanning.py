"""Header scanning: where the UIDs and the text of a DICOM file are, with their full paths.

One scanner serves both the fail-closed check of each anonymized file and the verification of
a whole anonymized set, so both see exactly the same attributes. Pixel data is never decoded.
"""
from __future__ import annotations

import io
import re
from typing import Iterator

import pydicom
from pydicom.dataelem import RawDataElement
from pydicom.datadict import dictionary_VR
from pydicom.dataset import Dataset

#: A path: the (sequence tag, item index) steps down to an element, then the element's tag.
Path = tuple[tuple[tuple[int, int], ...], int]

MEDIA_STORAGE_SOP_INSTANCE_UID = 0x00020003
SOP_INSTANCE_UID = 0x00080018
PIXEL_DATA = 0x7FE00010
DEFLATED_EXPLICIT_VR_LITTLE_ENDIAN = "1.2.840.10008.1.2.1.99"
_UID_TOKEN = re.compile(r"[0-9]+(?:\.[0-9]+)+")
_UID_TOKEN_BYTES = re.compile(rb"[0-9]+(?:\.[0-9]+)+")


def read_header(data: bytes) -> Dataset:
    """The dataset up to (not including) the pixel data."""
    return pydicom.dcmread(io.BytesIO(data), stop_before_pixels=True, force=True)


def orthanc_path(path: Path) -> str:
    """The path as Orthanc's Keep/Replace/Remove accept it: `3006,0010[0].0020,0052`."""
    steps, tag = path
    parts = [f"{seq >> 16:04x},{seq & 0xFFFF:04x}[{index}]" for seq, index in steps]
    parts.append(f"{tag >> 16:04x},{tag & 0xFFFF:04x}")
    return ".".join(parts)


def values_of(value) -> tuple[str, ...]:
    """An element's value as a tuple of strings, without DICOM padding."""
    if value is None:
        return ()
    if isinstance(value, bytes):
        value = value.decode("latin-1")
    if isinstance(value, (list, tuple)) or type(value).__name__ == "MultiValue":
        return tuple(str(v).rstrip("\x00 ") for v in value)
    text = str(value).rstrip("\x00 ")
    return tuple(text.split("\\")) if text else ()


class Element:
    """One element found by `walk`: its path, its VR and, read only when asked, its values.

    Most elements of a header are never looked at (the plan needs the UID attributes, the leak
    search only texts), so their values are left undecoded: converting every element is most of
    what reading a header costs.
    """

    __slots__ = ("path", "vr", "_dataset", "_raw", "_values")

    def __init__(self, path: Path, vr: str, dataset: Dataset | None = None, raw: bytes | None = None,
                 values: tuple[str, ...] | None = None) -> None:
        self.path = path
        self.vr = vr
        self._dataset = dataset
        self._raw = raw
        self._values = values

    @property
    def tag(self) -> int:
        return self.path[1]

    @property
    def values(self) -> tuple[str, ...]:
        if self._values is None:
            if self._raw is not None and self.vr == "UI":  # ASCII by definition: no character set
                self._values = values_of(self._raw.decode("ascii", "replace"))
            else:
                try:
                    self._values = values_of(self._dataset[self.tag].value)
                except Exception:  # an undecodable value is scanned as raw text
                    self._values = values_of(bytes(self._raw or b""))
        return self._values


_UNDEFINED_LENGTH = 0xFFFFFFFF


def _raw_vr(raw: RawDataElement) -> str:
    if raw.VR is not None:
        return str(raw.VR)
    try:  # implicit VR: the dictionary's
        return dictionary_VR(raw.tag)
    except KeyError:
        return "UN"


def walk(ds: Dataset, steps: tuple = ()) -> Iterator[Element]:
    """Every non-sequence element at every depth, private ones included, pixel data excepted."""
    for key in list(ds.keys()):
        tag = int(key)
        if tag == PIXEL_DATA:
            continue
        item = ds.get_item(key)
        if isinstance(item, RawDataElement):
            vr = _raw_vr(item)
            if vr != "SQ" and item.length != _UNDEFINED_LENGTH:
                yield Element((steps, tag), vr, ds, raw=item.value if item.value is not None else b"")
                continue
            item = ds[key]  # a sequence (or what may be one): pydicom reads its items
        if item.VR == "SQ":
            for index, child in enumerate(item.value or ()):
                yield from walk(child, steps + ((tag, index),))
        else:
            yield Element((steps, tag), str(item.VR), ds)


def uid_elements(ds: Dataset, uid_tags: frozenset[int]) -> list[Element]:
    """Elements whose attribute is one of `uid_tags`, at any depth."""
    return [e for e in walk(ds) if e.tag in uid_tags and e.values]


def uid_tokens(text: str) -> set[str]:
    """Dotted-decimal tokens of a text: the candidates for a UID written into free text."""
    return set(_UID_TOKEN.findall(text))


def in_bytes(data: bytes, wanted: set[str] | frozenset[str]) -> bool:
    """Whether any of `wanted` is somewhere in the file's bytes (pixel data and what follows it
    included, where the header scan does not look)."""
    return any(uid.encode("ascii", "replace") in data for uid in wanted)


def whole_uid_in_bytes(data: bytes, wanted: set[str] | frozenset[str]) -> bool:
    """Whether any of `wanted` stands in the file's bytes as a whole dotted-decimal token (not as
    the start of a longer UID): for the places the header scan does not reach."""
    if not in_bytes(data, wanted):
        return False
    tokens = set(_UID_TOKEN_BYTES.findall(data))
    return any(uid.encode("ascii", "replace") in tokens for uid in wanted)


def _is_deflated(ds: Dataset) -> bool:
    meta = getattr(ds, "file_meta", None)
    return meta is not None and str(meta.get("TransferSyntaxUID", "")) == DEFLATED_EXPLICIT_VR_LITTLE_ENDIAN


def walk_file(ds: Dataset) -> Iterator[Element]:
    """Every non-sequence element of the dataset, then of its file meta information."""
    yield from walk(ds)
    if getattr(ds, "file_meta", None) is not None:
        yield from walk(ds.file_meta)


def find_uids(ds: Dataset, wanted: set[str] | frozenset[str], data: bytes | None = None) -> list[tuple[Element, str]]:
    """Where any of `wanted` appears, as a value or inside text, anywhere in the dataset and its meta.

    With `data`, the file the dataset was read from: a UID that is nowhere in its bytes is in no
    element either (unless the dataset is deflated), which settles most files without a scan.
    """
    if data is not None and not _is_deflated(ds) and not in_bytes(data, wanted):
        return []
    found = []
    for element in walk_file(ds):
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

    def find(self, ds: Dataset) -> list[tuple[Element, str]]:
        """(element, label) for every element holding one of the texts."""
        if self._pattern is None and not self._whole:
            return []
        found = []
        for element in walk_file(ds):
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
