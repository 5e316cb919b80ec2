"""The fail-closed check of one anonymized file against its plan, before anything is stored."""
from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Callable, Iterator

from ..errors import VerificationFailed
from ..lru import LruCache
from ..dicom.filereader import Element, Header, UnreadableHeader, read_header
from .identities import InstancePlan
from ..dicom.paths import parse_path
from .sealing import bytes_without_encrypted_attributes, without_added_sequence
from ..dicom.scanning import MIN_WORD, TextFinder, describe, find_uids, request_name, rewrite_uids, whole_uid_in_bytes
from ..dicom.option_attributes import ANY_CLEAN_OPTION
from ..dicom.identifiers import identifying_dates, identifying_texts, text_leaks
from ..identity.dates import is_shifted
from ..dicom.vocabulary import (MEDIA_STORAGE_SOP_INSTANCE_UID, PATIENT_ID, REFERENCED_SOP_INSTANCE_UID,
                                SOP_INSTANCE_UID, SOURCE_IMAGE_SEQUENCE, TRANSFER_SYNTAX_UID, Path, orthanc_path)

#: Text VRs whose values the plugin can give back with each source UID token replaced by its
#: pseudonym, through a Replace at their path; and UI, whose values are UIDs.
_REWRITABLE_VRS = frozenset({"AE", "CS", "LO", "LT", "PN", "SH", "ST", "UC", "UT", "UI"})



def _transcoder_reference(path: Path, plan: InstancePlan) -> bool:
    """The item Orthanc's lossy transcoding appends to SourceImageSequence ("Uncompressed
    predecessor"), naming a new random UID that identifies nothing: allowed where the request
    asked for Transcode (a source UID there would still be found by the leak check)."""
    steps, tag = path
    return ("Transcode" in plan.native_body and tag == REFERENCED_SOP_INSTANCE_UID and len(steps) == 1
            and steps[0][0] == SOURCE_IMAGE_SEQUENCE)


@dataclass
class CheckResult:
    """What the check found: problems that refuse the file, and kept elements that hold source
    UIDs as whole tokens in text, which a second pass can give their pseudonyms
    (path -> the value to write there)."""

    problems: list[str] = field(default_factory=list)
    rewrites: dict[Path, str] = field(default_factory=dict)


def _rewrite(element: Element, plan: InstancePlan) -> str | None:
    """The element's value with its source UIDs replaced by their targets, when it can be written
    back as text (a text or UI element of the dataset, the UIDs in its values as read). The
    Replace writes the whole value anew: nothing of the old bytes stays."""
    if element.vr not in _REWRITABLE_VRS or element.path[1] >> 16 == 0x0002:
        return None
    new_values = tuple(rewrite_uids(value, plan.source_uids, plan.targets) for value in element.values)
    return "\\".join(new_values) if new_values != element.values else None


def inspect_output(data: bytes, plan: InstancePlan, uid_tags: frozenset[int]) -> CheckResult:
    """Problems and rewrites of the anonymized file, check by check.

    Messages name tag paths only, never a value: they reach the client and the log.
    """
    result = CheckResult()
    try:
        read = read_header(data)
        header = without_added_sequence(read, plan.source)
    except UnreadableHeader as error:
        result.problems.append(f"the anonymized file cannot be read ({error})")
        return result
    result.problems.extend(_planned_values(header, plan, uid_tags))
    leaks = _source_uids_in_header(header, plan, result)
    if not leaks:
        result.problems.extend(_source_uids_outside_header(data, read, header, plan))
    _cleaning_rewrites(header, plan, result.rewrites)
    result.problems.extend(_identifier_problems(data, header, plan, set(result.rewrites)))
    result.problems.extend(_identity_markers(header, plan))
    result.problems = sorted(set(result.problems))
    return result


def _planned_values(header: Header, plan: InstancePlan, uid_tags: frozenset[int]) -> list[str]:
    """In one pass: every UID attribute carries the UID the plan gave it (its pseudonym, or a UID
    the plugin knows), and every value the plan wrote is there."""
    problems = []
    for element in header.elements:
        expected = plan.expected_uids.get(element.path)
        if element.tag in uid_tags and element.values and expected is None \
                and not _transcoder_reference(element.path, plan):
            problems.append(f"{describe(element.path)} carries a UID the plugin did not assign")
        elif expected is not None and element.values != expected:
            problems.append(f"{describe(element.path)} does not carry its pseudonym")
        planned = plan.expected_values.get(element.path)
        if planned is not None and element.values != planned:
            problems.append(f"{describe(element.path)} does not carry the value the plugin planned")
    return problems


def _source_uids_in_header(header: Header, plan: InstancePlan, result: CheckResult) -> list[Element]:
    """Source UIDs left in the header where the caller did not put them: rewritten where the
    element is text (`result.rewrites`), else a problem. Answers the elements that hold one."""
    leaks = [element for element, _ in find_uids(header, plan.source_uids) if element.path not in plan.caller_paths]
    for element in leaks:
        if element.path in plan.expected_uids:
            continue  # reported by _planned_values
        new_value = _rewrite(element, plan)
        if new_value is not None:
            result.rewrites[element.path] = new_value
        elif element.vr in _REWRITABLE_VRS or element.path[1] >> 16 == 0x0002:
            result.problems.append(f"a source UID remains in {describe(element.path)}")
        else:
            result.problems.append(f"a source UID remains in {describe(element.path)}, binary data (VR {element.vr}) "
                                   f"the plugin cannot rewrite: add \"Remove\": [\"{request_name(element.path)}\"] "
                                   "to the request to anonymize without it")
    return leaks


def _source_uids_outside_header(data: bytes, read: Header, header: Header, plan: InstancePlan) -> list[str]:
    """Where the header scan does not look: elements after the pixel data (private ones, kept).
    Where the plugin added the re-identification data, a hit is confirmed without it (the
    ciphertext is searched no more than pixels are: it is not text)."""
    wanted = plan.source_uids - _at_caller_paths(header, plan)
    if whole_uid_in_bytes(_outside_pixel_data(data, read), wanted) and \
            (header is read or whole_uid_in_bytes(bytes_without_encrypted_attributes(data), wanted)):
        return ["a source UID remains in the file outside the header (after the pixel data)"]
    return []


def _identity_markers(header: Header, plan: InstancePlan) -> list[str]:
    """The PatientID the plugin assigned, and the file meta's SOP Instance UID following the
    dataset's."""
    problems = []
    if header.text(PATIENT_ID) != plan.patient_id:
        problems.append("PatientID is not the one the plugin assigned")
    if MEDIA_STORAGE_SOP_INSTANCE_UID in header and \
            header.values(MEDIA_STORAGE_SOP_INSTANCE_UID) != header.values(SOP_INSTANCE_UID):
        problems.append("MediaStorageSOPInstanceUID differs from SOPInstanceUID")
    return problems


def _at_caller_paths(header: Header, plan: InstancePlan) -> set[str]:
    """Source UIDs the caller's own Keep or Replace put in the output: in its bytes by request."""
    return {v for e in header.elements if e.path in plan.caller_paths for v in e.values}


def _cleaning_rewrites(header: Header, plan: InstancePlan, rewrites: dict[Path, str]) -> None:
    """Under a Clean option (cleaning.py), each covered element native kept, cleaned of the
    source's identifiers (after its source UIDs got their pseudonyms, where it holds any): native
    writes it in the second pass, and the check then runs on the cleaned file."""
    cleaning = plan.cleaning
    if cleaning is None:
        return
    for element in header.elements:
        if not cleaning.covers(element):
            continue
        pending = rewrites.get(element.path)
        values = tuple(pending.split("\\")) if pending is not None else element.values
        cleaned = cleaning.clean(element, values)
        if cleaned != values:
            rewrites[element.path] = "\\".join(cleaned)


def _identifier_problems(data: bytes, header: Header, plan: InstancePlan, rewritten: set[Path]) -> list[str]:
    """The source's identifying texts (PatientID, names...) found in the output, in any encoding,
    except in attributes the caller kept or replaced, and in elements to be `rewritten` (checked
    again once they are); where dates are shifted, the source's dates too, but where the plan
    writes its own value (a shifted date that happens to equal another of the source's dates)."""
    if plan.source is None:
        return []
    search = _search_of(identifying_texts(plan.source, plan.caller_tags.__contains__))
    leaks = text_leaks(search.finder, header, plan.source)
    if plan.shifted_dates:
        dates = identifying_dates(plan.source, is_shifted, plan.caller_tags.__contains__)
        found = _search_of(dates).finder.find(header)  # as verify does: no coincidence rule for dates
        leaks += [(element, label) for element, label in found if element.path not in plan.expected_values]
    problems = [f"the source's {label} remains in {describe(element.path)}: {_advice(element.path, plan)}"
                for element, label in leaks if element.path not in rewritten | plan.caller_paths]
    if _text_after_header(data, header, search):
        problems.append("an identifying text of the source remains in the file outside the header "
                        "(after the pixel data)")
    return problems


def _advice(path: Path, plan: InstancePlan) -> str:
    """How the caller gets past an identifier in a kept element: remove it, or, where a Clean
    option covers it and is not asked for, ask for the option."""
    advice = f"add \"Remove\": [\"{request_name(path)}\"] to the request to anonymize without it"
    options = (ANY_CLEAN_OPTION.option_of(tag) for tag in (path[1], *(sequence for sequence, _ in path[0])))
    option = next((name for name in options if name is not None), None)
    if option is not None and plan.cleaning is None:
        advice += f", or \"DeidentificationOptions\": [\"{option}\"] to clean it"
    return advice


#: Transfer syntaxes whose pixel data holds raw sample values only; compressed (encapsulated)
#: frames also carry metadata segments of their own (a JPEG comment, a JPEG 2000 comment box).
_RAW_PIXEL_SYNTAXES = frozenset({"1.2.840.10008.1.2", "1.2.840.10008.1.2.1", "1.2.840.10008.1.2.2"})


def _raw_pixels_end(header: Header) -> int | None:
    """Where the file goes on after raw pixel values, which the byte searches skip (they are not
    text, and searching them cost about 1 ms per 256x256 instance); None where the pixel data is
    to be searched too: compressed, or its end unknown."""
    if header.text(TRANSFER_SYNTAX_UID) not in _RAW_PIXEL_SYNTAXES:
        return None
    return header.after_pixel_data


def _as_written(data: bytes, header: Header) -> tuple[bytes, int | None]:
    """The file's bytes as its elements are written (a deflated file's inflated: its pixel values
    are raw there), and where raw pixel values end in them (None: see _raw_pixels_end)."""
    if header.inflated is not None:
        return header.inflated.data, header.inflated.after_pixel_data
    return data, _raw_pixels_end(header)


def _outside_pixel_data(data: bytes, header: Header) -> bytes:
    """The file's bytes for the UID search, as its elements are written: the header's bytes (the
    preamble and what lies between elements included) and whatever follows raw pixel values; the
    whole file where the pixel data is compressed or its end unknown."""
    written, end = _as_written(data, header)
    if end is None:
        return written
    return header.searchable + memoryview(written)[end:].tobytes()


class _TextSearch:
    """The search of one set of identifying texts (a patient's: every instance of a study has the
    same), prepared once: the finder of the header scan, and the texts' bytes in each encoding
    for the search after the header."""

    def __init__(self, texts: dict[str, str]) -> None:
        self.finder = TextFinder(texts)
        self._long = [text for text in texts if len(text) >= MIN_WORD]
        self._encoded = LruCache[frozenset[str], frozenset[bytes]](ENCODINGS_KEPT)

    def encoded(self, encodings: frozenset[str]) -> frozenset[bytes]:
        """The texts as written in these encodings, in upper and lower case too."""
        found = self._encoded.get(encodings)
        if found is None:
            found = frozenset(_encoded(self._long, encodings))
            self._encoded.put(encodings, found)
        return found


def _encoded(texts: list[str], encodings: frozenset[str]) -> Iterator[bytes]:
    for text in texts:
        for variant in {text, text.upper(), text.lower()}:
            for encoding in encodings:
                try:
                    yield variant.encode(encoding)
                except (UnicodeError, LookupError):  # the encoding cannot write this text: not there in it
                    continue


#: Prepared searches kept, one per set of identifying texts, and their encodings' bytes each.
SEARCHES_KEPT = 64
ENCODINGS_KEPT = 8
_searches: LruCache[frozenset[tuple[str, str]], _TextSearch] = LruCache(SEARCHES_KEPT)


def _search_of(texts: dict[str, str]) -> _TextSearch:
    key = frozenset(texts.items())
    search = _searches.get(key)
    if search is None:
        search = _TextSearch(texts)
        _searches.put(key, search)
    return search


def _text_after_header(data: bytes, header: Header, search: _TextSearch) -> bool:
    """Whether an identifying text stands in the bytes after the header (the pixel data and the
    elements after it, which the header scan does not read), written as in the source, in upper
    or lower case, in UTF-8, UTF-16 of either byte order or the declared character set. Only
    texts of at least TextFinder's word length: shorter ones would be found in any pixel data."""
    # Past raw pixel values where the reader found their end: texts are elements, not pixels
    # (searching 16-bit pixels for every variant cost milliseconds per instance).
    written, end = _as_written(data, header)
    start = end if end is not None else len(header.searchable)
    tail = memoryview(written)[start:].tobytes()
    encodings = frozenset({"utf-8", "utf-16-le", "utf-16-be", *header.encodings()})
    return any(needle in tail for needle in search.encoded(encodings))


def check_output(data: bytes, plan: InstancePlan, uid_tags: frozenset[int]) -> list[str]:
    """Problems found in the anonymized file; empty when it may be stored as it is. A kept text
    that holds a source UID is one, until rewritten (`anonymize_checked`)."""
    result = inspect_output(data, plan, uid_tags)
    return sorted(set(result.problems) | set(_unwritten(result)))


def _unwritten(result: CheckResult) -> list[str]:
    return [f"a source UID or identifier remains in {describe(path)}" for path in result.rewrites]


def _names(name: str, paths: dict[Path, str]) -> bool:
    """Whether a Keep entry names one of `paths` exactly (no wildcard, not a sequence above it)."""
    entry = parse_path(name)
    return entry is not None and any(entry.steps == tuple(steps) and entry.tag == tag for steps, tag in paths)


def anonymize_checked(plan: InstancePlan, anonymize: Callable[[dict[str, Any]], bytes],
                      uid_tags: frozenset[int], instance: str) -> bytes:
    """Native's output for the plan, checked; VerificationFailed naming `instance` if it fails.

    Kept text that holds source UIDs (free text, an SR TextValue) gets a second pass in which
    native writes it back with each such UID replaced by its pseudonym: only what native kept is
    rewritten, so nothing it removes comes back.
    """
    output = anonymize(plan.native_body)
    result = inspect_output(output, plan, uid_tags)
    if result.rewrites and not result.problems:
        body = dict(plan.native_body)
        body["Replace"] = {**plan.native_body.get("Replace", {}),
                           **{orthanc_path(path): value for path, value in result.rewrites.items()}}
        if "Keep" in body:  # native ignores a Replace of what the same request keeps by that very name
            body["Keep"] = [name for name in body["Keep"] if not _names(name, result.rewrites)]
        output = anonymize(body)
        result = inspect_output(output, plan, uid_tags)
    problems = result.problems + _unwritten(result)
    if problems:
        raise VerificationFailed(f"The anonymized instance {instance} failed the plugin's check, nothing "
                                 "was stored: " + "; ".join(problems[:10]))
    return output
