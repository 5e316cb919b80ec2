"""What Orthanc's index tells of a call's results before any file is read.

A pseudonym depends only on the key and the original, so the identifiers, hence the Orthanc IDs,
of a source's result follow from the source's identifiers in the index: a re-run finds what is
already stored, and a call finds the series that another call made under other options (their
mark, a metadata of the result series, differs), all without reading a file.
"""
from __future__ import annotations

import hashlib
from dataclasses import dataclass
from functools import cached_property
from typing import Callable, Iterator

from .. import orthanc_ids
from ..errors import Conflict
from ..dicom.filereader import Header
from .identities import InstancePlan, NativeMarkers, plan_instance, uid_target
from ..identity.keys import KeyStore
from ..lru import LruCache
from .options import AnonymizeRequest
from .port import ALWAYS, NEVER, OrthancPort, Source, Stored, by_series
from ..identity.pseudonyms import Pseudonymizer
from .sealing import NoSealing, Sealing
from ..dicom.vocabulary import (ISSUER_OF_PATIENT_ID, PATIENT_ID, SERIES_INSTANCE_UID, SOP_INSTANCE_UID,
                                STUDY_INSTANCE_UID, Path)

#: Source series whose identifiers are remembered (three short texts each).
SERIES_REMEMBERED = 4096


@dataclass(frozen=True)
class _Predictor:
    """The identifiers of the results of one source series, from its identifiers in the index."""

    patient_id: str
    study_uid: str
    series_uid: str
    issuer: str  # a subject table may list the patient under its issuer, which the index lacks
    request: AnonymizeRequest
    pseudonyms: Pseudonymizer
    markers: NativeMarkers
    uid_tags: frozenset[int]

    def targets(self, sop_instance_uid: str) -> list[str]:
        """PatientID, StudyInstanceUID, SeriesInstanceUID and SOPInstanceUID of the result of the
        source instance with this SOPInstanceUID ("" where the request removes or empties it).
        Only the SOPInstanceUID differs between a series' members: the rest is planned once."""
        series_targets, sop_target = self._series_plan
        if not sop_instance_uid or sop_target is None:
            return self.planned(sop_instance_uid)
        return [*series_targets, sop_target(sop_instance_uid)]

    def planned(self, sop_instance_uid: str) -> list[str]:
        """`targets` from a whole plan of the instance."""
        return _identities(self._plan(sop_instance_uid))

    @cached_property
    def _series_plan(self) -> tuple[list[str], Callable[[str], str] | None]:
        """The targets shared by the series' members, and what a SOPInstanceUID becomes (None
        where the caller's Keep, Replace or Remove decides it: each instance is then planned whole)."""
        plan = self._plan("")
        if self.request.caller_paths.fate(Path.top(SOP_INSTANCE_UID)):
            return _identities(plan)[:3], None
        return _identities(plan)[:3], uid_target(self._roots(""), self.request, self.pseudonyms, self.uid_tags,
                                                  plan.patient_id)

    def _plan(self, sop_instance_uid: str) -> InstancePlan:
        return plan_instance(self._roots(sop_instance_uid), self.request, self.pseudonyms, self.markers,
                             self.uid_tags)

    def _roots(self, sop_instance_uid: str) -> Header:
        return Header.of_values({PATIENT_ID: self.patient_id, ISSUER_OF_PATIENT_ID: self.issuer,
                                 STUDY_INSTANCE_UID: self.study_uid, SERIES_INSTANCE_UID: self.series_uid,
                                 SOP_INSTANCE_UID: sop_instance_uid})


def _identities(plan: InstancePlan) -> list[str]:
    return [plan.patient_id] + [plan.expected_uids.get(Path.top(tag), ("",))[0]
                                for tag in (STUDY_INSTANCE_UID, SERIES_INSTANCE_UID, SOP_INSTANCE_UID)]


@dataclass(frozen=True)
class ResultSeries:
    """A source series whose result series is known from the index alone."""

    series_id: str  # the result series' Orthanc ID
    members: list[Source]
    predictor: _Predictor


class ResultIndex:
    def __init__(self, port: OrthancPort, keys: KeyStore, uid_tags: frozenset[int], options_metadata: str) -> None:
        self._port = port
        self._keys = keys
        self._uid_tags = uid_tags
        self._options_metadata = options_metadata
        self._identifiers: LruCache[str, tuple[str, str, str]] = LruCache(SERIES_REMEMBERED)

    def identifiers(self, series_id: str) -> tuple[str, str, str]:
        """PatientID, StudyInstanceUID and SeriesInstanceUID of a source series. They never change
        for one Orthanc ID (Orthanc derives the ID from them): asked once, not at every check."""
        known = self._identifiers.get(series_id)
        if known is None:
            known = self._port.identifiers(series_id)
            self._identifiers.put(series_id, known)
        return known

    def result_series(self, sources: list[Source], request: AnonymizeRequest, pseudonyms: Pseudonymizer,
                      markers: NativeMarkers) -> Iterator[ResultSeries]:
        """Each source series whose result is predictable from the index alone. A series whose
        identifiers the request removes or empties has no predictable result: it is left out."""
        for source_series, members in by_series(sources).items():
            patient_id, study_uid, series_uid = self.identifiers(source_series)
            issuer = (self._port.header(members[0]["ID"]).text(ISSUER_OF_PATIENT_ID)
                      if request.settings.subjects is not None else "")
            predictor = _Predictor(patient_id, study_uid, series_uid, issuer, request, pseudonyms, markers,
                                   self._uid_tags)
            first = predictor.targets(members[0]["SOPInstanceUID"])
            if all(first[:3]):  # the same series for every member
                yield ResultSeries(orthanc_ids.resource_id(*first[:3]), members, predictor)

    def already_stored(self, sources: list[Source], request: AnonymizeRequest, pseudonyms: Pseudonymizer,
                       markers: NativeMarkers, mark: str) -> dict[str, Stored]:
        """The sources whose anonymized instance is already stored, with where it is.

        A re-run (or the rest of an interrupted one) skips what is there: that instance was
        checked when it was stored, and storing it again would change nothing, as Orthanc keeps
        the first copy. With "OverwriteInstances" "Always" everything is redone. Only in series
        that a finished call marked with these very options: elsewhere the instances found may
        come from a call under other options, or one that failed, so they are stored again and
        compared (with "IfChanged", Orthanc then replaces what differs).
        """
        if self._port.overwrite_mode() == ALWAYS:
            return {}
        found: dict[str, Stored] = {}
        for result in self.result_series(sources, request, pseudonyms, markers):
            if self._port.metadata("series", result.series_id, self._options_metadata) != mark:
                continue  # a first run, or results this call cannot vouch for without comparing
            existing = self._port.existing_instances(result.series_id)
            for source in result.members:
                targets = result.predictor.targets(source["SOPInstanceUID"])
                instance = orthanc_ids.resource_id(*targets)
                if targets[3] and instance in existing:
                    found[source["ID"]] = {"ID": instance, "ParentSeries": result.series_id,
                                           "ParentStudy": orthanc_ids.resource_id(*targets[:2]),
                                           "ParentPatient": orthanc_ids.resource_id(targets[0]),
                                           "Status": "AlreadyStored", "Source": source["ID"]}
        return found

    def compares_results(self) -> bool:
        """Whether results of the same identifiers can collide: not when Orthanc replaces every
        instance, nor when pseudonyms are new at each call."""
        return self._port.overwrite_mode() == NEVER and not self._keys.fresh_per_call

    def refuse_other_options(self, sources: list[Source], request: AnonymizeRequest, markers: NativeMarkers) -> None:
        """409 when a series this call would add to was anonymized under other options.

        Its results carry the same identifiers as this call's would (they follow from the key),
        so Orthanc would keep the first copy of each: the call would silently answer results
        made under the other options, or mix both in one series.
        """
        if not self.compares_results():
            return  # Orthanc replaces every instance, or the results are new ones anyway
        pseudonyms = self._keys.pseudonymizer(request.project)
        mark = pseudonyms.options_fingerprint(request.output_options)
        for result in self.result_series(sources, request, pseudonyms, markers):
            recorded = self._port.metadata("series", result.series_id, self._options_metadata)
            if recorded is not None and recorded != mark:
                raise other_options(result.series_id)

    def same_result(self, stored: Stored, output: bytes, seal: Sealing | NoSealing) -> None:
        """Orthanc answered "AlreadyStored": the instance there must be this call's very output
        (sealed again, if the call seals: see Sealing.recognizes), else another call (of this node
        or another) stored it under other options first."""
        if not self._port.transcodes_on_ingest() and \
                self._port.stored_md5(stored["ID"]) != hashlib.md5(output).hexdigest() and \
                not seal.recognizes(self._port.read_file(stored["ID"]), output):
            raise other_options(stored["ParentSeries"])

    def record_options(self, results: list[Stored], mark: str, overwrite: bool = True) -> None:
        """The options' mark on each result series, once the call's result is whole: a call that
        fails leaves no mark, so a re-run compares what it finds rather than trusting it; except
        on the results it kept as their sources went (each checked as stored): there, only where
        no mark is (`overwrite` False), never over another call's. A mark already there is not
        written again (a read costs a fraction of a write's transaction)."""
        for series in sorted({stored["ParentSeries"] for stored in results}):
            recorded = self._port.metadata("series", series, self._options_metadata)
            if recorded != mark and (overwrite or recorded is None):
                self._port.set_metadata("series", series, self._options_metadata, mark)


def other_options(series: str) -> Conflict:
    return Conflict(f"Series {series} was anonymized from this source under other options "
                    "(Keep, Replace, Remove, DicomVersion...), and this call's results would "
                    "carry the same identifiers: delete that series first to redo it, or use "
                    "another Project")
