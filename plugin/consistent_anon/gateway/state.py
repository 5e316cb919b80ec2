"""What the gateway knows of each source instance it handles, and when it acts on it.

A source goes: arrived → anonymized, checked and stored → (with a destination) sent once its
anonymized study is stable → acknowledged (the store job succeeded) → deleted (KeepSource false)
or marked done. A step that fails leaves the source where it is, marked failed and retried with
backoff (from the anonymization: an already stored result is recognized, not stored twice) until
it succeeds or a call releases it.

Orthanc keeps the truth: each source's mark (`Mark`, a user metadata of the instance) and its
place in Orthanc's log of changes. The `Tracker` is what this process made of them; after a
restart, it is rebuilt by reading the changes again from the `low_water` point, which no
unfinished source is before.
"""
from __future__ import annotations

import json
import threading
import time
from dataclasses import asdict, dataclass, replace
from typing import Callable

#: A mark's states: the result stored (awaiting delivery), a step failed, done (the source
#: kept, KeepSource true), released by a call (the gateway leaves it as it is).
STORED, FAILED, DONE, RELEASED = "Stored", "Failed", "Done", "Released"
MARK_STATES = (STORED, FAILED, DONE, RELEASED)
#: The steps a failure is in.
ANONYMIZE, DELIVER = "Anonymize", "Deliver"
#: The tracker's states beside STORED and FAILED: a store job is sending the result; a failed
#: source is being tried again (no call may retry or release it meanwhile).
SENDING, RETRYING = "Sending", "Retrying"
#: Retries wait FIRST_BACKOFF seconds after the first failure, twice as long after each next one, at most MAX_BACKOFF.
FIRST_BACKOFF = 5.0
MAX_BACKOFF = 600.0
#: A reason is kept at most this long in a mark.
MAX_REASON = 300


@dataclass(frozen=True)
class Mark:
    """A source's state as Orthanc keeps it (JSON in the source's metadata)."""

    state: str
    result: str | None = None  # the anonymized instance (STORED)
    study: str | None = None  # its study, whose stability sends it
    step: str | None = None  # FAILED: the step that failed
    attempts: int = 0
    reason: str = ""

    def text(self) -> str:
        return json.dumps({key: value for key, value in asdict(self).items() if value not in (None, 0, "")},
                          sort_keys=True, separators=(",", ":"))

    @staticmethod
    def read(text: str | None) -> "Mark | None":
        """The mark a metadata holds; None where there is none, or not one of the gateway's."""
        if not text:
            return None
        try:
            value = json.loads(text)
            mark = Mark(**value) if isinstance(value, dict) else None
        except (ValueError, TypeError):
            return None
        return mark if mark is not None and mark.state in MARK_STATES else None


def backoff(attempts: int) -> float:
    """How long to wait after the `attempts`-th failure in a row."""
    return min(MAX_BACKOFF, FIRST_BACKOFF * 2 ** max(0, min(attempts - 1, 20)))


@dataclass
class Entry:
    """An unfinished source: where its arrival is in Orthanc's changes (`since`: the point to read
    them again from to find it), its state and what comes next."""

    since: int
    state: str
    result: str | None = None
    study: str | None = None
    deliver_at: float | None = None  # STORED: when to send it (its study is stable); None: not yet
    step: str | None = None
    attempts: int = 0
    reason: str = ""
    due: float = 0.0  # FAILED: when to try again

    def listed(self, source: str, wall: Callable[[float], str]) -> dict[str, object]:
        """The entry as the gateway's route shows it."""
        shown: dict[str, object] = {"ID": source, "State": self.state}
        if self.result:
            shown["Result"] = self.result
        if self.state == FAILED:
            shown.update({"Step": self.step, "Attempts": self.attempts, "Reason": self.reason,
                          "NextAttempt": wall(self.due)})
        return shown


class Tracker:
    """The unfinished sources of this process, shared by the worker and the routes (thread-safe)."""

    def __init__(self, clock: Callable[[], float] = time.monotonic) -> None:
        self._clock = clock
        self._entries: dict[str, Entry] = {}
        self._lock = threading.Lock()

    def found(self, source: str, since: int, mark: Mark) -> None:
        """A marked source met again in the changes (after a restart): STORED awaits delivery, FAILED
        is tried again at once; DONE and RELEASED are finished."""
        with self._lock:
            if mark.state == STORED:
                self._entries[source] = Entry(since, STORED, mark.result, mark.study)
            elif mark.state == FAILED:
                self._entries[source] = Entry(since, FAILED, mark.result, mark.study, step=mark.step,
                                              attempts=mark.attempts, reason=mark.reason, due=self._clock())

    def stored(self, source: str, since: int, result: str, study: str, send_now: bool) -> Mark:
        """The source's result is stored and checked: it waits for its study to be stable, or is sent
        at once (`send_now`: a retry, or a result stored before, which makes no study unstable
        again). Answers its mark."""
        with self._lock:
            self._entries[source] = Entry(since, STORED, result, study, self._clock() if send_now else None)
        return Mark(STORED, result, study)

    def failed(self, source: str, since: int | None, step: str, reason: str) -> Mark:
        """A step failed: tried again after the backoff. Answers the source's mark. `since`: the
        arrival's place in the changes (None: the one already known)."""
        with self._lock:
            before = self._entries.get(source)
            attempts = (before.attempts if before else 0) + 1
            since = since if since is not None or before is None else before.since
            entry = Entry(since or 0, FAILED, before.result if before else None, before.study if before else None,
                          step=step, attempts=attempts, reason=reason[:MAX_REASON],
                          due=self._clock() + backoff(attempts))
            self._entries[source] = entry
        return Mark(FAILED, entry.result, entry.study, step, attempts, entry.reason)

    def finished(self, source: str) -> None:
        with self._lock:
            self._entries.pop(source, None)

    def stable(self, study: str) -> None:
        """An anonymized study is stable: its stored results are sent now."""
        now = self._clock()
        with self._lock:
            for entry in self._entries.values():
                if entry.state == STORED and entry.study == study:
                    entry.deliver_at = now

    def caught_up(self, stable_age: float) -> None:
        """The changes are read up to now since the restart: a stored result whose study's stability
        was not seen (Orthanc stopped before it) is sent once it could have been stable."""
        later = self._clock() + stable_age
        with self._lock:
            for entry in self._entries.values():
                if entry.state == STORED and entry.deliver_at is None:
                    entry.deliver_at = later

    def deliveries(self) -> dict[str, dict[str, str]]:
        """The results to send now, by study: {study: {source: result}}; they are then SENDING."""
        now = self._clock()
        batches: dict[str, dict[str, str]] = {}
        with self._lock:
            for source, entry in self._entries.items():
                if entry.state == STORED and entry.deliver_at is not None and entry.deliver_at <= now:
                    entry.state = SENDING
                    batches.setdefault(entry.study or "", {})[source] = entry.result or ""
        return batches

    def retries(self) -> list[tuple[str, Entry]]:
        """The failed sources due for another attempt (copies of their entries, as they were);
        they are then RETRYING, until their attempt ends (stored, failed or finished)."""
        now = self._clock()
        with self._lock:
            due = [(source, entry) for source, entry in self._entries.items()
                   if entry.state == FAILED and entry.due <= now]
            copies = [(source, replace(entry)) for source, entry in due]
            for _, entry in due:
                entry.state = RETRYING
        return copies

    def retry(self, sources: list[str] | None) -> int:
        """The failed sources named (None: all) tried again at once; answers how many."""
        now = self._clock()
        with self._lock:
            chosen = [entry for source, entry in self._entries.items()
                      if entry.state == FAILED and (sources is None or source in sources)]
            for entry in chosen:
                entry.due = now
        return len(chosen)

    def release(self, sources: list[str] | None) -> list[str]:
        """The failed sources named (None: all) are no longer the gateway's: answers them (to be marked RELEASED)."""
        with self._lock:
            chosen = [source for source, entry in self._entries.items()
                      if entry.state == FAILED and (sources is None or source in sources)]
            for source in chosen:
                del self._entries[source]
        return chosen

    def low_water(self, cursor: int) -> int:
        """Where to read the changes from after a restart: no unfinished source arrived before."""
        with self._lock:
            return min([cursor, *(entry.since for entry in self._entries.values())])

    def next_event(self) -> float | None:
        """When the next delivery or retry is due (the clock's time), None if none is waiting."""
        with self._lock:
            times = [entry.due if entry.state == FAILED else entry.deliver_at for entry in self._entries.values()
                     if entry.state == FAILED or (entry.state == STORED and entry.deliver_at is not None)]
        return min(times) if times else None

    def listing(self, limit: int, wall: Callable[[float], str]) -> dict[str, object]:
        """The pending and failed sources (at most `limit` of each), and how many there are."""
        with self._lock:
            items = sorted(self._entries.items(), key=lambda item: (item[1].since, item[0]))
            pending = [(s, e) for s, e in items if e.state != FAILED]
            failed = [(s, e) for s, e in items if e.state == FAILED]
            return {"PendingCount": len(pending), "FailedCount": len(failed),
                    "Pending": [e.listed(s, wall) for s, e in pending[:limit]],
                    "Failed": [e.listed(s, wall) for s, e in failed[:limit]]}

    def state_of(self, source: str) -> Entry | None:
        with self._lock:
            entry = self._entries.get(source)
            return replace(entry) if entry else None
