"""The engine's bound on the source bytes its workers hold at once: the budget itself (threads
only), and the file sizes it is given, as a real Orthanc reports them."""
from __future__ import annotations

import threading
import time
from concurrent.futures import ThreadPoolExecutor

from conftest import upload
from orthanc_over_http import OrthancOverHttp
from consistent_anon.call_run import ByteBudget


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


def test_the_sources_the_engine_gets_carry_their_file_size_for_the_budget(orthanc, study):
    from consistent_anon.adapter import RestPort

    uploaded = upload(orthanc, study)
    source = next(iter(uploaded.values()))
    port = RestPort(OrthancOverHttp(orthanc), {})
    for level, resource in (("instances", source["ID"]), ("series", source["ParentSeries"])):
        found = port.instances_of(level, resource)
        assert found and all(item["FileSize"] == orthanc.json(f"/instances/{item['ID']}")["FileSize"] > 1000
                             for item in found)
