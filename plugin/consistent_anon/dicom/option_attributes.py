"""The de-identification options of PS3.15 Annex E, read from the table derived from the
standard (scripts/derive_option_table.py): each option's code (CID 7050), the attributes it keeps
(K) and those it keeps cleaned (C), and the safe private attributes (Table E.3.10-1)."""
from __future__ import annotations

import json
import re
from functools import lru_cache
from pathlib import Path

from .filereader import Header
from .vocabulary import CODE_VALUE, DEIDENTIFICATION_METHOD_CODE_SEQUENCE
from .vocabulary import Path as VocabularyPath

_TABLE = json.loads(Path(__file__).with_name("option_attributes.json").read_text())
_OPTIONS: dict = _TABLE["options"]

#: The Basic Application Confidentiality Profile's code and meaning, recorded in every result.
BASIC_PROFILE_CODE: tuple[str, str] = (_TABLE["basic_profile"]["code"], _TABLE["basic_profile"]["meaning"])
#: Option name (as a request names it) -> its CID 7050 code.
OPTION_CODES: dict[str, str] = {name: option["code"] for name, option in _OPTIONS.items()}
#: Option name -> its code's meaning.
OPTION_MEANINGS: dict[str, str] = {name: option["meaning"] for name, option in _OPTIONS.items()}
#: Another name the standard's option has in the plugin: its date shifting ("ShiftDates").
MODIFIED_DATES = "RetainLongitudinalModifiedDates"
SAFE_PRIVATE = "RetainSafePrivate"


def _tags(entries: list[str]) -> frozenset[int]:
    return frozenset(int(tag, 16) for tag in entries if "X" not in tag)


#: Option name -> the attributes Table E.1-1 marks K (kept as they are) under it.
KEPT_TAGS: dict[str, frozenset[int]] = {name: _tags(option["keep"]) for name, option in _OPTIONS.items()}
#: Option name -> the attributes Table E.1-1 marks C (kept, their identifying content cleaned).
CLEANED_TAGS: dict[str, frozenset[int]] = {name: _tags(option["clean"]) for name, option in _OPTIONS.items()}
#: Option name -> the C rows naming a repeating group or a range, as patterns of 8 hex digits.
CLEANED_MASKS: dict[str, tuple[re.Pattern[str], ...]] = {
    name: tuple(re.compile(tag.replace("X", "[0-9A-F]")) for tag in option["clean"] if "X" in tag)
    for name, option in _OPTIONS.items()}

#: (group, element within its block, private creator) of every safe private attribute.
_SAFE_PRIVATE: frozenset[tuple[int, int, str]] = frozenset(
    (int(group, 16), int(element, 16), creator) for group, element, creator in _TABLE["safe_private"])


def is_cleaned(option: str, tag: int) -> bool:
    """Whether Table E.1-1 marks this attribute C under the option, by its tag or a range row."""
    return tag in CLEANED_TAGS[option] or any(mask.fullmatch(f"{tag:08X}") for mask in CLEANED_MASKS[option])


def is_safe_private(tag: int, creator: str | None) -> bool:
    """Whether a private data element (gggg,xxee) of the block `creator` reserves is a safe
    private attribute (Table E.3.10-1): group, the element's last two hex digits and the creator
    match a row (the creator as written, without its padding)."""
    if creator is None:
        return False
    return (tag >> 16, tag & 0xFF, creator.strip(" \x00")) in _SAFE_PRIVATE


def option_names(value: object) -> tuple[str, ...] | None:
    """The option names a list gives, None where it is not a list of strings (the caller says
    how that is refused, as a request's 400 or a setting that stops the start)."""
    if not isinstance(value, list) or not all(isinstance(name, str) for name in value):
        return None
    return tuple(value)


def unknown_options(names: tuple[str, ...]) -> list[str]:
    """The names that are no option, in the order given."""
    return [name for name in names if name not in OPTION_CODES]


def known_options_text() -> str:
    return ", ".join(OPTION_CODES)


def recorded_options(header: Header) -> frozenset[str]:
    """The options an anonymized file records in DeidentificationMethodCodeSequence, by name."""
    codes = {value for element in header.elements if element.tag == CODE_VALUE and len(element.path[0]) == 1
             and element.path[0][0][0] == DEIDENTIFICATION_METHOD_CODE_SEQUENCE for value in element.values}
    return frozenset(name for name, code in OPTION_CODES.items() if code in codes)


def kept_under(options: frozenset[str]) -> frozenset[int]:
    """The attributes these options keep as they are (K)."""
    return frozenset().union(*(KEPT_TAGS[name] for name in options))


#: The options that clean (keep what Table E.1-1 marks C, its identifying content replaced).
CLEAN_OPTIONS = ("CleanDescriptors", "CleanStructuredContent", "CleanGraphics")


class CleanedAttributes:
    """The attributes the given Clean options keep to be cleaned (none without a Clean option):
    Table E.1-1's C rows of those options, a repeating group's row covering its whole range."""

    def __init__(self, options: frozenset[str] | set[str]) -> None:
        self._options = tuple(option for option in CLEAN_OPTIONS if option in options)

    def __bool__(self) -> bool:
        return bool(self._options)

    def option_of(self, tag: int) -> str | None:
        """The option that cleans a tag, None if none of these does. Private tags never."""
        return _cleaning_option(self._options, tag)

    def covers(self, path: VocabularyPath) -> bool:
        """Whether an element is cleaned: its attribute, or a sequence holding it, is one the
        options clean (the text items of a kept Content Sequence, of a Graphic Annotation)."""
        steps, tag = path
        return any(self.option_of(t) is not None for t in (tag, *(sequence for sequence, _ in steps)))


@lru_cache(maxsize=8192)  # asked for every element of every output under a Clean option
def _cleaning_option(options: tuple[str, ...], tag: int) -> str | None:
    if tag >> 16 & 1:
        return None
    return next((option for option in options if is_cleaned(option, tag)), None)


#: Every attribute any Clean option cleans: which option to name where an identifier is refused.
ANY_CLEAN_OPTION = CleanedAttributes(frozenset(CLEAN_OPTIONS))
