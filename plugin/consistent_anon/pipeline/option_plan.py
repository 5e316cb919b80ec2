"""What the PS3.15 de-identification options (Annex E) change in one instance's plan.

An option the request names applies only once the plugin does its work: `IMPLEMENTED_OPTIONS`
is that list, and only these options' codes are recorded in a result (an option the plugin
accepts but does not apply yet never claims its code). Under an applied Retain option, the
attributes Table E.1-1 marks K go to native's `Keep` as they are, and those it marks C are kept
too and named for the cleaning step (`cleaned_tags`); the fail-closed check still refuses the
source's identifiers in those. Under Retain Safe Private, only the private elements Table
E.3.10-1 lists are kept, with the creator elements of their blocks.
"""
from __future__ import annotations

from functools import lru_cache
from typing import Iterable

from ..dicom.filereader import Element, Header
from ..dicom.option_attributes import (BASIC_PROFILE_CODE, CLEAN_OPTIONS, CLEANED_TAGS, KEPT_TAGS, MODIFIED_DATES,
                                       OPTION_CODES, OPTION_MEANINGS, SAFE_PRIVATE, is_safe_private)
from ..dicom.vocabulary import CODE_MEANING, CODE_VALUE, CODING_SCHEME_DESIGNATOR, Tag
from ..pixels.decision import CLEAN_PIXEL_DATA
from .options import AnonymizeRequest

#: The options whose work the plugin applies: the hook through which an option's code comes to be
#: recorded (add its name once its work is done).
IMPLEMENTED_OPTIONS: frozenset[str] = frozenset({
    "RetainPatientCharacteristics", "RetainDeviceIdentity", "RetainInstitutionIdentity", SAFE_PRIVATE,
    MODIFIED_DATES, *CLEAN_OPTIONS})


def applied_options(request: AnonymizeRequest) -> tuple[str, ...]:
    """The options of the request the plugin applies, in the order of their codes."""
    return _applied(request.deidentification_options)


@lru_cache(maxsize=64)
def _applied(options: frozenset[str]) -> tuple[str, ...]:
    return tuple(sorted(IMPLEMENTED_OPTIONS & options, key=OPTION_CODES.__getitem__))


def kept_tags(request: AnonymizeRequest) -> frozenset[int]:
    """The attributes the applied options keep as they are (K): no identifier of the source
    to search in them, as in what the caller keeps."""
    return _kept(request.deidentification_options)


def cleaned_tags(request: AnonymizeRequest) -> frozenset[int]:
    """The attributes the applied options keep to be cleaned (C), for the cleaning step; dates
    under Modified Dates are shifted by their own transform."""
    return _cleaned(request.deidentification_options)


# Per set of options, computed once: the plan asks at every instance and element.
@lru_cache(maxsize=64)
def _kept(options: frozenset[str]) -> frozenset[int]:
    return frozenset().union(*(KEPT_TAGS[name] for name in _applied(options) if name != MODIFIED_DATES))


@lru_cache(maxsize=64)
def _cleaned(options: frozenset[str]) -> frozenset[int]:
    return frozenset().union(*(CLEANED_TAGS[name] for name in _applied(options) if name != MODIFIED_DATES))


def _top_level_tags(header: Header) -> set[int]:
    """The top-level attributes the source holds, sequences included (through their items)."""
    return {element.path[0][0][0] if element.path[0] else element.tag for element in header.elements}


def _creator_of(header: Header, tag: int) -> str | None:
    """The private creator reserving the block of a private data element, None for a creator."""
    if not _in_block(tag):
        return None
    creator = (tag & 0xFFFF0000) | (tag >> 8 & 0xFF)
    return header.text(creator) if creator in header else None


def _in_block(tag: int) -> bool:
    """A private data element of a block (gggg,xxee), not a creator element (gggg,00xx)."""
    return (tag & 0xFFFF) >= 0x1000


def safe_private(header: Header, element: Element) -> bool:
    """Whether an element of an odd group is one Retain Safe Private keeps: a safe private
    attribute at the top level, or the creator element of a block that holds one."""
    if element.path[0] or not (element.tag >> 16) & 1:
        return False
    if _in_block(element.tag):
        return is_safe_private(element.tag, _creator_of(header, element.tag))
    group, block = element.tag >> 16, element.tag & 0xFF
    return any(not other.path[0] and other.tag >> 16 == group and (other.tag >> 8) & 0xFF == block
               and _in_block(other.tag) and is_safe_private(other.tag, _creator_of(header, other.tag))
               for other in header.elements)


def keeps_private(header: Header, request: AnonymizeRequest, element: Element) -> bool:
    """Whether native keeps this private element under the request: every one under
    KeepPrivateTags, the safe ones under Retain Safe Private."""
    if request.native_body.get("KeepPrivateTags") is True:
        return True
    return SAFE_PRIVATE in applied_options(request) and safe_private(header, element)


def native_keeps(header: Header, request: AnonymizeRequest, replaced: Iterable[str]) -> list[str]:
    """The `Keep` entries the applied options add for this instance: their K and C attributes the
    source holds at the top level, and the safe private elements; not where the caller decides
    (Keep, Replace, Remove), nor what the plan replaces (native ignores a Replace of what the same
    request keeps)."""
    wanted = (kept_tags(request) | cleaned_tags(request)) & _top_level_tags(header)
    if SAFE_PRIVATE in applied_options(request):
        wanted |= {element.tag for element in header.elements if safe_private(header, element)}
    skipped = set(replaced)
    return [str(Tag(tag)) for tag in sorted(wanted)
            if not request.mentions(tag) and str(Tag(tag)) not in skipped]


def method_codes(request: AnonymizeRequest, pixels_cleaned: bool = False) -> list[dict[str, str]]:
    """DeidentificationMethodCodeSequence's items: the Basic Profile's code, then each applied
    option's (CID 7050, scheme DCM), Clean Pixel Data's only for an instance whose pixels a rule
    blanked (PS3.15 E.3.1: never for pixels left as they were). Items name their members as tags:
    Orthanc looks a name up in its whole dictionary for every item of every instance."""
    names = applied_options(request) + ((CLEAN_PIXEL_DATA,) if pixels_cleaned else ())
    codes = [BASIC_PROFILE_CODE] + sorted((OPTION_CODES[name], OPTION_MEANINGS[name]) for name in names)
    return [{str(CODE_VALUE): code, str(CODING_SCHEME_DESIGNATOR): "DCM", str(CODE_MEANING): meaning}
            for code, meaning in codes]
