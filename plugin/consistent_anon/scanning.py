"""Header scanning: where the UIDs and the text of a DICOM file are, with their full paths.

One scanner serves both the fail-closed check of each anonymized file and the verification of
a whole anonymized set, so both see exactly the same attributes. Pixel data is never decoded.
"""
from __future__ import annotations

import io
import re
from dataclasses import dataclass
from typing import Iterator

import pydicom
from pydicom.dataset import Dataset

#: A path: the (sequence tag, item index) steps down to an element, then the element's tag.
Path = tuple[tuple[tuple[int, int], ...], int]

MEDIA_STORAGE_SOP_INSTANCE_UID = 0x00020003
SOP_INSTANCE_UID = 0x00080018
_UID_TOKEN = re.compile(r"[0-9]+(?:\.[0-9]+)+")


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


@dataclass(frozen=True)
class Element:
    path: Path
    vr: str
    values: tuple[str, ...]

    @property
    def tag(self) -> int:
        return self.path[1]


def walk(ds: Dataset, steps: tuple = ()) -> Iterator[Element]:
    """Every non-sequence element at every depth, private ones included."""
    for elem in ds:
        tag = int(elem.tag)
        if elem.VR == "SQ":
            for index, item in enumerate(elem.value or ()):
                yield from walk(item, steps + ((tag, index),))
        elif tag != 0x7FE00010:
            try:
                values = values_of(elem.value)
            except Exception:  # an undecodable value is scanned as raw text
                values = values_of(bytes(elem.value or b""))
            yield Element((steps, tag), elem.VR, values)


def uid_elements(ds: Dataset, uid_tags: frozenset[int]) -> list[Element]:
    """Elements whose attribute is one of `uid_tags`, at any depth."""
    return [e for e in walk(ds) if e.tag in uid_tags and e.values]


def uid_tokens(text: str) -> set[str]:
    """Dotted-decimal tokens of a text: the candidates for a UID written into free text."""
    return set(_UID_TOKEN.findall(text))


def find_uids(ds: Dataset, wanted: set[str]) -> list[tuple[Element, str]]:
    """Where any of `wanted` appears, as a value or inside text, anywhere in the dataset and its meta."""
    found = []
    datasets = [ds] + ([ds.file_meta] if getattr(ds, "file_meta", None) is not None else [])
    for dataset in datasets:
        for element in walk(dataset):
            for value in element.values:
                for token in uid_tokens(value) & wanted:
                    found.append((element, token))
    return found


def describe(path: Path) -> str:
    """A path for people: keywords where pydicom knows them."""
    def name(tag: int) -> str:
        keyword = pydicom.datadict.keyword_for_tag(tag)
        return keyword or f"({tag >> 16:04X},{tag & 0xFFFF:04X})"
    steps, tag = path
    return ".".join([f"{name(seq)}[{index}]" for seq, index in steps] + [name(tag)])
