"""Which anonymized instances the calls of this Orthanc count on, and which sources they consumed.

Calls overlap (a study and its series, bulk calls, jobs): one call may find stored, and count as
its own, an instance another call added. The ledger keeps one call's rollback from removing an
instance another call counts on (or answered), and remembers what KeepSource false deleted, so a
later call on it hears why its resource is gone. Only this process's calls are known here; what
other nodes do is caught by re-checking Orthanc itself (see engine.py).
"""
from __future__ import annotations

import threading
from collections import Counter
from contextlib import contextmanager
from typing import Any, Iterable, Iterator

from ..lru import LruCache

#: How many answered results and consumed resources are remembered (about 100 bytes each).
REMEMBERED = 100_000


class Ledger:
    def __init__(self, remembered: int = REMEMBERED) -> None:
        self._lock = threading.RLock()
        self._claims: Counter[str] = Counter()
        self._orphans: dict[str, Any] = {}  # results a failed call left to whoever counted on them
        self._answered: LruCache[str, bool] = LruCache(remembered)  # the oldest are forgotten
        self._consumed: LruCache[str, bool] = LruCache(remembered)

    @contextmanager
    def guard(self) -> Iterator[None]:
        """Held while a result's removal or a source's deletion is decided and done, so that the
        two never interleave within this process."""
        with self._lock:
            yield

    def claim(self, result_ids: Iterable[str]) -> None:
        """A call counts on these results (each ID once per call)."""
        with self._lock:
            self._claims.update(result_ids)

    def release(self, result_ids: Iterable[str], answered: bool) -> list[Any]:
        """The call ended; if it succeeded, its results stay counted on for good. If it failed,
        answers the orphans (see `orphan`) no call counts on any more: the caller removes them."""
        freed = []
        with self._lock:
            for result_id in result_ids:
                self._claims[result_id] -= 1
                if self._claims[result_id] <= 0:
                    del self._claims[result_id]
                    if result_id in self._orphans and not answered:
                        freed.append(self._orphans.pop(result_id))
            if answered:
                for result_id in result_ids:
                    self._answered.put(result_id, True)
                for result_id in result_ids:
                    self._orphans.pop(result_id, None)
        return freed

    def orphan(self, result_id: str, record: Any) -> None:
        """A failed call added this result but left it because another call counts on it: if
        that call fails too, it removes it (`release` hands it over)."""
        with self._lock:
            self._orphans[result_id] = record

    def removable(self, result_id: str) -> bool:
        """True if only the calling call counts on this result (it claimed it) and no answer did."""
        with self._lock:
            return self._claims[result_id] <= 1 and self._answered.get(result_id) is None

    def consumed(self, resource_ids: Iterable[str]) -> None:
        with self._lock:
            for resource_id in resource_ids:
                self._consumed.put(resource_id, True)

    def was_consumed(self, resource_id: str) -> bool:
        with self._lock:
            return self._consumed.get(resource_id) is not None
