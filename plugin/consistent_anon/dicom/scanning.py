"""Header scanning: where the UIDs and the text of a DICOM file are, with their full paths.

One scanner serves both the fail-closed check of each anonymized file and the verification of
a whole anonymized set, so both see exactly the same attributes (read by `filereader`, which
never reads pixel data).
"""
from __future__ import annotations

import re
from typing import Iterable, Iterator

import pydicom

from .filereader import Element, Header
from .uid_attributes import is_well_known
from .vocabulary import COMMON_WORDS, Path, Tag, is_private
_UID_TOKEN = re.compile(r"[0-9]+(?:\.[0-9]+)+")
_UID_TOKEN_BYTES = re.compile(rb"[0-9]+(?:\.[0-9]+)+")
#: Digits and dots written in UTF-16: a run of them (either byte order, which differ by one byte
#: of alignment), and the shortest sign that one may be there.
_UTF16_RUN = re.compile(rb"(?:[0-9.]\x00){3,}[0-9.]?")
_UTF16_HINT = re.compile(rb"[0-9]\x00\.\x00[0-9]")
#: A run of digits and dots: where a UID written in ASCII stands.
_DIGITS_AND_DOTS = re.compile(rb"[0-9.]+")
#: The first characters of a UID, its root (an organization's prefix): a UID is in the bytes
#: only if its root is, and a few roots are searched faster than the runs of digits are cut.
_ROOT_LENGTH = 16
_MAX_ROOTS = 8
#: Up to this many UIDs (an instance's own) are searched one by one, each in one pass of C;
#: more (a whole set's) by cutting the runs of digits, whose cost does not grow with their number.
_SEARCHED_ONE_BY_ONE = 64


def values_of(value: str) -> tuple[str, ...]:
    """A value written as in a request (backslash-separated) as a tuple, without DICOM padding."""
    text = str(value).rstrip("\x00 ")
    return tuple(text.split("\\")) if text else ()


#: A value that is a UID of its own (PS3.5 9.1): a root arc 0, 1 or 2, at least three arcs, no
#: leading zero, at most 64 characters; and at least 8 of them, so that a version ("1.2.3") is none.
_WHOLE_UID = re.compile(r"[0-2](?:\.(?:0|[1-9][0-9]*)){2,}")


def is_uid_value(value: str) -> bool:
    """Whether a value, whatever its element's VR, is a valid UID of its own."""
    return 8 <= len(value) <= 64 and _WHOLE_UID.fullmatch(value) is not None


def _holds_uids(element: Element) -> bool:
    """A private element of VR UI, or a private or unknown (UN) element of another VR whose every
    value is a UID (a vendor's copy of a frame of reference, read in implicit VR)."""
    if element.vr == "UI":
        return is_private(element.tag)
    return (is_private(element.tag) or element.vr == "UN") and bool(element.values) \
        and all(is_uid_value(value) for value in element.values)


def instance_uids(header: Header, uid_tags: frozenset[int]) -> dict[str, int]:
    """The UIDs that identify something of the instance, each with the attribute holding it (a
    root one rather than a reference): the values of the UID attributes at any depth, and of
    private or unknown elements holding UIDs (`_holds_uids`), except a value that also stands in
    a public UI attribute the plugin does not map (a SOP class, a coding scheme: a constant, not
    an identity). UIDs under the DICOM root are never identities."""
    constants = {v for e in header.elements if e.vr == "UI" and e.tag not in uid_tags and not is_private(e.tag)
                 for v in e.values}
    found: dict[str, int] = {}
    for element in header.elements:
        mapped = element.tag in uid_tags
        if not mapped and not _holds_uids(element):
            continue
        for value in element.values:
            if value and not is_well_known(value) and (mapped or value not in constants) \
                    and (not element.path[0] or value not in found):
                found[value] = element.tag
    return found


def rewrite_uids(text: str, wanted: set[str], targets: dict[str, str]) -> str:
    """The text with each whole token of `wanted` replaced by its target."""
    return _UID_TOKEN.sub(lambda m: targets[m.group(0)] if m.group(0) in wanted else m.group(0), text)


def uid_tokens(text: str) -> set[str]:
    """Dotted-decimal tokens of a text: the candidates for a UID written into free text."""
    return set(_UID_TOKEN.findall(text))


def _utf16_tokens(data: bytes) -> set[bytes]:
    """Dotted-decimal tokens written in UTF-16 (either byte order), as ASCII bytes."""
    return {token for run in _UTF16_RUN.findall(data)
            for token in _UID_TOKEN_BYTES.findall(run.replace(b"\x00", b""))}


class UidNeedles:
    """UIDs to search for in files' bytes, prepared once for many files: the cost of a search
    then grows with the file, not with the number of UIDs (a whole set's source UIDs are
    searched in each of its anonymized files).

    A UID of digits and dots that stands in the bytes stands inside one of their runs of digits
    and dots at least as long as it: each such run is cut, at every offset, to each length the
    UIDs have, and the piece looked up. Where the UIDs have few roots, a file that holds none of
    them is settled first, in one search per root. A few UIDs (one instance's), and a UID with
    other characters (malformed), are searched as they are.
    """

    def __init__(self, wanted: Iterable[str]) -> None:
        self.wanted = frozenset(wanted)
        self.encoded = frozenset(uid.encode("ascii", "replace") for uid in self.wanted)
        self._dotted = frozenset(uid for uid in self.encoded if _DIGITS_AND_DOTS.fullmatch(uid))
        self._other = self.encoded - self._dotted
        self._lengths = sorted({len(uid) for uid in self._dotted})
        self._runs = re.compile(rb"[0-9.]{%d,}" % self._lengths[0]) if self._lengths else None
        roots = {uid[:_ROOT_LENGTH] for uid in self._dotted}
        self._roots = roots if len(roots) <= _MAX_ROOTS else None

    def in_bytes(self, data: bytes) -> bool:
        """Whether any of the UIDs may be somewhere in the file's bytes (pixel data and what
        follows it included, where the header scan does not look), in ASCII (which every
        character set DICOM declares writes digits in) or in UTF-16."""
        if self._runs is not None and (self._roots is None or any(root in data for root in self._roots)) \
                and self._in_ascii(data):
            return True
        if any(uid in data for uid in self._other):
            return True
        return _UTF16_HINT.search(data) is not None and not self.encoded.isdisjoint(_utf16_tokens(data))

    def _in_ascii(self, data: bytes) -> bool:
        if len(self._dotted) <= _SEARCHED_ONE_BY_ONE:
            return any(uid in data for uid in self._dotted)
        return any(self._in_run(run) for run in self._runs.findall(data))

    def _in_run(self, run: bytes) -> bool:
        return any(run[start:start + length] in self._dotted for length in self._lengths
                   for start in range(len(run) - length + 1))


def whole_uid_in_bytes(data: bytes, wanted: set[str] | frozenset[str]) -> bool:
    """Whether any of `wanted` stands in the file's bytes as a whole dotted-decimal token (not as
    the start of a longer UID), in ASCII or UTF-16: for the places the header scan does not reach."""
    needles = UidNeedles(wanted)
    if not needles.in_bytes(data):
        return False
    tokens = set(_UID_TOKEN_BYTES.findall(data)) | _utf16_tokens(data)
    return not needles.encoded.isdisjoint(tokens)


def find_uids(header: Header, wanted: UidNeedles | set[str] | frozenset[str]) -> list[tuple[Element, str]]:
    """Where any of `wanted` appears, as a value or inside text (in any reading of the element:
    UTF-16 included), anywhere in the dataset and its meta.

    A UID that is nowhere in the header's bytes is in no element either, which settles most
    files without decoding a value.
    """
    needles = wanted if isinstance(wanted, UidNeedles) else UidNeedles(wanted)
    if not needles.in_bytes(header.searchable):
        return []
    found = []
    for element in header.all_elements():
        tokens = set().union(*(uid_tokens(text) for text in element.readings()))
        found.extend((element, token) for token in sorted(tokens & needles.wanted))
    return found


#: Value representations that cannot hold identifying text: numbers, binary numbers, UIDs (the
#: UIDs are searched by `find_uids`, token by token), times and ages.
_NOT_TEXT_VRS = frozenset({"UI", "US", "SS", "UL", "SL", "UV", "SV", "FL", "FD", "AT", "OF", "OD",
                           "DS", "IS", "TM", "AS", "US or SS"})
#: Numbers shorter than this are found only as an element's whole value: a short number is
#: everywhere (a year, a count, a series number).
MIN_WORD = 5
#: Texts shorter than this are found only as an element's whole value ("MR", "Dr").
MIN_TEXT = 3
#: The PatientName the plugin writes (pseudonyms.Pseudonymizer.patient_name).
PSEUDONYMOUS_NAME = re.compile(r"(?<![0-9A-Za-z])Anonymized-[0-9A-F]{10}(?![0-9A-Za-z])")
#: What Clean Descriptors writes in place of an identifier (identifiers.MARKER): no identifier.
MARKER = "[removed]"
#: Texts the plugin writes, never searched: blanked (same length) before a search.
_WRITTEN = re.compile(PSEUDONYMOUS_NAME.pattern + "|" + re.escape(MARKER))
#: A letter of any script: a word character that is neither a digit nor "_".
_LETTER = r"[^\W\d_]"
#: A text without letters, from a digit to a digit (a date, a date-time): no case to ignore.
_NUMBER = re.compile(r"[0-9](?:[0-9.+-]*[0-9])?")
#: Up to this many numbers are searched in the pattern with the other texts; more (a set's
#: date-times) where a number starts.
_NUMBERS_IN_PATTERN = 64
#: Where such a text may start as a whole word: not inside a run of digits.
_NUMBER_START = re.compile(r"(?<![0-9])[0-9]")
_DIGIT = re.compile(r"[0-9]")


def _class_of(character: str) -> str | None:
    """The run a text's end character belongs to, as a pattern: letters, digits, or none (a
    separator, which is a boundary by itself)."""
    if "0" <= character <= "9":
        return "[0-9]"
    return _LETTER if character.isalpha() else None


def _as_word(text: str) -> str:
    """The pattern of a text found as a word: not inside a run of letters or of digits, so that
    "_", "-", ".", "/", "\\", spaces and a change between letters and digits bound it ("MRN7734125"
    holds 7734125, "TESTIS" does not hold TEST)."""
    before, after = _class_of(text[0]), _class_of(text[-1])
    return ((f"(?<!{before})" if before else "") + re.escape(text) + (f"(?!{after})" if after else ""))


def whole_value_only(text: str) -> bool:
    """Whether a text is found only as an element's whole value, never inside a longer text:
    shorter than MIN_TEXT, a common word (vocabulary.COMMON_WORDS), or a number shorter than
    MIN_WORD."""
    return len(text) < MIN_TEXT or text.lower() in COMMON_WORDS or (text.isdigit() and len(text) < MIN_WORD)


class TextFinder:
    """Finds given texts (case-insensitive) in any textual element, private and unknown (UN, OB)
    ones included: as a word inside a longer text (`_as_word`), or, for the texts
    `whole_value_only` names, as the whole value of an element. `needles` maps each text to a
    label. The plugin's own pseudonymous name and the cleaning's marker are never searched.

    Texts are searched with one pattern of them all, except many numbers (the dates of a set, one
    per instance where each has its own acquisition date-time): a pattern of alternatives tries
    each at every place, so those are looked up by length where a number starts, at a cost that
    does not grow with their count."""

    def __init__(self, needles: dict[str, str]) -> None:
        self._labels = {text.lower(): label for text, label in needles.items() if text}
        self._whole = {text for text in self._labels if whole_value_only(text)}
        words = sorted((t for t in self._labels if t not in self._whole), key=len, reverse=True)
        numbers = [text for text in words if _NUMBER.fullmatch(text)]
        self._numbers = frozenset(numbers if len(numbers) > _NUMBERS_IN_PATTERN else ())
        self._number_lengths = sorted({len(text) for text in self._numbers}, reverse=True)
        others = [text for text in words if text not in self._numbers]
        self._pattern = re.compile("|".join(map(_as_word, others)), re.IGNORECASE) if others else None

    def label(self, text: str) -> str:
        """The label of a text found (lower case)."""
        return self._labels.get(text.lower(), "text")

    def find(self, header: Header) -> list[tuple[Element, str]]:
        """(element, label) for every element holding one of the texts."""
        return sorted({(element, label) for element, label, _ in self.matches(header)},
                      key=lambda found: (found[0].path, found[1]))

    def matches(self, header: Header) -> list[tuple[Element, str, str]]:
        """(element, label, the text found, lower case) for every text in every element, in any
        reading of its bytes (UTF-8, UTF-16, the declared character set)."""
        if self._pattern is None and not self._numbers and not self._whole:
            return []
        found: set[tuple[Element, str, str]] = set()
        for element in header.all_elements():
            if element.vr in _NOT_TEXT_VRS:
                continue
            for reading in element.readings():
                for value in reading.split("\\"):
                    found.update((element, self.label(text), text) for _, _, text in self.spans(value))
        return sorted(found, key=lambda match: (match[0].path, match[1], match[2]))

    def spans(self, value: str) -> list[tuple[int, int, str]]:
        """(start, end, the text found, lower case) of every text in one value: the whole value,
        or the words; leftmost first, the longest where several start at the same place."""
        if "Anonymized-" in value or MARKER in value:
            value = _WRITTEN.sub(lambda match: " " * len(match.group(0)), value)
        whole = value.strip(" \x00")
        if whole.lower() in self._whole:
            start = value.index(whole)
            return [(start, start + len(whole), whole.lower())]
        found = [(m.start(), m.end(), m.group(0).lower()) for m in self._pattern.finditer(value)] \
            if self._pattern is not None else []
        found.extend(self._numbers_in(value))
        return sorted(found)

    def _numbers_in(self, value: str) -> Iterator[tuple[int, int, str]]:
        if not self._numbers or not _DIGIT.search(value):
            return
        end = 0
        for start in _NUMBER_START.finditer(value):
            begin = start.start()
            if begin < end:
                continue
            for length in self._number_lengths:
                piece = value[begin:begin + length]
                if piece in self._numbers and not _DIGIT.match(value, begin + len(piece)):
                    end = begin + len(piece)
                    yield begin, end, piece
                    break


def describe(path: Path) -> str:
    """A path for people: keywords where pydicom knows them."""
    def name(tag: int) -> str:
        keyword = pydicom.datadict.keyword_for_tag(tag)
        return keyword or Tag(tag).parenthesized()
    steps, tag = path
    return ".".join([f"{name(seq)}[{index}]" for seq, index in steps] + [name(tag)])


def request_name(path: Path) -> str:
    """A path as a caller writes it in Keep/Replace/Remove: keywords where pydicom knows them,
    `gggg,eeee` otherwise (private tags)."""
    def name(tag: int) -> str:
        return pydicom.datadict.keyword_for_tag(tag) or str(Tag(tag))
    steps, tag = path
    return ".".join([f"{name(seq)}[{index}]" for seq, index in steps] + [name(tag)])
