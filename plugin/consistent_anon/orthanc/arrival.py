"""The anonymizing gateway (`OnArrival`) wired to Orthanc: a worker thread reads Orthanc's log of
changes, anonymizes each instance that arrived over DICOM, sends the results of each anonymized
study once it is stable with Orthanc's own store jobs, and deletes or marks the sources; the
routes under /consistent-anonymization/gateway list, retry and release what failed.

Orthanc's change callback only wakes the worker: it must not block Orthanc, and it is the
module-level `on_change` (orthanc-python 5.0 and 7.1 crash at their stop on any other kind of
callback, see rest_routes.py). The worker reads the changes themselves from Orthanc's database
(`/changes`), in order, from the point saved in a global property: after a restart or a crash, it
reads again from the oldest source not yet finished, and each source's mark (gateway/state.py)
says what is left to do. So nothing depends on a callback that a stop or a crash lost.
"""
from __future__ import annotations

import json
import threading
import time
from concurrent.futures import ThreadPoolExecutor
from datetime import datetime
from typing import Any, Callable

from ..errors import BadRequest, ConfigurationError, NotFound, PluginError
from ..gateway.settings import MODALITIES, PEERS, GatewaySettings
from ..gateway.state import ANONYMIZE, DELIVER, DONE, RELEASED, Mark, Tracker
from ..lru import LruCache
from ..pipeline.options import parse_json_object
from ..pipeline.port import Stored
from . import http_answers
from .rest_port import RestPort
from .rest_routes import register_route

#: The global property holding where the changes are read from after a restart.
CURSOR_PROPERTY = 9741
CHANGES_PAGE = 200
ROUTE = "/consistent-anonymization/gateway"
#: The route lists at most this many pending and failed sources each (it counts them all).
LISTED = 1000
#: How long the worker sleeps with nothing due (a change wakes it), and polls its store jobs.
IDLE_WAIT = 30.0
JOB_POLL = 0.5
#: At Orthanc's stop, how long the worker's current step is waited for.
STOP_WAIT = 30.0
#: A failing step after the finished result: the source could not be deleted or marked done.
FINISH = "Finish"
#: Results the gateway stored lately: their arrival in the changes needs no look-up.
RECENT_RESULTS = 4096
#: Jobs whose end Orthanc announced lately: a store job's outcome is known even once Orthanc's
#: history of jobs (JobsHistorySize) no longer holds it.
ENDED_JOBS = 1024

_HANDLERS: list[Callable[[Any, Any, str], None]] = []


def on_change(change_type: Any, level: Any, resource_id: str) -> None:
    """Orthanc's change callback (a plain module-level function: see the module's docstring)."""
    for handler in _HANDLERS:
        handler(change_type, level, resource_id)


def add_change_handler(orthanc: Any, handler: Callable[[Any, Any, str], None]) -> None:
    """Have `handler(change_type, level, resource_id)` called at each of Orthanc's changes.
    orthanc-python takes one change callback ("Can only register one Python on-changes
    callback"): with OnArrival the plugin holds it, and a site's script adds its own handler
    here, after `register(orthanc)`. A handler must return at once, as the callback must."""
    if not _HANDLERS:
        try:
            orthanc.RegisterOnChangeCallback(on_change)
        except RuntimeError:
            raise ConfigurationError(
                "OnArrival needs the Python plugin's change callback, which a script registered already "
                "(orthanc-python takes one): register that script's handler with "
                "consistent_anon.add_change_handler(orthanc, handler), after consistent_anon.register(orthanc)"
            ) from None
    _HANDLERS.append(handler)


def _wall(moment: float) -> str:
    """A time of the monotonic clock as Orthanc writes dates."""
    return datetime.fromtimestamp(time.time() + moment - time.monotonic()).strftime("%Y%m%dT%H%M%S")


class ArrivalGateway:
    """One Orthanc's gateway: the worker, its store jobs and its routes."""

    def __init__(self, orthanc: Any, settings: GatewaySettings, port: RestPort,
                 anonymize: Callable[[list[str], Callable[[], bool]], list[Stored]], stable_age: float) -> None:
        self._orthanc = orthanc
        self.settings = settings
        self._port = port
        self._anonymize = anonymize
        self._stable_age = stable_age
        self.tracker = Tracker()
        self._wake = threading.Event()
        self._stopping = False
        self._thread: threading.Thread | None = None
        self._jobs: dict[str, list[str]] = {}  # store job -> its sources
        self._recent: LruCache[str, bool] = LruCache(RECENT_RESULTS)
        self._ended: LruCache[str, str] = LruCache(ENDED_JOBS)
        self._cursor = 0
        self._saved: int | None = None

    def register(self, guarded: Callable[[Callable], Callable]) -> None:
        """The change callback first: if another script holds it, Orthanc stops before any route is registered."""
        add_change_handler(self._orthanc, self.changed)
        register_route(self._orthanc, ROUTE, ("GET",), guarded(self.listing))
        register_route(self._orthanc, ROUTE + "/retry", ("POST",), guarded(self.retry))
        register_route(self._orthanc, ROUTE + "/release", ("POST",), guarded(self.release))

    def changed(self, change_type: Any, level: Any, resource_id: str) -> None:
        """Orthanc's news: never blocks (a stop excepted, which waits for the worker's step)."""
        kinds = self._orthanc.ChangeType
        if change_type == kinds.ORTHANC_STOPPED:
            self.stop()
        elif change_type in (kinds.JOB_SUCCESS, kinds.JOB_FAILURE):
            self._ended.put(resource_id, "Success" if change_type == kinds.JOB_SUCCESS else "Failure")
        elif change_type == kinds.ORTHANC_STARTED or self._thread is None:
            self._start()
        self._wake.set()

    def _start(self) -> None:
        if self._thread is None and not self._stopping:
            self._thread = threading.Thread(target=self._work, name="consistent-anon-gateway", daemon=True)
            self._thread.start()

    def stop(self) -> None:
        self._stopping = True
        self._wake.set()
        if self._thread is not None and self._thread is not threading.current_thread():
            self._thread.join(STOP_WAIT)

    # --- The worker -----------------------------------------------------------------------
    def _work(self) -> None:
        """Until Orthanc stops: read the changes, try again what failed, send what is stable, follow
        the store jobs, save the point to read from after a restart; then sleep until a change or
        the next retry or delivery is due."""
        caught_up = False
        while not self._stopping:
            self._wake.clear()
            try:
                if self._saved is None:
                    self._cursor = self._saved = self._start_point()
                done = self._read_changes()
                if done and not caught_up:
                    self.tracker.caught_up(self._stable_age)
                    caught_up = True
                self._retry_failed()
                self._deliver()
                self._check_jobs()
                self._save_cursor()
            except Exception as error:  # Orthanc stopping, a database hiccup, or a bug: tried again later
                self._orthanc.LogError(f"Consistent anonymization gateway: {type(error).__name__} "
                                       f"({getattr(error, 'message', 'unexpected')}); trying again")
                done = True
            if done:
                self._wake.wait(self._pause())

    def _start_point(self) -> int:
        """Where the saved point says; at the gateway's first start, the newest change: what was
        stored before the gateway was set up is not its to anonymize."""
        saved = self._orthanc.GetGlobalProperty(CURSOR_PROPERTY, "")
        if saved.isdigit():
            return int(saved)
        last = int(json.loads(self._port.call(self._orthanc.RestApiGet, "/changes?last"))["Last"])
        self._orthanc.SetGlobalProperty(CURSOR_PROPERTY, str(last))
        return last

    def _pause(self) -> float:
        if self._jobs:
            return JOB_POLL
        due = self.tracker.next_event()
        return IDLE_WAIT if due is None else min(IDLE_WAIT, max(0.0, due - time.monotonic()))

    def _read_changes(self) -> bool:
        """One page of changes; answers whether it was the last."""
        page = json.loads(self._port.call(self._orthanc.RestApiGet,
                                          f"/changes?since={self._cursor}&limit={CHANGES_PAGE}"))
        changes = page["Changes"]
        arrived = [(change["ID"], change["Seq"] - 1) for change in changes
                   if change["ChangeType"] == "NewInstance" and self._recent.get(change["ID"]) is None]
        fresh: list[tuple[str, int]] = []
        self._each(lambda source, since: self._arrived(source, since, fresh), arrived)
        self._process_together(sorted(fresh, key=lambda item: item[1]))
        if self._stopping:
            return True  # the page is read again after the restart
        for change in changes:
            if change["ChangeType"] == "StableStudy":
                self.tracker.stable(change["ID"])
        self._cursor = changes[-1]["Seq"] if changes else self._cursor
        return bool(page["Done"])

    def _each(self, step: Callable[[str, int], None], sources: list[tuple[str, int]]) -> None:
        """The step on each source, by as many threads as the engine uses where orthanc-python lets
        them run at once (port.workers()), else one after the other; none once Orthanc is stopping."""
        def run(item: tuple[str, int]) -> None:
            if not self._stopping:
                step(*item)
        workers = min(self._port.workers(), len(sources))
        if workers <= 1:
            for item in sources:
                run(item)
        else:
            with ThreadPoolExecutor(workers, thread_name_prefix="consistent-anon-gateway") as pool:
                list(pool.map(run, sources))

    def _arrived(self, source: str, since: int, fresh: list[tuple[str, int]]) -> None:
        """A new instance: the gateway's if it came over DICOM (from a listed AET); added to
        `fresh` to be anonymized, unless its mark says how far it went before a restart."""
        if self.tracker.state_of(source) is not None:
            return  # met again when a page is read again: what this process knows is newer than a mark
        try:
            metadata = json.loads(self._port.call(self._orthanc.RestApiGet, f"/instances/{source}/metadata?expand"))
        except NotFound:
            return  # deleted meanwhile
        if not self.settings.accepts(metadata.get("Origin"), metadata.get("RemoteAET")):
            return
        mark = Mark.read(metadata.get(str(self.settings.metadata)))
        if mark is None:
            fresh.append((source, since))  # list.append is atomic: the threads of _each share it
        else:
            self.tracker.found(source, since, mark)

    def _process_together(self, sources: list[tuple[str, int]]) -> None:
        """The sources read together, anonymized in one call of the engine (one audit entry, the
        per-call work done once); if that call fails (all or nothing: what it stored is removed,
        or left where removing failed, and then recognized), each source on its own, so that one
        that cannot be anonymized holds back no other."""
        if not sources or self._stopping:
            return
        try:
            results = self._anonymize([source for source, _ in sources], lambda: self._stopping)
        except Exception as error:
            if len(sources) > 1 and not self._stopping:
                self._orthanc.LogWarning(f"Consistent anonymization gateway: a call over {len(sources)} arrivals "
                                         f"failed ({type(error).__name__}); each is now anonymized on its own")
            self._each(lambda source, since: self._process(source, since, send_now=False), sources)
            return
        by_source = {stored["Source"]: stored for stored in results}
        for source, since in sources:
            if source in by_source:
                self._processed(source, since, by_source[source], send_now=False)
            else:  # never expected (every result names its source): then on its own, as after a failure
                self._process(source, since, send_now=False)

    def _process(self, source: str, since: int, send_now: bool) -> None:
        """Anonymize, check and store (engine); then finish at once, or wait for delivery."""
        try:
            [stored] = self._anonymize([source], lambda: self._stopping)
        except Exception as error:
            self._failed(source, since, ANONYMIZE, error)
            return
        self._processed(source, since, stored, send_now)

    def _processed(self, source: str, since: int, stored: Stored, send_now: bool) -> None:
        """A source whose result is stored and checked: finished at once, or waiting for delivery."""
        self._recent.put(stored["ID"], True)
        if self.settings.destination is None:
            self._finish(source, since)
            return
        mark = self.tracker.stored(source, since, stored["ID"], stored["ParentStudy"],
                                   send_now or stored.get("Status") == "AlreadyStored")
        self._mark(source, mark)

    def _finish(self, source: str, since: int | None = None) -> None:
        """The result is stored, checked and (with a destination) acknowledged: the source goes, or
        is marked done (KeepSource)."""
        try:
            if self.settings.keep_source:
                self._mark(source, Mark(DONE))
            else:
                self._port.delete("instances", source)
        except NotFound:
            pass  # already gone
        except Exception as error:
            self._failed(source, since, FINISH, error)
            return
        self.tracker.finished(source)

    def _failed(self, source: str, since: int | None, step: str, error: Exception) -> None:
        """The source stays, marked failed, and is tried again after the backoff; unless it is gone."""
        try:
            gone = not self._port.exists("instances", source)
        except PluginError:  # cannot tell (Orthanc stopping): kept as failed, the safe side
            gone = False
        if gone:
            self.tracker.finished(source)
            return
        reason = error.message if isinstance(error, PluginError) else f"Internal error ({type(error).__name__})"
        mark = self.tracker.failed(source, since, step, reason)
        self._orthanc.LogWarning(f"Consistent anonymization gateway: an instance failed ({step}, attempt "
                                 f"{mark.attempts}, {type(error).__name__}); listed at {ROUTE}")
        try:
            self._mark(source, mark)
        except PluginError:  # listed here all the same; after a restart, it is simply tried again
            pass

    def _mark(self, source: str, mark: Mark) -> None:
        self._port.set_metadata("instances", source, str(self.settings.metadata), mark.text())

    def _retry_failed(self) -> None:
        """Each failed source due: from the step that failed where its result is still stored (a
        delivery, or the deletion after it), else from the anonymization (which recognizes a result
        already stored rather than storing it twice)."""
        for source, entry in self.tracker.retries():
            if self._stopping:
                return
            try:
                if entry.step == ANONYMIZE or not entry.result or not self._port.exists("instances", entry.result):
                    self._process(source, entry.since, send_now=True)
                elif entry.step == DELIVER:
                    self.tracker.stored(source, entry.since, entry.result, entry.study or "", send_now=True)
                else:
                    self._finish(source, entry.since)
            except Exception as error:  # never left Retrying: failed again, and tried later
                self._failed(source, None, entry.step or ANONYMIZE, error)

    # --- Delivery ----------------------------------------------------------------------------
    def _deliver(self) -> None:
        """One store job per stable anonymized study, of the results not sent yet."""
        for batch in self.tracker.deliveries().values():
            body = json.dumps({"Resources": sorted(set(batch.values())), "Asynchronous": True})
            try:
                uri = f"/{self._destination_kind()}/{self.settings.destination}/store"
                job = json.loads(self._port.call(self._orthanc.RestApiPost, uri, body))["ID"]
            except PluginError as error:
                for source in batch:
                    self._failed(source, None, DELIVER, error)
                continue
            self._jobs[job] = list(batch)

    def _destination_kind(self) -> str:
        """"modalities" or "peers": from the configuration, else from Orthanc's lists (kept in its database)."""
        if self.settings.destination_kind is not None:
            return self.settings.destination_kind
        for kind in (MODALITIES, PEERS):
            if self.settings.destination in json.loads(self._port.call(self._orthanc.RestApiGet, f"/{kind}")):
                return kind
        raise NotFound("OnArrival.Destination is neither a DICOM modality nor an Orthanc peer of this Orthanc")

    def _check_jobs(self) -> None:
        """The store jobs that ended: their sources finished (Success), or failed."""
        for job_id, sources in list(self._jobs.items()):
            try:
                job = json.loads(self._port.call(self._orthanc.RestApiGet, f"/jobs/{job_id}"))
            except NotFound:  # gone from Orthanc's history: its end was announced, or it is lost (sent again)
                job = {"State": self._ended.get(job_id) or "Failure",
                       "ErrorDescription": "the store job is no longer known"}
            if job["State"] not in ("Success", "Failure"):
                continue
            del self._jobs[job_id]
            for source in sources:
                if job["State"] == "Success":
                    self._finish(source)
                else:
                    self._failed(source, None, DELIVER, PluginError(
                        f"The store job to the destination failed: {job.get('ErrorDescription', '')}"))

    def _save_cursor(self) -> None:
        point = self.tracker.low_water(self._cursor)
        if point != self._saved:
            self._orthanc.SetGlobalProperty(CURSOR_PROPERTY, str(point))
            self._saved = point

    # --- Routes --------------------------------------------------------------------------------
    def listing(self, output: Any, uri: str, **request: Any) -> None:
        """GET: the settings' destination and the pending and failed sources."""
        answer = {"Destination": self.settings.destination, "KeepSource": self.settings.keep_source,
                  "Project": self.settings.project, **self.tracker.listing(LISTED, _wall)}
        output.AnswerBuffer(http_answers.json_text(answer), "application/json")

    def retry(self, output: Any, uri: str, **request: Any) -> None:
        """POST {"Resources": [source IDs]} (or nothing: every failed source): tried again now."""
        count = self.tracker.retry(_named(request.get("body")))
        self._wake.set()
        output.AnswerBuffer(http_answers.json_text({"Retried": count}), "application/json")

    def release(self, output: Any, uri: str, **request: Any) -> None:
        """POST {"Resources": [...]} (or nothing: every failed source): no longer the gateway's;
        each stays stored as it is, marked released."""
        released = self.tracker.release(_named(request.get("body")))  # never one the worker is trying again
        for source in released:
            try:
                self._mark(source, Mark(RELEASED))
            except NotFound:
                pass
        output.AnswerBuffer(http_answers.json_text({"Released": len(released)}), "application/json")


def _named(body: bytes | str | None) -> list[str] | None:
    """The sources a retry or release names; None (all of them) for an empty body."""
    if not body:
        return None
    document = parse_json_object(body)
    resources = document.get("Resources")
    if set(document) - {"Resources"} or not isinstance(resources, list) \
            or not all(isinstance(item, str) for item in resources):
        raise BadRequest('The body must be empty (every failed source) or {"Resources": [source instance IDs]}')
    return resources
