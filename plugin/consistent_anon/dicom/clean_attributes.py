"""Which attributes the Clean options of PS3.15 keep and clean: those the standard's Table E.1-1
marks "C" in the option's column (clean_attributes.json, derived by scripts/derive_clean_table.py).
A repeating group's row (Overlay Comments, 60XX,4000) covers every group of its range."""
from __future__ import annotations

import json
from pathlib import Path as FilePath

from .vocabulary import Path, is_private

_TABLE = json.loads(FilePath(__file__).with_name("clean_attributes.json").read_text())
#: The options that clean, by their names in a request (PS3.16 CID 7050 codes in the docs).
CLEAN_OPTIONS = ("CleanDescriptors", "CleanStructuredContent", "CleanGraphics")


def _mask(row: str) -> tuple[int, int]:
    """(mask, value) of a row: X digits match any digit."""
    return (int("".join("0" if c == "X" else "F" for c in row), 16), int(row.replace("X", "0"), 16))


class CleanedAttributes:
    """The attributes the given options clean (none without a Clean option)."""

    def __init__(self, options: frozenset[str] | set[str]) -> None:
        rows = [(option, row) for option in CLEAN_OPTIONS if option in options for row in _TABLE[option]]
        self._exact = {int(row, 16): option for option, row in rows if "X" not in row}
        self._masked = [(_mask(row), option) for option, row in rows if "X" in row]  # a few repeating groups

    def __bool__(self) -> bool:
        return bool(self._exact or self._masked)

    def option_of(self, tag: int) -> str | None:
        """The option that cleans a tag, None if none of these does. Private tags never."""
        if is_private(tag):
            return None
        option = self._exact.get(tag)
        if option is not None:
            return option
        return next((option for (mask, value), option in self._masked if tag & mask == value), None)

    def covers(self, path: Path) -> bool:
        """Whether an element is cleaned: its attribute, or a sequence holding it, is one the
        options clean (the text items of a kept Content Sequence, of a Graphic Annotation)."""
        steps, tag = path
        return any(self.option_of(t) is not None for t in (tag, *(sequence for sequence, _ in steps)))


#: Every attribute any Clean option cleans: which option to name where an identifier is refused.
ANY_CLEAN_OPTION = CleanedAttributes(frozenset(CLEAN_OPTIONS))
