"""The engine's OrthancPort over Orthanc's built-in REST API, through the `orthanc` module passed in.

Orthanc's errors become domain errors here (http_answers.native_error), so the engine never sees
an Orthanc exception; database conflicts between nodes are retried here, not in the engine.
"""
from __future__ import annotations

import json
import os
import re
import time
from typing import Any, Callable


from . import http_answers
from ..identity.config import DEFAULT_PIXEL_STATUS_METADATA
from ..dicom.filereader import Header, UnreadableHeader, read_header
from ..errors import BadRequest, Conflict, NotFound, PluginError, bounded
from ..orthanc_ids import LEVEL_TYPES
from ..pipeline.port import ALWAYS, IF_CHANGED, NEVER
from .loopback import REVISION_ERROR, LoopbackRest

DATABASE_ERROR = 11  # Orthanc's ErrorCode_Database: e.g. a serialization failure between nodes
#: How many times a metadata write is tried before its conflict is an error.
METADATA_ATTEMPTS = 5
DATABASE_RETRIES = 5


def overwrite_mode(setting: Any) -> str:
    """Orthanc's "OverwriteInstances": a Boolean (every version) or, from 1.13, "Never",
    "Always" or "IfChanged" (Orthanc refuses any other value at start)."""
    if isinstance(setting, str):
        return {NEVER.lower(): NEVER, ALWAYS.lower(): ALWAYS, IF_CHANGED.lower(): IF_CHANGED}.get(setting.lower(), NEVER)
    return ALWAYS if setting else NEVER


class RestPort:
    """The engine's OrthancPort over the built-in REST API (`orthanc.RestApi*`, not the plugins')."""

    def __init__(self, orthanc: Any, configuration: dict[str, Any],
                 pixel_status_metadata: int = DEFAULT_PIXEL_STATUS_METADATA) -> None:
        self._orthanc = orthanc
        self._pixel_status_metadata = str(pixel_status_metadata)
        self._configuration = configuration
        self._version: tuple[int, ...] | None = None
        self._workers: int | None = None
        self._check_revisions = bool(configuration.get("CheckRevisions", False))
        self._loopback = LoopbackRest(configuration, orthanc.GenerateRestApiAuthorizationToken)

    def call(self, function: Callable, *args: Any) -> Any:
        try:
            return function(*args)
        except self._orthanc.OrthancException as error:
            code = int(error.args[0]) if error.args else -1
            message = str(error.args[1]) if len(error.args) > 1 else "Orthanc error"
            self._orthanc.LogInfo(bounded(f"built-in call {getattr(function, '__name__', '')} {args[0]}: {message}"))
            raise http_answers.native_error(code, message) from None

    def retried(self, function: Callable, *args: Any) -> Any:
        """An idempotent call whose transaction may collide with another node's in a shared
        database, tried again."""
        for attempt in range(DATABASE_RETRIES):
            try:
                return self.call(function, *args)
            except PluginError as error:
                if error.orthanc_code != DATABASE_ERROR or attempt == DATABASE_RETRIES - 1:
                    raise
                time.sleep(0.01 * (attempt + 1))

    def instances_of(self, level: str, resource_id: str) -> list[dict[str, str]]:
        if level == "instances":
            answer = [json.loads(self.call(self._orthanc.RestApiGet, f"/instances/{resource_id}"))]
        else:
            try:
                answer = json.loads(self.call(self._orthanc.RestApiGet, f"/{level}/{resource_id}/instances"))
            except BadRequest:  # Orthanc's answer for a resource of another level
                raise NotFound(f"Unknown resource: no {level} has the ID {resource_id}") from None
        return [{"ID": instance["ID"], "ParentSeries": instance["ParentSeries"],
                 "SOPInstanceUID": instance.get("MainDicomTags", {}).get("SOPInstanceUID", ""),
                 "FileSize": int(instance.get("FileSize") or 0)}  # the engine's memory budget
                for instance in answer]

    def level_of(self, resource_id: str) -> str:
        """The level of an ID of any level (bulk requests, the verification route take those)."""
        for level in LEVEL_TYPES:
            try:
                self.call(self._orthanc.RestApiGet, f"/{level}/{resource_id}")
            except NotFound:
                continue
            return level
        raise NotFound(f"Unknown resource {resource_id}")

    def header(self, instance_id: str) -> Header:
        try:
            return read_header(self.read_file(instance_id))
        except UnreadableHeader as error:
            raise PluginError(f"Instance {instance_id} cannot be read by the plugin ({error})") from None

    def anonymized_from(self, instance_id: str) -> str | None:
        return self.metadata("instances", instance_id, "AnonymizedFrom")

    def pixel_status(self, instance_id: str) -> str | None:
        """The pixel status the anonymization stored with a result (pixels/decision.py)."""
        return self.metadata("instances", instance_id, self._pixel_status_metadata)

    def frame_image(self, instance_id: str, frame: int) -> bytes:
        """One frame as Orthanc renders it (PNG, 8 bits), for the text reader (verification/pixel_text.py)."""
        return self.call(self._orthanc.RestApiGet, f"/instances/{instance_id}/frames/{frame}/preview")

    def identifiers(self, series_id: str) -> tuple[str, str, str]:
        """PatientID, StudyInstanceUID and SeriesInstanceUID of a series, from the index."""
        series = json.loads(self.call(self._orthanc.RestApiGet, f"/series/{series_id}"))
        study = json.loads(self.call(self._orthanc.RestApiGet, f"/studies/{series['ParentStudy']}"))
        return (study.get("PatientMainDicomTags", {}).get("PatientID", ""),
                study["MainDicomTags"].get("StudyInstanceUID", ""),
                series["MainDicomTags"].get("SeriesInstanceUID", ""))

    def existing_instances(self, series_id: str) -> set[str]:
        """The series' own record lists its instances' IDs: not a record per instance."""
        try:
            return set(json.loads(self.call(self._orthanc.RestApiGet, f"/series/{series_id}"))["Instances"])
        except NotFound:
            return set()

    def overwrite_mode(self) -> str:
        return overwrite_mode(self._configuration.get("OverwriteInstances", False))

    def patient_level(self) -> bool:
        """False under "PatientLevelEnabled": false (1.12.11): Orthanc then has no /patients routes."""
        return self._configuration.get("PatientLevelEnabled", True) is not False

    def labels(self, level: str, resource_id: str) -> list[str]:
        return json.loads(self.call(self._orthanc.RestApiGet, f"/{level}/{resource_id}/labels"))

    def add_label(self, level: str, resource_id: str, label: str) -> None:
        self.call(self._orthanc.RestApiPut, f"/{level}/{resource_id}/labels/{label}", "")

    def transcodes_on_ingest(self) -> bool:
        return bool(self._configuration.get("IngestTranscoding"))

    def exists(self, level: str, resource_id: str) -> bool:
        try:
            self.retried(self._orthanc.RestApiGet, f"/{level}/{resource_id}")
        except NotFound:
            return False
        return True

    def stored_md5(self, instance_id: str) -> str:
        """The MD5 Orthanc keeps of the instance's file as it was received."""
        answer = self.call(self._orthanc.RestApiGet, f"/instances/{instance_id}/attachments/dicom/md5")
        return (answer.decode("ascii") if isinstance(answer, bytes) else str(answer)).strip()

    def parent_of(self, level: str, resource_id: str) -> str:
        field = {"instances": "ParentSeries", "series": "ParentStudy", "studies": "ParentPatient"}[level]
        return json.loads(self.call(self._orthanc.RestApiGet, f"/{level}/{resource_id}"))[field]

    def set_metadata(self, level: str, resource_id: str, name: str, value: str) -> None:
        """Make the metadata hold `value`. AnonymizedFrom, where Orthanc does not check revisions: a
        plain write with no read before it (a study-level run writes it once per new instance,
        where it is never there yet: the read doubled those calls). Else no write when it
        already holds `value` (the options mark, once per series, is there on a re-run); a plain
        write when it is new, or when Orthanc does not check revisions; else an overwrite naming the revision it
        replaces (LoopbackRest), for a user metadata: Orthanc's HTTP API forbids writing a system
        one (AnonymizedFrom, 403), and its internal API cannot name a revision, so an
        AnonymizedFrom already there stays (it names a source of the result too, one of several
        that a Replace merged into one patient or study). Two writers may race (the plugin's own
        workers on one parent, two nodes): the loser's write is refused as a revision conflict, or as a database
        collision between nodes, which Orthanc does not retry for metadata; it reads again and
        writes only if the winner's value is not the one wanted."""
        path = f"/{level}/{resource_id}/metadata/{name}"
        for attempt in range(METADATA_ATTEMPTS):
            current = self.metadata(level, resource_id, name) if self._check_revisions or name.isdigit() else None
            if current == value:
                return
            try:
                if current is None or not self._check_revisions:
                    self.call(self._orthanc.RestApiPut, path, value)
                elif name.isdigit():  # a user metadata: Orthanc's HTTP API takes it with its revision
                    self._loopback.overwrite(path, value)
                else:  # a system one (AnonymizedFrom): no way for a plugin; what is there is kept
                    self._orthanc.LogInfo(f"{name} of {level} {resource_id} kept: \"CheckRevisions\" lets no "
                                          f"plugin replace it")
                return
            except PluginError as error:
                if isinstance(error, NotFound) and not self.exists(level, resource_id):
                    raise Conflict(f"An anonymized resource disappeared while the call ran (a concurrent call "
                                   f"was rolled back, or Orthanc recycled it): {level} {resource_id}") from None
                if error.orthanc_code not in (DATABASE_ERROR, REVISION_ERROR) or attempt == METADATA_ATTEMPTS - 1:
                    raise
                time.sleep(0.01 * (attempt + 1))

    def metadata(self, level: str, resource_id: str, name: str) -> str | None:
        try:
            answer = self.call(self._orthanc.RestApiGet, f"/{level}/{resource_id}/metadata/{name}")
        except NotFound:  # no such metadata, or no such resource
            return None
        return answer.decode("utf-8") if isinstance(answer, bytes) else str(answer)

    def read_file(self, instance_id: str) -> bytes:
        """Through the plugin SDK rather than the REST route /instances/{id}/file: the same bytes
        and the same UnknownResource for an instance that is not (or no longer) there, without
        the REST layer (docs/performance.md, "Where the time goes"); orthanc-python releases Python's lock
        during both alike."""
        return self.call(self._orthanc.GetDicomForInstance, instance_id)

    def anonymize_instance(self, instance_id: str, body: dict[str, Any]) -> bytes:
        return self.call(self._orthanc.RestApiPost, f"/instances/{instance_id}/anonymize", json.dumps(body))

    def transcode(self, data: bytes, syntax: str) -> bytes:
        """A DICOM file in another transfer syntax, by Orthanc's transcoder (the one its jobs use)."""
        def transcode(syntax: str, data: bytes) -> bytes:  # the syntax first: call() logs the first argument
            return self._orthanc.TranscodeDicomInstance(data, syntax).SerializeDicomInstance()
        return self.call(transcode, syntax, data)

    def store(self, data: bytes) -> dict[str, Any]:
        """Orthanc retries a store that collides with another node's, but not forever: past that,
        it is tried again here (a store that did happen answers "AlreadyStored")."""
        return json.loads(self.retried(self._orthanc.RestApiPost, "/instances", data))

    def delete(self, level: str, resource_id: str) -> None:
        """Two nodes deleting in one shared database collide, and Orthanc does not retry a deletion."""
        self.retried(self._orthanc.RestApiDelete, f"/{level}/{resource_id}")

    def workers(self) -> int:
        """How many instances to do at once: two per core where orthanc-python (4.3 and later)
        releases Python's lock during Orthanc calls ("Python": {"AllowThreads": true}), else one.
        Two, because each instance also waits on the disk (Orthanc syncs every stored file and
        transaction): a second one keeps the core busy meanwhile (bench: 0.87x native's time
        with two per core, 1.0x with one, on 1.12.7)."""
        if self._workers is None:
            allowed = bool((self._configuration.get("Python") or {}).get("AllowThreads", False))
            try:
                text = json.loads(self.call(self._orthanc.RestApiGet, "/plugins/python"))["Version"]
                plugin_version = tuple(int(p) for p in re.findall(r"\d+", text)[:2])
            except (PluginError, KeyError, ValueError):  # version unknown: one worker, safe on every version
                plugin_version = (0,)
            self._workers = 2 * (os.cpu_count() or 1) if allowed and plugin_version >= (4, 3) else 1
        return self._workers

    def version(self) -> tuple[int, ...]:
        if self._version is None:
            text = json.loads(self.call(self._orthanc.RestApiGet, "/system"))["Version"]
            self._version = tuple(int(p) for p in re.findall(r"\d+", text)[:3]) or (0,)
        return self._version

