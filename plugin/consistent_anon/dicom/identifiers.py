"""The identifier model: which texts of a source identify its patient, and where they stand in a
header. The fail-closed check of each anonymized file and the verification of a whole set both
search with it, so they never disagree on what counts as a leak."""
from __future__ import annotations

from typing import Callable

from .filereader import Element, Header
from .scanning import TextFinder
from .vocabulary import is_private

#: Source attributes whose text must not remain anywhere in the anonymized files.
IDENTIFYING_TEXT = {
    0x00100020: "PatientID", 0x00101000: "PatientID",  # OtherPatientIDs
    0x00100010: "PatientName", 0x00101001: "PatientName",  # OtherPatientNames
    0x00100030: "PatientBirthDate",
    0x00080050: "AccessionNumber",
    0x00080080: "InstitutionName", 0x00080081: "InstitutionAddress",
    0x00081040: "InstitutionalDepartmentName",
}
#: Shorter texts are not searched: they would be found everywhere ("1", "CT"). Texts shorter than
#: TextFinder's word length (5) are found only as the whole value of an element.
MIN_TEXT_LENGTH = 3
#: A family name is also searched alone from this length on ("Test" is a coding scheme too).
FAMILY_NAME_LENGTH = 5


def _name_variants(name: str) -> set[str]:
    """A PersonName as it may be written in free text: whole, in either order, or its family name."""
    parts = [p.strip() for p in name.split("=")[0].split("^")]
    family, given = (parts + ["", ""])[:2]
    variants = {name.split("=")[0].strip("^ ")}
    if family and given:
        variants |= {f"{given} {family}", f"{family} {given}", f"{family}, {given}", f"{family}^{given}"}
    if len(family) >= FAMILY_NAME_LENGTH:
        variants.add(family)
    return variants


def _date_variants(date: str) -> set[str]:
    if len(date) == 8 and date.isdigit():
        return {date, f"{date[:4]}-{date[4:6]}-{date[6:]}", f"{date[:4]}.{date[4:6]}.{date[6:]}"}
    return set()


def identifying_texts(header: Header, skip: Callable[[int], bool] = lambda tag: False) -> dict[str, str]:
    """The source's identifying texts in its own header (text -> the attribute it comes from), in
    the forms they may take in free text; `skip` leaves out attributes (those the caller kept)."""
    texts: dict[str, str] = {}
    for element in header.elements:
        label = IDENTIFYING_TEXT.get(element.tag)
        if label is None or skip(element.tag):
            continue
        for value in element.values:
            value = value.strip()
            if label == "PatientBirthDate":
                variants = _date_variants(value)
            elif label == "PatientName":
                variants = _name_variants(value)
            else:
                variants = {value}
            for text in variants:
                if len(text) >= MIN_TEXT_LENGTH:
                    texts.setdefault(text, label)
    return texts


def coincides(element: Element, text: str, source: Element | None) -> bool:
    """Whether a text found in `element` is only the source's own value of a non-identifying
    attribute at that same place (a patient named like the body part examined, an institution
    named like the manufacturer): then it is no leak. Private elements, person names and the
    identifying attributes never coincide."""
    if source is None or is_private(element.tag) or element.tag in IDENTIFYING_TEXT or element.vr == "PN":
        return False
    return any(value.strip().lower() == text for value in source.values)


def text_leaks(finder: TextFinder, header: Header, source: Header | None) -> list[tuple[Element, str]]:
    """(element, label) of the identifying texts found in an anonymized header, less those that
    coincide with the source's value at the same place (`source`: the paired source's header)."""
    matches = finder.matches(header)
    if not matches:
        return []
    at = {e.path: e for e in source.all_elements()} if source is not None else {}
    found = {(element, label) for element, label, text in matches if not coincides(element, text, at.get(element.path))}
    return sorted(found, key=lambda item: (item[0].path, item[1]))

