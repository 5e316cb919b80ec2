"""The caller's Keep, Replace and Remove as paths, matched against the elements of a header.

Native Orthanc (1.9.4 and later) takes a tag (`StudyInstanceUID`, `0020,000d`) or a path into
sequences (`ReferencedSeriesSequence[0].SeriesInstanceUID`, `Seq[*].Tag`, private tags inside
items) in each of the three members, and applies it at that place only: a path naming a sequence
covers the whole sequence, items and all. The plan follows the same rule, so that the caller's
choice stands exactly where native would apply it.
"""
from __future__ import annotations

import re
from dataclasses import dataclass
from typing import Any

from .vocabulary import CONTENT_SEQUENCE, Path, parse_tag

_STEP = re.compile(r"^(.+)\[(\d+|\*)\]$")
KEEP, REPLACE, REMOVE = "Keep", "Replace", "Remove"


@dataclass(frozen=True)
class TagPath:
    """A tag or a path as written in a request: (sequence tag, item index or None for `[*]`)
    steps, then a tag."""

    steps: tuple[tuple[int, int | None], ...]
    tag: int

    def covers(self, path: Path) -> bool:
        """Whether this names the element at `path`, or a sequence holding it."""
        steps, tag = path
        depth = len(self.steps)
        if depth > len(steps):
            return False
        for (sequence, index), (found, found_index) in zip(self.steps, steps):
            if sequence != found or (index is not None and index != found_index):
                return False
        return self.tag == (tag if depth == len(steps) else steps[depth][0])


def parse_path(name: str) -> TagPath | None:
    """A Keep/Replace/Remove entry as a TagPath; None for what is not a tag or a path."""
    *parents, last = name.strip().split(".")
    if not last.strip():
        return None  # pydicom's dictionary has an entry with an empty keyword
    steps = []
    for part in parents:
        match = _STEP.match(part.strip())
        sequence = parse_tag(match.group(1)) if match else None
        if sequence is None:
            return None
        steps.append((sequence, None if match.group(2) == "*" else int(match.group(2))))
    tag = parse_tag(last)
    return TagPath(tuple(steps), tag) if tag is not None else None


@dataclass(frozen=True)
class CallerPaths:
    """What the caller decided, path by path: each entry with its member and, for Replace, its value."""

    entries: tuple[tuple[TagPath, str, Any], ...]

    @classmethod
    def of(cls, keep: list[str], replace: dict[str, Any], remove: list[str]) -> "CallerPaths":
        """A request's Keep, Replace and Remove members."""
        entries: list[tuple[TagPath, str, Any]] = []
        # Where entries overlap (a path inside a removed sequence), removal wins: the element is
        # gone whatever else is said of it.
        for member, names in ((REMOVE, {name: None for name in remove}), (REPLACE, replace),
                              (KEEP, {name: None for name in keep})):
            for name, value in names.items():
                path = parse_path(name)
                if path is not None:
                    entries.append((path, member, value))
        return cls(tuple(entries))

    def fate(self, path: Path) -> tuple[str, Any] | None:
        """(member, Replace value) of the caller's entry covering `path`, None if none does.

        One exception to native: a Keep of a whole ContentSequence retains the content tree of
        an SR or KOS, which the basic profile removes, and its UIDs still get their pseudonyms, so
        that its references keep pointing at the anonymized images (native leaves them as they
        were). A path to a UID attribute inside it keeps that UID as native does.
        """
        for entry, member, value in self.entries:
            if entry.covers(path):
                if member == KEEP and entry.tag == CONTENT_SEQUENCE and len(entry.steps) < len(path[0]):
                    return None
                return member, value
        return None
