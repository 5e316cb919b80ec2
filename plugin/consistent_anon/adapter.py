"""The thin layer that talks to the `orthanc` module: routes, built-in calls, HTTP answers.

The `orthanc` module is passed in, never imported here, so the rest of the package is plain
Python tested without a server, and this layer is tested against a real Orthanc.
"""
from __future__ import annotations

import json
import os
import re
import threading
import time
import traceback
from pathlib import Path
from typing import Any, Callable

from .config import parse_config
from .engine import Anonymizer
from .errors import BadRequest, NotFound, PluginError, status_for_orthanc_error
from .filereader import Header, UnreadableHeader, read_header
from .job_routes import JOBS_PROPERTY, JobRoutes
from .jobs import Job, JobQueue
from .journal import CallJournal
from .keys import KeyStore, PropertyKey, SharedFileKey, no_generated_key
from .options import parse_request
from .orthanc_ids import LEVEL_TYPES
from .pseudonyms import fresh_uid
from .set_verification import list_frames_of_reference, parse_verify_request, verify

NATIVE_UID_LEVELS = ("patient", "study", "series", "instance")
UID_LEVELS = NATIVE_UID_LEVELS + ("frame-of-reference",)
BULK = "bulk"  # the "level" of a job made by /tools/bulk-anonymize
DATABASE_ERROR = 11  # Orthanc's ErrorCode_Database: e.g. a serialization failure between nodes
DATABASE_RETRIES = 5
#: The global property where synchronous calls in flight are journaled (see journal.py).
JOURNAL_PROPERTY = 9740
_HTTP_ERRORS = {400: "Bad Request", 401: "Unauthorized", 404: "Not Found", 405: "Method Not Allowed",
                500: "Internal Server Error", 501: "Not Implemented"}


class NativeError(PluginError):
    """An error answered by Orthanc's built-in API, with the status it would have answered."""


class RestPort:
    """The engine's OrthancPort over the built-in REST API (`orthanc.RestApi*`, not the plugins')."""

    def __init__(self, orthanc: Any, configuration: dict[str, Any]) -> None:
        self._orthanc = orthanc
        self._configuration = configuration
        self._version: tuple[int, ...] | None = None
        self._workers: int | None = None

    def call(self, function: Callable, *args: Any) -> Any:
        try:
            return function(*args)
        except self._orthanc.OrthancException as error:
            code = int(error.args[0]) if error.args else -1
            message = str(error.args[1]) if len(error.args) > 1 else "Orthanc error"
            self._orthanc.LogInfo(f"built-in call {getattr(function, '__name__', '')} {args[0]}: {message}")
            raise NativeError(message, status_for_orthanc_error(code), code, message) from None

    def retried(self, function: Callable, *args: Any) -> Any:
        """An idempotent call whose transaction may collide with another node's in a shared
        database, tried again."""
        for attempt in range(DATABASE_RETRIES):
            try:
                return self.call(function, *args)
            except NativeError as error:
                if error.orthanc_code != DATABASE_ERROR or attempt == DATABASE_RETRIES - 1:
                    raise
                time.sleep(0.01 * (attempt + 1))

    def instances_of(self, level: str, resource_id: str) -> list[dict[str, str]]:
        if level == "instances":
            answer = [json.loads(self.call(self._orthanc.RestApiGet, f"/instances/{resource_id}"))]
        else:
            try:
                answer = json.loads(self.call(self._orthanc.RestApiGet, f"/{level}/{resource_id}/instances"))
            except NativeError as error:
                if error.status == 400:  # Orthanc's answer for a resource of another level
                    raise NotFound(f"Unknown resource: no {level} has the ID {resource_id}") from None
                raise
        return [{"ID": instance["ID"], "ParentSeries": instance["ParentSeries"],
                 "SOPInstanceUID": instance.get("MainDicomTags", {}).get("SOPInstanceUID", ""),
                 "FileSize": int(instance.get("FileSize") or 0)}  # the engine's memory budget
                for instance in answer]

    def level_of(self, resource_id: str) -> str:
        """The level of an ID of any level (bulk requests, the verification route take those)."""
        for level in LEVEL_TYPES:
            try:
                self.call(self._orthanc.RestApiGet, f"/{level}/{resource_id}")
            except NativeError as error:
                if error.status == 404:
                    continue
                raise
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
        try:
            answer = json.loads(self.call(self._orthanc.RestApiGet, f"/series/{series_id}/instances"))
        except NativeError as error:
            if error.status == 404:
                return set()
            raise
        return {instance["ID"] for instance in answer}

    def overwrites(self) -> bool:
        return bool(self._configuration.get("OverwriteInstances", False))

    def exists(self, level: str, resource_id: str) -> bool:
        try:
            self.retried(self._orthanc.RestApiGet, f"/{level}/{resource_id}")
        except NativeError as error:
            if error.status == 404:
                return False
            raise
        return True

    def stored_md5(self, instance_id: str) -> str:
        """The MD5 Orthanc keeps of the instance's file as it was received."""
        answer = self.call(self._orthanc.RestApiGet, f"/instances/{instance_id}/attachments/dicom/md5")
        return (answer.decode("ascii") if isinstance(answer, bytes) else str(answer)).strip()

    def stores_as_sent(self) -> bool:
        """False when Orthanc transcodes what it receives: its file then differs from the one sent."""
        return not self._configuration.get("IngestTranscoding")

    def parent_of(self, level: str, resource_id: str) -> str:
        field = {"instances": "ParentSeries", "series": "ParentStudy", "studies": "ParentPatient"}[level]
        return json.loads(self.call(self._orthanc.RestApiGet, f"/{level}/{resource_id}"))[field]

    def set_metadata(self, level: str, resource_id: str, name: str, value: str) -> None:
        """Orthanc retries a store that collides with another node's in a shared database, but not
        a metadata write: retry it here (it is idempotent)."""
        for attempt in range(DATABASE_RETRIES):
            try:
                self.call(self._orthanc.RestApiPut, f"/{level}/{resource_id}/metadata/{name}", value)
                return
            except NativeError as error:
                if error.orthanc_code != DATABASE_ERROR or attempt == DATABASE_RETRIES - 1:
                    raise
                time.sleep(0.01 * (attempt + 1))

    def metadata(self, level: str, resource_id: str, name: str) -> str | None:
        try:
            answer = self.call(self._orthanc.RestApiGet, f"/{level}/{resource_id}/metadata/{name}")
        except NativeError as error:
            if error.status == 404:  # no such metadata, or no such resource
                return None
            raise
        return answer.decode("utf-8") if isinstance(answer, bytes) else str(answer)

    def read_file(self, instance_id: str) -> bytes:
        return self.call(self._orthanc.RestApiGet, f"/instances/{instance_id}/file")

    def anonymize_instance(self, instance_id: str, body: dict[str, Any]) -> bytes:
        return self.call(self._orthanc.RestApiPost, f"/instances/{instance_id}/anonymize", json.dumps(body))

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
            except (PluginError, KeyError, ValueError):
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


def send_error(output: Any, status: int, message: str, method: str, uri: str) -> None:
    """A JSON error like native's. orthanc-python 4.0 takes (status, str, size); later, bytes."""
    body = json.dumps({"HttpError": _HTTP_ERRORS.get(status, "Error"), "HttpStatus": status,
                       "Message": message, "Method": method, "Uri": uri}, indent=1)
    try:
        output.SendHttpStatus(status, body.encode("utf-8"))
    except TypeError:
        output.SendHttpStatus(status, body, len(body))


class Plugin:
    """The routes the plugin serves, wired to one Orthanc."""

    def __init__(self, orthanc: Any) -> None:
        self._orthanc = orthanc
        configuration = json.loads(orthanc.GetConfiguration())
        self.config = parse_config(configuration)
        self._storage_directory = str(configuration.get("StorageDirectory", "OrthancStorage"))
        self._generated_key: Callable[[], bytes] | None = None
        self._key_lock = threading.Lock()
        self.keys = KeyStore(self.config, lambda: self.generated_key_source()())
        self.port = RestPort(orthanc, configuration)
        self.anonymizer = Anonymizer(self.port, self.keys, options_metadata=self.config.options_metadata)
        self.jobs = JobQueue(self._run_job, lambda: orthanc.GetGlobalProperty(JOBS_PROPERTY, ""),
                             lambda text: orthanc.SetGlobalProperty(JOBS_PROPERTY, text), orthanc.LogError)
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
        self._orthanc.RegisterRestCallback("/tools/generate-uid", self._guarded(self.generate_uid))
        self._orthanc.RegisterRestCallback("/tools/bulk-anonymize", self._guarded(self.bulk_anonymize))
        self._orthanc.RegisterRestCallback("/(patients|studies|series|instances)/([^/]+)/anonymize",
                                           self._guarded(self.anonymize))
        self._orthanc.RegisterRestCallback("/(patients|studies|series)/([^/]+)/frames-of-reference",
                                           self._guarded(self.frames_of_reference))
        self._orthanc.RegisterRestCallback("/tools/verify-anonymization", self._guarded(self.verify_anonymization))
        self._orthanc.LogWarning(f"Consistent anonymization plugin ready: {self.config!r}")

    def generated_key_source(self) -> Callable[[], bytes]:
        """Where a generated key is kept, chosen once the database is open (see keys.py); under a
        lock, so that concurrent first calls share one source, hence one creation lock."""
        with self._key_lock:
            if self._generated_key is None:
                system = json.loads(self.port.call(self._orthanc.RestApiGet, "/system"))
                if not system.get("DatabaseBackendPlugin"):
                    self._generated_key = PropertyKey(self._orthanc.GetGlobalProperty,
                                                      self._orthanc.SetGlobalProperty)
                elif not system.get("StorageAreaPlugin"):
                    self._generated_key = SharedFileKey(Path(self._storage_directory).resolve())
                else:
                    self._generated_key = no_generated_key
            return self._generated_key

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
                self.jobs.submit(call["level"], call["resource_id"], call["body"], 0, 0)
            if interrupted:
                self._orthanc.LogWarning(f"Consistent anonymization: completing {len(interrupted)} synchronous "
                                         f"call(s) interrupted by the previous stop, as job(s)")
            self._restored = True

    def _run_job(self, job: Job, progress: Callable[[int, int], None], canceled: Callable[[], bool]) -> dict:
        options = parse_request(job.body)
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
                if error.status >= 500:
                    self._orthanc.LogError(f"{method} {uri}: {error.message}")
                send_error(output, error.status, error.message, method, uri)
            except Exception as error:  # a bug: log where, never what (values may identify)
                self._orthanc.LogError(f"{method} {uri}: unexpected {type(error).__name__}\n"
                                       + "".join(traceback.format_tb(error.__traceback__)))
                send_error(output, 500, f"Internal error in the anonymization plugin "
                                        f"({type(error).__name__})", method, uri)
        return callback

    def generate_uid(self, output: Any, uri: str, **request: Any) -> None:
        if request["method"] != "GET":
            output.SendMethodNotAllowed("GET")
            return
        args = request.get("get", {})
        level = args.get("level")
        if level not in UID_LEVELS:
            raise BadRequest(f"Unknown or missing level {level!r}: use one of {', '.join(UID_LEVELS)}")
        if "uid" in args or "patient-id" in args or "anonymized-patient-id" in args:
            output.AnswerBuffer(self._pseudonym_for(level, args), "text/plain")
        elif level in NATIVE_UID_LEVELS:
            answer = self.port.call(self._orthanc.RestApiGet, f"/tools/generate-uid?level={level}")
            output.AnswerBuffer(answer, "text/plain")
        else:
            output.AnswerBuffer(fresh_uid(self.config.uid_root), "text/plain")

    def _pseudonym_for(self, level: str, args: dict[str, str]) -> str:
        """The pseudonym /anonymize gives a UID (or a PatientID), for scripts that build requests."""
        if self.keys.fresh_per_call:
            raise BadRequest("FreshPseudonymsPerCall is set: pseudonyms exist only inside one call")
        pseudonyms = self.keys.pseudonymizer(args.get("project"))
        if "anonymized-patient-id" in args:
            patient_id = args["anonymized-patient-id"]
        elif "patient-id" in args:
            patient_id = pseudonyms.patient_id(args["patient-id"])
        else:
            raise BadRequest("Give patient-id (the source PatientID) or anonymized-patient-id: "
                             "UID pseudonyms are scoped by the anonymized patient")
        if "uid" not in args:
            if level != "patient":
                raise BadRequest("Give uid, the source UID whose pseudonym is wanted")
            return patient_id
        return pseudonyms.uid(patient_id, args["uid"])

    def anonymize(self, output: Any, uri: str, **request: Any) -> None:
        if request["method"] != "POST":
            output.SendMethodNotAllowed("POST")
            return
        level, resource_id = request["groups"]
        body = request.get("body")
        options = parse_request(body)
        if options.asynchronous and level != "instances":
            sources = self.anonymizer.check_request([(level, resource_id)], options)
            self._submit(output, level, resource_id, body, options.priority, len(sources))
        elif level == "instances":
            output.AnswerBuffer(self.anonymizer.anonymize_instance(resource_id, options), "application/dicom")
        else:
            with self.journal.recorded(level, resource_id, _text(body)):
                answer = self.anonymizer.anonymize_resource(level, resource_id, options)
            output.AnswerBuffer(json.dumps(answer, indent=1), "application/json")


    def _submit(self, output: Any, level: str, resource_id: str, body: Any, priority: int, instances: int) -> None:
        job = self.jobs.submit(level, resource_id, _text(body), priority, instances)
        output.AnswerBuffer(json.dumps({"ID": job.id, "Path": f"/jobs/{job.id}"}, indent=1), "application/json")

    def bulk_anonymize(self, output: Any, uri: str, **request: Any) -> None:
        if request["method"] != "POST":
            output.SendMethodNotAllowed("POST")
            return
        body = request.get("body")
        options = parse_request(body)
        if not isinstance(options.resources, list) or not all(isinstance(r, str) for r in options.resources):
            raise BadRequest("List of strings expected in field: Resources")
        targets = self.anonymizer.resolve(options.resources)
        if not targets:
            answer = {"Description": "REST API", "FailedInstancesCount": 0, "InstancesCount": 0,
                      "IsAnonymization": True, "Resources": []}
            output.AnswerBuffer(json.dumps(answer, indent=1), "application/json")
        elif options.asynchronous:
            sources = self.anonymizer.check_request(targets, options)
            self._submit(output, BULK, "", body, options.priority, len(sources))
        else:
            with self.journal.recorded(BULK, "", _text(body)):
                answer = self.anonymizer.anonymize_bulk(targets, options)
            output.AnswerBuffer(json.dumps(answer, indent=1), "application/json")

    # --- Verification of anonymized sets (set_verification.py) ---------------------------------
    def frames_of_reference(self, output: Any, uri: str, **request: Any) -> None:
        if request["method"] != "GET":
            output.SendMethodNotAllowed("GET")
            return
        level, resource_id = request["groups"]
        answer = list_frames_of_reference(self.port, level, resource_id, self._orthanc.LogInfo)
        output.AnswerBuffer(json.dumps(answer, indent=1), "application/json")

    def verify_anonymization(self, output: Any, uri: str, **request: Any) -> None:
        if request["method"] != "POST":
            output.SendMethodNotAllowed("POST")
            return
        verify_request = parse_verify_request(request.get("body"))
        pseudonyms = None if self.keys.fresh_per_call else self.keys.pseudonymizer(verify_request.project)
        answer = verify(self.port, verify_request, pseudonyms, self._orthanc.LogInfo)
        output.AnswerBuffer(json.dumps(answer, indent=1), "application/json")


def register(orthanc: Any) -> Plugin:
    """Register the plugin in this Orthanc; call once, from the Python script Orthanc loads."""
    plugin = Plugin(orthanc)
    plugin.register()
    return plugin
