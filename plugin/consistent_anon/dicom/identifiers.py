"""The identifier model: which texts of a source identify its patient, where they stand in a
header, and how they are cleaned out of a kept text. The fail-closed check of each anonymized
file, the cleaning of descriptors (Clean Descriptors, Clean Structured Content, Clean Graphics)
and the verification of a whole set all search with it, so they never disagree on what counts as
a leak: a cleaned text passes the check, and what the check lets pass, verify calls clean.

A text is found as a word (scanning.TextFinder): letters and digits are runs of their own, so
"_", "-", ".", "/", "\\", spaces and a change between letters and digits bound a word
("MRN7734125" holds PatientID 7734125, "TESTIS" does not hold the name TEST). Names are split
into their words, with or without carets; short and common words are found only as a whole value.
"""
from __future__ import annotations

import re
from typing import Callable

from pydicom.datadict import keyword_for_tag

from .filereader import Element, Header
from .option_attributes import is_cleaned
from .scanning import MARKER, TextFinder
from .vocabulary import is_private

#: Source attributes whose text must not remain anywhere in the anonymized files, by label.
IDENTIFYING_TEXT = {
    0x00100020: "PatientID", 0x00101000: "PatientID",  # OtherPatientIDs
    0x00080050: "AccessionNumber", 0x00200010: "StudyID",
    0x00100010: "PatientName", 0x00101001: "PatientName",  # OtherPatientNames
    0x00101060: "PatientName",  # PatientMotherBirthName
    0x00080090: "ReferringPhysicianName", 0x00081048: "PhysiciansOfRecord",
    0x00081050: "PerformingPhysicianName", 0x00081060: "NameOfPhysiciansReadingStudy",
    0x00081070: "OperatorsName", 0x00321032: "RequestingPhysician",
    0x00100030: "PatientBirthDate",
    0x00101040: "PatientAddress", 0x00102154: "PatientTelephoneNumbers",
    0x00080092: "ReferringPhysicianAddress", 0x00080094: "ReferringPhysicianTelephoneNumbers",
    0x00080080: "InstitutionName", 0x00080081: "InstitutionAddress",
    0x00081040: "InstitutionalDepartmentName",
}
#: Labels of person names: split into words (`name_variants`).
PERSON_LABELS = frozenset({"PatientName", "ReferringPhysicianName", "PhysiciansOfRecord", "PerformingPhysicianName",
                           "NameOfPhysiciansReadingStudy", "OperatorsName", "RequestingPhysician"})
#: Labels whose texts are identifiers (not words): found glued to a prefix ("MRN-80422"), which
#: the cleaning removes with them.
ID_LABELS = frozenset({"PatientID", "AccessionNumber", "StudyID"})
#: Labels whose whole text is the source's identifier wherever it stands: never a mere
#: coincidence with a plain attribute's value (see `coincides`).
STRONG_LABELS = ID_LABELS | {"PatientBirthDate", "PatientTelephoneNumbers"}
#: Labels of the institution's texts, which a vendor's name may share wherever it stands.
INSTITUTION_LABELS = frozenset({"InstitutionName", "InstitutionAddress", "InstitutionalDepartmentName"})
#: Dates the cleaning removes from kept descriptions even where dates are not shifted.
STUDY_DATES = {0x00080020: "StudyDate", 0x00080021: "SeriesDate", 0x00080022: "AcquisitionDate",
               0x00080023: "ContentDate"}
#: Shorter texts are not searched: they would be found everywhere ("1", "CT").
MIN_TEXT_LENGTH = 3
#: A date (YYYYMMDD) at least: partial dates would be found everywhere.
DATE_LENGTH = 8
_DATE = re.compile(r"^(\d{4})(\d{2})(\d{2})$")
#: The formats a date is written in free text, from its year, month and day.
DATE_FORMATS = ("{y}{m}{d}", "{y}-{m}-{d}", "{y}.{m}.{d}", "{y}/{m}/{d}", "{m}/{d}/{y}", "{d}/{m}/{y}",
                "{d}.{m}.{y}", "{d}-{m}-{y}", "{m}-{d}-{y}")
#: The digits of an alphanumeric ID are searched alone from this length on.
ID_DIGITS = 6
_DIGIT_RUN = re.compile(r"[0-9]+")
_NAME_SEPARATORS = re.compile(r"[\^=,\s]+")
#: A prefix glued to an identifier: a few letters, and a separator or none ("MRN-", "PID", "#").
_ID_PREFIX = re.compile(r"(?:(?<![^\W\d_])[^\W\d_]{1,6}[-#:]?|#)$")


def name_variants(name: str, given_alone: bool = True) -> set[str]:
    """A PersonName as it may be written in free text: whole (each component group), in either
    order, and the words of its family name alone, and of its given name where `given_alone` (the
    patient's; another person's given name alone is too common a word). A name without carets
    is all family name: each of its words. Middle names, prefixes and suffixes stand only in the
    whole name; short and common words alone are found as whole values only (`TextFinder`)."""
    variants: set[str] = set()
    for group in name.split("="):
        parts = [part.strip() for part in group.split("^")]
        family, given = (parts + ["", ""])[:2]
        variants.add(group.strip("^ "))
        if family and given:
            variants |= {f"{given} {family}", f"{family} {given}", f"{family}, {given}", f"{family}^{given}"}
        for part in (family, given) if given_alone else (family,):
            variants.update(word for word in _NAME_SEPARATORS.split(part) if word)
    return variants


def date_variants(date: str) -> set[str]:
    """A DA value in the formats free text writes dates in; a date-time as it is."""
    match = _DATE.match(date)
    if match is None:
        return {date} if len(date) >= DATE_LENGTH else set()
    y, m, d = match.groups()
    return {form.format(y=y, m=m, d=d) for form in DATE_FORMATS}


def _variants(label: str, value: str) -> set[str]:
    if label == "PatientBirthDate":
        return date_variants(value)
    if label in PERSON_LABELS:
        return name_variants(value, given_alone=label == "PatientName")
    if "Address" in label:  # the whole address, and each of its comma-separated parts
        return {value, *(part.strip() for part in value.split(","))}
    if "Telephone" in label:
        return {value, re.sub(r"[^0-9]", "", value)}
    if label in ID_LABELS:  # an ID written without its own prefix: "7734125" for MRN7734125
        return {value, *(run for run in _DIGIT_RUN.findall(value) if len(run) >= ID_DIGITS)}
    return {value}


def identifying_texts(header: Header, skip: Callable[[int], bool] = lambda tag: False) -> dict[str, str]:
    """The source's identifying texts in its own header (text -> the attribute it comes from), in
    the forms they may take in free text; `skip` leaves out attributes (those the caller kept)."""
    texts: dict[str, str] = {}
    for element in header.elements:
        label = IDENTIFYING_TEXT.get(element.tag)
        if label is None or skip(element.tag):
            continue
        for value in element.values:
            for text in _variants(label, value.strip()):
                if len(text.strip()) >= MIN_TEXT_LENGTH:
                    texts.setdefault(text.strip(), label)
    return texts


def identifying_dates(header: Header, shifted: Callable[[int, str], bool],
                      skip: Callable[[int], bool] = lambda tag: False) -> dict[str, str]:
    """The source's dates and date-times that date shifting moves (`shifted(tag, vr)`,
    identity.dates.is_shifted), in the formats of `date_variants`: identifying once the dates are
    shifted, as they undo the shift."""
    found: dict[str, str] = {}
    for element in header.elements:
        if shifted(element.tag, element.vr) and not skip(element.tag):
            label = keyword_for_tag(element.tag) or "a date"
            for value in element.values:
                for text in date_variants(value.strip()):
                    found.setdefault(text, label)
    return found


def cleaning_texts(header: Header, skip: Callable[[int], bool] = lambda tag: False,
                   source_dates: dict[str, str] | None = None) -> dict[str, str]:
    """What the cleaning removes from a kept text: the identifying texts, the study's dates, and
    `source_dates` (`identifying_dates`, where dates are shifted). A superset of what the check
    searches, so that a cleaned text always passes it."""
    texts = identifying_texts(header, skip)
    for tag, label in STUDY_DATES.items():
        for value in header.values(tag):
            texts.update({text: label for text in date_variants(value.strip()) if text not in texts})
    texts.update({text: label for text, label in (source_dates or {}).items() if text not in texts})
    return texts


def clean_value(finder: TextFinder, value: str) -> str:
    """The value with each text the finder finds replaced by MARKER; an identifier with the
    letters glued before it ("MRN-80422"). Other words stay as written."""
    spans = [_with_prefix(finder, value, start, end, text) for start, end, text in finder.spans(value)]
    if not spans:
        return value
    pieces, position = [], 0
    for start, end in _merged(spans):
        pieces += [value[position:start], MARKER]
        position = end
    pieces.append(value[position:])
    return "".join(pieces)


def clean_values(finder: TextFinder, values: tuple[str, ...]) -> tuple[str, ...]:
    """Each value of a multi-valued text cleaned (`clean_value`). Replacing one text by the
    marker cannot join two others into a new one; the check, which runs on the cleaned file,
    would see it if it did."""
    return tuple(clean_value(finder, value) for value in values)


def _with_prefix(finder: TextFinder, value: str, start: int, end: int, text: str) -> tuple[int, int]:
    if finder.label(text) in ID_LABELS:
        prefix = _ID_PREFIX.search(value, 0, start)
        if prefix is not None:
            return prefix.start(), end
    return start, end


def _merged(spans: list[tuple[int, int]]) -> list[tuple[int, int]]:
    merged: list[tuple[int, int]] = []
    for start, end in sorted(spans):
        if merged and start < merged[-1][1]:
            merged[-1] = (merged[-1][0], max(end, merged[-1][1]))
        else:
            merged.append((start, end))
    return merged


def coincides(element: Element, text: str, label: str, source: Element | None) -> bool:
    """Whether a text found in `element` is only the source's own value of a non-identifying
    attribute at that same place (a patient named Chest, the body part examined CHEST; an
    institution named like the manufacturer, whose value there holds its name as a word): then it
    is no leak. Private elements, person names, the identifying attributes, an identifier, a date
    and a whole name never coincide."""
    if source is None or is_private(element.tag) or element.tag in IDENTIFYING_TEXT or element.vr == "PN":
        return False
    if label in STRONG_LABELS or (label in PERSON_LABELS and len(_NAME_SEPARATORS.split(text)) > 1):
        return False
    if label in INSTITUTION_LABELS:  # a vendor's name: "TOSHIBA" in the Manufacturer "TOSHIBA_MEC"
        # but not in free text (the descriptions Clean Descriptors covers): a hospital's name
        # carried through in a kept description is the leak it looks like
        return not is_cleaned("CleanDescriptors", element.tag) and any(
            TextFinder({text: label}).spans(value) for value in source.values)
    return any(value.strip().lower() == text for value in source.values)


def text_leaks(finder: TextFinder, header: Header, source: Header | None) -> list[tuple[Element, str]]:
    """(element, label) of the identifying texts found in an anonymized header, less those that
    coincide with the source's value at the same place (`source`: the paired source's header)."""
    matches = finder.matches(header)
    if not matches:
        return []
    at = {e.path: e for e in source.all_elements()} if source is not None else {}
    found = {(element, label) for element, label, text in matches
             if not coincides(element, text, label, at.get(element.path))}
    return sorted(found, key=lambda item: (item[0].path, item[1]))
