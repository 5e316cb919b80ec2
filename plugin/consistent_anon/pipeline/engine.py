"""The anonymization engine: native Orthanc de-identifies each instance, the plugin decides the
identities, checks the output, then stores it. It talks to Orthanc only through an
`OrthancPort` (port.py) and raises domain errors (errors.py); the adapter answers them.

A call, stage by stage:
1. plan the call (`check_request`, `_plan_call`): the targets' source instances, native's
   verdict on the options, the refusals (Replace merging instances, other options' results);
2. run it (call_run.CallRun): what is already stored → each instance through
   instance_steps.InstanceSteps (read → plan identities and transforms → native → check →
   store) → the whole checked → finish (options mark, labels, sources consumed), or roll back;
3. answer as native does (native_answers.py).
"""
from __future__ import annotations

import json
from contextlib import contextmanager
from dataclasses import replace
from typing import Any, Callable, Iterator

from . import native_answers
from .call_run import CallParts, CallPlan, CallRun, Canceled, Progress, WholeCheck, explained
from ..identity.config import DEFAULT_OPTIONS_METADATA
from .deletions import Deletions
from ..errors import NOTHING_KEPT, BadRequest, Conflict, NotFound, Refused, VerificationFailed
from ..dicom.filereader import UnreadableHeader, read_header
from .identities import NativeMarkers
from .instance_steps import Anonymized, InstanceSteps
from ..identity.keys import KeyStore
from .ledger import Ledger
from ..lru import LruCache
from .options import AnonymizeRequest
from ..orthanc_ids import LEVEL_TYPES, PARENT_FIELD
from .origins import OriginWriter
from .port import OrthancPort, Source, Stored, by_series
from ..identity.pseudonyms import Pseudonymizer
from ..pixels.decision import PixelSettings
from .result_index import ResultIndex
from .transcoding import native_anonymized
from ..dicom.uid_attributes import UID_TAGS
from ..dicom.vocabulary import (DEIDENTIFICATION_METHOD, PATIENT_ID, PATIENT_IDENTITY_REMOVED, SERIES_INSTANCE_UID,
                                SOP_INSTANCE_UID, STUDY_INSTANCE_UID)

#: How many sets of options' native markers are remembered (a few hundred bytes each).
MARKERS_REMEMBERED = 256


def _one_resource(level: str) -> WholeCheck:
    """Refuses the results of a patient, study or series call that would not form one resource."""
    def check(results: list[Stored]) -> None:
        parents = {stored[PARENT_FIELD[level]] for stored in results}  # type: ignore[literal-required]
        if len(parents) != 1 or len({stored["ParentPatient"] for stored in results}) != 1:
            raise VerificationFailed(f"The anonymized {LEVEL_TYPES[level].lower()} would be split into "
                                     f"{len(parents)} resources: {NOTHING_KEPT}")
    return check


def with_pixel_status(answer: dict[str, Any], results: list[Stored]) -> dict[str, Any]:
    """Native's answer, and where some sources were at risk or unknown, how many of this call's
    results were cleaned, accepted or flagged ("PixelStatusCounts", read by the audit entry too):
    never a silent pass over pixels that may show the patient's identity."""
    counts: dict[str, int] = {}
    for stored in results:
        if "PixelStatus" in stored:
            counts[stored["PixelStatus"]] = counts.get(stored["PixelStatus"], 0) + 1
    if counts:
        answer["PixelStatusCounts"] = dict(sorted(counts.items()))
    return answer


def arrivals_answer(results: list[Stored]) -> dict[str, Any]:
    """What the gateway's call over arrived instances answers its audit entry: its anonymized
    series, as a bulk call's answer names them, its instance count and pixel status."""
    series = sorted({stored["ParentSeries"] for stored in results})
    return with_pixel_status({"Resources": [{"Type": "Series", "ID": s} for s in series],
                              "InstancesCount": len(results)}, results)


class Anonymizer:
    def __init__(self, port: OrthancPort, keys: KeyStore, uid_tags: frozenset[int] = UID_TAGS,
                 options_metadata: int = DEFAULT_OPTIONS_METADATA,
                 log_error: Callable[[str], None] = lambda message: None,
                 pixels: PixelSettings = PixelSettings()) -> None:
        self._port = port
        self._pixels = pixels
        self._keys = keys
        self._uid_tags = uid_tags
        self._ledger = Ledger()
        self._index = ResultIndex(port, keys, uid_tags, str(options_metadata))
        self._deletions = Deletions(port, self._ledger, log_error)  # log_error: Orthanc's error level
        self._origins = OriginWriter(port)
        self._markers: LruCache[str, NativeMarkers] = LruCache(MARKERS_REMEMBERED)

    # --- The calls (the adapter's routes and jobs) --------------------------------------------
    def anonymize_instance(self, instance_id: str, request: AnonymizeRequest) -> Anonymized:
        """/instances/{id}/anonymize: the checked file, stored nowhere (as native), and its plan
        (whose pixel decision the answer states: no stored result carries it)."""
        pseudonyms = self._keys.pseudonymizer(request.project)
        steps = self._steps(request, pseudonyms, self.native_markers(instance_id, request))
        return steps.anonymized(instance_id)

    def anonymize_resource(self, level: str, resource_id: str, request: AnonymizeRequest,
                           progress: Progress = lambda done, total: None,
                           canceled: Canceled = lambda: False) -> dict[str, Any]:
        """/{patients,studies,series}/{id}/anonymize: store every checked instance, answer as native."""
        request = replace(request, whole_resources=True)
        sources = self.check_request([(level, resource_id)], request)
        results = self._run(self._plan_call(sources, [resource_id], request), progress, canceled,
                            _one_resource(level))
        return with_pixel_status(native_answers.resource_answer(self._port.version(), level, resource_id, results,
                                                                len(sources), request.native_body), results)

    def anonymize_bulk(self, targets: list[tuple[str, str]], request: AnonymizeRequest,
                       progress: Progress = lambda done, total: None,
                       canceled: Canceled = lambda: False) -> dict[str, Any]:
        """/tools/bulk-anonymize: every instance of every resource, once, under the same rules.

        Unlike native, resources that overlap (an instance and its study) are no error: each
        instance is anonymized once.
        """
        request = replace(request, whole_resources=True)
        sources = self.check_request(targets, request)
        plan = self._plan_call(sources, [resource_id for _, resource_id in targets], request)
        results = self._run(plan, progress, canceled, lambda results: None)
        return with_pixel_status(native_answers.bulk_answer(self._port.version(), targets, results, len(sources),
                                                            request.native_body), results)

    def anonymize_arrivals(self, instance_ids: list[str], request: AnonymizeRequest, linked: bool,
                           canceled: Canceled = lambda: False) -> list[Stored]:
        """Instances anonymized, checked and stored together as a bulk call stores them (all or
        nothing), their sources kept whatever the request says: the gateway (OnArrival) deletes each
        once its result is delivered, or keeps it (`linked`: then its result names it in
        "AnonymizedFrom", as native's would; a link to a deleted source would name nothing). Each
        result names its source ("Source")."""
        request = replace(request, whole_resources=True, keep_source=True)
        sources = self.check_request([("instances", instance_id) for instance_id in instance_ids], request)
        return self._run(self._plan_call(sources, instance_ids, request), lambda done, total: None,
                         canceled, lambda results: None, linked)

    def resolve(self, resource_ids: list[str]) -> list[tuple[str, str]]:
        """The level of each resource of a bulk request (native's /tools/bulk-anonymize takes IDs of any level)."""
        return [(self._level_of(resource_id), resource_id) for resource_id in resource_ids]

    def _level_of(self, resource_id: str) -> str:
        try:
            return self._port.level_of(resource_id)
        except NotFound:
            raise self._missing(f"Unknown resource {resource_id}", "Resource", resource_id) from None

    # --- Stage 1: plan the call ---------------------------------------------------------------
    def check_request(self, targets: list[tuple[str, str]], request: AnonymizeRequest) -> list[Source]:
        """The source instances of the (level, id) targets, without repeats, once each target is known
        to exist and native accepts the options: done before a job is queued, so that bad requests
        are refused at once, as native does."""
        sources: dict[str, Source] = {}
        for level, resource_id in targets:
            found = self._instances_of(level, resource_id)
            if not found:
                raise NotFound(f"{LEVEL_TYPES[level]} {resource_id} has no instance")
            sources.update((source["ID"], source) for source in found)
        self._keys.project_name(request.project)
        listed = list(sources.values())
        with self._vanishing(listed):
            markers = self.native_markers(listed[0]["ID"], request)
            self._refuse_merging(listed, request)
            self._index.refuse_other_options(listed, request, markers)
        return listed

    def native_markers(self, instance_id: str, request: AnonymizeRequest) -> NativeMarkers:
        """What native writes in the de-identification markers for these options.

        Learnt by anonymizing one instance natively with the caller's exact options (stored
        nowhere), once per set of options: native's answer also validates the options exactly
        as native would, before the plugin changes anything.
        """
        fingerprint = json.dumps(request.native_body, sort_keys=True)
        markers = self._markers.get(fingerprint)
        if markers is None:
            data = native_anonymized(self._port, instance_id, request.native_body, request.whole_resources)
            try:
                header = read_header(data)
            except UnreadableHeader as error:
                raise VerificationFailed(f"Native anonymization gave a file the plugin cannot read ({error})") from None
            markers = NativeMarkers(*(header.text(tag) if tag in header else None
                                      for tag in (DEIDENTIFICATION_METHOD, PATIENT_IDENTITY_REMOVED)))
            self._markers.put(fingerprint, markers)
        return markers

    def _instances_of(self, level: str, resource_id: str) -> list[Source]:
        """The resource's instances; if another call of this Orthanc consumed it (KeepSource
        false), a 409 that says so; else a 404 that names the usual reason (another node's call
        may have consumed it) rather than a bare "Unknown resource"."""
        try:
            return self._port.instances_of(level, resource_id)
        except NotFound:
            raise self._missing(f"Unknown resource: no {level} has the ID {resource_id}", LEVEL_TYPES[level],
                                resource_id) from None

    def _missing(self, unknown: str, kind: str, resource_id: str) -> Refused:
        """409 where a call of this Orthanc consumed the resource (KeepSource false); else the 404
        `unknown`, naming the usual reason (another node's call may have consumed it)."""
        if self._ledger.was_consumed(resource_id):
            return Conflict(f"{kind} {resource_id} was anonymized with KeepSource false by another call, which "
                            "deleted it: its anonymized copy is stored")
        return NotFound(f"{unknown} (if there was one, it was deleted: an anonymization with KeepSource false, on "
                        "this or another node, deletes its sources once their anonymized copies are stored)")

    @contextmanager
    def _vanishing(self, sources: list[Source]) -> Iterator[None]:
        """A NotFound while the call is planned, explained (call_run.explained)."""
        try:
            yield
        except NotFound as error:
            raise explained(self._port, self._ledger, sources, error) from None

    def _refuse_merging(self, sources: list[Source], request: AnonymizeRequest) -> None:
        """400 for a Replace that gives several instances one identifier where it cannot hold: they
        would overwrite one another, and fewer results than sources would be stored."""
        replaced = request.replaced_tags
        if SOP_INSTANCE_UID in replaced and len(sources) > 1:
            raise BadRequest(f"Replace gives one SOPInstanceUID to {len(sources)} instances: each instance "
                             "needs its own (Orthanc would keep one of them)")
        if SERIES_INSTANCE_UID in replaced and not {STUDY_INSTANCE_UID, PATIENT_ID} <= set(replaced):
            studies = {self._port.parent_of("series", series) for series in by_series(sources)}
            if len(studies) > 1:
                raise BadRequest(f"Replace gives one SeriesInstanceUID to series of {len(studies)} studies: a "
                                 "series belongs to one study (anonymize each study on its own)")

    def _plan_call(self, sources: list[Source], targets: list[str], request: AnonymizeRequest) -> CallPlan:
        pseudonyms = self._keys.pseudonymizer(request.project)
        return CallPlan(sources, targets, request, pseudonyms, self.native_markers(sources[0]["ID"], request),
                        pseudonyms.options_fingerprint(request.output_options))

    # --- Stage 2: run it ----------------------------------------------------------------------
    def _steps(self, request: AnonymizeRequest, pseudonyms: Pseudonymizer, markers: NativeMarkers) -> InstanceSteps:
        return InstanceSteps(self._port, request, pseudonyms, markers, self._uid_tags, self._index, self._deletions,
                             self._pixels)

    def _run(self, plan: CallPlan, progress: Progress, canceled: Canceled, check: WholeCheck,
             linked: bool = True) -> list[Stored]:
        parts = CallParts(self._port, self._ledger, self._index, self._deletions)
        steps = self._steps(plan.request, plan.pseudonyms, plan.markers)
        origins = self._origins.for_call(linked, plan.request.keep_labels)
        return CallRun(plan, parts, steps, origins, progress, canceled).run(check)
