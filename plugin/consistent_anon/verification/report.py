"""Verification of a whole anonymized set against its source: does the set still hang together,
and does anything of the source remain in it?

Pure logic over DICOM headers (read with `filereader.read_header`, never the pixel data), using the
same scanner as the fail-closed check of each anonymized file. Orthanc is reached only through a
`SetReader` (orthanc/rest_port.py), so everything here runs without a server.
"""
from __future__ import annotations

import time
from collections import Counter, defaultdict
from dataclasses import dataclass, field
from typing import Any, Callable, Iterable, Protocol

from pydicom.datadict import keyword_for_tag, tag_for_keyword

from ..identity import dates as date_shifting
from ..errors import BadRequest, NotFound
from .pixel_report import PixelReport
from .pixel_text import ALL, AT_RISK, NONE, PixelTextFinder, PixelTextReport, TextReading, parse_scope, read_instances, scope_for
from ..dicom.filereader import Header
from ..dicom.identifiers import identifying_dates, identifying_texts, text_leaks
from ..dicom.option_attributes import kept_under, recorded_options
from ..orthanc_ids import LEVEL_TYPES
from ..pipeline.options import parse_json_object
from ..identity.pseudonyms import Pseudonymizer
from ..dicom.scanning import TextFinder, UidNeedles, describe, find_uids, instance_uids
from ..pipeline.sealing import without_encrypted_attributes
from ..dicom.uid_attributes import UID_TAGS, is_well_known
from ..dicom.vocabulary import (DEIDENTIFICATION_METHOD, FRAME_OF_REFERENCE_UID, LONGITUDINAL_TEMPORAL_INFORMATION_MODIFIED,
                                NUMBER_OF_FRAMES, PATIENT_IDENTITY_REMOVED, REFERENCED_SOP_CLASS_UID, ROWS,
                                REFERENCED_SOP_INSTANCE_UID, SERIES_INSTANCE_UID, SOP_INSTANCE_UID, STUDY_INSTANCE_UID,
                                Path)

INSTANCE, SERIES, STUDY, FRAME = "Instance", "Series", "Study", "FrameOfReference"
KINDS = (INSTANCE, SERIES, STUDY, FRAME)

#: The UIDs that identify something of the set, at the root of each instance: what references
#: may point at.
ROOT_IDENTITIES = {SOP_INSTANCE_UID: INSTANCE, SERIES_INSTANCE_UID: SERIES,
                   STUDY_INSTANCE_UID: STUDY, FRAME_OF_REFERENCE_UID: FRAME}
#: The same attributes inside a sequence are references (ReferencedSeriesSequence,
#: RTReferencedSeriesSequence, RegistrationSequence, CurrentRequestedProcedureEvidenceSequence...).
NESTED_REFERENCES = {SERIES_INSTANCE_UID: SERIES, STUDY_INSTANCE_UID: STUDY,
                     FRAME_OF_REFERENCE_UID: FRAME}
#: Attributes that are references wherever they are.
REFERENCES = {
    REFERENCED_SOP_INSTANCE_UID: INSTANCE,  # a study when its ReferencedSOPClassUID says so (RT)
    0x00081167: INSTANCE,  # MultiFrameSourceSOPInstanceUID
    0x00200242: INSTANCE,  # SOPInstanceUIDOfConcatenationSource
    0x00280304: INSTANCE,  # ReferencedColorPaletteInstanceUID
    0x30060024: FRAME,     # ReferencedFrameOfReferenceUID
    0x300600C2: FRAME,     # RelatedFrameOfReferenceUID
    0x00640003: FRAME,     # SourceFrameOfReferenceUID (deformable registration)
    0x0018991E: FRAME,     # TargetFrameOfReferenceUID
}
#: ReferencedSOPClassUID of a reference to a study (Detached Study Management and its kin).
STUDY_CLASS_PREFIX = "1.2.840.10008.3.1.2.3."

#: Attributes that tell two instances apart without any identifier: the last resort to pair a
#: source instance with its anonymized counterpart.
FINGERPRINT = ("SOPClassUID", "Modality", "SeriesNumber", "InstanceNumber", "AcquisitionNumber",
               "InConcatenationNumber", "NumberOfFrames", "Rows", "Columns", "ImagePositionPatient",
               "EchoNumbers", "TemporalPositionIdentifier")
#: Each list of the report holds at most this many entries (the counts stay exact).
LIST_LIMIT = 1000


# --- One instance ------------------------------------------------------------------------

@dataclass
class InstanceSummary:
    """What the set-level checks need of one instance, read once from its header."""

    id: str
    series_id: str
    root: dict[str, str] = field(default_factory=dict)  # kind -> the instance's own UID
    uids: dict[Path, tuple[str, ...]] = field(default_factory=dict)  # identifying UID elements
    references: dict[Path, tuple[str, tuple[str, ...]]] = field(default_factory=dict)  # path -> kind, UIDs
    patient_id: str = ""
    series: tuple[str, str, str, str] = ("", "", "", "")  # SeriesInstanceUID, Number, Modality, Description
    fingerprint: tuple = ()
    marked: bool = False  # carries a de-identification marker (see `is_marked`)


def is_marked(header: Header) -> bool:
    """Whether an instance says it was de-identified (PS3.15 E.1.1): PatientIdentityRemoved YES,
    or a DeidentificationMethod (a de-identification that kept the identity on purpose says NO,
    and names its method). An "anonymized" set without either is none: the sides were swapped,
    or it was never anonymized."""
    return (header.text(PATIENT_IDENTITY_REMOVED).strip().upper() == "YES"
            or bool(header.text(DEIDENTIFICATION_METHOD).strip()))


def _text(header: Header, keyword: str) -> str:
    return header.text(tag_for_keyword(keyword))


def summarize(instance_id: str, series_id: str, header: Header,
              uid_tags: frozenset[int] = UID_TAGS) -> InstanceSummary:
    summary = InstanceSummary(instance_id, series_id)
    classes: dict[tuple, str] = {}  # the ReferencedSOPClassUID of each item, which comes first
    for element in header.elements:
        steps, tag = element.path
        if not element.values:
            continue
        if tag == REFERENCED_SOP_CLASS_UID:
            classes[steps] = element.values[0]
        if tag in uid_tags:
            summary.uids[element.path] = element.values
        if not steps and tag in ROOT_IDENTITIES:
            summary.root[ROOT_IDENTITIES[tag]] = element.values[0]
        kind = REFERENCES.get(tag) or (NESTED_REFERENCES.get(tag) if steps else None)
        if kind is not None:
            if tag == REFERENCED_SOP_INSTANCE_UID and classes.get(steps, "").startswith(STUDY_CLASS_PREFIX):
                kind = STUDY
            summary.references[element.path] = (kind, element.values)
    summary.patient_id = _text(header, "PatientID")
    summary.series = tuple(_text(header, keyword) for keyword in
                           ("SeriesInstanceUID", "SeriesNumber", "Modality", "SeriesDescription"))
    summary.fingerprint = tuple(_text(header, keyword) for keyword in FINGERPRINT)
    summary.marked = is_marked(header)
    return summary



@dataclass
class SourceIdentifiers:
    """Everything of the source set that must not appear in the anonymized set."""

    uids: dict[str, str] = field(default_factory=dict)   # UID -> the attribute it identifies
    texts: dict[str, str] = field(default_factory=dict)  # text -> the attribute it comes from
    dates: dict[str, str] = field(default_factory=dict)  # a date or date-time -> its attribute

    def add(self, header: Header, uid_tags: frozenset[int] = UID_TAGS) -> None:
        for value, tag in instance_uids(header, uid_tags).items():
            if value not in self.uids or tag in ROOT_IDENTITIES:
                # named after the attribute it identifies: the root one wins over references
                self.uids[value] = keyword_for_tag(tag) or describe(Path.top(tag))
        for text, label in identifying_texts(header).items():
            self.texts.setdefault(text, label)
        for text, label in identifying_dates(header, date_shifting.is_shifted).items():
            self.dates.setdefault(text, label)

    def finder(self) -> "LeakFinder":
        return LeakFinder(UidNeedles(self.uids), self.uids, TextFinder(self.texts), TextFinder(self.dates))


@dataclass(frozen=True)
class LeakFinder:
    wanted_uids: UidNeedles  # prepared once: searched in every file of the set
    uid_labels: dict[str, str]
    texts: TextFinder
    dates: TextFinder

    def find(self, header: Header, source: Header | None = None) -> list[tuple[Path, str]]:
        """(path, what was found) for every source identifier in the file, file meta included;
        `source`, the paired source's header, where known (see `coincides`); not the source's own
        text in a top-level attribute a de-identification option the file records keeps (K),
        such as InstitutionName under Retain Institution Identity, DeviceUID under Retain Device
        Identity. In a file whose dates
        were shifted (LongitudinalTemporalInformationModified "MODIFIED"), a date of the source
        left as it was is one too: it undoes the shift of every other."""
        kept = kept_under(recorded_options(header))  # what the options it records keep (K) is none
        found = {(element.path, label) for element, label in
                 [(e, self.uid_labels[token]) for e, token in find_uids(header, self.wanted_uids)]
                 + text_leaks(self.texts, header, source) if element.path[0] or element.tag not in kept}
        if header.text(LONGITUDINAL_TEMPORAL_INFORMATION_MODIFIED) == date_shifting.LONGITUDINAL_MODIFIED:
            found |= {(element.path, label) for element, label in self.dates.find(header)}
        return sorted(found, key=lambda item: (describe(item[0]), item[1]))


# --- Reading a resource ------------------------------------------------------------------

class SetReader(Protocol):
    """What the verification reads of Orthanc (orthanc/rest_port.RestPort, the anonymization's port too)."""

    def level_of(self, resource_id: str) -> str: ...
    def instances_of(self, level: str, resource_id: str) -> list[dict[str, str]]: ...
    def header(self, instance_id: str) -> Header: ...
    def anonymized_from(self, instance_id: str) -> str | None: ...
    def pixel_status(self, instance_id: str) -> str | None: ...
    def frame_image(self, instance_id: str, frame: int) -> bytes: ...


class Progress:
    """Logs how far a long read has gone: every `every` instances and every `seconds`."""

    def __init__(self, log: Callable[[str], None], what: str, total: int, every: int = 100,
                 seconds: float = 10.0) -> None:
        self._log, self._what, self._total = log, what, total
        self._every, self._seconds = every, seconds
        self._last = time.monotonic()

    def step(self, done: int) -> None:
        now = time.monotonic()
        if done == self._total or done % self._every == 0 or now - self._last >= self._seconds:
            self._last = now
            self._log(f"{self._what}: {done}/{self._total} instances read")


def _read(reader: SetReader, level: str, resource_id: str, log: Callable[[str], None], what: str,
          visit: Callable[[dict[str, str], Header], None]) -> int:
    instances = reader.instances_of(level, resource_id)
    progress = Progress(log, what, len(instances))
    for done, instance in enumerate(instances, 1):
        visit(instance, reader.header(instance["ID"]))
        progress.step(done)
    return len(instances)


# --- Frames of reference of one resource ---------------------------------------------------

def _series_entry(series_id: str, summary: InstanceSummary, count: int) -> dict[str, Any]:
    uid, number, modality, description = summary.series
    return {"ID": series_id, "SeriesInstanceUID": uid, "SeriesNumber": number, "Modality": modality,
            "SeriesDescription": description, "InstancesCount": count}


def frames_of_reference(summaries: Iterable[InstanceSummary]) -> list[dict[str, Any]]:
    """Each frame of reference the instances lie on or refer to, with its series and counts."""
    on: dict[str, dict[str, list[InstanceSummary]]] = defaultdict(lambda: defaultdict(list))
    referring: dict[str, dict[str, list[InstanceSummary]]] = defaultdict(lambda: defaultdict(list))
    for summary in summaries:
        own = summary.root.get(FRAME)
        if own:
            on[own][summary.series_id].append(summary)
        referred = {value for kind, values in summary.references.values() if kind == FRAME
                    for value in values if value != own}
        for value in referred:
            referring[value][summary.series_id].append(summary)
    answer = []
    for frame in sorted(set(on) | set(referring)):
        answer.append({
            "FrameOfReferenceUID": frame,
            "InstancesCount": sum(len(members) for members in on[frame].values()),
            "Series": [_series_entry(series_id, members[0], len(members)) for series_id, members
                       in sorted(on[frame].items(), key=lambda item: item[1][0].series[1:])],
            "ReferencedBy": [_series_entry(series_id, members[0], len(members))
                             for series_id, members in sorted(referring[frame].items())],
        })
    return answer


def list_frames_of_reference(reader: SetReader, level: str, resource_id: str,
                             log: Callable[[str], None] = lambda message: None) -> list[dict[str, Any]]:
    summaries: list[InstanceSummary] = []
    count = _read(reader, level, resource_id, log, f"frames-of-reference of {resource_id}",
                  lambda instance, header: summaries.append(
                      summarize(instance["ID"], instance["ParentSeries"], header)))
    if not count:
        raise NotFound(f"{LEVEL_TYPES[level]} {resource_id} has no instance")
    return frames_of_reference(summaries)


# --- A source and its anonymized counterpart -----------------------------------------------

@dataclass
class VerifyRequest:
    source: str
    anonymized: str
    project: str | None = None
    pixel_text: str | None = None  # pixel_text.SCOPES; None: the default (`scope_for`)


def parse_verify_request(body: bytes | str | None) -> VerifyRequest:
    document = parse_json_object(body)
    for name in ("Source", "Anonymized"):
        if not isinstance(document.get(name), str) or not document[name]:
            raise BadRequest(f'Member "{name}" should be the Orthanc ID of a patient, study, series or instance')
    if "Project" in document and not isinstance(document["Project"], str):
        raise BadRequest('Member "Project" should be a string')
    unknown = set(document) - {"Source", "Anonymized", "Project", "PixelText"}
    if unknown:
        raise BadRequest(f"Unknown member(s): {', '.join(sorted(unknown))}")
    return VerifyRequest(document["Source"], document["Anonymized"], document.get("Project"), parse_scope(document))


def pair_instances(sources: list[InstanceSummary], anonymized: list[InstanceSummary],
                   pseudonyms: Pseudonymizer | None,
                   anonymized_from: Callable[[str], str | None]) -> tuple[dict[str, str], dict[str, int]]:
    """anonymized instance ID -> source instance ID, and how many pairs each method found.

    In order: the plugin's own pseudonym of the source SOPInstanceUID (under the anonymized
    PatientID), Orthanc's AnonymizedFrom metadata (native anonymization, and the plugin on 1.12),
    then attributes that no anonymization changes, when they tell instances apart unambiguously.
    """
    pairs: dict[str, str] = {}
    taken: set[str] = set()
    counts = {"Pseudonym": 0, "AnonymizedFrom": 0, "Attributes": 0}

    def add(anonymized_id: str, source_id: str, method: str) -> None:
        pairs[anonymized_id] = source_id
        taken.add(source_id)
        counts[method] += 1

    if pseudonyms is not None:
        for patient_id in sorted({a.patient_id for a in anonymized}):
            expected = {pseudonyms.uid(patient_id, s.root[INSTANCE]): s.id
                        for s in sources if s.root.get(INSTANCE)}
            for a in anonymized:
                source_id = expected.get(a.root.get(INSTANCE, ""))
                if a.patient_id == patient_id and a.id not in pairs and source_id and source_id not in taken:
                    add(a.id, source_id, "Pseudonym")
    source_ids = {s.id for s in sources}
    for a in anonymized:
        if a.id not in pairs:
            origin = anonymized_from(a.id)
            if origin in source_ids and origin not in taken:
                add(a.id, origin, "AnonymizedFrom")

    def unique(summaries: Iterable[InstanceSummary]) -> dict[tuple, str]:
        seen: dict[tuple, list[str]] = defaultdict(list)
        for summary in summaries:
            seen[summary.fingerprint].append(summary.id)
        return {key: ids[0] for key, ids in seen.items() if len(ids) == 1}

    left_sources = unique(s for s in sources if s.id not in taken)
    for key, anonymized_id in unique(a for a in anonymized if a.id not in pairs).items():
        if key in left_sources:
            add(anonymized_id, left_sources[key], "Attributes")
    return pairs, counts


class _Limited(list):
    """A report list that keeps the first LIST_LIMIT entries and counts them all."""

    def __init__(self) -> None:
        super().__init__()
        self.total = 0

    def add(self, entry: Any) -> None:
        self.total += 1
        if len(self) < LIST_LIMIT:
            self.append(entry)


def _targets(summaries: Iterable[InstanceSummary]) -> dict[str, set[str]]:
    targets: dict[str, set[str]] = {kind: set() for kind in KINDS}
    for summary in summaries:
        for kind, uid in summary.root.items():
            targets[kind].add(uid)
    return targets


@dataclass
class _UidImages:
    """What each source UID became, learnt where paired files hold a UID at the same path."""

    images: dict[str, set[str]] = field(default_factory=lambda: defaultdict(set))     # source -> anonymized
    preimages: dict[str, set[str]] = field(default_factory=lambda: defaultdict(set))  # anonymized -> source
    attribute: dict[str, str] = field(default_factory=dict)  # source UID -> the attribute it names


def _uid_images(by_id: dict[str, InstanceSummary], anonymized: list[InstanceSummary],
                pairs: dict[str, str]) -> _UidImages:
    learnt = _UidImages()
    for a in anonymized:
        s = by_id.get(pairs.get(a.id, ""))
        if s is None:
            continue
        for path, values in s.uids.items():
            new_values = a.uids.get(path)
            if new_values is None or len(new_values) != len(values):
                continue
            for old, new in zip(values, new_values):
                if not is_well_known(old):
                    learnt.images[old].add(new)
                    learnt.preimages[new].add(old)
                    if not path[0] or old not in learnt.attribute:  # named after the root attribute
                        learnt.attribute[old] = keyword_for_tag(path[1]) or describe(Path.top(path[1]))
    return learnt


def _inconsistent_uids(learnt: _UidImages) -> _Limited:
    """A source UID that became several, or several that became one: a relationship broken."""
    inconsistent = _Limited()
    for old in sorted(learnt.images):
        if len(learnt.images[old]) > 1:
            inconsistent.add({"Attribute": learnt.attribute[old], "Problem": "OneSourceUidBecameSeveral",
                              "Source": old, "Anonymized": sorted(learnt.images[old])})
    for new in sorted(learnt.preimages):
        if len(learnt.preimages[new]) > 1:
            inconsistent.add({"Attribute": learnt.attribute[min(learnt.preimages[new])],
                              "Problem": "SeveralSourceUidsBecameOne",
                              "Source": sorted(learnt.preimages[new]), "Anonymized": new})
    return inconsistent


def _frames_of_reference(sources: list[InstanceSummary], anonymized: list[InstanceSummary],
                         learnt: _UidImages) -> list[dict[str, Any]]:
    """Every frame of reference the source lies on or refers to, and what it became."""
    source_frames: dict[str, set[str]] = defaultdict(set)  # FoR -> series IDs of instances on it
    source_on: Counter[str] = Counter()  # FoR -> how many source instances lie on it
    for s in sources:
        if s.root.get(FRAME):
            source_frames[s.root[FRAME]].add(s.series_id)
            source_on[s.root[FRAME]] += 1
        for kind, values in s.references.values():
            for value in values:
                if kind == FRAME:
                    source_frames.setdefault(value, set())
    anonymized_on: dict[str, list[InstanceSummary]] = defaultdict(list)
    for a in anonymized:
        if a.root.get(FRAME):
            anonymized_on[a.root[FRAME]].append(a)
    frames = []
    for frame in sorted(source_frames):
        targets = sorted(learnt.images.get(frame, ()))
        one_to_one = len(targets) == 1 and learnt.preimages[targets[0]] == {frame}
        members = [m for target in targets for m in anonymized_on.get(target, ())]
        frames.append({
            "Source": frame, "Anonymized": targets, "OneToOne": one_to_one,
            "SourceInstancesCount": source_on[frame],
            "AnonymizedInstancesCount": len(members),
            "SourceSeries": sorted(source_frames[frame]),
            "AnonymizedSeries": sorted({m.series_id for m in members}),
        })
    return frames


def _in_source(s: InstanceSummary | None, path: Path, source_targets: dict[str, set[str]]) -> str:
    """Whether the source counterpart of an unresolved reference resolved in the source set."""
    if s is None:
        return "Unpaired"
    if path not in s.references:
        return "Absent"
    kind, values = s.references[path]
    return "Resolved" if any(v in source_targets[kind] for v in values) else "Unresolved"


def _references(sources: list[InstanceSummary], anonymized: list[InstanceSummary], by_id: dict[str, InstanceSummary],
                pairs: dict[str, str]) -> tuple[int, _Limited, _Limited]:
    """Each reference must resolve inside the anonymized set, unless its source counterpart did
    not resolve inside the source set either (a reference to something never given); a reference
    that resolved in the source must not be gone. Answers (references checked, unresolved, removed)."""
    source_targets, anonymized_targets = _targets(sources), _targets(anonymized)
    unresolved, removed = _Limited(), _Limited()
    checked = 0
    for a in anonymized:
        s = by_id.get(pairs.get(a.id, ""))
        for path, (kind, values) in a.references.items():
            for value in values:
                checked += 1
                if value not in anonymized_targets[kind]:
                    unresolved.add({"Instance": a.id, "Path": describe(path), "Kind": kind,
                                    "InSource": _in_source(s, path, source_targets)})
        if s is not None:
            for path, (kind, values) in s.references.items():
                if path not in a.references and any(v in source_targets[kind] for v in values):
                    removed.add({"Instance": a.id, "Path": describe(path), "Kind": kind})
    return checked, unresolved, removed


def compare(sources: list[InstanceSummary], anonymized: list[InstanceSummary], pairs: dict[str, str],
            leaks: list[tuple[str, Path, str]]) -> dict[str, Any]:
    """The report of a source set and its anonymized set, once instances are paired."""
    by_id = {s.id: s for s in sources}
    learnt = _uid_images(by_id, anonymized, pairs)
    inconsistent = _inconsistent_uids(learnt)
    frames = _frames_of_reference(sources, anonymized, learnt)
    checked, unresolved, removed = _references(sources, anonymized, by_id, pairs)
    found = _Limited()
    for instance_id, path, label in leaks:
        found.add({"Instance": instance_id, "Path": describe(path), "Found": label})
    paired_sources = set(pairs.values())
    unpaired_sources = sorted(s.id for s in sources if s.id not in paired_sources)
    unpaired_anonymized = sorted(a.id for a in anonymized if a.id not in pairs)
    # An instance without a source here (another call's, another study's) cannot be judged.
    broken_references = [r for r in unresolved if r["InSource"] in ("Resolved", "Absent")]
    not_anonymized = sorted(a.id for a in anonymized if not a.marked)
    clean = (not found.total and not inconsistent.total and not broken_references
             and all(f["OneToOne"] for f in frames) and not unpaired_sources and not not_anonymized)
    return {
        "Clean": clean,
        "PairedInstancesCount": len(pairs),
        "UnpairedSourceInstances": unpaired_sources[:LIST_LIMIT],
        "UnpairedAnonymizedInstances": unpaired_anonymized[:LIST_LIMIT],
        "NotAnonymizedInstances": not_anonymized[:LIST_LIMIT],
        "NotAnonymizedInstancesCount": len(not_anonymized),
        "FramesOfReference": frames,
        "InconsistentUids": list(inconsistent),
        "ReferencesCount": checked,
        "UnresolvedReferences": list(unresolved),
        "UnresolvedReferencesCount": unresolved.total,
        "RemovedReferences": list(removed),
        "RemovedReferencesCount": removed.total,
        "Leaks": list(found),
        "LeaksCount": found.total,
    }


def _without_coincidences(reader: SetReader, finder: LeakFinder, leaks: list[tuple[str, Path, str]],
                          pairs: dict[str, str]) -> list[tuple[str, Path, str]]:
    """The leaks again for each paired instance that has any, now that its source is known: a
    text that is only the source's value of a non-identifying attribute at the same place is
    none (`coincides`). The two headers are read again, for these few instances only."""
    suspects = {instance for instance, _, _ in leaks if instance in pairs}
    kept = [leak for leak in leaks if leak[0] not in suspects]
    for instance in sorted(suspects):
        found = finder.find(reader.header(instance), reader.header(pairs[instance]))
        kept.extend((instance, path, label) for path, label in found)
    return kept


@dataclass(frozen=True)
class PixelTextTarget:
    """What the reading of one anonymized instance's pixels needs to know of its header."""
    frames: int
    has_pixels: bool  # an image has Rows; an encapsulated document, a structured report... none to read
    shifted: bool  # its dates were shifted: the source's dates are searched too, as in headers
    kept: frozenset[str]  # the labels of the attributes its options keep (K): no leak, as in headers

    @classmethod
    def of(cls, header: Header) -> "PixelTextTarget":
        kept = frozenset(keyword_for_tag(tag) for tag in kept_under(recorded_options(header)))
        return cls(_number_of_frames(header), ROWS in header,
                   header.text(LONGITUDINAL_TEMPORAL_INFORMATION_MODIFIED) == date_shifting.LONGITUDINAL_MODIFIED, kept)


def _pixel_text(reader: SetReader, scope: str, reading: TextReading, identifiers: SourceIdentifiers,
                targets: dict[str, PixelTextTarget], pixels: PixelReport,
                log: Callable[[str], None]) -> PixelTextReport:
    """Read the text in the pixels of the instances `scope` names that have pixels."""
    finders: dict[tuple[bool, frozenset[str]], PixelTextFinder] = {}

    def finder(target: PixelTextTarget) -> PixelTextFinder:
        key = (target.shifted, target.kept)
        if key not in finders:
            needles = {**identifiers.dates, **identifiers.texts} if target.shifted else identifiers.texts
            finders[key] = PixelTextFinder({text: label for text, label in needles.items() if label not in target.kept})
        return finders[key]

    wanted = targets if scope == ALL else {i: targets[i] for i in pixels.looked_at}
    report = PixelTextReport(scope, without_pixels=sum(1 for t in wanted.values() if not t.has_pixels))
    read_instances({i: (t.frames, finder(t)) for i, t in wanted.items() if t.has_pixels},
                   reader.frame_image, reading, report, log)
    return report


def verify(reader: SetReader, request: VerifyRequest, pseudonyms: Pseudonymizer | None,
           log: Callable[[str], None] = lambda message: None,
           uid_tags: frozenset[int] = UID_TAGS, text_reading: TextReading | None = None) -> dict[str, Any]:
    """Read the source, then the anonymized set (headers only; the pixels where text is read in
    them, pixel_text.py), and compare them."""
    scope = scope_for(request.pixel_text, text_reading)
    source_level = reader.level_of(request.source)
    anonymized_level = reader.level_of(request.anonymized)
    identifiers = SourceIdentifiers()
    sources: list[InstanceSummary] = []
    pixels = PixelReport(reader.pixel_status)

    def visit_source(instance: dict[str, str], header: Header) -> None:
        sources.append(summarize(instance["ID"], instance["ParentSeries"], header, uid_tags))
        identifiers.add(header, uid_tags)
        pixels.add_source(instance["ID"], header)

    _read(reader, source_level, request.source, log, f"verify-anonymization, source {request.source}",
          visit_source)
    finder = identifiers.finder()
    anonymized: list[InstanceSummary] = []
    leaks: list[tuple[str, Path, str]] = []
    targets: dict[str, PixelTextTarget] = {}

    def visit_anonymized(instance: dict[str, str], header: Header) -> None:
        pixels.add(instance["ID"], header)
        if scope == ALL or (scope == AT_RISK and instance["ID"] in pixels.results):  # only what may be read
            targets[instance["ID"]] = PixelTextTarget.of(header)
        header = without_encrypted_attributes(header)  # ciphertext: no leak to search in it
        anonymized.append(summarize(instance["ID"], instance["ParentSeries"], header, uid_tags))
        leaks.extend((instance["ID"], path, label) for path, label in finder.find(header))

    _read(reader, anonymized_level, request.anonymized, log,
          f"verify-anonymization, anonymized {request.anonymized}", visit_anonymized)
    pairs, methods = pair_instances(sources, anonymized, pseudonyms, reader.anonymized_from)
    leaks = _without_coincidences(reader, finder, leaks, pairs)
    pixels.conclude(pairs)
    text = None if scope == NONE else _pixel_text(reader, scope, text_reading, identifiers, targets, pixels, log)
    report = compare(sources, anonymized, pairs, leaks)
    answer = {
        "Clean": report.pop("Clean") and pixels.clean and (text is None or text.clean),
        "Source": {"ID": request.source, "Type": LEVEL_TYPES[source_level], "InstancesCount": len(sources)},
        "Anonymized": {"ID": request.anonymized, "Type": LEVEL_TYPES[anonymized_level],
                       "InstancesCount": len(anonymized)},
        "PairedBy": methods,
    }
    answer.update(report)
    answer.update(pixels.answer())
    if text is not None:
        answer["PixelText"] = text.answer()
    return answer


def _number_of_frames(header: Header) -> int:
    try:
        return max(1, int(header.text(NUMBER_OF_FRAMES).strip() or 1))
    except ValueError:
        return 1
