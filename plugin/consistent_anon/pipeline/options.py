"""The body of an /anonymize request, parsed and checked the way native Orthanc checks it."""
from __future__ import annotations

import json
import re
from dataclasses import dataclass, field, replace
from functools import cached_property
from typing import Any

from ..errors import BadFileFormat, BadRequest
from ..identity.project_settings import BURNED_IN_POLICIES, ProjectSettings
from ..dicom.option_attributes import MODIFIED_DATES, SAFE_PRIVATE, known_options_text, option_names, unknown_options
from ..dicom.paths import CallerPaths
from ..dicom.vocabulary import PATIENT_ID, PATIENT_NAME, SERIES_INSTANCE_UID, SOP_INSTANCE_UID, STUDY_INSTANCE_UID, parse_tag

_BOOLEANS = ("Force", "KeepPrivateTags", "KeepSource", "Asynchronous", "Synchronous", "Permissive", "ShiftDates")
_STRINGS = ("DicomVersion", "PrivateCreator", "Transcode", "Project")
#: Body members that concern the whole call, not how one instance is de-identified: not sent to
#: native's single-instance anonymization, not part of the options' mark.
CALL_MEMBERS = ("Asynchronous", "Synchronous", "KeepSource", "Priority", "Project", "Resources", "Level",
                "UserData")
#: Body members of the plugin's own that decide what an instance becomes: not sent to native, part
#: of the options' mark through the project's settings they resolve to.
PLUGIN_MEMBERS = ("ShiftDates", "DeidentificationOptions", "BurnedInAnnotation")


def _canonical_tag(name: str) -> str:
    """A top-level tag as `gggg,eeee`, whether named by keyword or number; a path as written."""
    tag = parse_tag(name)
    return str(tag) if tag is not None else name.strip()


@dataclass
class AnonymizeRequest:
    """What the caller asked for; `native_body` is what native Orthanc would have received."""

    native_body: dict[str, Any]
    keep: list[str] = field(default_factory=list)
    replace: dict[str, Any] = field(default_factory=dict)
    remove: list[str] = field(default_factory=list)
    keep_source: bool = True
    asynchronous: bool = False
    priority: int = 0
    project: str | None = None
    resources: Any = None  # /tools/bulk-anonymize: the IDs to anonymize
    keep_labels: bool = False
    #: Set by the engine for patient, study, series and bulk calls, which native runs as a job:
    #: there a Transcode native cannot honour keeps the source's transfer syntax.
    whole_resources: bool = False
    shift_dates: bool | None = None  # the body's "ShiftDates": None leaves it to the project
    #: The body's "DeidentificationOptions", but RetainLongitudinalModifiedDates (`shift_dates`).
    requested_options: frozenset[str] = frozenset()
    #: The body's "BurnedInAnnotation" policy: None leaves it to the project (pixels/decision.py).
    burned_in: str | None = None
    #: The project's settings (dates, subjects, trial attributes), attached by `for_project`.
    settings: ProjectSettings = field(default_factory=ProjectSettings)

    def for_project(self, settings: ProjectSettings) -> "AnonymizeRequest":
        """This request under its project's settings, its subject table as read now. Under `"PatientIdentity": "project"` the
        caller's Keep and Replace of PatientID and PatientName are dropped: every client then
        lands in the project's one patient (Orthanc Explorer 2 sends a random PatientID)."""
        if self.shift_dates is not None:
            settings = replace(settings, shift_dates=self.shift_dates)
        if settings.subjects is not None:  # one table for the whole call, even if the file changes
            settings = replace(settings, subjects=settings.subjects.pinned())
        settings = replace(settings, deidentification_options=settings.deidentification_options | self.requested_options)
        if SAFE_PRIVATE in settings.deidentification_options and self.native_body.get("KeepPrivateTags") is True:
            raise BadRequest(f"KeepPrivateTags keeps every private element, {SAFE_PRIVATE} only the safe ones: "
                             f"ask for one of them")
        if self.burned_in is not None:
            settings = replace(settings, burned_in=self.burned_in)
        request = replace(self, settings=settings)
        if settings.patient_identity == "project" and self.ignored_identity:
            identity = {PATIENT_ID, PATIENT_NAME}
            native = dict(self.native_body)
            request.keep = [name for name in self.keep if parse_tag(name) not in identity]
            request.replace = {name: v for name, v in self.replace.items() if parse_tag(name) not in identity}
            for member, value in (("Keep", request.keep), ("Replace", request.replace)):
                if member in native:
                    native[member] = value
            request.native_body = native
        return request

    @property
    def deidentification_options(self) -> frozenset[str]:
        """The PS3.15 options this request applies, by name (option_attributes.OPTION_CODES): the
        project's and the body's; RetainLongitudinalModifiedDates where dates are shifted."""
        options = self.settings.deidentification_options | self.requested_options
        return options | {MODIFIED_DATES} if self.settings.shift_dates else options

    @property
    def ignored_identity(self) -> bool:
        """Whether the caller keeps or replaces PatientID or PatientName."""
        return bool({PATIENT_ID, PATIENT_NAME} & (self.kept_tags | set(self.replaced_tags)))

    # The top-level tags the caller names, parsed once per request rather than at every
    # instance and element the plan looks at.
    @cached_property
    def kept_tags(self) -> frozenset[int]:
        return frozenset(tag for tag in map(parse_tag, self.keep) if tag is not None)

    @cached_property
    def replaced_tags(self) -> dict[int, Any]:
        return {tag: value for key, value in self.replace.items()
                if (tag := parse_tag(key)) is not None}

    @cached_property
    def removed_tags(self) -> frozenset[int]:
        return frozenset(tag for tag in map(parse_tag, self.remove) if tag is not None)

    @cached_property
    def mentioned_tags(self) -> frozenset[int]:
        return self.kept_tags | frozenset(self.replaced_tags) | self.removed_tags

    @cached_property
    def output_options(self) -> str:
        """The options that decide what an instance becomes, as one canonical text: not how the
        call runs, nor "Force", which only permits, nor "KeepLabels", which concerns the index.
        Equal texts give equal results; the same options written otherwise (a tag by keyword or
        number, in another order, an empty list or a default left out) give the same text."""
        members: dict[str, Any] = {}
        for name, value in self.native_body.items():
            if name in ("Keep", "Remove"):
                value = sorted({_canonical_tag(tag) for tag in value})
            elif name == "Replace":
                value = {_canonical_tag(tag): tag_value for tag, tag_value in value.items()}
            if name in ("Force", "Permissive", "KeepLabels") or value in ([], {}) or (name == "KeepPrivateTags" and not value):
                continue
            members[name] = value
        members.update(self.settings.output_options())
        if self.deidentification_options:
            members["DeidentificationOptions"] = sorted(self.deidentification_options)
        return json.dumps(members, sort_keys=True, separators=(",", ":"))

    @cached_property
    def caller_paths(self) -> CallerPaths:
        """Keep, Replace and Remove as paths, parsed once per request."""
        return CallerPaths.of(self.keep, self.replace, self.remove)

    def mentions(self, tag: int) -> bool:
        """Whether the caller decided this top-level tag's fate himself."""
        return tag in self.mentioned_tags


def _member_error(name: str, kind: str, error: type[BadRequest] = BadFileFormat) -> BadRequest:
    """Native's error for a member of the wrong type: "Bad file format" (15), but "Bad request" (8)
    for Keep, Remove and Replace."""
    return error(f'Member "{name}" should be {kind}')


_IDENTIFIERS = {PATIENT_ID: "PatientID", STUDY_INSTANCE_UID: "StudyInstanceUID",
                SERIES_INSTANCE_UID: "SeriesInstanceUID", SOP_INSTANCE_UID: "SOPInstanceUID"}


def _refuse_identifiers_without_force(document: dict[str, Any]) -> None:
    """Native refuses to keep, replace or remove the four identifiers without "Force"."""
    for member, verb in (("Keep", "kept"), ("Replace", "replaced"), ("Remove", "removed")):
        for name in document.get(member, ()):
            tag = parse_tag(name)
            if tag in _IDENTIFIERS:
                raise BadRequest(f'Marking tag "{_IDENTIFIERS[tag]}" as to be {verb} requires '
                                 f'the "Force" option to be set to true')


#: Limits on a request body, checked on its text before anything parses it: a deeply nested body
#: crashes Orthanc through the C stack of a JSON parser, a huge list keeps it busy for minutes.
MAX_BODY_BYTES = 8 * 1024 * 1024
MAX_DEPTH = 32
MAX_VALUES = 200_000  # members and elements in the whole body (a long bulk Resources list included)
#: The longest list (or Replace object) of each member: far beyond any real request, and short
#: enough for native's own handling of one instance (about 1 s for 1,024 repeated entries, and
#: growing with the list) to stay bounded.
MAX_MEMBER_LENGTHS = {"Keep": 1024, "Remove": 1024, "Replace": 1024, "Resources": 100_000}
_STRING = re.compile(r'"[^"\\]*(?:\\.[^"\\]*)*"')
_NOT_BRACKET = re.compile(r"[^\[\]{}]+")


def _check_shape(text: str) -> None:
    """Refuse a body nested deeper than MAX_DEPTH, or holding more than MAX_VALUES values, from its
    text alone, in one pass over its brackets once strings are blanked; a body whose brackets do
    not balance is not JSON (native's "Bad file format")."""
    skeleton = _STRING.sub('""', text)
    if skeleton.count(",") >= MAX_VALUES:
        raise BadRequest(f"The body of the request holds more than {MAX_VALUES} values")
    depth = 0
    for bracket in _NOT_BRACKET.sub("", skeleton):
        depth += 1 if bracket in "[{" else -1
        if depth > MAX_DEPTH:
            raise BadRequest(f"The body of the request is nested more than {MAX_DEPTH} levels deep")
        if depth < 0:
            break
    if depth != 0:
        raise BadFileFormat("The body of the request must be a JSON object (it is not valid JSON)")


def _check_member_lengths(document: dict[str, Any]) -> None:
    for name, limit in MAX_MEMBER_LENGTHS.items():
        value = document.get(name)
        if isinstance(value, (list, dict)) and len(value) > limit:
            raise BadRequest(f'Member "{name}" holds {len(value)} entries: at most {limit} are accepted')


#: A NUL, or a UTF-16 surrogate alone (JSON "\ud800"), in a string of a body: no DICOM value,
#: tag, ID or name holds one, and a lone surrogate cannot even be written out as UTF-8.
UNWRITABLE = re.compile(r"[\x00\ud800-\udfff]")


def _refuse_unwritable(value: dict[str, Any] | list[Any]) -> None:
    """400 for a body whose strings (member names included, at any depth) hold a NUL or a lone
    surrogate: refused before any of them reaches Orthanc (where it gave 500), a log or an answer."""
    for item in [*value.keys(), *value.values()] if isinstance(value, dict) else value:
        if isinstance(item, str) and UNWRITABLE.search(item):
            raise BadRequest("A string of the body of the request holds a NUL character or a lone UTF-16 "
                             "surrogate (\\u0000, \\ud800-\\udfff): no DICOM value, tag or ID may hold one")
        if isinstance(item, (dict, list)):
            _refuse_unwritable(item)


def parse_json_object(body: bytes | str | None) -> dict[str, Any]:
    """A request body that must be a JSON object; 400 otherwise (an empty body too, as native), and
    for a body beyond the limits above, before it is parsed."""
    if body is not None and len(body) > MAX_BODY_BYTES:
        raise BadRequest(f"The body of the request is larger than {MAX_BODY_BYTES // (1024 * 1024)} MiB")
    if isinstance(body, bytes):
        try:
            body = body.decode("utf-8")
        except UnicodeDecodeError:
            raise BadRequest("The body of the request is not valid UTF-8") from None
    _check_shape(body or "")
    try:
        document = json.loads(body or "")
    except ValueError:
        raise BadFileFormat("The body of the request must be a JSON object (it is not valid JSON)") from None
    if not isinstance(document, dict):
        raise BadFileFormat("The body of the request must be a JSON object")
    _check_member_lengths(document)
    _refuse_unwritable(document)
    return document


def _deidentification_options(document: dict[str, Any]) -> frozenset[str]:
    """The body's "DeidentificationOptions": 400 for a name that is no option, as for any other
    member native would refuse; RetainLongitudinalModifiedDates is "ShiftDates": true."""
    if "DeidentificationOptions" not in document:
        return frozenset()
    names = option_names(document["DeidentificationOptions"])
    if names is None:
        raise _member_error("DeidentificationOptions", "an array of strings", BadRequest)
    unknown = unknown_options(names)
    if unknown:
        raise BadRequest(f'Unknown de-identification option(s) {", ".join(map(repr, unknown))} in '
                         f'"DeidentificationOptions": the options are {known_options_text()}')
    if MODIFIED_DATES in names and document.get("ShiftDates") is False:
        raise BadRequest(f'"{MODIFIED_DATES}" is "ShiftDates", which the request sets to false')
    return frozenset(names)


def _check_burned_in(document: dict[str, Any]) -> None:
    """The body's "BurnedInAnnotation": what happens to pixels at risk (docs/pixels.md)."""
    if "BurnedInAnnotation" in document and document["BurnedInAnnotation"] not in BURNED_IN_POLICIES:
        raise BadRequest(f'Member "BurnedInAnnotation" must be one of {", ".join(BURNED_IN_POLICIES)}')


def parse_request(body: bytes | str | None) -> AnonymizeRequest:
    """Parse the request body; 400 for what native refuses with 400 (malformed JSON, wrong types)."""
    document = parse_json_object(body)
    for name in _BOOLEANS:
        if name in document and not isinstance(document[name], bool):
            raise _member_error(name, "a Boolean value")
    for name in _STRINGS:
        if name in document and not isinstance(document[name], str):
            raise _member_error(name, "a string")
    for name in ("Keep", "Remove"):
        if name in document and (not isinstance(document[name], list)
                                 or not all(isinstance(v, str) for v in document[name])):
            raise _member_error(name, "an array of strings", BadRequest)
    if "Replace" in document and not isinstance(document["Replace"], dict):
        raise _member_error("Replace", "an object", BadRequest)
    if "Priority" in document and (isinstance(document["Priority"], bool)
                                   or not isinstance(document["Priority"], int)):
        raise _member_error("Priority", "an integer value")
    _check_burned_in(document)
    if not document.get("Force", False):
        _refuse_identifiers_without_force(document)
    options = _deidentification_options(document)
    asynchronous = document.get("Asynchronous", False) or document.get("Synchronous", True) is False
    return AnonymizeRequest(
        native_body={k: v for k, v in document.items() if k not in CALL_MEMBERS + PLUGIN_MEMBERS},
        keep=list(document.get("Keep", [])),
        replace=dict(document.get("Replace", {})),
        remove=list(document.get("Remove", [])),
        keep_source=document.get("KeepSource", True),
        asynchronous=asynchronous,
        priority=document.get("Priority", 0),
        project=document.get("Project"),
        resources=document.get("Resources"),
        keep_labels=document.get("KeepLabels", False) is True,  # native checks its type
        shift_dates=True if MODIFIED_DATES in options else document.get("ShiftDates"),
        requested_options=options - {MODIFIED_DATES},
        burned_in=document.get("BurnedInAnnotation"),
    )
