"""A generic "every reference resolves" check of an anonymized set against its source, written
for the tests independently of the plugin's own verification (no plugin code is used here).

Given source instances and their anonymized counterparts (paired), it learns how each identity
(SOPInstanceUID, SeriesInstanceUID, StudyInstanceUID, FrameOfReferenceUID at the root) was
translated, checks that translation is one-to-one, and that every reference of every anonymized
instance points at the counterpart of what its source pointed at: inside the anonymized set when
the source reference resolved inside the source set, and consistently elsewhere when it did not.
"""
from __future__ import annotations

from collections import defaultdict
from dataclasses import dataclass, field

from pydicom.dataset import Dataset

WELL_KNOWN = "1.2.840.10008."
ROOT = {"SOPInstanceUID": "Instance", "SeriesInstanceUID": "Series", "StudyInstanceUID": "Study",
        "FrameOfReferenceUID": "FrameOfReference"}
#: References wherever they are.
ALWAYS = {"ReferencedSOPInstanceUID": "Instance", "SOPInstanceUIDOfConcatenationSource": "Instance",
          "ReferencedFrameOfReferenceUID": "FrameOfReference", "RelatedFrameOfReferenceUID": "FrameOfReference",
          "SourceFrameOfReferenceUID": "FrameOfReference"}
#: The root identities, when found inside a sequence, are references.
NESTED = {"SeriesInstanceUID": "Series", "StudyInstanceUID": "Study", "FrameOfReferenceUID": "FrameOfReference"}
STUDY_MANAGEMENT = "1.2.840.10008.3.1.2.3."


def _str(value) -> str:
    return str(value).strip("\x00 ")


def identities(ds: Dataset) -> dict[str, str]:
    return {kind: _str(ds.get(keyword)) for keyword, kind in ROOT.items() if ds.get(keyword)}


def references(ds: Dataset, prefix: str = "") -> dict[str, tuple[str, str]]:
    """path -> (kind, UID) for every reference of the dataset, at any depth."""
    found: dict[str, tuple[str, str]] = {}
    for elem in ds:
        name = elem.keyword or f"{elem.tag}"
        if elem.VR == "SQ":
            for index, item in enumerate(elem.value or ()):
                found.update(references(item, f"{prefix}{name}[{index}]."))
            continue
        if elem.VR != "UI" or not elem.value:
            continue
        kind = ALWAYS.get(elem.keyword) or (NESTED.get(elem.keyword) if prefix else None)
        if kind is None:
            continue
        if elem.keyword == "ReferencedSOPInstanceUID" and _str(ds.get("ReferencedSOPClassUID", "")).startswith(STUDY_MANAGEMENT):
            kind = "Study"
        found[prefix + name] = (kind, _str(elem.value))
    return found


#: UI attributes that name a kind of thing, not one patient's object: never identifying.
NOT_IDENTIFYING = ("ClassUID", "SchemeUID", "SyntaxUID", "CreatorUID")


def ui_values(ds: Dataset) -> set[str]:
    """Every identifying UI value of the dataset at any depth: not the standard's own UIDs, not
    SOP classes, transfer syntaxes, coding schemes or private creators."""
    values = set()
    for elem in ds.iterall():
        if elem.VR == "UI" and elem.value and not elem.keyword.endswith(NOT_IDENTIFYING):
            items = elem.value if isinstance(elem.value, (list, tuple)) or type(elem.value).__name__ == "MultiValue" else [elem.value]
            values |= {_str(v) for v in items if not _str(v).startswith(WELL_KNOWN)}
    return values


@dataclass
class RelationshipReport:
    problems: list[str] = field(default_factory=list)
    resolved: int = 0        # references that resolved in the source and do in the anonymized set
    external: int = 0        # references to something outside the source set, translated consistently
    frames: dict[str, str] = field(default_factory=dict)  # source FoR -> anonymized FoR

    def __bool__(self) -> bool:
        return not self.problems


def check(pairs: list[tuple[Dataset, Dataset]]) -> RelationshipReport:
    """Check (source, anonymized) pairs that together make the source set and the anonymized set."""
    report = RelationshipReport()
    translation: dict[str, dict[str, set[str]]] = defaultdict(lambda: defaultdict(set))
    reverse: dict[str, dict[str, set[str]]] = defaultdict(lambda: defaultdict(set))
    source_ids: dict[str, set[str]] = defaultdict(set)
    anonymized_ids: dict[str, set[str]] = defaultdict(set)
    for source, anonymized in pairs:
        old, new = identities(source), identities(anonymized)
        if set(old) != set(new):
            report.problems.append(f"{old.get('Instance')}: identities {sorted(old)} became {sorted(new)}")
        for kind in old:
            source_ids[kind].add(old[kind])
            if kind in new:
                anonymized_ids[kind].add(new[kind])
                translation[kind][old[kind]].add(new[kind])
                reverse[kind][new[kind]].add(old[kind])
    for kind in translation:
        for old, news in translation[kind].items():
            if len(news) != 1:
                report.problems.append(f"{kind} {old} became {len(news)} different UIDs")
            elif next(iter(news)) == old:
                report.problems.append(f"{kind} {old} was not replaced")
        for new, olds in reverse[kind].items():
            if len(olds) != 1:
                report.problems.append(f"{len(olds)} source {kind} UIDs became the one {new}")
    report.frames = {old: next(iter(news)) for old, news in translation["FrameOfReference"].items()}

    external: dict[str, set[str]] = defaultdict(set)
    all_source_uids = set()
    for source, _ in pairs:
        all_source_uids |= ui_values(source)
    for source, anonymized in pairs:
        where = identities(source).get("Instance", "?")
        old_refs, new_refs = references(source), references(anonymized)
        for path in set(new_refs) - set(old_refs):
            report.problems.append(f"{where}: {path} appeared")
        for path, (kind, value) in old_refs.items():
            if path not in new_refs:
                report.problems.append(f"{where}: {path} was removed")
                continue
            new_value = new_refs[path][1]
            if value in source_ids[kind]:
                expected = next(iter(translation[kind][value]), None)
                if new_value != expected or new_value not in anonymized_ids[kind]:
                    report.problems.append(f"{where}: {path} no longer points at the counterpart of its target")
                else:
                    report.resolved += 1
            else:
                external[value].add(new_value)
                if new_value == value or new_value in anonymized_ids[kind]:
                    report.problems.append(f"{where}: {path}, an outside reference, was kept or now resolves")
                else:
                    report.external += 1
        leaked = ui_values(anonymized) & all_source_uids
        if leaked:
            report.problems.append(f"{where}: {len(leaked)} source UIDs remain")
    for value, news in external.items():
        if len(news) != 1:
            report.problems.append(f"the outside reference {value} became {len(news)} different UIDs")
    return report
