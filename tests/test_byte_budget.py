"""The engine's bound on the source bytes its workers hold at once (pure, threads only)."""
from __future__ import annotations

import threading
import time
from concurrent.futures import ThreadPoolExecutor

from consistent_anon.engine import ByteBudget


def test_workers_hold_at_most_the_budget_and_a_larger_instance_runs_alone():
    budget = ByteBudget(100)
    lock = threading.Lock()
    holding: list[int] = []
    seen: list[tuple[int, ...]] = []  # what was held together, each time one more began

    def work(size: int) -> None:
        with budget.hold(size):
            with lock:
                holding.append(size)
                seen.append(tuple(holding))
            time.sleep(0.005)
            with lock:
                holding.remove(size)

    sizes = [30] * 20 + [250] + [30] * 20 + [100]
    with ThreadPoolExecutor(8) as pool:
        list(pool.map(work, sizes))
    assert len(seen) == len(sizes)
    for together in seen:
        assert sum(together) <= 100 or together == (250,), together
    assert max(len(together) for together in seen) == 3  # small ones do run side by side
