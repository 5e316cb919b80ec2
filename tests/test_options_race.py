"""Two calls with different options on the same series not yet anonymized never mix.

Both are sent at the same moment, on one node or on two nodes sharing a PostgreSQL database:
the first wins, the other answers 409 and stores nothing, and every result instance was made
under the winner's options (with StudyDescription kept, or without it). Trials repeat because
the order is up to the scheduler; before the fix, both answered 200 and the series mixed both.
"""
from __future__ import annotations

from coherence import Call, run_together
from conftest import new_patient
from dicom_factory import to_bytes
from holdings import study_of_series
from anonymized import dataset
from test_two_nodes import nodes, postgres  # noqa: F401  (fixtures)

PER_SERIES, TRIALS = 40, 3
WITHOUT, WITH = {}, {"Keep": ["StudyDescription"]}


def _race(first, second) -> None:
    """One trial: a fresh series, anonymized by `first` without and by `second` with the description."""
    series = study_of_series(1, PER_SERIES, new_patient())[0]
    series_id = [first.upload(to_bytes(ds)) for ds in series][0]["ParentSeries"]
    before = int(first.json("/statistics")["CountInstances"])
    calls = [Call(name, lambda s=server, b=body: [s.post(f"/series/{series_id}/anonymize", json=b)])
             for name, server, body in (("without", first, WITHOUT), ("with", second, WITH))]
    run_together(calls)
    statuses = sorted(c.responses[0].status_code for c in calls)
    assert statuses == [200, 409], [(c.name, c.responses[0].status_code, c.responses[0].text[:300]) for c in calls]
    winner = next(c for c in calls if c.responses[0].status_code == 200)
    loser = next(c for c in calls if c.responses[0].status_code == 409)
    assert "options" in loser.responses[0].json()["Message"]
    result = winner.responses[0].json()["ID"]
    members = [i["ID"] for i in first.json(f"/series/{result}/instances")]
    assert len(members) == PER_SERIES
    assert int(first.json("/statistics")["CountInstances"]) == before + PER_SERIES, "the loser stored something"
    kept = {"StudyDescription" in dataset(first, i) for i in members}
    assert kept == {winner.name == "with"}, f"the series mixes both options ({winner.name} won)"


def test_two_calls_with_different_options_on_one_series_never_mix(server_factory):
    server = server_factory()
    for _ in range(TRIALS):
        _race(server, server)


def test_two_nodes_with_different_options_on_one_series_never_mix(nodes):  # noqa: F811
    node1, node2 = nodes
    for _ in range(TRIALS):
        _race(node1, node2)
