"""The anonymization loop: native de-identifies each instance, the plugin decides identities,
checks the output, then stores it. Talks to Orthanc only through an `OrthancPort`."""
from __future__ import annotations

import hashlib
import json
import threading
from concurrent.futures import ThreadPoolExecutor
from contextlib import contextmanager
from dataclasses import replace
from typing import Any, Callable, Iterator, Protocol

from . import answers
from .config import DEFAULT_OPTIONS_METADATA
from .errors import BadRequest, Conflict, JobCanceled, NotFound, PluginError, VerificationFailed
from .filereader import Header, UnreadableHeader, read_header
from .identities import ISSUER_OF_PATIENT_ID, InstancePlan, NativeMarkers, plan_instance
from .keys import KeyStore
from .labels import copy_labels
from .ledger import Ledger
from .options import (DEIDENTIFICATION_METHOD, PATIENT_ID, PATIENT_IDENTITY_REMOVED, SERIES_INSTANCE_UID, SOP_INSTANCE_UID,
                      STUDY_INSTANCE_UID, AnonymizeRequest)
from . import orthanc_ids
from .orthanc_ids import LEVEL_TYPES
from .pseudonyms import Pseudonymizer
from .sealing import NoSealing, Sealing, sealing_for
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
    def exists(self, level: str, resource_id: str) -> bool: ...
    def stored_md5(self, instance_id: str) -> str: ...


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
                 options_metadata: int = DEFAULT_OPTIONS_METADATA,
                 log_error: Callable[[str], None] = lambda message: None) -> None:
        self._port = port
        self._keys = keys
        self._uid_tags = uid_tags
        self._options_metadata = str(options_metadata)
        self._markers: dict[str, NativeMarkers] = {}
        self._origin_writable: bool | None = None  # None: not tried yet on this Orthanc
        self._ledger = Ledger()
        self._log_error = log_error  # Orthanc's error level; never an identifier in the message

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
        return self._planned_file(instance_id, request, pseudonyms, markers, sealing_for(request.settings))[0]

    def _planned_file(self, instance_id: str, request: AnonymizeRequest, pseudonyms: Pseudonymizer,
                      markers: NativeMarkers, seal: Sealing | NoSealing) -> tuple[bytes, InstancePlan]:
        """The checked output; `seal` (the call's output step) adds the re-identification data
        before the check, so that what is checked is what is stored."""
        header = self._port.header(instance_id)
        plan = plan_instance(header, request, pseudonyms, markers, self._uid_tags)
        output = anonymize_checked(plan, lambda body: seal(header, native_anonymized(
            self._port, instance_id, body, request.whole_resources)), self._uid_tags, instance_id)
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
            found = self._instances_of(level, resource_id)
            if not found:
                raise NotFound(f"{LEVEL_TYPES[level]} {resource_id} has no instance")
            sources.update((source["ID"], source) for source in found)
        self._keys.project_name(request.project)
        with self._vanishing(list(sources.values())):
            first = next(iter(sources.values()))
            markers = self.native_markers(first["ID"], request)
            self._refuse_merging(list(sources.values()), request)
            self._refuse_other_options(list(sources.values()), request, markers)
        return list(sources.values())

    def _instances_of(self, level: str, resource_id: str) -> list[dict[str, str]]:
        """The resource's instances; if another call of this Orthanc consumed it (KeepSource
        false), a 409 that says so rather than a bare "Unknown resource"."""
        try:
            return self._port.instances_of(level, resource_id)
        except PluginError as error:
            if error.status == 404 and self._ledger.was_consumed(resource_id):
                raise Conflict(f"{LEVEL_TYPES[level]} {resource_id} was anonymized with KeepSource false by "
                               "another call, which deleted it: its anonymized copy is stored") from None
            raise

    @contextmanager
    def _vanishing(self, sources: list[dict[str, str]]) -> Iterator[None]:
        """A source that disappears once listed was consumed (or deleted) by someone else meanwhile:
        a 409 saying so, rather than the 404 of whichever built-in call noticed first (a 404
        while every source is still there is the call's own error, left as it is)."""
        try:
            yield
        except PluginError as error:
            if error.status != 404:
                raise
            gone = [source["ID"] for source in sources if not self._port.exists("instances", source["ID"])]
            if not gone:
                raise
            raise self._vanished(gone) from None

    def _vanished(self, gone: list[str]) -> PluginError:
        """409 where another call of this Orthanc consumed the sources (KeepSource false); else the
        404 native gives for a source deleted under it (by someone, another node, or Orthanc's own
        recycling under storage limits), with a message that says so."""
        what = ("Source instances of this call were deleted while it ran ({}): nothing of this call was "
                "kept; call again for what is left")
        if any(self._ledger.was_consumed(source) for source in gone):
            return Conflict(what.format("another call with KeepSource false consumed them"))
        return NotFound(what.format("by another call or node, by someone, or by Orthanc recycling the "
                                    "oldest patient to stay within MaximumStorageSize/MaximumPatientCount"))

    def _refuse_merging(self, sources: list[dict[str, str]], request: AnonymizeRequest) -> None:
        """400 for a Replace that gives several instances one identifier where it cannot hold: they
        would overwrite one another, and fewer results than sources would be stored."""
        replaced = request.replaced_tags
        if SOP_INSTANCE_UID in replaced and len(sources) > 1:
            raise BadRequest(f"Replace gives one SOPInstanceUID to {len(sources)} instances: each instance "
                             "needs its own (Orthanc would keep one of them)")
        if SERIES_INSTANCE_UID in replaced and not {STUDY_INSTANCE_UID, PATIENT_ID} <= set(replaced):
            studies = {self._port.parent_of("series", series) for series in _by_series(sources)}
            if len(studies) > 1:
                raise BadRequest(f"Replace gives one SeriesInstanceUID to series of {len(studies)} studies: a "
                                 "series belongs to one study (anonymize each study on its own)")

    def _refuse_other_options(self, sources: list[dict[str, str]], request: AnonymizeRequest,
                              markers: NativeMarkers) -> None:
        """409 when a series this call would add to was anonymized under other options.

        Its results carry the same identifiers as this call's would (they follow from the key),
        so Orthanc would keep the first copy of each: the call would silently answer results
        made under the other options, or mix both in one series.
        """
        if not self._compares_results():
            return  # Orthanc replaces every instance, or the results are new ones anyway
        pseudonyms = self._keys.pseudonymizer(request.project)
        mark = pseudonyms.options_fingerprint(request.output_options)
        for series, _, _ in self._result_series(sources, request, pseudonyms, markers):
            recorded = self._port.metadata("series", series, self._options_metadata)
            if recorded is not None and recorded != mark:
                raise self._other_options(series)

    @staticmethod
    def _other_options(series: str) -> Conflict:
        return Conflict(f"Series {series} was anonymized from this source under other options "
                        "(Keep, Replace, Remove, DicomVersion...), and this call's results would "
                        "carry the same identifiers: delete that series first to redo it, or use "
                        "another Project")

    def _compares_results(self) -> bool:
        """Whether results of the same identifiers can collide: not when Orthanc replaces every
        instance, nor when pseudonyms are new at each call."""
        return self._port.overwrite_mode() == NEVER and not self._keys.fresh_per_call

    def _same_result(self, stored: dict[str, str], output: bytes, seal: Sealing | NoSealing) -> None:
        """Orthanc answered "AlreadyStored": the instance there must be this call's very output
        (sealed again, if the call seals: see Sealing.recognizes), else another call (of this
        node or another) stored it under other options first."""
        if not self._port.transcodes_on_ingest() and \
                self._port.stored_md5(stored["ID"]) != hashlib.md5(output).hexdigest() and \
                not seal.recognizes(self._port.read_file(stored["ID"]), output):
            raise self._other_options(stored["ParentSeries"])

    def _store_all(self, sources: list[dict[str, str]], request: AnonymizeRequest,
                   progress: Callable[[int, int], None], canceled: Callable[[], bool],
                   check: Callable[[list[dict[str, str]]], None], targets: list[str]) -> list[dict[str, str]]:
        """Anonymize, check and store every source instance: all of them, or none; then, with
        KeepSource false, delete the sources (see `_consume`).

        If any instance fails, `check` refuses the whole, or the job is canceled, the instances
        this call added, and that no other call counts on, are deleted again. Each series' first
        instance (by SOPInstanceUID) is stored first, one series after the other: a call racing
        this one under other options then loses on that very instance, before storing anything
        else there. Then instances are done by `port.workers()` threads at once, as many as
        IN_FLIGHT_BYTES of source files allow, each on its own, so the order does not matter.
        """
        pseudonyms = self._keys.pseudonymizer(request.project)
        markers = self.native_markers(sources[0]["ID"], request)
        mark = pseudonyms.options_fingerprint(request.output_options)
        total = len(sources)
        results = list(self._already_stored(sources, request, pseudonyms, markers, mark).values())
        claimed = {stored["ID"] for stored in results}
        self._ledger.claim(claimed)
        added: list[dict[str, str]] = []
        done = {stored["Source"] for stored in results}
        to_do = [source for source in sources if source["ID"] not in done]
        parents: dict[str, str] = {}
        origins_written: dict[str, str] = {}
        lock = threading.Lock()
        failures: list[BaseException] = []
        budget = ByteBudget(IN_FLIGHT_BYTES)
        compare = self._compares_results()
        seal = sealing_for(request.settings)

        def store(source_id: str) -> dict[str, str]:
            """Anonymize, check and store one source instance; where Orthanc already had its result,
            check it is this very output; where Orthanc transcodes what it stores, check what it kept."""
            output, plan = self._planned_file(source_id, request, pseudonyms, markers, seal)
            stored = dict(self._port.store(output), Source=source_id)
            if stored.get("Status") not in ("Success", "AlreadyStored"):  # e.g. FilteredOut
                raise VerificationFailed(f"Orthanc did not store an anonymized instance "
                                         f"(status {stored.get('Status')}); nothing was kept")
            if stored["Status"] == "AlreadyStored" and compare:
                self._same_result(stored, output, seal)
            if self._port.transcodes_on_ingest():
                try:
                    self._check_as_stored(stored["ID"], plan)
                except BaseException:  # unchecked or failed: never kept (not yet counted as added)
                    if stored["Status"] == "Success":
                        self._discard(stored["ID"])
                    raise
            return stored

        def one(source: dict[str, str]) -> None:
            if failures:
                return  # another instance failed: the call is lost anyway
            if canceled():
                raise JobCanceled()
            with budget.hold(int(source.get("FileSize") or 0)):
                stored = store(source["ID"])
            with lock:
                if stored["ID"] not in claimed:
                    self._ledger.claim([stored["ID"]])
                    claimed.add(stored["ID"])
                if stored["Status"] == "Success":
                    added.append(stored)
                results.append(stored)
                progress(len(results), total)
            self._record_origin(stored, source, parents, origins_written)

        def guarded(source: dict[str, str]) -> None:
            try:
                one(source)
            except PluginError as error:  # if the source went meanwhile, that is what to say
                try:
                    gone = not self._port.exists("instances", source["ID"])
                except PluginError:
                    gone = False  # cannot tell: the call's own error is the one to report
                failures.append(self._vanished([source["ID"]]) if gone else error)
            except BaseException as error:
                failures.append(error)

        firsts = [min(members, key=lambda s: s["SOPInstanceUID"]) for _, members in
                  sorted(_by_series(to_do).items())]
        first_ids = {source["ID"] for source in firsts}
        rest = [source for source in to_do if source["ID"] not in first_ids]
        workers = max(1, min(self._port.workers(), len(rest)))
        progress(len(results), total)
        for source in firsts:
            guarded(source)
            if failures:
                break
        if workers == 1 or failures:
            for source in rest:
                guarded(source)
                if failures:
                    break
        else:
            with ThreadPoolExecutor(workers, thread_name_prefix="consistent-anon") as pool:
                list(pool.map(guarded, rest))
        try:
            if failures:
                raise failures[0]
            check(results)
            self._check_one_result_each(results, total)
            self._refuse_other_options(sources, request, markers)  # one finished meanwhile
        except BaseException:
            self._roll_back(added)
            self._roll_back(self._ledger.release(claimed, answered=False))
            raise
        try:  # the result is whole and checked: from here on it stays, whatever fails
            self._record_options(results, mark)
            self._keep_labels(results, request)
            if not request.keep_source:
                self._consume(results, sources, targets, store)
        except PluginError as error:  # say so: not "nothing was kept" (never a 404 that _vanishing rewrites)
            raise PluginError(f"The anonymized result is stored and checked, but a step after it failed: "
                              f"{error.message}", 500 if error.status == 404 else error.status,
                              error.orthanc_code, error.description) from None
        finally:
            self._ledger.release(claimed, answered=True)
        return results

    def _record_options(self, results: list[dict[str, str]], mark: str) -> None:
        """The options' mark on each result series, once the call's result is whole: a call that
        fails leaves no mark, so a re-run compares what it finds rather than trusting it."""
        for series in sorted({stored["ParentSeries"] for stored in results}):
            self._port.set_metadata("series", series, self._options_metadata, mark)

    def _check_one_result_each(self, results: list[dict[str, str]], total: int) -> None:
        """Every source instance has its own result, and each is there now: a concurrent call that
        failed may have rolled back an instance this call counted as already stored."""
        distinct = {stored["ID"] for stored in results}
        if len(distinct) != total:
            raise VerificationFailed(f"{total} source instances gave {len(distinct)} distinct anonymized "
                                     "instances (several got the same identifiers): nothing was kept")
        for series, members in _by_series(results).items():
            if not {stored["ID"] for stored in members} <= self._port.existing_instances(series):
                raise self._disappeared()

    @staticmethod
    def _disappeared() -> Conflict:
        return Conflict("An anonymized instance disappeared while the call ran (a concurrent call was "
                        "rolled back, someone deleted it, or Orthanc recycled it to stay within "
                        "MaximumStorageSize/MaximumPatientCount): nothing was deleted; call again")

    def _roll_back(self, added: list[dict[str, str]]) -> None:
        """Delete the results this call added, except those another call counts on or answered
        (left to it: see Ledger.orphan), and those whose source is gone (consumed meanwhile: the
        result is its only copy). A source another node deletes while its result is being
        removed gets the result back from the copy read just before. Best effort: the original
        error is the one to report."""
        for stored in added:
            try:
                self._remove_result(stored)
            except Exception as error:  # the original error is the one to report; this is logged
                self._log_error(f"Rollback could not remove anonymized instance {stored['ID']} "
                                f"({type(error).__name__}): remove it by hand")

    def _discard(self, instance_id: str) -> None:
        """Delete a result that failed its check as stored (or could not be checked): it never stays."""
        try:
            self._port.delete("instances", instance_id)
        except PluginError as error:
            if error.status != 404:  # a 404: gone already, nothing to do
                self._log_error(f"Could not remove anonymized instance {instance_id}, which failed the "
                                f"plugin's check as stored ({type(error).__name__}): remove it by hand")

    def _remove_result(self, stored: dict[str, str]) -> None:
        with self._ledger.guard():
            if not self._ledger.removable(stored["ID"]):
                self._ledger.orphan(stored["ID"], stored)
                return
            if not self._port.exists("instances", stored["Source"]):
                return
            copy = self._port.read_file(stored["ID"])
            self._port.delete("instances", stored["ID"])
        if not self._port.exists("instances", stored["Source"]):
            self._port.store(copy)

    def _consume(self, results: list[dict[str, str]], sources: list[dict[str, str]], targets: list[str],
                 store: Callable[[str], dict[str, str]]) -> None:
        """KeepSource false: delete each source instance of the call, and those only (others may
        have arrived in the same study meanwhile), each only while its result is there; Orthanc
        removes the parents left empty. A result removed meanwhile (another node's call rolled
        back) is made again from its source with `store` before the source goes; one removed
        while its source is being deleted is stored again from the copy read just before."""
        series_of = {source["ID"]: source["ParentSeries"] for source in sources}
        consumed = set(targets) | set(series_of)
        for series in set(series_of.values()):
            consumed |= self._lineage(series)
        # Known before the first deletion: a call on a series emptied while this one still runs
        # hears that it was consumed (a resource marked but left in place is never asked about).
        self._ledger.consumed(consumed)
        for stored in results:
            copy = self._copy_of(stored, store)
            with self._ledger.guard():
                if not self._port.exists("instances", stored["ID"]):
                    copy = self._copy_of(stored, store)
                try:
                    self._port.delete("instances", stored["Source"])
                except PluginError as error:
                    if error.status != 404:  # deleted meanwhile: nothing left to do
                        raise
                self._ledger.consumed([stored["Source"]])
            if not self._port.exists("instances", stored["ID"]):
                self._port.store(copy)

    def _copy_of(self, stored: dict[str, str], store: Callable[[str], dict[str, str]]) -> bytes:
        """The file of a result, made again from its source if the result is gone."""
        try:
            return self._port.read_file(stored["ID"])
        except PluginError as error:
            if error.status != 404:
                raise
        if store(stored["Source"])["ID"] != stored["ID"]:
            raise VerificationFailed("An anonymized instance made again came out under another identity: "
                                     "the source is kept")
        return self._port.read_file(stored["ID"])

    def _lineage(self, series: str) -> set[str]:
        """The series, its study and patient; what another call consumed already is left out."""
        try:
            study = self._port.parent_of("series", series)
            return {series, study, self._port.parent_of("studies", study)}
        except PluginError as error:
            if error.status != 404:
                raise
            return {series}

    def _already_stored(self, sources: list[dict[str, str]], request: AnonymizeRequest,
                        pseudonyms: Pseudonymizer, markers: NativeMarkers, mark: str) -> dict[str, dict[str, str]]:
        """The sources whose anonymized instance is already stored, with where it is.

        A pseudonym depends only on the key and the original, so the identifiers, hence the
        Orthanc ID, of an instance's result are known from the index alone, without reading the
        file: a re-run (or the rest of an interrupted one) skips what is there. That instance
        was checked when it was stored, and storing it again would change nothing, as Orthanc
        keeps the first copy. With "OverwriteInstances" "Always" everything is redone. Only in series
        that a finished call marked with these very options: elsewhere the instances found may come
        from a call under other options, or one that failed, so they are stored again and compared
        (with "IfChanged", Orthanc then replaces what differs).
        """
        mode = self._port.overwrite_mode()
        if mode == ALWAYS:
            return {}
        found: dict[str, dict[str, str]] = {}
        for series, members, targets_of in self._result_series(sources, request, pseudonyms, markers):
            if self._port.metadata("series", series, self._options_metadata) != mark:
                continue  # a first run, or results this call cannot vouch for without comparing
            existing = self._port.existing_instances(series)
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
            # A subject table may list the patient under its issuer, which Orthanc's index lacks.
            issuer = (self._port.header(members[0]["ID"]).text(ISSUER_OF_PATIENT_ID)
                      if request.settings.subjects is not None else "")

            def targets_of(sop_instance_uid: str, patient_id: str = patient_id, study_uid: str = study_uid,
                           series_uid: str = series_uid, issuer: str = issuer) -> list[str]:
                roots = Header.of_values({PATIENT_ID: patient_id, ISSUER_OF_PATIENT_ID: issuer,
                                          STUDY_INSTANCE_UID: study_uid, SERIES_INSTANCE_UID: series_uid,
                                          SOP_INSTANCE_UID: sop_instance_uid})
                plan = plan_instance(roots, request, pseudonyms, markers, self._uid_tags)
                return [plan.patient_id] + [plan.expected_uids.get(((), tag), ("",))[0]
                                            for tag in (STUDY_INSTANCE_UID, SERIES_INSTANCE_UID, SOP_INSTANCE_UID)]
            first = targets_of(members[0]["SOPInstanceUID"])
            if all(first[:3]):  # the same series for every member
                yield orthanc_ids.resource_id(*first[:3]), members, targets_of

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
        with self._vanishing(sources):
            results = self._store_all(sources, request, progress, canceled, one_result, [resource_id])
        return answers.resource_answer(self._port.version(), level, resource_id, results, len(sources),
                                       request.native_body)

    def _keep_labels(self, results: list[dict[str, str]], request: AnonymizeRequest) -> None:
        """"KeepLabels": the sources' labels on the results, where native copies them (before the
        sources are consumed: a result finds its source through AnonymizedFrom)."""
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
        with self._vanishing(sources):
            results = self._store_all(sources, request, progress, canceled, lambda results: None,
                                      [resource_id for _, resource_id in targets])
        return answers.bulk_answer(self._port.version(), targets, results, len(sources), request.native_body)
