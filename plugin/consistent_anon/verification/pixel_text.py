"""Verify's reading of the text burned into anonymized pixels, matched against the source's identifiers.

Optional (docs/pixels.md): the text is read by a service of its own (ocr/text_service.py, set as
PixelTextReader), from Orthanc's rendering of each frame; here, which frames are read, and what in
the lines read is a source identifier. The identifier model is the header check's
(dicom/identifiers.py: names in either order, IDs, dates in the formats free text uses), with one
difference that text recognition imposes: it often drops the spaces between words ("DOE,JOHN
MRN7734125" comes back as "DOE,JOHNMRN7734125"), so an identifier is searched with spaces and
punctuation removed on both sides; those too short to be searched so (a three-letter family name)
are found only as words, as in headers.
"""
from __future__ import annotations

import re
from dataclasses import dataclass, field
from typing import Any, Callable

from ..dicom.scanning import TextFinder
from ..errors import BadRequest, PluginError

#: What a verify request asks to read (member "PixelText"): the instances the pixel gate did not
#: find plainly not at risk, every anonymized instance, or none.
AT_RISK, ALL, NONE = "AtRisk", "All", "None"
SCOPES = (AT_RISK, ALL, NONE)
#: Identifiers at least this long (letters and digits only) are searched without their spaces.
MIN_SQUASHED = 5
#: The report lists at most this many leaks and unread instances (the counts stay exact).
LISTED = 1000
_NOT_LETTER_OR_DIGIT = re.compile(r"[\W_]+")


class TextReaderError(Exception):
    """The text reader could not read a frame (down, too slow, or an answer not understood)."""


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


def squashed(text: str) -> str:
    return _NOT_LETTER_OR_DIGIT.sub("", text).upper()


class PixelTextFinder:
    """The source identifiers (text -> label, as dicom/identifiers.py gives them) in a line read."""

    def __init__(self, needles: dict[str, str]) -> None:
        self._squashed: dict[str, str] = {}
        short: dict[str, str] = {}
        for text, label in needles.items():
            key = squashed(text)
            if len(key) >= MIN_SQUASHED:
                self._squashed.setdefault(key, label)
            elif key:
                short[text] = label
        self._words = TextFinder(short)

    def labels(self, line: str) -> set[str]:
        """The labels of the identifiers the line holds (never the identifiers themselves)."""
        key = squashed(line)
        found = {label for needle, label in self._squashed.items() if needle in key}
        return found | {self._words.label(text) for _, _, text in self._words.spans(line)}


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
    instances: int = 0
    frames: int = 0
    leaks: list[dict[str, Any]] = field(default_factory=list)
    leaks_count: int = 0
    unread: list[dict[str, str]] = field(default_factory=list)
    unread_count: int = 0

    @property
    def clean(self) -> bool:
        return not self.leaks_count and not self.unread_count

    def add_leaks(self, instance_id: str, frame: int, line: TextLine, labels: set[str]) -> None:
        for label in sorted(labels):
            self.leaks_count += 1
            if len(self.leaks) < LISTED:
                self.leaks.append({"Instance": instance_id, "Frame": frame, "Label": label, "Box": list(line.box)})

    def add_unread(self, instance_id: str, reason: str) -> None:
        self.unread_count += 1
        if len(self.unread) < LISTED:
            self.unread.append({"Instance": instance_id, "Reason": reason})

    def answer(self) -> dict[str, Any]:
        return {"Scope": self.scope, "InstancesRead": self.instances, "FramesRead": self.frames,
                "Leaks": self.leaks, "LeaksCount": self.leaks_count,
                "Unread": self.unread, "UnreadCount": self.unread_count}


def read_instances(instances: dict[str, tuple[int, PixelTextFinder]], image_of: Callable[[str, int], bytes],
                   reading: TextReading, report: PixelTextReport,
                   log: Callable[[str], None] = lambda message: None) -> None:
    """Read `instances` (ID -> its number of frames, and what to search in it) into `report`; an
    instance whose frame cannot be rendered or read is listed unread, and leaves the set not clean."""
    for done, (instance_id, (count, finder)) in enumerate(sorted(instances.items()), start=1):
        try:
            for frame in frames_to_read(count, reading.frames_per_instance):
                for line in reading.read(image_of(instance_id, frame)):
                    report.add_leaks(instance_id, frame, line, finder.labels(line.text))
                report.frames += 1
            report.instances += 1
        except (PluginError, TextReaderError) as error:
            report.add_unread(instance_id, str(error))
        if done % 10 == 0 or done == len(instances):
            log(f"verify-anonymization, text in pixels: {done}/{len(instances)} instances read")
