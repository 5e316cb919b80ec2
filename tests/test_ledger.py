"""The ledger that keeps one call's rollback from removing what another call counts on (pure)."""
from __future__ import annotations

from consistent_anon.pipeline.ledger import Ledger


def test_a_result_another_call_counts_on_is_not_removable_until_it_is_released():
    ledger = Ledger()
    ledger.claim(["r"])  # the call that added it
    ledger.claim(["r"])  # another call found it stored
    assert not ledger.removable("r")
    ledger.release(["r"], answered=False)  # the other call ended
    assert ledger.removable("r")


def test_the_last_failing_claimant_inherits_an_orphan():
    ledger = Ledger()
    ledger.claim(["r"])  # adder
    ledger.claim(["r"])  # other
    ledger.orphan("r", "record")  # the adder failed and left it
    assert ledger.release(["r"], answered=False) == []  # the adder's own release: the other still counts
    assert ledger.release(["r"], answered=False) == ["record"]  # the other failed too: it removes it


def test_an_answered_result_is_never_removable_nor_handed_over():
    ledger = Ledger()
    ledger.claim(["r"])
    ledger.claim(["r"])
    ledger.orphan("r", "record")
    assert ledger.release(["r"], answered=True) == []
    assert not ledger.removable("r")
    assert ledger.release(["r"], answered=False) == []


def test_consumed_resources_are_remembered_within_a_bound():
    ledger = Ledger(remembered=2)
    ledger.consumed(["a", "b", "c"])
    assert not ledger.was_consumed("a") and ledger.was_consumed("b") and ledger.was_consumed("c")
