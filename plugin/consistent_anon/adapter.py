"""The thin layer that talks to the `orthanc` module: routes, built-in calls, HTTP answers.

The `orthanc` module is passed in, never imported here, so the rest of the package is plain
Python tested without a server, and this layer is tested against a real Orthanc.
"""
from __future__ import annotations

import functools
import json
import os
import re
import threading
import time
import traceback
import urllib.parse
from dataclasses import replace
from pathlib import Path
from typing import Any, Callable

from . import answers
from .audit import AuditTrail, basic_user, orthanc_emitter, page, request_facts
from .audit_log import FileAuditLog, Retention
from .config import AUDIT_LOG_NAME, configuration_folder, parse_config
from .coexistence import route_clash_warning
from .engine import Anonymizer
from .errors import BadFileFormat, BadRequest, Conflict, Forbidden, NotFound, PluginError, bounded
from .filereader import Header, UnreadableHeader, read_header
from .job_routes import JOBS_ASIDE_PROPERTY, JOBS_PROPERTY, JobRoutes
from .jobs import Job, JobQueue, JobSettings
from .journal import CallJournal
from .keys import (FileChecks, KeyChecks, KeyStore, PropertyChecks, SharedFileKey, migrate_property_key,
                   no_generated_key)
from .loopback import REVISION_ERROR, LoopbackRest
from .options import UNWRITABLE, AnonymizeRequest, parse_request
from .orthanc_ids import LEVEL_TYPES, anonymized_counterpart
from .port import ALWAYS, IF_CHANGED, NEVER
from .pseudonyms import fresh_uid, is_valid_uid
from .rest_routes import SEGMENT, register_route
from .set_verification import list_frames_of_reference, parse_verify_request, verify
from .uid_attributes import is_well_known

NATIVE_UID_LEVELS = ("patient", "study", "series", "instance")
UID_LEVELS = NATIVE_UID_LEVELS + ("frame-of-reference",)
#: The generate-uid arguments that ask for a pseudonym (PseudonymLookup).
PSEUDONYM_QUERIES = ("uid", "patient-id", "anonymized-patient-id", "project")
#: From this Orthanc on, the `get` arguments reach Python decoded (measured: 1.13.0 with
#: orthanc-python 7.1 decodes; 1.10.1/4.0 and 1.12.7/5.0 pass the query text as sent, percent-encoded).
DECODED_GET_SINCE = (1, 13, 0)
BULK = "bulk"  # the "level" of a job made by /tools/bulk-anonymize
DATABASE_ERROR = 11  # Orthanc's ErrorCode_Database: e.g. a serialization failure between nodes
EXPLORER_SCRIPT = Path(__file__).with_name("explorer.js")  # the buttons added to Orthanc Explorer


def overwrite_mode(setting: Any) -> str:
    """Orthanc's "OverwriteInstances": a Boolean (every version) or, from 1.13, "Never",
    "Always" or "IfChanged" (Orthanc refuses any other value at start)."""
    if isinstance(setting, str):
        return {NEVER.lower(): NEVER, ALWAYS.lower(): ALWAYS, IF_CHANGED.lower(): IF_CHANGED}.get(setting.lower(), NEVER)
    return ALWAYS if setting else NEVER
#: How many times a metadata write is tried before its conflict is an error.
METADATA_ATTEMPTS = 5
DATABASE_RETRIES = 5
#: The global property where synchronous calls in flight are journaled (see journal.py).
JOURNAL_PROPERTY = 9740


class RestPort:
    """The engine's OrthancPort over the built-in REST API (`orthanc.RestApi*`, not the plugins')."""

    def __init__(self, orthanc: Any, configuration: dict[str, Any]) -> None:
        self._orthanc = orthanc
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
            raise answers.native_error(code, message) from None

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
        the REST layer (README, "Where the time goes"); orthanc-python releases Python's lock
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


def _text(body: Any) -> str:
    """A request body as the text jobs and the journal keep."""
    return body.decode("utf-8") if isinstance(body, bytes) else (body or "")


def send_error(output: Any, error: PluginError, method: str, uri: str) -> None:
    """A JSON error like native's. orthanc-python 4.0 takes (status, str, size); later, bytes."""
    status = answers.http_status(error)
    body = answers.error_body(error, method, uri)
    try:
        output.SendHttpStatus(status, body.encode("utf-8"))
    except TypeError:  # orthanc-python 4.0's signature: the same answer, as it takes it
        output.SendHttpStatus(status, body, len(body))


class Plugin:
    """The routes the plugin serves, wired to one Orthanc."""

    def __init__(self, orthanc: Any) -> None:
        self._orthanc = orthanc
        configuration = json.loads(orthanc.GetConfiguration())
        folder = configuration_folder(orthanc.GetConfigurationPath())
        self.config = parse_config(configuration, folder)
        self._storage_directory = str(folder / configuration.get("StorageDirectory", "OrthancStorage"))
        self._index_directory = str(folder / configuration.get("IndexDirectory", self._storage_directory))
        self._key_places: tuple[Callable[[], bytes], KeyChecks] | None = None
        self._configuration_plugins = configuration.get("Plugins", [])
        self._key_lock = threading.Lock()
        self.keys = KeyStore(self.config, lambda: self.key_places()[0](), lambda: self.key_places()[1],
                             orthanc.LogWarning)
        self.port = RestPort(orthanc, configuration)
        self.anonymizer = Anonymizer(self.port, self.keys, options_metadata=self.config.options_metadata,
                                     log_error=orthanc.LogError)
        # Orthanc checks the Basic credentials only with its authentication on (by default, iff remote access is)
        self._authenticated = bool(configuration.get("AuthenticationEnabled",
                                                     configuration.get("RemoteAccessAllowed", False)))
        audit_file = self.config.audit_log_file or str(Path(self._storage_directory).resolve() / AUDIT_LOG_NAME)
        self.audit = AuditTrail(FileAuditLog(audit_file, Retention(self.config.audit_retention_days,
                                                                   self.config.audit_max_entries)),
                                functools.partial(request_facts, self.keys), orthanc.LogError,
                                orthanc_emitter(orthanc))
        self.jobs = JobQueue(self._run_job, lambda: orthanc.GetGlobalProperty(JOBS_PROPERTY, ""),
                             lambda text: orthanc.SetGlobalProperty(JOBS_PROPERTY, text), orthanc.LogError,
                             JobSettings.of(configuration),
                             lambda text: orthanc.SetGlobalProperty(JOBS_ASIDE_PROPERTY, text), self.audit.job_ended)
        self.job_routes = JobRoutes(orthanc, self.jobs, self.port.call)
        self.journal = CallJournal(lambda: self.port.retried(orthanc.GetGlobalProperty, JOURNAL_PROPERTY, ""),
                                   lambda text: self.port.retried(orthanc.SetGlobalProperty, JOURNAL_PROPERTY, text),
                                   orthanc.LogError)
        self._restore_lock = threading.Lock()
        self._restored = False

    def register(self) -> None:
        """Register the routes. No change callback: it would run Python for every stored instance
        and slow every anonymization down; jobs a stop interrupted resume at the first call instead."""
        self.job_routes.register(self._guarded)
        register_route(self._orthanc, "/tools/generate-uid", self._guarded(self.generate_uid))
        register_route(self._orthanc, "/tools/bulk-anonymize", self._guarded(self.bulk_anonymize))
        register_route(self._orthanc, "/tools/anonymization-log", self._guarded(self.anonymization_log))
        register_route(self._orthanc, f"/(patients|studies|series|instances)/{SEGMENT}/anonymize",
                                           self._guarded(self.anonymize))
        register_route(self._orthanc, f"/(patients|studies|series)/{SEGMENT}/frames-of-reference",
                                           self._guarded(self.frames_of_reference))
        register_route(self._orthanc, "/tools/verify-anonymization", self._guarded(self.verify_anonymization))
        register_route(self._orthanc, f"/(studies|series)/{SEGMENT}/anonymized-counterpart",
                                           self._guarded(self.anonymized_counterpart))
        self._orthanc.ExtendOrthancExplorer(EXPLORER_SCRIPT.read_text(encoding="utf-8"))
        self._orthanc.LogWarning(f"Consistent anonymization plugin ready: {self.config!r}")
        channel = "also emitted to" if orthanc_emitter(self._orthanc) else "not emitted to (no such call here)"
        self._orthanc.LogWarning(f"Consistent anonymization: audit entries written to {self.audit.log.path}, "
                                 f"{channel} Orthanc's audit-log channel")

    def key_places(self) -> tuple[Callable[[], bytes], KeyChecks]:
        """Where a generated key and the projects' key checks are kept, chosen once the database is
        open (see keys.py); under a lock, so that concurrent first calls share one of each."""
        with self._key_lock:
            if self._key_places is None:
                system = json.loads(self.port.call(self._orthanc.RestApiGet, "/system"))
                in_database = PropertyChecks(self._orthanc.GetGlobalProperty, self._orthanc.SetGlobalProperty)
                if not system.get("DatabaseBackendPlugin"):
                    folder = self._index_directory if system.get("StorageAreaPlugin") else self._storage_directory
                    key_file = SharedFileKey(Path(folder).resolve())
                    migrate_property_key(self._orthanc.GetGlobalProperty, self._orthanc.SetGlobalProperty, key_file)
                    self._key_places = (key_file, in_database)
                elif not system.get("StorageAreaPlugin"):
                    shared = Path(self._storage_directory).resolve()
                    self._key_places = (SharedFileKey(shared), FileChecks(shared))
                else:  # nothing shared: the checks hold for this node only (README)
                    self._key_places = (no_generated_key, in_database)
            return self._key_places

    def _resume_interrupted_jobs(self) -> None:
        """Once, at the first call to any of the plugin's routes after Orthanc starts (the database
        is open by then): reload the saved jobs and run again those a stop interrupted, and run as
        jobs the synchronous calls it interrupted. Other first calls wait meanwhile: their own
        journal records must not overwrite the previous run's before it is read."""
        with self._restore_lock:
            if self._restored:
                return
            resumed = self.jobs.restore()
            if resumed:
                self._orthanc.LogWarning(f"Consistent anonymization: resuming {resumed} job(s) "
                                         f"interrupted by the previous stop")
            interrupted = self.journal.interrupted()
            for call in interrupted:
                self._resubmit_interrupted(call)
            if interrupted:
                self._orthanc.LogWarning(f"Consistent anonymization: completing {len(interrupted)} synchronous "
                                         f"call(s) interrupted by the previous stop, as job(s)")
            self._restored = True
        self._warn_about_route_clashes()

    def _resubmit_interrupted(self, call: dict[str, str]) -> None:
        """A synchronous call a stop interrupted, run again as a job: it completes the result."""
        body = parse_request(call["body"]).native_body
        targets = [] if call["level"] == BULK else [(call["level"], call["resource_id"])]
        content = answers.pending_content(self.port.version(), targets, 0, body, bulk=call["level"] == BULK)
        self.jobs.submit(call["level"], call["resource_id"], call["body"], 0, content, {}, call.get("user"))

    def _warn_about_route_clashes(self) -> None:
        """Once the plugins are all loaded (at the first call): warn if another one may take
        this plugin's routes (see coexistence.py)."""
        try:
            loaded = json.loads(self.port.call(self._orthanc.RestApiGet, "/plugins"))
        except PluginError as error:  # a warning only: without the list there is nothing to compare
            self._orthanc.LogInfo(f"Consistent anonymization: the loaded plugins could not be listed "
                                  f"({type(error).__name__}): no check of route clashes")
            return
        paths = self._configuration_plugins if isinstance(self._configuration_plugins, list) else []
        warning = route_clash_warning(loaded, [path for path in paths if isinstance(path, str)])
        if warning:
            self._orthanc.LogWarning(warning)

    def _parse(self, body: bytes | str | None) -> AnonymizeRequest:
        """The request under its project's settings (dates, subjects, trial attributes, identity)."""
        request = parse_request(body)
        settings = self.keys.settings(request.project)
        if settings.patient_identity == "project" and request.ignored_identity:
            self._orthanc.LogInfo(f'Project "{settings.name}" owns the patient identity: the request\'s Keep or '
                                  f'Replace of PatientID and PatientName is ignored')
        return request.for_project(settings)

    def _run_job(self, job: Job, progress: Callable[[int, int], None], canceled: Callable[[], bool]) -> dict:
        options = self._parse(job.body)
        if job.level == BULK:
            targets = self.anonymizer.resolve(options.resources)
            return self.anonymizer.anonymize_bulk(targets, options, progress, canceled)
        return self.anonymizer.anonymize_resource(job.level, job.resource_id, options, progress, canceled)

    def _guarded(self, handler: Callable) -> Callable:
        """Every failure becomes a JSON answer; nothing escapes to crash or 500 blindly."""
        def callback(output: Any, uri: str, **request: Any) -> None:
            method = request.get("method", "")
            try:
                self._resume_interrupted_jobs()
                handler(output, uri, **request)
            except PluginError as error:
                if answers.http_status(error) >= 500:
                    self._orthanc.LogError(f"{method} {bounded(uri)}: {error.message}")
                send_error(output, error, method, uri)
            except Exception as error:  # a bug: log where, never what (values may identify)
                self._orthanc.LogError(f"{method} {bounded(uri)}: unexpected {type(error).__name__}\n"
                                       + "".join(traceback.format_tb(error.__traceback__)))
                send_error(output, PluginError(f"Internal error in the anonymization plugin "
                                               f"({type(error).__name__})"), method, uri)
        return callback

    def generate_uid(self, output: Any, uri: str, **request: Any) -> None:
        if request["method"] != "GET":
            output.SendMethodNotAllowed("GET")
            return
        args = self._decoded(request.get("get", {}))
        level = args.get("level")
        if level not in UID_LEVELS:
            raise BadRequest(f"Unknown or missing level {level!r}: use one of {', '.join(UID_LEVELS)}")
        if any(name in args for name in PSEUDONYM_QUERIES):
            output.AnswerBuffer(self._pseudonym_for(level, args), "text/plain")
        elif level in NATIVE_UID_LEVELS:
            answer = self.port.call(self._orthanc.RestApiGet, f"/tools/generate-uid?level={level}")
            output.AnswerBuffer(answer, "text/plain")
        else:
            output.AnswerBuffer(fresh_uid(self.config.uid_root), "text/plain")

    def _decoded(self, args: dict[str, str]) -> dict[str, str]:
        """The query's arguments as the caller meant them: percent-encoding and "+" undone, UTF-8,
        where this Orthanc passes them still encoded (see DECODED_GET_SINCE)."""
        if self.port.version() >= DECODED_GET_SINCE:
            decoded = dict(args)
        else:
            try:
                decoded = {urllib.parse.unquote_plus(name, errors="strict"):
                           urllib.parse.unquote_plus(value, errors="strict") for name, value in args.items()}
            except UnicodeDecodeError:
                raise BadRequest("The arguments of the request are not percent-encoded UTF-8") from None
        if any(UNWRITABLE.search(text) for pair in decoded.items() for text in pair):
            raise BadRequest("The arguments of the request hold a NUL character or a lone UTF-16 surrogate")
        return decoded

    def _pseudonym_for(self, level: str, args: dict[str, str]) -> str:
        """The pseudonym /anonymize gives a UID (or a PatientID), for scripts that build requests:
        only where the configuration allows it, since it confirms any guess to whoever calls it."""
        if not self.config.pseudonym_lookup:
            raise Forbidden("Pseudonym queries (uid, patient-id, anonymized-patient-id, project) are off: "
                            "whoever can call them can confirm a guessed PatientID or UID. To enable them, set "
                            '"PseudonymLookup": true in the ConsistentAnonymization section of the configuration')
        if self.keys.fresh_per_call:
            raise BadRequest("FreshPseudonymsPerCall is set: pseudonyms exist only inside one call")
        uid = args.get("uid")
        if uid is not None and not is_valid_uid(uid):
            raise BadRequest("uid is not a DICOM UID: at most 64 characters, numbers without leading zeros "
                             "separated by dots")
        if "anonymized-patient-id" not in args and "patient-id" not in args:
            raise BadRequest("Give patient-id (the source PatientID) or anonymized-patient-id: "
                             "UID pseudonyms are scoped by the anonymized patient")
        if uid is None and level != "patient":
            raise BadRequest("Give uid, the source UID whose pseudonym is wanted")
        pseudonyms = self.keys.pseudonymizer(args.get("project"))
        if uid is not None and is_well_known(uid):
            return uid  # a UID of the standard's registry: /anonymize leaves it as it is
        if "anonymized-patient-id" in args:
            patient_id = args["anonymized-patient-id"]
        else:
            patient_id = pseudonyms.patient_id(args["patient-id"])
        return patient_id if uid is None else pseudonyms.uid(patient_id, uid)

    def anonymize(self, output: Any, uri: str, **request: Any) -> None:
        if request["method"] != "POST":
            output.SendMethodNotAllowed("POST")
            return
        level, resource_id = request["groups"]
        body = request.get("body")
        user = self._user(request)
        with self.audit.call(level, resource_id, body, user) as call:  # the entry is written before the answer
            options = self._parse(body)
            if options.asynchronous and level != "instances":
                targets = [(level, resource_id)]
                sources = self.anonymizer.check_request(targets, replace(options, whole_resources=True))
                answer = self._submit(level, resource_id, body, options, targets, len(sources), user)
                call.queued()
            elif level == "instances":
                answer = self.anonymizer.anonymize_instance(resource_id, options)
                call.succeeded({"InstancesCount": 1})
            else:
                with self.journal.recorded(level, resource_id, _text(body), user):
                    result = self.anonymizer.anonymize_resource(level, resource_id, options)
                call.succeeded(result)
                answer = answers.json_text(result)
        output.AnswerBuffer(answer, "application/dicom" if level == "instances" else "application/json")

    def _user(self, request: dict[str, Any]) -> str | None:
        """The HTTP user who asked, for the audit log: only a name Orthanc checked."""
        return basic_user(request.get("headers")) if self._authenticated else None

    def _submit(self, level: str, resource_id: str, body: Any, options: AnonymizeRequest,
                targets: list[tuple[str, str]], instances: int, user: str | None) -> str:
        """Queue the job; answers native's answer naming it."""
        text = _text(body)
        version = self.port.version()
        content = answers.pending_content(version, targets, instances, options.native_body, bulk=level == BULK)
        job = self.jobs.submit(level, resource_id, text, options.priority, content,
                               answers.user_data(version, json.loads(text)), user)
        return answers.json_text(answers.job_submitted(job.id))

    def bulk_anonymize(self, output: Any, uri: str, **request: Any) -> None:
        if request["method"] != "POST":
            output.SendMethodNotAllowed("POST")
            return
        body = request.get("body")
        user = self._user(request)
        with self.audit.call(BULK, "", body, user) as call:  # the entry is written before the answer
            options = self._parse(body)
            if not isinstance(options.resources, list) or not all(isinstance(r, str) for r in options.resources):
                raise BadFileFormat("List of strings expected in field: Resources")
            targets = self.anonymizer.resolve(options.resources)
            if targets and options.asynchronous:
                sources = self.anonymizer.check_request(targets, replace(options, whole_resources=True))
                answer = self._submit(BULK, "", body, options, targets, len(sources), user)
                call.queued()
            else:
                if targets:
                    with self.journal.recorded(BULK, "", _text(body), user):
                        result = self.anonymizer.anonymize_bulk(targets, options)
                else:
                    result = answers.empty_bulk_answer()
                call.succeeded(result)
                answer = answers.json_text(result)
        output.AnswerBuffer(answer, "application/json")

    def anonymization_log(self, output: Any, uri: str, **request: Any) -> None:
        """GET /tools/anonymization-log?since=&limit= (audit.py)."""
        if request["method"] != "GET":
            output.SendMethodNotAllowed("GET")
            return
        answer = page(self.audit.log, self._decoded(request.get("get", {})))
        output.AnswerBuffer(answers.json_text(answer), "application/json")

    # --- Verification of anonymized sets (set_verification.py) ---------------------------------
    def frames_of_reference(self, output: Any, uri: str, **request: Any) -> None:
        if request["method"] != "GET":
            output.SendMethodNotAllowed("GET")
            return
        level, resource_id = request["groups"]
        answer = list_frames_of_reference(self.port, level, resource_id, self._orthanc.LogInfo)
        output.AnswerBuffer(answers.json_text(answer), "application/json")

    def verify_anonymization(self, output: Any, uri: str, **request: Any) -> None:
        if request["method"] != "POST":
            output.SendMethodNotAllowed("POST")
            return
        verify_request = parse_verify_request(request.get("body"))
        pseudonyms = None if self.keys.fresh_per_call else self.keys.pseudonymizer(verify_request.project)
        answer = verify(self.port, verify_request, pseudonyms, self._orthanc.LogInfo)
        output.AnswerBuffer(answers.json_text(answer), "application/json")

    def anonymized_counterpart(self, output: Any, uri: str, **request: Any) -> None:
        """Where the plugin's anonymization put a stored source study or series, if it is stored:
        computed from the source's own identifiers under the project key (`?project=`)."""
        if request["method"] != "GET":
            output.SendMethodNotAllowed("GET")
            return
        level, resource_id = request["groups"]
        resource = json.loads(self.port.call(self._orthanc.RestApiGet, f"/{level}/{resource_id}"))
        if self.keys.fresh_per_call:
            raise NotFound("FreshPseudonymsPerCall is set: anonymized copies have no computable counterpart")
        patient_id, study_uid, series_uid = self.port.identifiers(
            resource_id if level == "series" else resource["Series"][0])
        uids = (study_uid, series_uid) if level == "series" else (study_uid,)
        pseudonyms = self.keys.pseudonymizer(self._decoded(request.get("get", {})).get("project"))
        counterpart = anonymized_counterpart(pseudonyms, patient_id, *uids)
        try:
            self.port.call(self._orthanc.RestApiGet, f"/{level}/{counterpart}")
        except NotFound:
            raise NotFound(f"No anonymized counterpart of this {LEVEL_TYPES[level].lower()} is stored: the "
                           f"plugin did not anonymize it under this project with its own PatientID") from None
        output.AnswerBuffer(answers.json_text(answers.resource(level, counterpart)), "application/json")


def register(orthanc: Any) -> Plugin:
    """Register the plugin in this Orthanc; call once, from the Python script Orthanc loads."""
    plugin = Plugin(orthanc)
    plugin.register()
    return plugin
