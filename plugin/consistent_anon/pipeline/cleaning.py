"""Clean Descriptors, Clean Structured Content and Clean Graphics (PS3.15 options 113105,
113104, 113103): the attributes these options mark "C" are kept, and the source's own
identifiers are replaced in them by a neutral marker (dicom/identifiers.MARKER).

Two steps, each where the plugin already changes native's work: before native, the transform
`keep_cleaned` has native keep the attributes it would remove (a `Keep`), and remove the
graphics that cannot be cleaned (overlay bitmaps, curves); after native, the fail-closed check
(output_check.py) cleans every covered element native kept with the same identifier model it
then checks the cleaned file with, and native writes the cleaned values (a second pass, as for
source UIDs in kept text). Only what native kept is cleaned, so nothing it removes comes back.
"""
from __future__ import annotations

from dataclasses import dataclass

from ..dicom.option_attributes import CleanedAttributes
from ..dicom.filereader import Element, Header
from ..dicom.identifiers import clean_values, cleaning_texts, identifying_dates
from ..dicom.scanning import TextFinder
from ..identity import dates as date_shifting
from .options import AnonymizeRequest

#: Text VRs whose cleaned value native writes back; dates are emptied instead (no marker fits).
CLEANED_TEXT_VRS = frozenset({"LO", "LT", "SH", "ST", "UT", "UC", "PN"})
CLEANED_DATE_VRS = frozenset({"DA", "DT"})
_CLEANED_VRS = CLEANED_TEXT_VRS | CLEANED_DATE_VRS


@dataclass(frozen=True)
class Cleaning:
    """One instance's cleaning: which elements are covered, and the source's texts to replace."""

    attributes: CleanedAttributes
    finder: TextFinder

    def covers(self, element: Element) -> bool:
        return element.vr in _CLEANED_VRS and self.attributes.covers(element.path)

    def clean(self, element: Element, values: tuple[str, ...]) -> tuple[str, ...]:
        """The values without the source's identifiers: a text with each replaced by the
        marker, a date emptied when it is one of them."""
        if element.vr in CLEANED_DATE_VRS:
            return () if any(self.finder.spans(value) for value in values) else values
        return clean_values(self.finder, values)


def cleaning_for(source: Header, request: AnonymizeRequest) -> Cleaning | None:
    """The cleaning of an instance under the request's options; None without a Clean option.
    The caller's own Keep of an identifying attribute leaves its text alone, as the check does."""
    attributes = CleanedAttributes(request.deidentification_options)
    if not attributes:
        return None
    skip = request.kept_tags.__contains__
    dates = identifying_dates(source, date_shifting.is_shifted, skip) if request.settings.shift_dates else None
    return Cleaning(attributes, TextFinder(cleaning_texts(source, skip, dates)))
