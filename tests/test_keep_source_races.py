"""KeepSource false never loses a source, whatever overlapping calls do at the same time.

Each trial sends, at the same moment, calls whose resources overlap on a study of 120 instances
in 4 series, all with KeepSource false: the study and each of its series; a bulk call over the
study, a series and an instance, a job on another series and synchronous series calls; or a job
on the study, canceled soon after it starts, and each series. On one node, and spread over two
nodes sharing a PostgreSQL database.
Afterwards every source instance is either still there or has its anonymized copy, no slot is
stored twice, no result of a failed call is left beside its source, every call answered 200 or
a clear 409, and every 200 answer's resource holds what it counts. Trials repeat (bounded in count and time) because a loss needs an unlucky
interleaving: before the fix, every trial of the first kind lost instances.
"""
from __future__ import annotations

import time

from coherence import Call, run_together
from conftest import new_patient
from dicom_factory import to_bytes
from holdings import holdings, study_of_series
from test_two_nodes import nodes, postgres  # noqa: F401  (fixtures)

SERIES, PER_SERIES = 4, 30
TRIALS, SECONDS = 6, 240
NODE_TRIALS = 3
CONSUME = {"KeepSource": False}
CANCELED_JOB = 37


def _sync(server, path: str, body: dict, name: str) -> Call:
    return Call(name, lambda: [server.post(path, json=body)])


def _job(server, path: str, body: dict, name: str, cancel_after: float | None = None) -> Call:
    """Submit a job (cancel it after `cancel_after` seconds), then wait for its end; the responses
    are the submission and the last poll."""
    def run() -> list:
        submitted = server.post(path, json=dict(body, Asynchronous=True))
        if submitted.status_code != 200:
            return [submitted]
        if cancel_after is not None:
            time.sleep(cancel_after)
            server.post(f"/jobs/{submitted.json()['ID']}/cancel", json={})
        deadline = time.monotonic() + 120
        while True:
            state = server.get(f"/jobs/{submitted.json()['ID']}")
            if state.json().get("State") in ("Success", "Failure") or time.monotonic() > deadline:
                return [submitted, state]
            time.sleep(0.1)
    return Call(name, run)


def _upload(server, patient, first: int) -> tuple[dict, list[dict]]:
    """Store a fresh study (series numbered from `first`); answer its Orthanc study ID, series IDs
    by rank (1..), and instance answers."""
    series = study_of_series(SERIES, PER_SERIES, patient, first)
    answers = [[server.upload(to_bytes(ds)) for ds in members] for members in series]
    ids = {"study": answers[0][0]["ParentStudy"]}
    ids.update({number + 1: members[0]["ParentSeries"] for number, members in enumerate(answers)})
    return ids, answers


# A scenario gives the calls of one trial; the n-th call goes to servers[n % len(servers)].
def _study_and_its_series(servers: list, ids: dict, answers: list) -> list[Call]:
    return [_sync(servers[0], f"/studies/{ids['study']}/anonymize", CONSUME, "study")] + \
           [_sync(servers[n % len(servers)], f"/series/{ids[n]}/anonymize", CONSUME, f"series {n}")
            for n in range(1, SERIES + 1)]


def _bulk_job_and_series(servers: list, ids: dict, answers: list) -> list[Call]:
    bulk = dict(CONSUME, Resources=[ids["study"], ids[1], answers[1][3]["ID"]])
    on = [servers[n % len(servers)] for n in range(5)]
    return [_sync(on[0], "/tools/bulk-anonymize", bulk, "bulk (study, series 1, an instance of 2)"),
            _job(on[1], f"/series/{ids[3]}/anonymize", CONSUME, "job on series 3"),
            _sync(on[2], f"/series/{ids[2]}/anonymize", CONSUME, "series 2"),
            _sync(on[3], f"/series/{ids[4]}/anonymize", CONSUME, "series 4"),
            _sync(on[4], f"/studies/{ids['study']}/anonymize", CONSUME, "study")]


def _canceled_job_and_series(servers: list, ids: dict, answers: list) -> list[Call]:
    return [_job(servers[0], f"/studies/{ids['study']}/anonymize", CONSUME, "canceled job on the study", 0.2)] + \
           [_sync(servers[n % len(servers)], f"/series/{ids[n]}/anonymize", CONSUME, f"series {n}")
            for n in range(1, SERIES + 1)]


SCENARIOS = (_study_and_its_series, _bulk_job_and_series, _canceled_job_and_series)


def _answer_problems(server, calls: list[Call]) -> list[str]:
    """Each call answered 200 (and its result holds what it counts), or a clear 409 or 404 saying
    that its sources were consumed or deleted under it."""
    problems = []
    for call in calls:
        if call.error is not None:
            problems.append(f"{call.name}: {call.error!r}")
            continue
        last = call.responses[-1]
        if "job" in call.name and last.status_code == 200 and last.json().get("State") == "Failure":
            if last.json()["ErrorCode"] == CANCELED_JOB:
                continue
            details = last.json().get("ErrorDetails", "")
            if not details or ("Unknown resource" in details and "deleted" not in details):
                problems.append(f"{call.name}: failed without a clear reason: {last.text[:300]}")
            continue
        if last.status_code in (404, 409):  # consumed by another call (409), or gone under it (404)
            if last.status_code == 404 and "deleted" not in last.json()["Message"]:  # e.g. a bare "Unknown resource"
                problems.append(f"{call.name}: a {last.status_code} that does not say why: {last.json()['Message']}")
            continue
        if last.status_code != 200:
            problems.append(f"{call.name}: {last.status_code} {last.text[:300]}")
            continue
        answer = last.json() if "job" not in call.name else last.json()["Content"]
        if "Path" in answer:
            held = server.get(answer["Path"] + "/instances")
            if held.status_code != 200 or len(held.json()) != answer["InstancesCount"]:
                problems.append(f"{call.name}: answered {answer['InstancesCount']} instances at {answer['Path']}, "
                                f"which holds {len(held.json()) if held.status_code == 200 else held.status_code}")
    return problems


def _outcome(call: Call):
    """A call's status, or a job's final state, for the report."""
    if not call.responses:
        return None
    if "job" in call.name and len(call.responses) == 2:
        return call.responses[-1].json().get("State")
    return call.responses[-1].status_code


def _run_trials(servers: list, trials: int, label: str, capsys) -> None:
    """Trials of the scenarios in turn, until `trials` or SECONDS; a loss fails at once."""
    began = time.monotonic()
    report = []
    problems = []  # answers: asserted after all trials, so that a loss in a later trial shows first
    for trial in range(trials):
        if time.monotonic() - began > SECONDS:
            break
        patient = new_patient()
        first = 1 + 10 * trial
        slots = {(s, i) for s in range(first, first + SERIES) for i in range(1, PER_SERIES + 1)}
        ids, answers = _upload(servers[0], patient, first)
        scenario = SCENARIOS[trial % len(SCENARIOS)]
        calls = scenario(servers, ids, answers)
        run_together(calls, timeout=300)
        held = holdings(servers[0], patient.patient_id)
        statuses = [_outcome(c) for c in calls]
        results = sum(held.results[slot] for slot in slots)
        report.append(f"{scenario.__name__}: {statuses}, results {results}, "
                      f"sources left {sum(held.sources.values())}")
        lost = held.lost(slots)
        assert not lost, f"trial {trial + 1} ({scenario.__name__}) lost {len(lost)} source instances " \
                         f"(neither source nor result): {lost[:10]}; {report[-1]}"
        doubles = [slot for slot in slots if held.results[slot] > 1]
        assert not doubles, f"trial {trial + 1}: stored twice: {doubles[:10]}"
        # Every call consumes what it anonymizes: a result beside its source is a failed call's leftover.
        leftovers = [slot for slot in slots if held.results[slot] and held.sources[slot]]
        assert not leftovers, f"trial {trial + 1}: results left by failed calls: {leftovers[:10]}; {report[-1]}"
        problems += [f"trial {trial + 1}: {problem}" for problem in _answer_problems(servers[0], calls)]
    with capsys.disabled():
        print(f"\n[keep-source races, {label}] {len(report)} trials in {time.monotonic() - began:.0f}s: "
              + "; ".join(report))
    assert len(report) >= min(trials, len(SCENARIOS))
    assert not problems, "\n".join(problems)


def test_overlapping_calls_with_keep_source_false_never_lose_a_source(server_factory, capsys):
    _run_trials([server_factory()], TRIALS, "one node", capsys)


def test_overlapping_calls_on_two_nodes_never_lose_a_source(nodes, capsys):  # noqa: F811
    _run_trials(nodes, NODE_TRIALS, "two nodes", capsys)
