"""Verify's reading of the text burned into anonymized pixels, matched against the source's identifiers.

Optional (docs/pixels.md): the text is read by a service of its own (ocr/text_service.py, set as
PixelTextReader), from Orthanc's rendering of each frame; here, which frames are read, and what in
the lines read is a source identifier. The identifier model is the header check's
(dicom/identifiers.py: names in either order, IDs, dates in the formats free text uses), with
what text recognition imposes:
- it drops spaces ("DOE,JOHN MRN7734125" comes back as "DOE,JOHNMRN7734125") and accents
  ("MÜLLER" as "MULLER"): identifiers are compared in capitals, without accents, spaces or
  punctuation, on both sides;
- it mistakes letters for digits in numbers ("MRNO012345" for MRN0012345, "A1234S" for A12345):
  identifiers that hold digits are compared with O, Q read as 0, I, L as 1, S as 5, B as 8, Z as 2;
- it splits a line into boxes: each line is searched alone and joined with the next;
- screens write dates in more ways than free text does ("05-MAR-1962", "3/5/1962", "05.03.62").
Identifiers too short to be searched without their spaces are found as numbers standing alone
("ID:4711"), or, for words, as words of the line, as in headers (the shortest and the common ones
only where they are the whole line).
"""
from __future__ import annotations

import re
import unicodedata
from dataclasses import dataclass, field
from typing import Any, Callable

from ..dicom.scanning import TextFinder
from ..errors import BadRequest, PluginError
from .pixel_report import LISTED  # the report lists at most this many leaks and unread instances

#: What a verify request asks to read (member "PixelText"): the instances the pixel gate did not
#: find plainly not at risk, every anonymized instance, or none.
AT_RISK, ALL, NONE = "AtRisk", "All", "None"
SCOPES = (AT_RISK, ALL, NONE)
#: Identifiers at least this long (letters and digits only) are searched without their spaces.
MIN_SQUASHED = 5
#: Numbers shorter than that are searched standing alone from this length on.
MIN_NUMBER = 3
_NOT_LETTER_OR_DIGIT = re.compile(r"[\W_]+")
_DATE = re.compile(r"^(\d{4})(\d{2})(\d{2})$")
#: Letters text recognition reads for digits.
_AS_DIGITS = str.maketrans("OQILSBZ", "0011582")
_MONTHS = ("JAN", "FEB", "MAR", "APR", "MAY", "JUN", "JUL", "AUG", "SEP", "OCT", "NOV", "DEC")


class TextReaderError(Exception):
    """The text reader could not read a frame (down, too slow, or an answer not understood);
    `unavailable`: it could not be reached at all (the frames after are not sent to it)."""

    def __init__(self, message: str, unavailable: bool = False) -> None:
        super().__init__(message)
        self.unavailable = unavailable


@dataclass(frozen=True)
class TextLine:
    """One line of text read in a frame, and where: x0, y0, x1, y1 in the frame's pixels."""
    text: str
    box: tuple[int, int, int, int]


@dataclass(frozen=True)
class TextReading:
    """How verify reads text in pixels: `read` turns an image into its lines (text_reader.py)."""
    read: Callable[[bytes], list[TextLine]]
    frames_per_instance: int


def _plain(text: str) -> str:
    """Capitals without accents."""
    return "".join(c for c in unicodedata.normalize("NFKD", text) if not unicodedata.combining(c)).upper()


def squashed(text: str) -> str:
    """Capitals without accents, spaces or punctuation: letters and digits only."""
    return _NOT_LETTER_OR_DIGIT.sub("", _plain(text))


def screen_dates(date: str) -> set[str]:
    """A YYYYMMDD date as screens write it, without separators: day, month and year in the three
    orders, with and without leading zeros, two-digit years, month names (at least 6 characters:
    shorter forms would be found in any number)."""
    match = _DATE.match(date)
    if match is None or not (1800 <= int(match[1]) < 2200 and 1 <= int(match[2]) <= 12 and 1 <= int(match[3]) <= 31):
        return set()  # not a date, or another order of one (its YYYYMMDD form gives the variants)
    y, m, d = match.groups()
    month = _MONTHS[int(m) - 1]
    forms = set()
    for day, mon in ((d, m), (d.lstrip("0"), m.lstrip("0"))):
        for year in (y, y[2:]):
            forms |= {day + mon + year, mon + day + year}
        forms |= {y + mon + day, day + month + y, month + day + y, day + month + y[2:], y + month + day}
    return {form for form in forms if len(form) >= 6}


@dataclass(frozen=True)
class PixelLeak:
    """Where a line (or two lines joined) holds source identifiers, by label."""
    box: tuple[int, int, int, int]
    labels: frozenset[str]


class PixelTextFinder:
    """The source identifiers (text -> label, as dicom/identifiers.py gives them) in lines read."""

    def __init__(self, needles: dict[str, str]) -> None:
        self._letters: dict[str, str] = {}  # squashed identifiers of letters only
        self._with_digits: dict[str, str] = {}  # squashed identifiers holding digits, letters read as digits
        self._numbers: dict[str, str] = {}
        short: dict[str, str] = {}
        for text, label in needles.items():
            whole = squashed(text)
            for key in {whole, *screen_dates(whole)}:
                if len(key) >= MIN_SQUASHED and _has_digit(key):
                    self._with_digits.setdefault(key.translate(_AS_DIGITS), label)
                elif len(key) >= MIN_SQUASHED:
                    self._letters.setdefault(key, label)
                elif key.isdigit() and len(key) >= MIN_NUMBER:
                    self._numbers.setdefault(key, label)
                elif key:
                    short[text] = label
        self._words = TextFinder(short)
        numbers = sorted(self._numbers, key=len, reverse=True)
        self._number_pattern = re.compile(f"(?<![0-9])({'|'.join(numbers)})(?![0-9])") if numbers else None

    def labels(self, line: str) -> set[str]:
        """The labels of the identifiers the line holds (never the identifiers themselves)."""
        key = squashed(line)
        as_digits = key.translate(_AS_DIGITS)
        found = {label for needle, label in self._letters.items() if needle in key}
        found |= {label for needle, label in self._with_digits.items() if needle in as_digits}
        if self._number_pattern is not None:
            spaced = _plain(line).translate(_AS_DIGITS)
            found |= {self._numbers[match.group(1)] for match in self._number_pattern.finditer(spaced)}
        return found | {self._words.label(text) for _, _, text in self._words.spans(line)}

    def leaks(self, lines: list[TextLine]) -> list[PixelLeak]:
        """The identifiers in each line, and those found only once a line is joined with the next
        (an identifier split into two boxes), with the box around both."""
        alone = [self.labels(line.text) for line in lines]
        found = [PixelLeak(line.box, frozenset(labels)) for line, labels in zip(lines, alone) if labels]
        for index, (first, second) in enumerate(zip(lines, lines[1:])):
            joined = self.labels(first.text + second.text) - alone[index] - alone[index + 1]
            if joined:
                found.append(PixelLeak(_around(first.box, second.box), frozenset(joined)))
        return found


def _has_digit(text: str) -> bool:
    return any(c.isdigit() for c in text)


def _around(a: tuple[int, int, int, int], b: tuple[int, int, int, int]) -> tuple[int, int, int, int]:
    return min(a[0], b[0]), min(a[1], b[1]), max(a[2], b[2]), max(a[3], b[3])


def parse_scope(document: dict[str, Any]) -> str | None:
    """The request's "PixelText", or None where it says nothing (`scope_for` decides)."""
    scope = document.get("PixelText")
    if scope is not None and scope not in SCOPES:
        raise BadRequest(f'Member "PixelText" should be one of {", ".join(SCOPES)}')
    return scope


def scope_for(requested: str | None, reading: TextReading | None) -> str:
    """AtRisk by default where a text reader is set, None where not; asking for it without one is an error."""
    if reading is None:
        if requested not in (None, NONE):
            raise BadRequest('"PixelText" needs a text reader: set ConsistentAnonymization.PixelTextReader '
                             '(docs/pixels.md)')
        return NONE
    return AT_RISK if requested is None else requested


def frames_to_read(count: int, limit: int) -> list[int]:
    """Every frame up to `limit`, or `limit` of them spread evenly, the first and last among them."""
    if count <= limit:
        return list(range(count))
    if limit == 1:
        return [0]
    return sorted({round(index * (count - 1) / (limit - 1)) for index in range(limit)})


@dataclass
class PixelTextReport:
    """What was read, the identifiers found in it (instance, frame, label, where), and what could not be read."""
    scope: str
    without_pixels: int = 0  # instances of the scope with no pixel data (a document, a report): nothing to read
    instances: int = 0
    frames: int = 0
    frames_skipped: int = 0  # frames of the instances read that FramesPerInstance left unread
    leaks: list[dict[str, Any]] = field(default_factory=list)
    leaks_count: int = 0
    unread: list[dict[str, str]] = field(default_factory=list)
    unread_count: int = 0

    @property
    def clean(self) -> bool:
        return not self.leaks_count and not self.unread_count

    def add_leak(self, instance_id: str, frame: int, leak: PixelLeak) -> None:
        for label in sorted(leak.labels):
            self.leaks_count += 1
            if len(self.leaks) < LISTED:
                self.leaks.append({"Instance": instance_id, "Frame": frame, "Label": label, "Box": list(leak.box)})

    def add_unread(self, instance_id: str, reason: str) -> None:
        self.unread_count += 1
        if len(self.unread) < LISTED:
            self.unread.append({"Instance": instance_id, "Reason": reason})

    def answer(self) -> dict[str, Any]:
        return {"Scope": self.scope, "InstancesWithoutPixels": self.without_pixels,
                "InstancesRead": self.instances, "FramesRead": self.frames,
                "FramesNotRead": self.frames_skipped,
                "Leaks": self.leaks, "LeaksCount": self.leaks_count,
                "Unread": self.unread, "UnreadCount": self.unread_count}


def read_instances(instances: dict[str, tuple[int, PixelTextFinder]], image_of: Callable[[str, int], bytes],
                   reading: TextReading, report: PixelTextReport,
                   log: Callable[[str], None] = lambda message: None) -> None:
    """Read `instances` (ID -> its number of frames, and what to search in it) into `report`; an
    instance whose frame cannot be rendered or read is listed unread, and leaves the set not clean.
    Once the reader cannot be reached, the instances left are listed unread without waiting on it."""
    down: TextReaderError | None = None
    for done, (instance_id, (count, finder)) in enumerate(sorted(instances.items()), start=1):
        if down is not None:
            report.add_unread(instance_id, str(down))
            continue
        try:
            _read_instance(instance_id, count, finder, image_of, reading, report)
        except PluginError as error:
            report.add_unread(instance_id, str(error))
        except TextReaderError as error:
            report.add_unread(instance_id, str(error))
            down = error if error.unavailable else None
        if done % 10 == 0 or done == len(instances):
            log(f"verify-anonymization, text in pixels: {done}/{len(instances)} instances read")


def _read_instance(instance_id: str, count: int, finder: PixelTextFinder, image_of: Callable[[str, int], bytes],
                   reading: TextReading, report: PixelTextReport) -> None:
    frames = frames_to_read(count, reading.frames_per_instance)
    for frame in frames:
        for leak in finder.leaks(reading.read(image_of(instance_id, frame))):
            report.add_leak(instance_id, frame, leak)
    report.instances += 1
    report.frames += len(frames)
    report.frames_skipped += count - len(frames)
