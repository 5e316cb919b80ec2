"""An in-memory Orthanc for the engine's unit tests: the calls the engine makes of Orthanc, answered
as Orthanc answers them, in milliseconds and without a server.

It is held to the real thing by tests/test_port_contract.py, which runs the same calls against
it and against a real Orthanc of the version under test (through the plugin's own RestPort), so
it cannot drift. Native de-identification is reduced to what the engine relies on: UIDs of the
profile get new random values consistent within one call, PatientID and PatientName new ones,
private elements go unless kept, identifying attributes are emptied, and the caller's Keep,
Replace (top level or by path into sequences) and Remove apply on top.
"""
from __future__ import annotations

import hashlib
import io
import re
import threading
import uuid
from typing import Any

import pydicom
from pydicom.datadict import tag_for_keyword
from pydicom.dataset import Dataset
from pydicom.uid import generate_uid

from consistent_anon import orthanc_ids
from consistent_anon.errors import BadRequest, Conflict, NotFound, PluginError
from consistent_anon.dicom.filereader import Header, read_header
from consistent_anon.dicom.uid_attributes import PROFILE_TAGS, is_well_known

LEVELS = ("patients", "studies", "series", "instances")
PATIENT_ID, PATIENT_NAME = 0x00100020, 0x00100010
IDENTIFIERS = {0x00100020: "PatientID", 0x0020000D: "StudyInstanceUID", 0x0020000E: "SeriesInstanceUID",
               0x00080018: "SOPInstanceUID"}
#: What the basic profile empties (Z) or removes (X) among what the tests' studies carry.
EMPTIED = ("PatientBirthDate", "AccessionNumber", "ReferringPhysicianName", "StudyID", "StudyDate",
           "StudyTime", "PatientSex")
REMOVED = ("InstitutionName", "InstitutionAddress", "SeriesDate", "AcquisitionDate", "ContentDate",
           "ContentSequence", "OtherPatientIDs", "InstitutionalDepartmentName")
#: Orthanc's error codes for what the fake refuses.
UNKNOWN_RESOURCE, INEXISTENT_ITEM, BAD_REQUEST = 17, 7, 8
_STEP = re.compile(r"^(.+)\[(\d+|\*)\]$")


def _tag(name: str) -> int:
    name = name.strip()
    hexa = re.fullmatch(r"\(?([0-9a-fA-F]{4})[,|]?([0-9a-fA-F]{4})\)?", name)
    tag = int(hexa.group(1) + hexa.group(2), 16) if hexa else tag_for_keyword(name)
    if tag is None:
        raise PluginError(f"Unknown DICOM tag: {name}", orthanc_code=27, description="Unknown DICOM tag")
    return tag


def _parse_path(text: str) -> tuple[list[tuple[int, int | None]], int]:
    """`Seq[0].Other[*].Tag` -> ([(seq, 0), (other, None)], tag); None stands for every item."""
    *steps, last = text.split(".") if "[" in text else [text]
    parsed = []
    for step in steps:
        match = _STEP.match(step)
        if not match:
            raise BadRequest(f"Bad path: {text}")
        parsed.append((_tag(match.group(1)), None if match.group(2) == "*" else int(match.group(2))))
    return parsed, _tag(last)


def _targets(ds: Dataset, steps: list[tuple[int, int | None]]) -> list[Dataset]:
    """The datasets a path's steps lead to (none when a sequence or item is missing)."""
    found = [ds]
    for seq, index in steps:
        following = []
        for current in found:
            if seq in current and current[seq].VR == "SQ":
                items = list(current[seq].value)
                following.extend(items if index is None else items[index:index + 1])
        found = following
    return found


def _walk(ds: Dataset):
    for element in list(ds):
        yield ds, element
        if element.VR == "SQ":
            for item in element.value:
                yield from _walk(item)


class FakeOrthanc:
    """The engine's OrthancPort, in memory. `version` decides what that Orthanc version would do
    (AnonymizedFrom writable from 1.12 on); `failures` makes named calls fail, for fault tests."""

    def __init__(self, version: tuple[int, ...] = (1, 12, 7), workers: int = 1, overwrite: str = "Never",
                 patient_level: bool = True) -> None:
        self._version = version
        self._workers = workers
        self._overwrite = overwrite
        self._patient_level = patient_level
        self._lock = threading.RLock()
        self.files: dict[str, bytes] = {}
        self.parents: dict[str, str] = {}  # child ID -> parent ID, every level
        self.levels: dict[str, str] = {}  # ID -> level
        self.main_tags: dict[str, dict[str, str]] = {}
        self.stored_metadata: dict[str, dict[str, str]] = {}  # resource ID -> name -> value
        self.stored_labels: dict[str, set[str]] = {}
        self.calls: list[tuple[str, str]] = []
        self._failures: dict[str, tuple[int, PluginError, int | None]] = {}

    # --- helpers for tests ------------------------------------------------------------------
    def upload(self, data: bytes) -> dict[str, str]:
        return self.store(data)

    def children(self, resource_id: str) -> list[str]:
        return [child for child, parent in self.parents.items() if parent == resource_id]

    def fail(self, call: str, error: PluginError, after: int = 0, times: int | None = None) -> None:
        """Make `call` raise `error` once it has succeeded `after` more times, `times` times (every
        time if None): fault tests."""
        self._failures[call] = (self.count(call) + after, error, times)

    def count(self, call: str) -> int:
        return sum(1 for name, _ in self.calls if name == call)

    def _call(self, name: str, argument: str = "") -> None:
        with self._lock:
            self.calls.append((name, argument))
            failure = self._failures.get(name)
            if failure and self.count(name) > failure[0]:
                threshold, error, times = failure
                if times is not None:
                    if times <= 0:
                        return
                    self._failures[name] = (threshold, error, times - 1)
                raise error

    def _require(self, level: str, resource_id: str) -> None:
        if self.levels.get(resource_id) != level:
            raise NotFound(f"Unknown resource: no {level} has the ID {resource_id}")

    def _instances_under(self, resource_id: str) -> list[str]:
        if self.levels.get(resource_id) == "instances":
            return [resource_id]
        return [i for child in self.children(resource_id) for i in self._instances_under(child)]

    # --- the OrthancPort ---------------------------------------------------------------------
    def instances_of(self, level: str, resource_id: str) -> list[dict[str, Any]]:
        with self._lock:
            self._call("instances_of", resource_id)
            if level != "instances" and resource_id in self.levels and self._version < (1, 12):
                if self.levels[resource_id] != level:
                    return []  # Orthanc 1.10 lists no child of an ID of another level
            self._require(level, resource_id)
            return [{"ID": i, "ParentSeries": self.parents[i],
                     "SOPInstanceUID": self.main_tags[i]["SOPInstanceUID"], "FileSize": len(self.files[i])}
                    for i in sorted(self._instances_under(resource_id))]

    def level_of(self, resource_id: str) -> str:
        self._call("level_of", resource_id)
        if resource_id not in self.levels:
            raise NotFound(f"Unknown resource {resource_id}")
        return self.levels[resource_id]

    def parent_of(self, level: str, resource_id: str) -> str:
        with self._lock:
            self._call("parent_of", resource_id)
            self._require(level, resource_id)
            return self.parents[resource_id]

    def identifiers(self, series_id: str) -> tuple[str, str, str]:
        with self._lock:
            self._call("identifiers", series_id)
            self._require("series", series_id)
            study = self.parents[series_id]
            return (self.main_tags[self.parents[study]]["PatientID"], self.main_tags[study]["StudyInstanceUID"],
                    self.main_tags[series_id]["SeriesInstanceUID"])

    def existing_instances(self, series_id: str) -> set[str]:
        with self._lock:
            self._call("existing_instances", series_id)
            return set(self.children(series_id)) if self.levels.get(series_id) == "series" else set()

    def set_metadata(self, level: str, resource_id: str, name: str, value: str) -> None:
        with self._lock:
            self._call("set_metadata", f"{level}/{resource_id}/{name}")
            if self.levels.get(resource_id) != level:  # gone meanwhile: the port says so, as a conflict
                raise Conflict(f"An anonymized resource disappeared while the call ran: {level}")
            if name == "AnonymizedFrom" and self._version < (1, 12):
                raise NotFound("Unknown resource", orthanc_code=UNKNOWN_RESOURCE, description="Unknown resource")
            self.stored_metadata.setdefault(resource_id, {})[name] = value

    def metadata(self, level: str, resource_id: str, name: str) -> str | None:
        with self._lock:
            self._call("metadata", f"{level}/{resource_id}/{name}")
            if self.levels.get(resource_id) != level:
                return None
            return self.stored_metadata.get(resource_id, {}).get(name)

    def read_file(self, instance_id: str) -> bytes:
        with self._lock:
            self._call("read_file", instance_id)
            self._require("instances", instance_id)
            return self.files[instance_id]

    def header(self, instance_id: str) -> Header:
        return read_header(self.read_file(instance_id))

    def store(self, data: bytes) -> dict[str, str]:
        self._call("store")
        ds = pydicom.dcmread(io.BytesIO(data), stop_before_pixels=True)
        identifiers = [str(ds.get(keyword, "")) for keyword in IDENTIFIERS.values()]
        ids = [orthanc_ids.resource_id(*identifiers[:n]) for n in range(1, 5)]
        with self._lock:
            status = "AlreadyStored" if ids[3] in self.files and self._overwrite == "Never" else "Success"
            if status == "Success":
                for level, resource, parent, n in zip(LEVELS, ids, [None] + ids[:3], range(1, 5)):
                    self.levels[resource] = level
                    self.main_tags[resource] = dict(zip(IDENTIFIERS.values(), identifiers[:n]))
                    if parent:
                        self.parents[resource] = parent
                self.files[ids[3]] = data
        return {"ID": ids[3], "ParentSeries": ids[2], "ParentStudy": ids[1], "ParentPatient": ids[0],
                "Path": f"/instances/{ids[3]}", "Status": status}

    def delete(self, level: str, resource_id: str) -> None:
        with self._lock:
            self._call("delete", resource_id)
            self._require(level, resource_id)
            self._remove(resource_id)

    def _remove(self, resource_id: str) -> None:
        for child in self.children(resource_id):
            self._remove(child)
        parent = self.parents.pop(resource_id, None)
        for table in (self.levels, self.main_tags, self.stored_metadata, self.stored_labels, self.files):
            table.pop(resource_id, None)
        if parent and not self.children(parent):  # Orthanc removes the parents left empty
            self._remove(parent)

    def version(self) -> tuple[int, ...]:
        return self._version

    def workers(self) -> int:
        return self._workers

    def overwrite_mode(self) -> str:
        return self._overwrite

    def patient_level(self) -> bool:
        return self._patient_level

    def transcodes_on_ingest(self) -> bool:
        return False

    def exists(self, level: str, resource_id: str) -> bool:
        self._call("exists", resource_id)
        return self.levels.get(resource_id) == level

    def stored_md5(self, instance_id: str) -> str:
        with self._lock:
            self._call("stored_md5", instance_id)
            self._require("instances", instance_id)
            return hashlib.md5(self.files[instance_id]).hexdigest()

    def labels(self, level: str, resource_id: str) -> list[str]:
        with self._lock:
            self._call("labels", resource_id)
            self._require(level, resource_id)
            return sorted(self.stored_labels.get(resource_id, ()))

    def add_label(self, level: str, resource_id: str, label: str) -> None:
        with self._lock:
            self._call("add_label", f"{resource_id}/{label}")
            self._require(level, resource_id)
            self.stored_labels.setdefault(resource_id, set()).add(label)

    def transcode(self, data: bytes, syntax: str) -> bytes:
        raise PluginError("The in-memory Orthanc does not transcode", orthanc_code=2, description="Not implemented")

    def anonymize_instance(self, instance_id: str, body: dict[str, Any]) -> bytes:
        self._call("anonymize_instance", instance_id)
        data = self.read_file(instance_id)
        return deidentify(data, body, self._version)


def _refuse_identifiers_without_force(body: dict[str, Any]) -> None:
    if body.get("Force"):
        return
    for member in ("Keep", "Replace", "Remove"):
        for name in body.get(member, ()):
            if "[" not in name and _tag(name) in IDENTIFIERS:
                raise BadRequest(f"Marking tag {name} requires the Force option")


def _json_value(vr: str, value):
    """A Replace value as native takes it: a sequence's items as objects of tags, text otherwise."""
    if vr == "SQ":
        items = []
        for members in value:
            item = pydicom.Dataset()
            for name, text in members.items():
                member = _parse_path(name)[1]
                item[member] = pydicom.DataElement(member, pydicom.datadict.dictionary_VR(member), text)
            items.append(item)
        return pydicom.Sequence(items)
    return value.encode("latin-1") if vr == "UN" else value


def deidentify(data: bytes, body: dict[str, Any], version: tuple[int, ...]) -> bytes:
    """What native's single-instance anonymization does, as far as the engine relies on it."""
    _refuse_identifiers_without_force(body)
    ds = pydicom.dcmread(io.BytesIO(data))
    original = pydicom.dcmread(io.BytesIO(data))
    keep = {_tag(name) for name in body.get("Keep", []) if "[" not in name}
    profile = PROFILE_TAGS.get(body.get("DicomVersion", ""), PROFILE_TAGS[max(PROFILE_TAGS)])
    new_uids: dict[str, str] = {}
    for dataset, element in list(_walk(ds)):
        tag = int(element.tag)
        if element.tag.is_private and not body.get("KeepPrivateTags"):
            del dataset[tag]
        elif tag in profile and tag not in keep and element.value and not is_well_known(str(element.value)):
            element.value = new_uids.setdefault(str(element.value), generate_uid())
    for keyword in EMPTIED + REMOVED:
        tag = tag_for_keyword(keyword)
        if tag in ds and tag not in keep:
            if keyword in EMPTIED:
                ds[tag].value = ""
            else:
                del ds[tag]
    if PATIENT_ID not in keep:
        ds.PatientID = str(uuid.uuid4())
    if PATIENT_NAME not in keep:
        ds.PatientName = f"Anonymized{len(new_uids)}"
    ds.PatientIdentityRemoved = "YES"
    if body.get("Keep") or body.get("Replace"):
        if version >= (1, 12):
            ds.DeidentificationMethod = f"Orthanc {'.'.join(map(str, version))}"
        elif "DeidentificationMethod" in ds:
            del ds.DeidentificationMethod
    else:
        ds.DeidentificationMethod = f"Orthanc {'.'.join(map(str, version))} - PS 3.15-2023b Table E.1-1 Basic Profile"
    for tag in keep & set(original.keys()):
        ds[tag] = original[tag]
    for name, value in body.get("Replace", {}).items():
        steps, tag = _parse_path(name)
        for target in _targets(ds, steps):
            if steps and tag not in target:
                continue  # a replacement by path changes what is there, it adds nothing
            vr = pydicom.datadict.dictionary_VR(tag) if not pydicom.tag.Tag(tag).is_private else "UN"
            target[tag] = pydicom.DataElement(tag, vr, _json_value(vr, value))
    for name in body.get("Remove", []):
        steps, tag = _parse_path(name)
        for target in _targets(ds, steps):
            if tag in target:
                del target[tag]
    ds.file_meta.MediaStorageSOPInstanceUID = ds.SOPInstanceUID
    buffer = io.BytesIO()
    ds.save_as(buffer, enforce_file_format=True)
    return buffer.getvalue()
