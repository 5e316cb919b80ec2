"""Reading a DICOM file's header: every element up to the pixel data, at every depth, with its path.

The plugin reads each source and each anonymized file once, for the UIDs and a few texts in
them: it needs where each element is and its bytes, not a pydicom Dataset. Walking the encoding
directly costs a tenth or less of what `pydicom.dcmread` with a walk of the result does
(bench/profile_engine.py), and values are decoded only when looked at. pydicom still supplies
what is data, not reading: the dictionary's VRs (implicit VR files) and the character sets.

Supported: files with or without the 128-byte preamble, implicit and explicit VR little endian,
explicit VR big endian, deflated; sequences and items of defined and undefined length; UN of
undefined length (a sequence in implicit VR, PS3.5 6.2.2); encapsulated values, skipped. Pixel
data is never read: the top-level scan stops at it (as `stop_before_pixels`), pixel data in
nested items (icons) is skipped. Anything malformed raises `UnreadableHeader`.

This is the plugin's one reader of DICOM encodings: `read_layout` answers where each element
lies in the file, by the same walk, for a step that copies or splices elements as written (the
re-identification data), so that it and the checks read every file alike.
"""
from __future__ import annotations

import struct
import zlib
from dataclasses import dataclass
from functools import lru_cache
from typing import Iterator, NamedTuple

from pydicom.charset import convert_encodings, decode_bytes
from pydicom.datadict import dictionary_VR

from .vocabulary import PIXEL_DATA, SPECIFIC_CHARACTER_SET, TRANSFER_SYNTAX_UID, Path, Tag, make_path

#: Top-level elements where the scan stops, as pydicom's `stop_before_pixels`.
PIXEL_TAGS = frozenset({0x7FE00008, 0x7FE00009, PIXEL_DATA})

IMPLICIT_VR_LITTLE_ENDIAN = "1.2.840.10008.1.2"
EXPLICIT_VR_BIG_ENDIAN = "1.2.840.10008.1.2.2"
DEFLATED_EXPLICIT_VR_LITTLE_ENDIAN = "1.2.840.10008.1.2.1.99"

_UNDEFINED = 0xFFFFFFFF
#: The item, item delimiter and sequence delimiter tags (PS3.5 7.5).
ITEM, ITEM_END, SEQUENCE_END = 0xFFFEE000, 0xFFFEE00D, 0xFFFEE0DD
#: Explicit VRs whose length takes 4 bytes (after 2 reserved ones), PS3.5 7.1.2.
LONG_VRS = frozenset({b"OB", b"OD", b"OF", b"OL", b"OV", b"OW", b"SQ", b"SV", b"UC", b"UN", b"UR",
                      b"UT", b"UV"})
#: Every VR of PS3.5 6.2, as written and as named.
VRS = {vr: vr.decode("ascii") for vr in LONG_VRS | {
    b"AE", b"AS", b"AT", b"CS", b"DA", b"DS", b"DT", b"FL", b"FD", b"IS", b"LO", b"LT", b"PN", b"SH",
    b"SL", b"SS", b"ST", b"TM", b"UI", b"UL", b"US"}}
#: Texts in the file's character set; the other text VRs use the default repertoire.
_CHARSET_VRS = frozenset({"SH", "LO", "ST", "LT", "UC", "UT", "PN"})
#: Binary numbers, decoded to their decimal text: struct format letter and size.
_NUMBERS = {"US": ("H", 2), "SS": ("h", 2), "UL": ("I", 4), "SL": ("i", 4), "FL": ("f", 4),
            "FD": ("d", 8), "UV": ("Q", 8), "SV": ("q", 8), "US or SS": ("H", 2),
            "US or SS or OW": ("H", 2)}
#: VRs whose bytes are read one way only: UIDs, tags, binary floats.
_ONE_READING = frozenset({"UI", "AT", "OF", "OD"})
_TEXT_DELIMITERS = {0x5C, 0x09, 0x0A, 0x0C, 0x0D}
_PN_DELIMITERS = _TEXT_DELIMITERS | {0x3D, 0x5E}


class UnreadableHeader(ValueError):
    """The bytes are not a DICOM file this reader understands."""


class _Syntax:
    """How a dataset is encoded: VR explicit or not, byte order."""

    __slots__ = ("explicit", "order", "tag_length", "explicit_header", "long_length")

    def __init__(self, explicit: bool, little: bool) -> None:
        self.explicit = explicit
        self.order = "<" if little else ">"
        self.tag_length = struct.Struct(self.order + "HHI").unpack_from
        self.explicit_header = struct.Struct(self.order + "HH2sH").unpack_from
        self.long_length = struct.Struct(self.order + "I").unpack_from


_IMPLICIT_LE = _Syntax(explicit=False, little=True)
_EXPLICIT_LE = _Syntax(explicit=True, little=True)
_EXPLICIT_BE = _Syntax(explicit=True, little=False)


#: How many tags' VRs are remembered: more than pydicom's dictionary holds, so that a file's
#: attributes are looked up once per process, while files full of odd tags cannot grow it.
IMPLICIT_VRS_REMEMBERED = 8192


@lru_cache(maxsize=IMPLICIT_VRS_REMEMBERED)  # thread-safe: the call's workers read at once
def implicit_vr(tag: int) -> str:
    """The dictionary's VR; "UN" for private and unknown attributes."""
    if not tag & 0xFFFF:
        return "UL"  # group length
    try:
        return dictionary_VR(tag)
    except KeyError:  # not in the dictionary: its bytes are kept as they are, as native does
        return "UN"


class Span(NamedTuple):
    """Where an element lies in its file: its header's start, its value's start, its end (after
    the delimiter of a value of undefined length); a sequence's items, each its elements' spans
    (None for any other element)."""

    tag: int
    vr: str
    start: int
    value_start: int
    end: int
    items: tuple[tuple["Span", ...], ...] | None = None


class Layout(NamedTuple):
    """A file's top-level elements by tag, up to its pixel data (`end`, where it starts, or the
    end of the file), and how its dataset is encoded."""

    data: bytes
    implicit: bool
    little: bool
    elements: dict[int, Span]
    end: int

    def value(self, span: Span) -> bytes:
        return self.data[span.value_start:span.end]


class Element:
    """One non-sequence element: its path, its VR and, decoded only when asked, its values."""

    __slots__ = ("path", "vr", "_raw", "_syntax", "_encodings", "_values")

    def __init__(self, path: Path, vr: str, raw: bytes | memoryview = b"", syntax: _Syntax = _EXPLICIT_LE,
                 encodings: tuple[str, ...] = (), values: tuple[str, ...] | None = None) -> None:
        self.path = path
        self.vr = vr
        self._raw = raw
        self._syntax = syntax
        self._encodings = encodings
        self._values = values

    @property
    def tag(self) -> int:
        return self.path[1]

    @property
    def values(self) -> tuple[str, ...]:
        """The values as texts, without DICOM padding: numbers in decimal, unknown bytes as Latin-1."""
        if self._values is None:
            self._values = self._decode()
        return self._values

    @property
    def raw(self) -> bytes:
        """The value's bytes as written."""
        return bytes(self._raw)

    def readings(self) -> tuple[str, ...]:
        """Every text a search for identifiers must look at in this element: its values as
        decoded, and, where the bytes may hold text written otherwise (a private or binary
        element, a hostile writer), the bytes read in the declared character set, in UTF-8 (a name
        written so under a Latin-1 declaration), and in UTF-16 of either byte order at either
        alignment. Numbers and UIDs have one reading."""
        readings = list(self.values)
        if self.vr in _NUMBERS or self.vr in _ONE_READING or self._values is not None and not self._raw:
            return tuple(readings)
        raw = bytes(self._raw)
        if self._encodings and self.vr not in _CHARSET_VRS:
            try:
                readings.append(decode_bytes(raw, list(self._encodings), _TEXT_DELIMITERS))
            except Exception:  # not text in that character set: the other readings stand
                pass
        if max(raw, default=0) >= 0x80:  # UTF-8 written under another declared character set
            readings.append(raw.decode("utf-8", "replace"))
        if b"\x00" in raw.rstrip(b"\x00"):
            for start in (0, 1):
                part = raw[start:len(raw) - (len(raw) - start) % 2]
                readings += [part.decode("utf-16-le", "replace"), part.decode("utf-16-be", "replace")]
        return tuple(readings)

    def _decode(self) -> tuple[str, ...]:
        raw, vr = bytes(self._raw), self.vr
        if vr == "UI":
            return tuple(v.strip(" \x00") for v in raw.decode("ascii", "replace").split("\\")) \
                if raw.strip(b" \x00") else ()
        number = _NUMBERS.get(vr)
        if number is not None and len(raw) % number[1] == 0:
            return tuple(str(v) for v in struct.unpack(f"{self._syntax.order}{len(raw) // number[1]}{number[0]}", raw))
        if vr == "AT" and len(raw) % 4 == 0:
            pairs = struct.unpack(f"{self._syntax.order}{len(raw) // 2}H", raw)
            return tuple(Tag(g << 16 | e).parenthesized() for g, e in zip(pairs[::2], pairs[1::2]))
        text = None
        if vr in _CHARSET_VRS and self._encodings:
            try:
                text = decode_bytes(raw, list(self._encodings), _PN_DELIMITERS if vr == "PN" else _TEXT_DELIMITERS)
            except Exception:  # a value the declared character set cannot decode: read as bytes
                text = None
        if text is None:
            text = raw.decode("latin-1")
        values = tuple(v.rstrip(" \x00") for v in text.split("\\"))
        return values if any(values) else ()


@dataclass(frozen=True)
class Inflated:
    """A deflated file as its elements are written: its meta and its dataset inflated, and where
    the pixel data's value ends there (None where that is not known)."""

    data: bytes
    after_pixel_data: int | None


class Header:
    """A file's elements up to its pixel data: the dataset's at every depth, in file order, and
    the file meta information's. `searchable` holds the header's bytes as the values are written
    (up to the pixel data; inflated if the file is deflated): a UID not in it is in no element."""

    def __init__(self, elements: list[Element], meta: list[Element] | None = None,
                 searchable: bytes = b"", after_pixel_data: int | None = None,
                 inflated: Inflated | None = None) -> None:
        self.elements = elements
        self.meta = meta or []
        self.searchable = searchable
        #: Where the file goes on after the pixel data's value (elements a vendor put after it),
        #: None where that is not known (no pixel data read, a deflated or malformed file).
        self.after_pixel_data = after_pixel_data
        #: A deflated file's bytes inflated (the searches after the pixel data read those); None otherwise.
        self.inflated = inflated
        self._root = {e.tag: e for e in elements if not e.path[0]}
        self._root.update((e.tag, e) for e in self.meta)

    @classmethod
    def of_values(cls, values: dict[int, str]) -> "Header":
        """A header of single-valued top-level elements (no file behind it)."""
        return cls([Element(Path.top(tag), implicit_vr(tag), values=(value,) if value else ())
                    for tag, value in values.items()])

    def __contains__(self, tag: int) -> bool:
        return tag in self._root

    def values(self, tag: int) -> tuple[str, ...]:
        """The values of a top-level element (or of the file meta); () when absent."""
        element = self._root.get(tag)
        return element.values if element is not None else ()

    def text(self, tag: int) -> str:
        """A top-level element's values as one text, backslash-separated; "" when absent."""
        return "\\".join(self.values(tag))

    def encodings(self) -> tuple[str, ...]:
        """The Python codecs of the dataset's declared character set (SpecificCharacterSet)."""
        element = self._root.get(SPECIFIC_CHARACTER_SET)
        return element._encodings if element is not None else ()

    def all_elements(self) -> Iterator[Element]:
        """The dataset's elements, then the file meta information's."""
        yield from self.elements
        yield from self.meta


def read_header(data: bytes) -> Header:
    """The elements of a DICOM file (Part 10, or a bare dataset) up to its pixel data."""
    buffer = memoryview(data)
    try:
        return _read(data, buffer)
    except (struct.error, IndexError, zlib.error, UnicodeDecodeError, RecursionError) as error:
        raise UnreadableHeader(f"not a readable DICOM file ({type(error).__name__})") from None


def read_layout(data: bytes) -> Layout:
    """Where the top-level elements of a DICOM file lie, up to its pixel data, read as
    `read_header` reads them. A deflated file is refused: its bytes are not its elements."""
    buffer = memoryview(data)
    try:
        meta, position, syntax_uid = _read_start(buffer)
        if syntax_uid == DEFLATED_EXPLICIT_VR_LITTLE_ENDIAN:
            raise UnreadableHeader("a deflated file (its dataset is compressed as a whole)")
        syntax = _dataset_syntax(buffer, position, syntax_uid)
        spans: list[Span] = []
        _read_dataset(buffer, position, len(buffer), syntax, (), (), [], top=True, spans=spans)
    except (struct.error, IndexError, UnicodeDecodeError, RecursionError) as error:
        raise UnreadableHeader(f"not a readable DICOM file ({type(error).__name__})") from None
    return Layout(data, not syntax.explicit, syntax.order == "<", {span.tag: span for span in spans},
                  spans[-1].end if spans else position)


def _read(data: bytes, buffer: memoryview) -> Header:
    meta, position, syntax_uid = _read_start(buffer)
    deflated = syntax_uid == DEFLATED_EXPLICIT_VR_LITTLE_ENDIAN
    if deflated:
        data = data[:position] + zlib.decompress(data[position:], -zlib.MAX_WBITS)
        buffer = memoryview(data)
    syntax = _dataset_syntax(buffer, position, syntax_uid)
    elements: list[Element] = []
    end = _read_dataset(buffer, position, len(buffer), syntax, (), (), elements, top=True)
    after = _past_pixel_data(buffer, end, syntax)
    if deflated:  # offsets in the inflated bytes: none for the file's own (blanking uses those)
        return Header(elements, meta, data[:end], None, Inflated(data, after))
    return Header(elements, meta, data[:end], after)


def _read_start(buffer: memoryview) -> tuple[list[Element], int, str | None]:
    """The file meta information, where the dataset starts, and the transfer syntax declared."""
    position = 132 if buffer[128:132] == b"DICM" else 0
    meta: list[Element] = []
    if buffer[position:position + 2] == b"\x02\x00":
        position = _read_meta(buffer, position, meta)
    syntax_uid = next((e.values[0] for e in meta if e.tag == TRANSFER_SYNTAX_UID and e.values), None)
    return meta, position, syntax_uid


#: The transfer syntaxes whose dataset is not in explicit VR little endian (deflated once inflated).
_DECLARED = {IMPLICIT_VR_LITTLE_ENDIAN: _IMPLICIT_LE, EXPLICIT_VR_BIG_ENDIAN: _EXPLICIT_BE}


def _dataset_syntax(buffer: memoryview, position: int, syntax_uid: str | None) -> _Syntax:
    """How the dataset at `position` is read: as declared, unless its first element shows otherwise."""
    return _as_written(buffer, position, _DECLARED.get(syntax_uid, _EXPLICIT_LE), guess_order=syntax_uid is None)


def _past_pixel_data(buffer: memoryview, end: int, syntax: _Syntax) -> int | None:
    """The offset after the value of the pixel data element whose header ends at `end`, where the
    top-level scan stopped (its fragments too, if encapsulated); None if that is not what ends
    there, or its value cannot be followed."""
    start = end - (12 if syntax.explicit else 8)  # pixel data's VRs (OB, OW, OF, OD) are long ones
    if start < 0:
        return None
    try:
        group, number = struct.unpack_from(syntax.order + "HH", buffer, start)
        if (group << 16) | number not in PIXEL_TAGS:
            return None
        length = syntax.long_length(buffer, end - 4)[0]
        if length == _UNDEFINED:
            return _skip_fragments(buffer, end, syntax)
        return end + length if end + length <= len(buffer) else None
    except (struct.error, UnreadableHeader):  # not followable: the caller then searches the whole tail
        return None


def _as_written(buffer: memoryview, position: int, declared: _Syntax, guess_order: bool) -> _Syntax:
    """The encoding the first element shows, where it contradicts the declared one (or there is
    none): as pydicom and DCMTK do, a file that says explicit VR but is written in implicit VR
    is read as written."""
    if position + 8 > len(buffer):
        return declared
    if bytes(buffer[position + 4:position + 6]) not in VRS:
        return _IMPLICIT_LE
    if guess_order:  # no meta information: the first group is small (0008), whichever the order
        little, big = struct.unpack_from("<H", buffer, position)[0], struct.unpack_from(">H", buffer, position)[0]
        return _EXPLICIT_BE if big < little else _EXPLICIT_LE
    return declared if declared.explicit else _EXPLICIT_LE


def _read_meta(buffer: memoryview, position: int, meta: list[Element]) -> int:
    """The group 0002 elements (always explicit VR little endian); answers where the dataset starts."""
    end = len(buffer)
    while position + 8 <= end:
        group, element, vr, length = _EXPLICIT_LE.explicit_header(buffer, position)
        if group != 0x0002:
            break
        position += 8
        if vr in LONG_VRS:
            length = _EXPLICIT_LE.long_length(buffer, position)[0]
            position += 4
        if position + length > end:
            raise UnreadableHeader("a file meta element runs past the end of the file")
        meta.append(Element(Path.top((group << 16) | element), vr.decode("ascii", "replace"),
                            buffer[position:position + length]))
        position += length
    return position


def _read_dataset(buffer: memoryview, position: int, end: int, syntax: _Syntax, steps: tuple,
                  encodings: tuple[str, ...], out: list[Element], top: bool = False,
                  spans: list[Span] | None = None) -> int:
    """Reads elements from `position` to `end`, or to the item delimiter of an item of undefined
    length; answers the position after what it read. Given `spans` (read_layout), where each
    element lies goes there instead of an Element to `out` (read_header pays one test per element)."""
    implicit = not syntax.explicit
    while position + 8 <= end:  # a few stray bytes at the end are ignored, as pydicom does
        start = position
        if implicit:
            group, number, length = syntax.tag_length(buffer, position)
            position += 8
            vr = None
        else:
            group, number, raw_vr, length = syntax.explicit_header(buffer, position)
            if group == 0xFFFE:  # an item delimiter has no VR: its length is 4 bytes
                length = syntax.long_length(buffer, position + 4)[0]
                position += 8
                vr = None
            elif raw_vr in LONG_VRS:
                length = syntax.long_length(buffer, position + 8)[0]
                position += 12
                vr = VRS[raw_vr]
            else:
                position += 8
                vr = VRS.get(raw_vr) or raw_vr.decode("ascii", "replace")
                if not vr.isalpha() or not vr.isupper():  # an unknown VR is read as a short one
                    raise UnreadableHeader("an element has no valid VR")
        tag = (group << 16) | number
        if tag == ITEM_END:
            return position
        if group == 0xFFFE:
            raise UnreadableHeader("an item tag outside a sequence")
        if top and tag in PIXEL_TAGS:
            return position
        if vr is None:
            vr = implicit_vr(tag)
        if vr == "SQ" or length == _UNDEFINED:
            position = _read_nested(buffer, start, position, length, syntax, steps, tag, vr, encodings, out, spans)
            continue
        if position + length > len(buffer):
            raise UnreadableHeader("an element runs past the end of the file")
        if spans is not None:  # read_layout's walk: where it lies, not what it holds
            spans.append(Span(tag, vr, start, position, position + length))
            position += length
            continue
        value = buffer[position:position + length]
        position += length
        if tag == PIXEL_DATA:
            continue  # nested pixel data (an icon): never read
        element = Element(make_path(steps, tag), vr, value, syntax, encodings)
        if tag == SPECIFIC_CHARACTER_SET:
            encodings = _encodings(element)
            element._encodings = encodings
        out.append(element)
    return position


def _read_nested(buffer: memoryview, start: int, position: int, length: int, syntax: _Syntax, steps: tuple,
                 tag: int, vr: str, encodings: tuple[str, ...], out: list[Element],
                 spans: list[Span] | None) -> int:
    """A sequence (of either length) or an encapsulated value (of undefined length), whose value
    starts at `position`; answers the position after it."""
    if vr == "SQ" or not syntax.explicit or vr == "UN":
        # In implicit VR, an element of undefined length is a sequence; so is a UN of
        # undefined length in explicit VR, its items then in implicit VR (PS3.5 6.2.2).
        inner = _IMPLICIT_LE if vr == "UN" and syntax.explicit else syntax
        items: list[tuple[Span, ...]] | None = None if spans is None else []
        end = _read_items(buffer, position, length, inner, steps, tag, encodings, out, items)
        if spans is not None:
            spans.append(Span(tag, vr, start, position, end, tuple(items or ())))
        return end
    end = _skip_fragments(buffer, position, syntax)  # an encapsulated value (OB/OW): its fragments, skipped
    if spans is not None:
        spans.append(Span(tag, vr, start, position, end))
    elif tag != PIXEL_DATA:
        out.append(Element(make_path(steps, tag), vr, buffer[position:end], syntax, encodings))
    return end


def _read_items(buffer: memoryview, position: int, length: int, syntax: _Syntax, steps: tuple,
                tag: int, encodings: tuple[str, ...], out: list[Element],
                spans: list[tuple[Span, ...]] | None = None) -> int:
    """The items of a sequence; answers the position after the sequence. Each item's elements'
    spans go to `spans`, if given."""
    stop = len(buffer) if length == _UNDEFINED else position + length
    if stop > len(buffer):
        raise UnreadableHeader("a sequence runs past the end of the file")
    index = 0
    while position < stop:
        group, number, item_length = syntax.tag_length(buffer, position)
        position += 8
        item_tag = (group << 16) | number
        if item_tag == SEQUENCE_END:
            break
        if item_tag != ITEM:
            raise UnreadableHeader("a sequence holds something other than items")
        item_steps = steps + ((tag, index),)
        item: list[Span] | None = None if spans is None else []
        if item_length == _UNDEFINED:
            position = _read_dataset(buffer, position, stop, syntax, item_steps, encodings, out, spans=item)
        else:
            if position + item_length > stop:
                raise UnreadableHeader("an item runs past the end of its sequence")
            _read_dataset(buffer, position, position + item_length, syntax, item_steps, encodings, out, spans=item)
            position += item_length
        if spans is not None:
            spans.append(tuple(item or ()))
        index += 1
    return position


def _skip_fragments(buffer: memoryview, position: int, syntax: _Syntax) -> int:
    """Past the items of an encapsulated value and its sequence delimiter."""
    while True:
        group, number, length = syntax.tag_length(buffer, position)
        position += 8
        if (group << 16) | number == SEQUENCE_END:
            return position
        if (group << 16) | number != ITEM or position + length > len(buffer):
            raise UnreadableHeader("a malformed encapsulated value")
        position += length


def _encodings(element: Element) -> tuple[str, ...]:
    """Python codecs for a SpecificCharacterSet element."""
    terms = list(bytes(element._raw).decode("ascii", "replace").split("\\"))
    terms = [t.strip(" \x00") for t in terms]
    try:
        return tuple(convert_encodings(terms if any(terms) else None))
    except Exception:  # an unknown character set: pydicom's default
        return tuple(convert_encodings(None))
