"""Synchronous anonymizations in flight, written to Orthanc's database as jobs are.

A crash (or kill) in the middle of a synchronous call would leave a partial result that looks
finished. Each synchronous call is therefore recorded before it starts and struck off when it
ends, whatever its outcome; at the first call after a restart, the calls still recorded were
interrupted, and are run again as jobs, which completes their results (anonymization is
idempotent) and shows them in /jobs.
"""
from __future__ import annotations

import json
import threading
import uuid
from contextlib import contextmanager
from typing import Any, Callable, Iterator


#: The record's format: {"Version": 2, "Calls": [call...]}; version 1 was the bare list.
RECORD_VERSION = 2
CALL_FIELDS = ("level", "resource_id", "body")


class CallJournal:
    def __init__(self, load: Callable[[], str], save: Callable[[str], None],
                 log_error: Callable[[str], None]) -> None:
        self._load = load
        self._save = save
        self._log_error = log_error
        self._lock = threading.Lock()
        self._calls: dict[str, dict[str, Any]] = {}

    @contextmanager
    def recorded(self, level: str, resource_id: str, body: str, user: str | None = None) -> Iterator[None]:
        """Record the call while it runs (with its user, for the audit entry of its completion).
        If the record cannot be written, the call does not run: it could not be completed after a crash."""
        key = str(uuid.uuid4())
        with self._lock:
            self._calls[key] = {"level": level, "resource_id": resource_id, "body": body, "user": user}
            try:
                self._write()
            except BaseException:  # refused: it must not be written later with another call's record
                del self._calls[key]
                raise
        try:
            yield
        finally:
            with self._lock:
                del self._calls[key]
                try:
                    self._write()
                except Exception as error:  # the call is done; at worst it is redone after a restart
                    self._log_error(f"could not update the journal of synchronous calls ({type(error).__name__})")

    def interrupted(self) -> list[dict[str, Any]]:
        """The calls recorded by the previous run of Orthanc (once, at the first call after a start),
        struck off from the record; this run's own calls stay. A record that cannot be read is
        said at Orthanc's error level: the calls it held are not completed."""
        calls, unreadable = decode_calls(self._load())
        if unreadable:
            self._log_error(f"{unreadable} record(s) of synchronous calls interrupted by the previous stop "
                            f"cannot be read: their results may be partial (run those calls again)")
        with self._lock:
            self._write()
        return calls

    def complete_interrupted(self, resubmit: Callable[[dict[str, Any]], None]) -> int:
        """Each call the previous run left interrupted, run again by `resubmit`, on its own: one
        that cannot be (a body this version refuses, a queue that refuses the job) is said at the
        error level, and holds back none of the others. Answers how many were run again."""
        resubmitted = 0
        for call in self.interrupted():
            try:
                resubmit(call)
            except Exception as error:
                self._log_error(f"a synchronous call interrupted by the previous stop could not be run again "
                                f"({type(error).__name__}): its result may be partial (run that call again)")
                continue
            resubmitted += 1
        return resubmitted

    def _write(self) -> None:
        self._save(json.dumps({"Version": RECORD_VERSION, "Calls": list(self._calls.values())}))


def decode_calls(text: str) -> tuple[list[dict[str, Any]], int]:
    """The calls of a saved record (any version), and how many entries are not calls."""
    try:
        saved = json.loads(text) if text else {"Calls": []}
    except ValueError:
        return [], 1
    if isinstance(saved, dict) and isinstance(saved.get("Calls"), list):
        entries = saved["Calls"]
    elif isinstance(saved, list):  # version 1: the bare list
        entries = saved
    else:
        return [], 1
    calls = [c for c in entries if isinstance(c, dict) and all(isinstance(c.get(k), str) for k in CALL_FIELDS)]
    return calls, len(entries) - len(calls)
