"""The plugin's wiring to one Orthanc: start-up (configuration, keys, jobs, the audit log), the
routes it serves and their handlers. The port to Orthanc's API is rest_port.py, HTTP answers are
http_answers.py.

The `orthanc` module is passed in, never imported here, so the rest of the package is plain
Python tested without a server, and this layer is tested against a real Orthanc.
"""
from __future__ import annotations

import functools
import json
import threading
import traceback
import urllib.parse
from dataclasses import replace
from pathlib import Path
from typing import Any, Callable

from . import http_answers
from .http_answers import send_error
from ..traceability.audit import AuditTrail, basic_user, orthanc_emitter, page, request_facts
from ..traceability.audit_log import FileAuditLog, Retention
from ..identity.config import AUDIT_LOG_NAME, SECTION, PluginConfig, configuration_folder, parse_config
from ..gateway.settings import parse_on_arrival
from .arrival import ArrivalGateway
from ..pipeline.port import Stored
from .coexistence import route_clash_warning
from ..pipeline.engine import Anonymizer, arrivals_answer
from ..errors import BadFileFormat, BadRequest, ConfigurationError, Forbidden, NotFound, PluginError, bounded
from ..pixels.decision import PixelSettings
from ..pixels.rules import RuleError, load_rules
from .job_routes import JOBS_ASIDE_PROPERTY, JOBS_PROPERTY, JobRoutes
from ..jobs.queue import Job, JobQueue, JobSettings
from ..jobs.journal import CallJournal
from ..identity.keys import (FileChecks, KeyChecks, KeyStore, PropertyChecks, SharedFileKey, migrate_property_key,
                             no_generated_key)
from ..pipeline import native_answers
from ..pipeline.options import UNWRITABLE, AnonymizeRequest, parse_request
from ..orthanc_ids import ARRIVAL, BULK, LEVEL_TYPES, anonymized_counterpart
from ..identity.pseudonyms import fresh_uid, is_valid_uid
from .rest_port import RestPort
from .rest_routes import SEGMENT, register_route
from ..verification.report import list_frames_of_reference, parse_verify_request, verify
from ..verification.text_reader import text_reading
from ..dicom.uid_attributes import is_well_known
from .ui_pages import UiPages, overview

NATIVE_UID_LEVELS = ("patient", "study", "series", "instance")
UID_LEVELS = NATIVE_UID_LEVELS + ("frame-of-reference",)
#: The header of an /instances/{id}/anonymize answer whose source was at risk or unknown: its
#: pixel status (Cleaned, Accepted, Flagged), which a stored result keeps as metadata instead.
PIXEL_STATUS_HEADER = "Consistent-Anonymization-Pixel-Status"
#: The generate-uid arguments that ask for a pseudonym (PseudonymLookup).
PSEUDONYM_QUERIES = ("uid", "patient-id", "anonymized-patient-id", "project")
#: From this Orthanc on, the `get` arguments reach Python decoded (measured: 1.13.0 with
#: orthanc-python 7.1 decodes; 1.10.1/4.0 and 1.12.7/5.0 pass the query text as sent, percent-encoded).
DECODED_GET_SINCE = (1, 13, 0)
EXPLORER_SCRIPT = Path(__file__).with_name("explorer.js")  # the buttons added to Orthanc Explorer
#: The global property where synchronous calls in flight are journaled (see journal.py).
JOURNAL_PROPERTY = 9740


def _text(body: Any) -> str:
    """A request body as the text jobs and the journal keep."""
    return body.decode("utf-8") if isinstance(body, bytes) else (body or "")




def pixel_settings(config: PluginConfig) -> PixelSettings:
    """The rules that say where devices burn text (docs/pixels.md), read at start (one that cannot
    be used stops Orthanc, as any wrong setting), and where a result's pixel status is kept."""
    try:
        return PixelSettings(load_rules(config.pixel_rule_files, config.pixel_rules, SECTION),
                             config.pixel_status_metadata)
    except RuleError as error:
        raise ConfigurationError(str(error)) from None


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
        self.port = RestPort(orthanc, configuration, self.config.pixel_status_metadata)
        reader = self.config.pixel_text_reader
        self.text_reading = None if reader is None else text_reading(reader.url, reader.timeout_seconds,
                                                                       reader.frames_per_instance)
        self.anonymizer = Anonymizer(self.port, self.keys, options_metadata=self.config.options_metadata,
                                     log_error=orthanc.LogError, pixels=pixel_settings(self.config))
        # Orthanc checks the Basic credentials only with its authentication on (by default, iff remote access is)
        self._authenticated = bool(configuration.get("AuthenticationEnabled",
                                                     configuration.get("RemoteAccessAllowed", False)))
        audit_file = self.config.audit_log_file or str(Path(self._storage_directory).resolve() / AUDIT_LOG_NAME)
        self.audit = AuditTrail(FileAuditLog(audit_file, Retention(self.config.audit_retention_days,
                                                                   self.config.audit_max_entries),
                                             log_error=orthanc.LogError),
                                functools.partial(request_facts, self.keys), orthanc.LogError,
                                orthanc_emitter(orthanc))
        self.jobs = JobQueue(self._run_job, lambda: orthanc.GetGlobalProperty(JOBS_PROPERTY, ""),
                             lambda text: orthanc.SetGlobalProperty(JOBS_PROPERTY, text), orthanc.LogError,
                             JobSettings.of(configuration),
                             lambda text: orthanc.SetGlobalProperty(JOBS_ASIDE_PROPERTY, text), self.audit.job_ended,
                             orthanc_error=http_answers.orthanc_error)
        self.job_routes = JobRoutes(orthanc, self.jobs, self.port.call)
        self.journal = CallJournal(lambda: self.port.retried(orthanc.GetGlobalProperty, JOURNAL_PROPERTY, ""),
                                   lambda text: self.port.retried(orthanc.SetGlobalProperty, JOURNAL_PROPERTY, text),
                                   orthanc.LogError)
        self._restore_lock = threading.Lock()
        self._restored = False
        self.ui_pages = UiPages(orthanc, lambda: overview(self.config, self.audit.log))
        on_arrival = parse_on_arrival((configuration.get(SECTION) or {}).get("OnArrival"), self.config, configuration)
        self.gateway = ArrivalGateway(orthanc, on_arrival, self.port, self._anonymize_arrivals,
                                      float(configuration.get("StableAge", 60))) if on_arrival else None

    def register(self) -> None:
        """Register the routes. A change callback only with OnArrival (the gateway): it runs Python
        for every stored instance; jobs a stop interrupted resume at the first call instead."""
        if self.gateway:
            self.gateway.register(self._guarded)  # first: see ArrivalGateway.register
        self.job_routes.register(self._guarded)
        register_route(self._orthanc, "/tools/generate-uid", ("GET",), self._guarded(self.generate_uid))
        register_route(self._orthanc, "/tools/bulk-anonymize", ("POST",), self._guarded(self.bulk_anonymize))
        register_route(self._orthanc, "/tools/anonymization-log", ("GET",), self._guarded(self.anonymization_log))
        register_route(self._orthanc, f"/(patients|studies|series|instances)/{SEGMENT}/anonymize", ("POST",),
                       self._guarded(self.anonymize))
        register_route(self._orthanc, f"/(patients|studies|series)/{SEGMENT}/frames-of-reference", ("GET",),
                       self._guarded(self.frames_of_reference))
        register_route(self._orthanc, "/tools/verify-anonymization", ("POST",),
                       self._guarded(self.verify_anonymization))
        register_route(self._orthanc, f"/(studies|series)/{SEGMENT}/anonymized-counterpart", ("GET",),
                                           self._guarded(self.anonymized_counterpart))
        self._orthanc.ExtendOrthancExplorer(EXPLORER_SCRIPT.read_text(encoding="utf-8"))
        self.ui_pages.register(self._guarded, self.config.register_root_uri)
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
                else:  # nothing shared: the checks hold for this node only (docs/configuration.md)
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
            interrupted = self.journal.complete_interrupted(self._resubmit_interrupted)
            if interrupted:
                self._orthanc.LogWarning(f"Consistent anonymization: completing {interrupted} synchronous "
                                         f"call(s) interrupted by the previous stop, as job(s)")
            self._restored = True
        self._warn_about_route_clashes()

    def _resubmit_interrupted(self, call: dict[str, str]) -> None:
        """A synchronous call a stop interrupted, run again as a job: it completes the result."""
        body = parse_request(call["body"]).native_body
        targets = [] if call["level"] == BULK else [(call["level"], call["resource_id"])]
        content = native_answers.pending_content(self.port.version(), targets, 0, body, bulk=call["level"] == BULK)
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
                if http_answers.http_status(error) >= 500:
                    self._orthanc.LogError(f"{method} {bounded(uri)}: {error.message}")
                send_error(output, error, method, uri)
            except Exception as error:  # a bug: log where, never what (values may identify)
                self._orthanc.LogError(f"{method} {bounded(uri)}: unexpected {type(error).__name__}\n"
                                       + "".join(traceback.format_tb(error.__traceback__)))
                send_error(output, PluginError(f"Internal error in the anonymization plugin "
                                               f"({type(error).__name__})"), method, uri)
        return callback

    def generate_uid(self, output: Any, uri: str, **request: Any) -> None:
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
        level, resource_id = request["groups"]
        body = request.get("body")
        user = self._user(request)
        pixels = None  # the one instance's pixel decision (pixels/decision.py), if it was at risk or unknown
        with self.audit.call(level, resource_id, body, user) as call:  # the entry is written before the answer
            options = self._parse(body)
            call.parsed(options)
            if options.asynchronous and level != "instances":
                targets = [(level, resource_id)]
                sources = self.anonymizer.check_request(targets, replace(options, whole_resources=True))
                answer = self._submit(level, resource_id, body, options, targets, len(sources), user)
                call.queued()
            elif level == "instances":
                made = self.anonymizer.anonymize_instance(resource_id, options)
                pixels = made.plan.pixels
                call.succeeded({"InstancesCount": 1, **({"PixelStatusCounts": {pixels.status: 1}} if pixels else {})})
                answer = made.data
            else:
                with self.journal.recorded(level, resource_id, _text(body), user):
                    result = self.anonymizer.anonymize_resource(level, resource_id, options)
                call.succeeded(result)
                answer = http_answers.json_text(result)
        if pixels is not None:
            output.SetHttpHeader(PIXEL_STATUS_HEADER, pixels.status)  # the file it answers carries no mark
        output.AnswerBuffer(answer, "application/dicom" if level == "instances" else "application/json")

    def _anonymize_arrivals(self, instance_ids: list[str], canceled: Callable[[], bool]) -> list[Stored]:
        """The gateway's anonymization of instances that arrived together: one call (all or
        nothing), audited as one (no user) that names every source."""
        body = self.gateway.settings.body()
        with self.audit.call(ARRIVAL, instance_ids[0], body, None, sources=tuple(instance_ids)) as call:
            results = self.anonymizer.anonymize_arrivals(instance_ids, self._parse(body),
                                                         self.gateway.settings.keep_source, canceled)
            call.succeeded(arrivals_answer(results))
        return results

    def _user(self, request: dict[str, Any]) -> str | None:
        """The HTTP user who asked, for the audit log: only a name Orthanc checked."""
        return basic_user(request.get("headers")) if self._authenticated else None

    def _submit(self, level: str, resource_id: str, body: Any, options: AnonymizeRequest,
                targets: list[tuple[str, str]], instances: int, user: str | None) -> str:
        """Queue the job; answers native's answer naming it."""
        text = _text(body)
        version = self.port.version()
        content = native_answers.pending_content(version, targets, instances, options.native_body, bulk=level == BULK)
        job = self.jobs.submit(level, resource_id, text, options.priority, content,
                               native_answers.user_data(version, json.loads(text)), user)
        return http_answers.json_text(native_answers.job_submitted(job.id))

    def bulk_anonymize(self, output: Any, uri: str, **request: Any) -> None:
        body = request.get("body")
        user = self._user(request)
        with self.audit.call(BULK, "", body, user) as call:  # the entry is written before the answer
            options = self._parse(body)
            call.parsed(options)
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
                    result = native_answers.empty_bulk_answer()
                call.succeeded(result)
                answer = http_answers.json_text(result)
        output.AnswerBuffer(answer, "application/json")

    def anonymization_log(self, output: Any, uri: str, **request: Any) -> None:
        """GET /tools/anonymization-log?since=&limit= (audit.py)."""
        answer = page(self.audit.log, self._decoded(request.get("get", {})))
        output.AnswerBuffer(http_answers.json_text(answer), "application/json")

    # --- Verification of anonymized sets (verification/report.py) --------------------------------
    def frames_of_reference(self, output: Any, uri: str, **request: Any) -> None:
        level, resource_id = request["groups"]
        answer = list_frames_of_reference(self.port, level, resource_id, self._orthanc.LogInfo)
        output.AnswerBuffer(http_answers.json_text(answer), "application/json")

    def verify_anonymization(self, output: Any, uri: str, **request: Any) -> None:
        verify_request = parse_verify_request(request.get("body"))
        pseudonyms = None if self.keys.fresh_per_call else self.keys.pseudonymizer(verify_request.project)
        answer = verify(self.port, verify_request, pseudonyms, self._orthanc.LogInfo, text_reading=self.text_reading)
        output.AnswerBuffer(http_answers.json_text(answer), "application/json")

    def anonymized_counterpart(self, output: Any, uri: str, **request: Any) -> None:
        """Where the plugin's anonymization put a stored source study or series, if it is stored:
        computed from the source's own identifiers under the project key (`?project=`)."""
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
        output.AnswerBuffer(http_answers.json_text(native_answers.resource(level, counterpart)), "application/json")


def register(orthanc: Any) -> Plugin:
    """Register the plugin in this Orthanc; call once, from the Python script Orthanc loads."""
    plugin = Plugin(orthanc)
    plugin.register()
    return plugin
