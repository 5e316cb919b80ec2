"""One call's work on its sources, in stages: start (what is already stored) → each instance
(InstanceSteps, by the workers) → conclude (whole and checked, or rolled back) → finish (options
mark, labels, sources consumed). All of the result, or none of it: but for results whose sources
were deleted while the call ran, which stay and are named in its error (errors.PartlyKept).
"""
from __future__ import annotations

import threading
from concurrent.futures import ThreadPoolExecutor
from contextlib import contextmanager
from dataclasses import dataclass
from typing import Callable, Iterator

from .native_answers import KEEP_LABELS_SINCE
from .deletions import Deletions
from ..errors import (NOTHING_KEPT, Conflict, JobCanceled, NotFound, PartlyKept, PluginError, ResultDisappeared,
                      StoredButUnfinished, VerificationFailed)
from .identities import NativeMarkers
from .instance_steps import InstanceSteps
from .labels import copy_labels
from .ledger import Ledger
from .options import AnonymizeRequest
from .origins import CallOrigins
from .port import OrthancPort, Source, Stored, by_series
from ..identity.pseudonyms import Pseudonymizer
from .result_index import ResultIndex

#: At most this many bytes of source files are in the workers' hands at once (each also holds
#: its result, and Orthanc a parsed copy): large instances (tomosynthesis, whole-slide images)
#: are then done one or a few at a time, small ones as many as there are workers.
IN_FLIGHT_BYTES = 256 * 1024 * 1024

Progress = Callable[[int, int], None]
Canceled = Callable[[], bool]
#: Refuses a whole result (e.g. a study whose results would be split into two studies).
WholeCheck = Callable[[list[Stored]], None]


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


@dataclass(frozen=True)
class CallPlan:
    """What one call works from, decided before any instance is touched."""

    sources: list[Source]
    targets: list[str]  # the IDs the call names: consumed with the sources (KeepSource false)
    request: AnonymizeRequest
    pseudonyms: Pseudonymizer
    markers: NativeMarkers
    mark: str  # the options' mark, on each result series once the call is whole


@dataclass(frozen=True)
class CallParts:
    """The engine's parts a call uses (shared by every call of the process)."""

    port: OrthancPort
    ledger: Ledger
    index: ResultIndex
    deletions: Deletions


class CallRun:
    """One call's results as they are stored, counted on (the ledger's claims) and added."""

    def __init__(self, plan: CallPlan, parts: CallParts, steps: InstanceSteps, origins: CallOrigins,
                 progress: Progress, canceled: Canceled) -> None:
        self._plan = plan
        self._parts = parts
        self._steps = steps
        self._origins = origins
        self._progress = progress
        self._canceled = canceled
        self._budget = ByteBudget(IN_FLIGHT_BYTES)
        self._lock = threading.Lock()  # the workers' results, claims and failures
        self._results: list[Stored] = []
        self._added: list[Stored] = []  # stored by this call ("Success"): what a rollback removes
        self._claimed: set[str] = set()
        self._failures: list[BaseException] = []

    def run(self, check: WholeCheck) -> list[Stored]:
        """Anonymize, check and store every source instance: all of them, or none; then, with
        KeepSource false, delete the sources. If any instance fails, `check` refuses the whole,
        or the job is canceled, the instances this call added, and that no other call counts
        on, are deleted again; but those whose sources were deleted meanwhile, which the
        error then names (`_failed`)."""
        try:
            self._store_each(self._start())
            self._conclude(check)
        except PluginError as error:  # rolled back; reported with what had to stay, if anything
            raise self._failed(error) from None
        except BaseException:  # JobCanceled, or a bug: rolled back, then reported as it is
            self._roll_back()
            raise
        try:  # the result is whole and checked: from here on it stays, whatever fails
            self._finish()
        except PluginError as error:  # say so: not "nothing was kept" (never a NotFound the caller rewrites)
            raise StoredButUnfinished(error) from None
        finally:
            self._parts.ledger.release(self._claimed, answered=True)
        return self._results

    # --- Stages ---------------------------------------------------------------------------
    def _start(self) -> list[Source]:
        """Count on the results already stored (a re-run); the sources left to do."""
        plan = self._plan
        found = self._parts.index.already_stored(plan.sources, plan.request, plan.pseudonyms, plan.markers,
                                                 plan.mark)
        self._results = list(found.values())
        self._claimed = {stored["ID"] for stored in self._results}
        self._parts.ledger.claim(self._claimed)
        return [source for source in plan.sources if source["ID"] not in found]

    def _store_each(self, to_do: list[Source]) -> None:
        """Each series' first instance (by SOPInstanceUID) first, one series after the other: a
        call racing this one under other options then loses on that very instance, before
        storing anything else there. Then the rest by `port.workers()` threads at once, as many
        as IN_FLIGHT_BYTES of source files allow, each on its own, so the order does not matter."""
        firsts = [min(members, key=lambda s: s["SOPInstanceUID"]) for _, members in sorted(by_series(to_do).items())]
        first_ids = {source["ID"] for source in firsts}
        rest = [source for source in to_do if source["ID"] not in first_ids]
        self._progress(len(self._results), len(self._plan.sources))
        for source in firsts:
            self._attempt(source)
        workers = max(1, min(self._parts.port.workers(), len(rest)))
        if workers == 1 or self._failures:
            for source in rest:
                self._attempt(source)
        else:
            with ThreadPoolExecutor(workers, thread_name_prefix="consistent-anon") as pool:
                list(pool.map(self._attempt, rest))

    def _conclude(self, check: WholeCheck) -> None:
        """The first failure, if any; else the whole result is checked, and still wanted."""
        if self._failures:
            raise self._failures[0]
        check(self._results)
        self._check_one_result_each()
        self._parts.index.refuse_other_options(self._plan.sources, self._plan.request, self._plan.markers)

    def _finish(self) -> None:
        """The options' mark, the labels (before the sources go: a result finds its source's
        labels through the call's links), then the sources themselves with KeepSource false."""
        plan, port = self._plan, self._parts.port
        self._parts.index.record_options(self._results, plan.mark)
        if plan.request.keep_labels and port.version() >= KEEP_LABELS_SINCE:
            copy_labels(port, self._results, port.patient_level(), self._origins.source_of)
        if not plan.request.keep_source:
            self._parts.deletions.consume(self._results, plan.sources, plan.targets, self._steps.store)

    def _roll_back(self) -> list[Stored]:
        """Remove what the call added; answers the results that stay as their sources are gone."""
        ledger, deletions = self._parts.ledger, self._parts.deletions
        kept = deletions.roll_back(self._added)
        return kept + deletions.roll_back(ledger.release(self._claimed, answered=False))

    def _failed(self, error: PluginError) -> PluginError:
        """The call's error once it is rolled back. Results whose sources were deleted meanwhile
        stay (each is the only copy of its source): the error then says how many and where, and
        their series get the options' mark where they have none, so that a call under the same
        options counts them as done (see ResultIndex.already_stored) rather than storing them again."""
        kept = self._roll_back()
        try:
            error = explained(self._parts.port, self._parts.ledger, self._plan.sources, error)
        except PluginError:
            pass  # whether sources went cannot be told: the call's own error is the one to report
        if not kept:
            return error
        try:
            self._parts.index.record_options(kept, self._plan.mark, overwrite=False)
            marked = True
        except PluginError:  # the series went too, or Orthanc failed: the error says it is unmarked
            marked = False
        return PartlyKept(error, sorted({stored["ParentSeries"] for stored in kept}), len(kept), marked)

    # --- One instance (on a worker) ---------------------------------------------------------
    def _attempt(self, source: Source) -> None:
        """One instance; its failure is kept for `_conclude`, and stops the instances after it."""
        if self._failures:
            return  # another instance failed: the call is lost anyway
        try:
            self._one(source)
        except PluginError as error:  # if the source went meanwhile, that is what to say
            self._fail(self._vanished_or(source, error))
        except BaseException as error:  # JobCanceled, or a bug: reported by `_conclude` all the same
            self._fail(error)

    def _one(self, source: Source) -> None:
        if self._canceled():
            raise JobCanceled()
        with self._budget.hold(int(source.get("FileSize") or 0)):
            stored = self._steps.store(source["ID"])
        with self._lock:
            if stored["ID"] not in self._claimed:
                self._parts.ledger.claim([stored["ID"]])
                self._claimed.add(stored["ID"])
            if stored["Status"] == "Success":
                self._added.append(stored)
            self._results.append(stored)
            self._progress(len(self._results), len(self._plan.sources))
        self._origins.record(stored, source)

    def _fail(self, error: BaseException) -> None:
        with self._lock:
            self._failures.append(error)

    def _vanished_or(self, source: Source, error: PluginError) -> PluginError:
        try:
            gone = not self._parts.port.exists("instances", source["ID"])
        except PluginError:
            gone = False  # cannot tell: the call's own error is the one to report
        return vanished(self._parts.ledger, [source["ID"]]) if gone else error

    def _check_one_result_each(self) -> None:
        """Every source instance has its own result, and each is there now: a concurrent call that
        failed may have rolled back an instance this call counted as already stored."""
        total = len(self._plan.sources)
        distinct = {stored["ID"] for stored in self._results}
        if len(distinct) != total:
            raise VerificationFailed(f"{total} source instances gave {len(distinct)} distinct anonymized "
                                     f"instances (several got the same identifiers): {NOTHING_KEPT}")
        for series, members in by_series(self._results).items():
            if not {stored["ID"] for stored in members} <= self._parts.port.existing_instances(series):
                raise ResultDisappeared()


def explained(port: OrthancPort, ledger: Ledger, sources: list[Source], error: PluginError) -> PluginError:
    """A source that disappears once listed was consumed (or deleted) by someone else meanwhile:
    a 409 or 404 saying so, rather than the NotFound of whichever built-in call noticed first
    (a NotFound while every source is still there is the call's own error, left as it is)."""
    if not isinstance(error, NotFound) or isinstance(error, PartlyKept):
        return error
    gone = [source["ID"] for source in sources if not port.exists("instances", source["ID"])]
    return vanished(ledger, gone) if gone else error


def vanished(ledger: Ledger, gone: list[str]) -> PluginError:
    """409 where another call of this Orthanc consumed the sources (KeepSource false); else the
    404 native gives for a source deleted under it (by someone, another node, or Orthanc's own
    recycling under storage limits), with a message that says so."""
    what = f"Source instances of this call were deleted while it ran ({{}}): {NOTHING_KEPT}; call again for what is left"
    if any(ledger.was_consumed(source) for source in gone):
        return Conflict(what.format("another call with KeepSource false consumed them"))
    return NotFound(what.format("by another call or node, by someone, or by Orthanc recycling the "
                                "oldest patient to stay within MaximumStorageSize/MaximumPatientCount"))
