"""The anonymization loop: native de-identifies each instance, the plugin decides identities,
checks the output, then stores it. Talks to Orthanc only through an `OrthancPort`."""
from __future__ import annotations

import json
import threading
from concurrent.futures import ThreadPoolExecutor
from contextlib import contextmanager
from dataclasses import replace
from typing import Any, Callable, Iterator, Protocol

from . import answers
from .config import DEFAULT_OPTIONS_METADATA
from .errors import Conflict, JobCanceled, NotFound, PluginError, VerificationFailed
from .filereader import Header, UnreadableHeader, read_header
from .identities import InstancePlan, NativeMarkers, plan_instance
from .keys import KeyStore
from .labels import copy_labels
from .options import (DEIDENTIFICATION_METHOD, PATIENT_ID, PATIENT_IDENTITY_REMOVED, SERIES_INSTANCE_UID, SOP_INSTANCE_UID,
                      STUDY_INSTANCE_UID, AnonymizeRequest)
from . import orthanc_ids
from .orthanc_ids import LEVEL_TYPES
from .pseudonyms import Pseudonymizer
from .transcoding import native_anonymized
from .uid_attributes import UID_TAGS
from .verification import anonymize_checked, check_output

_PARENT_FIELD = {"patients": "ParentPatient", "studies": "ParentStudy", "series": "ParentSeries",
                 "instances": "ID"}
#: Orthanc's "OverwriteInstances" modes (1.13 names them; a Boolean means ALWAYS or NEVER).
NEVER, ALWAYS, IF_CHANGED = "Never", "Always", "IfChanged"


class OrthancPort(Protocol):
    """The few built-in REST calls the engine needs; errors raise PluginError with native's status."""

    def instances_of(self, level: str, resource_id: str) -> list[dict[str, str]]: ...
    def parent_of(self, level: str, resource_id: str) -> str: ...
    def set_metadata(self, level: str, resource_id: str, name: str, value: str) -> None: ...
    def metadata(self, level: str, resource_id: str, name: str) -> str | None: ...
    def read_file(self, instance_id: str) -> bytes: ...
    def header(self, instance_id: str) -> Header: ...
    def anonymize_instance(self, instance_id: str, body: dict[str, Any]) -> bytes: ...
    def transcode(self, data: bytes, syntax: str) -> bytes: ...
    def store(self, data: bytes) -> dict[str, Any]: ...
    def delete(self, level: str, resource_id: str) -> None: ...
    def version(self) -> tuple[int, ...]: ...
    def workers(self) -> int: ...
    def identifiers(self, series_id: str) -> tuple[str, str, str]: ...
    def existing_instances(self, series_id: str) -> set[str]: ...
    def overwrite_mode(self) -> str: ...
    def transcodes_on_ingest(self) -> bool: ...
    def level_of(self, resource_id: str) -> str: ...
    def patient_level(self) -> bool: ...
    def labels(self, level: str, resource_id: str) -> list[str]: ...
    def add_label(self, level: str, resource_id: str, label: str) -> None: ...


#: Levels at which native records "AnonymizedFrom", child first.
_ORIGIN_LEVELS = ("instances", "series", "studies", "patients")
#: At most this many bytes of source files are in the workers' hands at once (each also holds
#: its result, and Orthanc a parsed copy): large instances (tomosynthesis, whole-slide images)
#: are then done one or a few at a time, small ones as many as there are workers.
IN_FLIGHT_BYTES = 256 * 1024 * 1024


class ByteBudget:
    """Lets threads hold sizes up to a limit in total; one holder alone may exceed it."""

    def __init__(self, limit: int) -> None:
        self._limit = limit
        self._held = 0
        self._condition = threading.Condition()

    @contextmanager
    def hold(self, size: int) -> Iterator[None]:
        with self._condition:
            self._condition.wait_for(lambda: self._held == 0 or self._held + size <= self._limit)
            self._held += size
        try:
            yield
        finally:
            with self._condition:
                self._held -= size
                self._condition.notify_all()


def _by_series(sources: list[dict[str, str]]) -> dict[str, list[dict[str, str]]]:
    by_series: dict[str, list[dict[str, str]]] = {}
    for source in sources:
        by_series.setdefault(source["ParentSeries"], []).append(source)
    return by_series


class Anonymizer:
    def __init__(self, port: OrthancPort, keys: KeyStore, uid_tags: frozenset[int] = UID_TAGS,
                 options_metadata: int = DEFAULT_OPTIONS_METADATA) -> None:
        self._port = port
        self._keys = keys
        self._uid_tags = uid_tags
        self._options_metadata = str(options_metadata)
        self._markers: dict[str, NativeMarkers] = {}
        self._origin_writable: bool | None = None  # None: not tried yet on this Orthanc

    def native_markers(self, instance_id: str, request: AnonymizeRequest) -> NativeMarkers:
        """What native writes in the de-identification markers for these options.

        Learnt by anonymizing one instance natively with the caller's exact options (stored
        nowhere), once per set of options: native's answer also validates the options exactly
        as native would, before the plugin changes anything.
        """
        fingerprint = json.dumps(request.native_body, sort_keys=True)
        markers = self._markers.get(fingerprint)
        if markers is None:
            try:
                header = read_header(native_anonymized(self._port, instance_id, request.native_body, request.whole_resources))
            except UnreadableHeader as error:
                raise VerificationFailed(f"Native anonymization gave a file the plugin cannot read ({error})") from None
            markers = NativeMarkers(*(header.text(tag) if tag in header else None
                                      for tag in (DEIDENTIFICATION_METHOD, PATIENT_IDENTITY_REMOVED)))
            if len(self._markers) > 256:
                self._markers.clear()
            self._markers[fingerprint] = markers
        return markers

    def _anonymized_file(self, instance_id: str, request: AnonymizeRequest,
                         pseudonyms: Pseudonymizer, markers: NativeMarkers) -> bytes:
        return self._planned_file(instance_id, request, pseudonyms, markers)[0]

    def _planned_file(self, instance_id: str, request: AnonymizeRequest, pseudonyms: Pseudonymizer,
                      markers: NativeMarkers) -> tuple[bytes, InstancePlan]:
        plan = plan_instance(self._port.header(instance_id), request, pseudonyms, markers, self._uid_tags)
        output = anonymize_checked(plan, lambda body: native_anonymized(self._port, instance_id, body,
                                                                        request.whole_resources),
                                   self._uid_tags, instance_id)
        return output, plan

    def _check_as_stored(self, instance_id: str, plan: InstancePlan) -> None:
        """Where Orthanc transcodes what it stores ("IngestTranscoding"), the plugin's check again,
        on what Orthanc kept: a lossy syntax gives the instance a new SOPInstanceUID, which the
        pseudonyms, references and re-runs could not follow."""
        problems = check_output(self._port.read_file(instance_id), plan, self._uid_tags)
        if problems:
            raise VerificationFailed("Orthanc changed an anonymized instance as it stored it (IngestTranscoding), "
                                     "and it failed the plugin's check; nothing was kept: " + "; ".join(problems[:10]))

    def _record_origin(self, stored: dict[str, str], source: dict[str, str], parents: dict[str, str],
                       written: dict[str, str]) -> None:
        """Write "AnonymizedFrom" at every level, as native does, where this Orthanc lets a plugin
        write it (1.12 does; 1.10 refuses, and the result then carries no such link). `parents`
        and `written` remember, for the call, the sources' parents and the links already made."""
        if self._origin_writable is False:
            return
        series = source["ParentSeries"]
        if series not in parents:
            parents[series] = self._port.parent_of("series", series)
        study = parents[series]
        if study not in parents:
            parents[study] = self._port.parent_of("studies", study)
        origins = (source["ID"], series, study, parents[study])
        targets = (stored["ID"], stored["ParentSeries"], stored["ParentStudy"], stored["ParentPatient"])
        levels = _ORIGIN_LEVELS if self._port.patient_level() else _ORIGIN_LEVELS[:3]
        for level, target, origin in zip(levels, targets, origins):
            if written.get(target) == origin:
                continue
            try:
                self._port.set_metadata(level, target, "AnonymizedFrom", origin)
            except PluginError as error:
                if error.status < 500 and not self._origin_writable:  # this Orthanc refuses: stop trying
                    self._origin_writable = False
                    return
                raise  # it worked before, or the database failed: a real failure
            self._origin_writable = True
            written[target] = origin


    def anonymize_instance(self, instance_id: str, request: AnonymizeRequest) -> bytes:
        """/instances/{id}/anonymize: the checked file, stored nowhere (as native)."""
        pseudonyms = self._keys.pseudonymizer(request.project)
        markers = self.native_markers(instance_id, request)
        return self._anonymized_file(instance_id, request, pseudonyms, markers)

    def check_request(self, targets: list[tuple[str, str]], request: AnonymizeRequest) -> list[dict[str, str]]:
        """The source instances of the (level, id) targets, without repeats, once each target is known
        to exist and native accepts the options: done before a job is queued, so that bad requests
        are refused at once, as native does."""
        sources: dict[str, dict[str, str]] = {}
        for level, resource_id in targets:
            found = self._port.instances_of(level, resource_id)
            if not found:
                raise NotFound(f"{LEVEL_TYPES[level]} {resource_id} has no instance")
            sources.update((source["ID"], source) for source in found)
        self._keys.project_name(request.project)
        first = next(iter(sources.values()))
        markers = self.native_markers(first["ID"], request)
        self._refuse_other_options(list(sources.values()), request, markers)
        return list(sources.values())

    def _refuse_other_options(self, sources: list[dict[str, str]], request: AnonymizeRequest,
                              markers: NativeMarkers) -> None:
        """409 when a series this call would add to was anonymized under other options.

        Its results carry the same identifiers as this call's would (they follow from the key),
        so Orthanc would keep the first copy of each: the call would silently answer results
        made under the other options, or mix both in one series.
        """
        if self._port.overwrite_mode() != NEVER or self._keys.fresh_per_call:
            return  # Orthanc replaces what differs, or the results are new ones anyway
        pseudonyms = self._keys.pseudonymizer(request.project)
        mark = pseudonyms.options_fingerprint(request.output_options)
        for series, _, _ in self._result_series(sources, request, pseudonyms, markers):
            recorded = self._port.metadata("series", series, self._options_metadata)
            if recorded is not None and recorded != mark:
                raise Conflict(f"Series {series} was anonymized from this source under other options "
                               "(Keep, Replace, Remove, DicomVersion...), and this call's results would "
                               "carry the same identifiers: delete that series first to redo it, or use "
                               "another Project")

    def _record_options(self, stored: dict[str, str], mark: str, marked: set[str]) -> None:
        """The options' mark on each result series, once per call (`marked`: the series done)."""
        series = stored["ParentSeries"]
        if series not in marked:
            self._port.set_metadata("series", series, self._options_metadata, mark)
            marked.add(series)

    def _store_all(self, sources: list[dict[str, str]], request: AnonymizeRequest,
                   progress: Callable[[int, int], None], canceled: Callable[[], bool],
                   check: Callable[[list[dict[str, str]]], None]) -> list[dict[str, str]]:
        """Anonymize, check and store every source instance: all of them, or none.

        If any instance fails, `check` refuses the whole, or the job is canceled, the instances
        this call added are deleted again; the source is never touched here. Instances are done
        by `port.workers()` threads at once (several only where Orthanc calls release Python's
        lock), as many as IN_FLIGHT_BYTES of source files allow, each instance on its own, so the
        order does not matter.
        """
        pseudonyms = self._keys.pseudonymizer(request.project)
        markers = self.native_markers(sources[0]["ID"], request)
        mark = pseudonyms.options_fingerprint(request.output_options)
        added: list[str] = []
        total = len(sources)
        results = list(self._already_stored(sources, request, pseudonyms, markers).values())
        done = {stored["Source"] for stored in results}
        sources = [source for source in sources if source["ID"] not in done]
        parents: dict[str, str] = {}
        origins_written: dict[str, str] = {}
        marked: set[str] = set()
        lock = threading.Lock()
        failures: list[BaseException] = []
        budget = ByteBudget(IN_FLIGHT_BYTES)

        def one(source: dict[str, str]) -> None:
            if failures:
                return  # another instance failed: the call is lost anyway
            if canceled():
                raise JobCanceled()
            with budget.hold(int(source.get("FileSize") or 0)):
                output, plan = self._planned_file(source["ID"], request, pseudonyms, markers)
                stored = self._port.store(output)
            if stored.get("Status") not in ("Success", "AlreadyStored"):  # e.g. FilteredOut
                raise VerificationFailed(f"Orthanc did not store an anonymized instance "
                                         f"(status {stored.get('Status')}); nothing was kept")
            with lock:
                if stored.get("Status") == "Success":
                    added.append(stored["ID"])
            if self._port.transcodes_on_ingest():
                self._check_as_stored(stored["ID"], plan)
            with lock:
                results.append(stored)
                progress(len(results), total)
            self._record_options(stored, mark, marked)
            self._record_origin(stored, source, parents, origins_written)

        def guarded(source: dict[str, str]) -> None:
            try:
                one(source)
            except BaseException as error:
                failures.append(error)

        workers = max(1, min(self._port.workers(), len(sources)))
        progress(len(results), total)
        if workers == 1:
            for source in sources:
                guarded(source)
                if failures:
                    break
        else:
            with ThreadPoolExecutor(workers, thread_name_prefix="consistent-anon") as pool:
                list(pool.map(guarded, sources))
        try:
            if failures:
                raise failures[0]
            check(results)
            self._check_still_stored(results)
        except BaseException:
            for instance_id in added:
                try:
                    self._port.delete("instances", instance_id)
                except Exception:
                    pass  # the original error is the one to report
            raise
        return results

    def _check_still_stored(self, results: list[dict[str, str]]) -> None:
        """Every result is there at the end: a concurrent call that failed may have rolled back an
        instance this call counted as already stored, or Orthanc recycled it (storage limits)."""
        for series, members in _by_series(results).items():
            if not {stored["ID"] for stored in members} <= self._port.existing_instances(series):
                raise VerificationFailed("An anonymized instance disappeared while the call ran (a concurrent "
                                         "call was rolled back, or Orthanc recycled it to stay within "
                                         "MaximumStorageSize/MaximumPatientCount): run the call again")

    def _already_stored(self, sources: list[dict[str, str]], request: AnonymizeRequest,
                        pseudonyms: Pseudonymizer, markers: NativeMarkers) -> dict[str, dict[str, str]]:
        """The sources whose anonymized instance is already stored, with where it is.

        A pseudonym depends only on the key and the original, so the identifiers, hence the
        Orthanc ID, of an instance's result are known from the index alone, without reading the
        file: a re-run (or the rest of an interrupted one) skips what is there. That instance
        was checked when it was stored, and storing it again would change nothing, as Orthanc
        keeps the first copy. With "OverwriteInstances" "Always" everything is redone; with
        "IfChanged", a series made under other options is redone (Orthanc replaces its files).
        """
        mode = self._port.overwrite_mode()
        if mode == ALWAYS:
            return {}
        mark = pseudonyms.options_fingerprint(request.output_options)
        found: dict[str, dict[str, str]] = {}
        for series, members, targets_of in self._result_series(sources, request, pseudonyms, markers):
            if mode == IF_CHANGED and self._port.metadata("series", series, self._options_metadata) != mark:
                continue
            existing = self._port.existing_instances(series)
            if not existing:
                continue  # nothing of this series yet (a first run): no instance to plan
            for source in members:
                targets = targets_of(source["SOPInstanceUID"])
                instance = orthanc_ids.resource_id(*targets)
                if targets[3] and instance in existing:
                    found[source["ID"]] = {"ID": instance, "ParentSeries": series,
                                           "ParentStudy": orthanc_ids.resource_id(*targets[:2]),
                                           "ParentPatient": orthanc_ids.resource_id(targets[0]),
                                           "Status": "AlreadyStored", "Source": source["ID"]}
        return found

    def _result_series(self, sources: list[dict[str, str]], request: AnonymizeRequest, pseudonyms: Pseudonymizer,
                       markers: NativeMarkers) -> Iterator[tuple[str, list[dict[str, str]], Callable[[str], list[str]]]]:
        """For each source series whose result is predictable from Orthanc's index alone: the
        result series' Orthanc ID, the source instances, and for a SOPInstanceUID the PatientID,
        StudyInstanceUID, SeriesInstanceUID and SOPInstanceUID of its result. A series whose
        identifiers the request removes or empties has no predictable result: it is left out."""
        for source_series, members in _by_series(sources).items():
            patient_id, study_uid, series_uid = self._port.identifiers(source_series)

            def targets_of(sop_instance_uid: str, patient_id: str = patient_id, study_uid: str = study_uid,
                           series_uid: str = series_uid) -> list[str]:
                roots = Header.of_values({PATIENT_ID: patient_id, STUDY_INSTANCE_UID: study_uid,
                                          SERIES_INSTANCE_UID: series_uid, SOP_INSTANCE_UID: sop_instance_uid})
                plan = plan_instance(roots, request, pseudonyms, markers, self._uid_tags)
                return [plan.patient_id] + [plan.expected_uids.get(((), tag), ("",))[0]
                                            for tag in (STUDY_INSTANCE_UID, SERIES_INSTANCE_UID, SOP_INSTANCE_UID)]
            first = targets_of(members[0]["SOPInstanceUID"])
            if all(first[:3]):  # the same series for every member
                yield orthanc_ids.resource_id(*first[:3]), members, targets_of

    def _delete_sources(self, sources: list[dict[str, str]]) -> None:
        """KeepSource false: delete the instances this call anonymized, and those only (others may
        have arrived in the same study meanwhile); Orthanc removes the parents left empty."""
        for source in sources:
            try:
                self._port.delete("instances", source["ID"])
            except PluginError as error:
                if error.status != 404:  # deleted meanwhile: nothing left to do
                    raise

    def anonymize_resource(self, level: str, resource_id: str, request: AnonymizeRequest,
                           progress: Callable[[int, int], None] = lambda done, total: None,
                           canceled: Callable[[], bool] = lambda: False) -> dict[str, Any]:
        """/{patients,studies,series}/{id}/anonymize: store every checked instance, answer as native."""
        request = replace(request, whole_resources=True)
        sources = self.check_request([(level, resource_id)], request)

        def one_result(results: list[dict[str, str]]) -> None:
            parents = {stored[_PARENT_FIELD[level]] for stored in results}
            if len(parents) != 1 or len({stored["ParentPatient"] for stored in results}) != 1:
                raise VerificationFailed(f"The anonymized {LEVEL_TYPES[level].lower()} would be split into "
                                         f"{len(parents)} resources; nothing was stored")
        results = self._store_all(sources, request, progress, canceled, one_result)
        self._keep_labels(results, request)
        if not request.keep_source:
            self._delete_sources(sources)
        return answers.resource_answer(self._port.version(), level, resource_id, results, len(sources),
                                       request.native_body)

    def _keep_labels(self, results: list[dict[str, str]], request: AnonymizeRequest) -> None:
        """"KeepLabels": the sources' labels on the results, where native copies them."""
        if request.keep_labels and self._port.version() >= answers.KEEP_LABELS_SINCE:
            copy_labels(self._port, results, self._port.patient_level())

    def resolve(self, resource_ids: list[str]) -> list[tuple[str, str]]:
        """The level of each resource of a bulk request (native's /tools/bulk-anonymize takes IDs of any level)."""
        return [(self._port.level_of(resource_id), resource_id) for resource_id in resource_ids]

    def anonymize_bulk(self, targets: list[tuple[str, str]], request: AnonymizeRequest,
                       progress: Callable[[int, int], None] = lambda done, total: None,
                       canceled: Callable[[], bool] = lambda: False) -> dict[str, Any]:
        """/tools/bulk-anonymize: every instance of every resource, once, under the same rules.

        Unlike native, resources that overlap (an instance and its study) are no error: each
        instance is anonymized once.
        """
        request = replace(request, whole_resources=True)
        sources = self.check_request(targets, request)
        results = self._store_all(sources, request, progress, canceled, lambda results: None)
        self._keep_labels(results, request)
        if not request.keep_source:
            self._delete_sources(sources)
        return answers.bulk_answer(self._port.version(), targets, results, len(sources), request.native_body)
