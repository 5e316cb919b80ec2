"""Blanking rectangles in the stored pixel values of a DICOM file, in every frame.

PS3.15 E.3.1 (Clean Pixel Data): the stored values must change; an overlay or a shutter over
them is not enough. The pixel data is rewritten in place, value for value: the rectangles' samples
become zero, every other byte of the file stays as it was. Only uncompressed pixel data whose
samples are whole bytes and laid out pixel by pixel is changed (MONOCHROME1/2, PALETTE COLOR, RGB,
YBR_FULL, interleaved or planar); anything else is refused with a message that says why, before
native is asked to de-identify anything (`layout` on the source's header).
"""
from __future__ import annotations

import struct
from dataclasses import dataclass

from ..dicom.filereader import (EXPLICIT_VR_BIG_ENDIAN, IMPLICIT_VR_LITTLE_ENDIAN, Header)
from ..dicom.vocabulary import NUMBER_OF_FRAMES, PIXEL_DATA, ROWS, TRANSFER_SYNTAX_UID
from .rules import Rectangle

EXPLICIT_VR_LITTLE_ENDIAN = "1.2.840.10008.1.2.1"
#: The transfer syntaxes whose pixel data is written as it is: zero is zero in either byte order.
NATIVE_SYNTAXES = frozenset({IMPLICIT_VR_LITTLE_ENDIAN, EXPLICIT_VR_LITTLE_ENDIAN, EXPLICIT_VR_BIG_ENDIAN})
#: Photometric interpretations whose uncompressed pixels are whole samples, pixel by pixel.
PHOTOMETRICS = frozenset({"MONOCHROME1", "MONOCHROME2", "PALETTE COLOR", "RGB", "YBR_FULL"})

SAMPLES_PER_PIXEL, PHOTOMETRIC_INTERPRETATION = 0x00280002, 0x00280004
PLANAR_CONFIGURATION = 0x00280006
COLUMNS, BITS_ALLOCATED = 0x00280011, 0x00280100
_UNDEFINED = 0xFFFFFFFF


class CannotBlank(ValueError):
    """Pixel data this module cannot change: the message says why."""


@dataclass(frozen=True)
class Layout:
    """How the frames' samples lie in the pixel data."""

    rows: int
    columns: int
    samples: int
    sample_bytes: int
    frames: int
    planar: bool

    @property
    def frame_bytes(self) -> int:
        return self.rows * self.columns * self.samples * self.sample_bytes


def _number(header: Header, tag: int, name: str, default: int | None = None) -> int:
    text = header.text(tag).strip()
    if not text and default is not None:
        return default
    try:
        return int(text)
    except ValueError:
        raise CannotBlank(f"its {name} is {text or 'missing'}") from None


def layout(header: Header) -> Layout:
    """The layout of this file's pixel data, or CannotBlank saying why it is not changed here."""
    syntax = header.text(TRANSFER_SYNTAX_UID).strip()
    if syntax not in NATIVE_SYNTAXES:
        raise CannotBlank(f"its pixel data is compressed (transfer syntax {syntax or 'unknown'}); blanking "
                          "needs uncompressed pixel data: send it uncompressed (e.g. transcode it to "
                          f"{EXPLICIT_VR_LITTLE_ENDIAN}) first")
    photometric = header.text(PHOTOMETRIC_INTERPRETATION).strip().upper()
    if photometric not in PHOTOMETRICS:
        raise CannotBlank(f"its PhotometricInterpretation is {photometric or 'missing'} (blanked here: "
                          f"{', '.join(sorted(PHOTOMETRICS))})")
    bits = _number(header, BITS_ALLOCATED, "BitsAllocated")
    if bits % 8 or bits <= 0:
        raise CannotBlank(f"its BitsAllocated is {bits} (blanked here: whole bytes)")
    return Layout(_number(header, ROWS, "Rows"), _number(header, COLUMNS, "Columns"),
                  _number(header, SAMPLES_PER_PIXEL, "SamplesPerPixel", 1), bits // 8,
                  max(1, _number(header, NUMBER_OF_FRAMES, "NumberOfFrames", 1)),
                  _number(header, PLANAR_CONFIGURATION, "PlanarConfiguration", 0) == 1)


def _pixel_value(data: bytes, header: Header) -> tuple[int, int]:
    """Where the top-level PixelData's value starts and ends in `data` (the header's scan stopped
    just after that element's own header: 8 bytes in implicit VR, 12 in explicit VR)."""
    syntax = header.text(TRANSFER_SYNTAX_UID).strip()
    order = ">" if syntax == EXPLICIT_VR_BIG_ENDIAN else "<"
    start, end = len(header.searchable), header.after_pixel_data
    element_start = start - (8 if syntax == IMPLICIT_VR_LITTLE_ENDIAN else 12)
    if end is None or element_start < 0 or struct.unpack_from(order + "I", data, start - 4)[0] == _UNDEFINED:
        raise CannotBlank("its pixel data cannot be found, or is encapsulated")
    group, element = struct.unpack_from(order + "HH", data, element_start)
    if (group << 16) | element != PIXEL_DATA:
        raise CannotBlank("it holds no PixelData (7FE0,0010)")
    return start, end


def outside(keep: tuple[Rectangle, ...], columns: int, rows: int) -> tuple[Rectangle, ...]:
    """The rectangles that cover the image but for the `keep` ones (a rule that keeps only the
    ultrasound regions blanks the rest): row bands where the kept column spans are the same."""
    cuts = sorted({0, rows, *(min(max(y, 0), rows) for x0, y0, x1, y1 in keep for y in (y0, y1))})
    blanked: list[Rectangle] = []
    for top, bottom in zip(cuts, cuts[1:]):
        spans = sorted((x0, x1) for x0, y0, x1, y1 in keep if y0 <= top and bottom <= y1)
        column = 0
        for x0, x1 in spans + [(columns, columns)]:
            if x0 > column:
                blanked.append((column, top, min(x0, columns), bottom))
            column = max(column, x1)
    return tuple(r for r in blanked if r[0] < r[2] and r[1] < r[3])


def _inside(rectangles: tuple[Rectangle, ...], columns: int, rows: int) -> list[Rectangle]:
    """The rectangles clipped to the image; those that lie wholly outside it are left out."""
    clipped = [(max(x0, 0), max(y0, 0), min(x1, columns), min(y1, rows)) for x0, y0, x1, y1 in rectangles]
    return [(x0, y0, x1, y1) for x0, y0, x1, y1 in clipped if x0 < x1 and y0 < y1]


def blank(data: bytes, header: Header, rectangles: tuple[Rectangle, ...]) -> bytes:
    """The file with the rectangles' samples set to zero in every frame (and plane); every other
    byte as it was. `header` is this very file's (read_header)."""
    shape = layout(header)
    start, end = _pixel_value(data, header)
    if end - start < shape.frames * shape.frame_bytes:
        raise CannotBlank(f"its pixel data holds {end - start} bytes, fewer than its {shape.frames} frame(s) need")
    out = bytearray(data)
    planes = shape.samples if shape.planar else 1
    pixel = shape.sample_bytes * (1 if shape.planar else shape.samples)
    plane_bytes = shape.frame_bytes // planes
    inside = _inside(rectangles, shape.columns, shape.rows)
    if not inside:
        raise CannotBlank(f"the rule's rectangles all lie outside its {shape.columns}x{shape.rows} pixels: "
                          "it was written for images of another size")
    for x0, y0, x1, y1 in inside:
        zeros = bytes((x1 - x0) * pixel)
        for plane in range(shape.frames * planes):
            base = start + plane * plane_bytes
            for row in range(y0, y1):
                at = base + (row * shape.columns + x0) * pixel
                out[at:at + len(zeros)] = zeros
    return bytes(out)
