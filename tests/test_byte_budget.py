"""The engine's bound on the source bytes its workers hold at once: the budget itself (threads
only), and the file sizes it is given, as a real Orthanc reports them."""
from __future__ import annotations

import threading

from conftest import upload
from orthanc_over_http import OrthancOverHttp
from consistent_anon.pipeline.call_run import ByteBudget


class Holder:
    """One worker holding `size` of the budget until told to let go; `entered` says it holds."""

    def __init__(self, budget: ByteBudget, size: int, holding: list[int], lock: threading.Lock) -> None:
        self.size = size
        self.entered = threading.Event()
        self.release = threading.Event()
        self.seen: tuple[int, ...] = ()  # what was held together when it began

        def work() -> None:
            with budget.hold(size):
                with lock:
                    holding.append(size)
                    self.seen = tuple(holding)
                self.entered.set()
                self.release.wait(10)
                with lock:
                    holding.remove(size)

        self.thread = threading.Thread(target=work, daemon=True)
        self.thread.start()

    def holds(self) -> bool:
        return self.entered.wait(10)

    def done(self) -> None:
        self.release.set()
        self.thread.join(10)


class SeenWaiting(threading.Condition):
    """The budget's condition, saying when a thread found no room and waits."""

    def __init__(self) -> None:
        super().__init__()
        self.waiting = threading.Event()

    def wait(self, timeout=None):
        self.waiting.set()
        return super().wait(timeout)


def test_workers_hold_at_most_the_budget_and_a_larger_instance_runs_alone():
    """Each step waits for an event, never for time: who holds, and who found no room."""
    budget = ByteBudget(100)
    condition = budget._condition = SeenWaiting()
    holding: list[int] = []
    lock = threading.Lock()

    small = [Holder(budget, 30, holding, lock) for _ in range(3)]
    assert all(holder.holds() for holder in small)  # three small ones side by side
    assert sorted(holding) == [30, 30, 30]
    fourth = Holder(budget, 30, holding, lock)
    assert condition.waiting.wait(10) and not fourth.entered.is_set()  # 120 > 100: it waits
    small[0].done()
    assert fourth.holds() and sum(fourth.seen) == 90

    condition.waiting.clear()
    large = Holder(budget, 250, holding, lock)
    assert condition.waiting.wait(10) and not large.entered.is_set()
    for holder in small[1:] + [fourth]:
        assert not large.entered.is_set()  # not while any other holds
        holder.done()
    assert large.holds() and large.seen == (250,)  # alone, though over the budget

    condition.waiting.clear()
    after = Holder(budget, 30, holding, lock)
    assert condition.waiting.wait(10) and not after.entered.is_set()  # nothing beside the large one
    large.done()
    assert after.holds() and after.seen == (30,)
    after.done()
    assert holding == []


def test_the_sources_the_engine_gets_carry_their_file_size_for_the_budget(orthanc, study):
    from consistent_anon.orthanc.rest_port import RestPort

    uploaded = upload(orthanc, study)
    source = next(iter(uploaded.values()))
    port = RestPort(OrthancOverHttp(orthanc), {})
    for level, resource in (("instances", source["ID"]), ("series", source["ParentSeries"])):
        found = port.instances_of(level, resource)
        assert found and all(item["FileSize"] == orthanc.json(f"/instances/{item['ID']}")["FileSize"] > 1000
                             for item in found)
