""""AnonymizedFrom": each result's link to its source at every level, as native writes it.

Orthanc 1.12 lets a plugin write it; 1.10 refuses, and results there carry no such link: which
one this Orthanc is, is learnt at the first write and kept for the process (under a lock: calls
and their workers learn it at once).
"""
from __future__ import annotations

import threading

from ..errors import Refused
from .port import OrthancPort, Source, Stored

#: Levels at which native records "AnonymizedFrom", child first.
ORIGIN_LEVELS = ("instances", "series", "studies", "patients")
NAME = "AnonymizedFrom"


class OriginWriter:
    """Writes "AnonymizedFrom" where this Orthanc lets a plugin write it."""

    def __init__(self, port: OrthancPort) -> None:
        self._port = port
        self._lock = threading.Lock()
        self._writable: bool | None = None  # None: not tried yet on this Orthanc

    def for_call(self, linked: bool = True, labels_kept: bool = False) -> "CallOrigins":
        """A call's links; none written where `linked` is False (its sources are about to go), and
        none even looked up unless `labels_kept` (KeepLabels finds a result's source by them)."""
        return CallOrigins(self._port, self, linked, labels_kept)

    @property
    def refused(self) -> bool:
        with self._lock:
            return self._writable is False

    def write(self, level: str, target: str, origin: str) -> bool:
        """Write one link; False once this Orthanc refuses links (then none is tried again)."""
        try:
            self._port.set_metadata(level, target, NAME, origin)
        except Refused:
            with self._lock:
                if self._writable:  # it worked before: a real failure (a resource gone meanwhile...)
                    raise
                self._writable = False  # this Orthanc refuses: stop trying
            return False
        with self._lock:
            self._writable = True
        return True


class CallOrigins:
    """One call's links: the sources' parents, and the links made, looked up once per call."""

    def __init__(self, port: OrthancPort, writer: OriginWriter, linked: bool = True,
                 labels_kept: bool = False) -> None:
        self._port = port
        self._writer = writer
        self._linked = linked
        self._labels_kept = labels_kept
        self._lock = threading.Lock()  # the call's workers record at once
        self._parents: dict[str, str] = {}
        self._written: dict[str, str] = {}

    def record(self, stored: Stored, source: Source) -> None:
        """Link the result to its source at every level (the patient level where Orthanc has one);
        where the call is not `linked`, only remember the links (`source_of`), if labels are kept."""
        if (self._linked and self._writer.refused) or not (self._linked or self._labels_kept):
            return
        series = source["ParentSeries"]
        study = self._parent("series", series)
        origins = (source["ID"], series, study, self._parent("studies", study))
        targets = (stored["ID"], stored["ParentSeries"], stored["ParentStudy"], stored["ParentPatient"])
        levels = ORIGIN_LEVELS if self._port.patient_level() else ORIGIN_LEVELS[:3]
        for level, target, origin in zip(levels, targets, origins):
            with self._lock:
                if self._written.get(target) == origin:
                    continue
            if self._linked and not self._writer.write(level, target, origin):
                return
            with self._lock:
                self._written[target] = origin

    def source_of(self, target: str) -> str | None:
        """The source of a result resource this call stored (KeepLabels, labels.py); None if it stored none there."""
        with self._lock:
            return self._written.get(target)

    def _parent(self, level: str, resource_id: str) -> str:
        with self._lock:
            known = self._parents.get(resource_id)
        if known is None:  # two workers may both look it up: the same answer, written twice
            known = self._port.parent_of(level, resource_id)
            with self._lock:
                self._parents[resource_id] = known
        return known
