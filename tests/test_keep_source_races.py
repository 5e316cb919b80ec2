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

import threading
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


# --- A source patient deleted under a call ----------------------------------------------------
DELETED_SERIES = 300
OPTIONS_MARK = "9732"  # the plugin's default OptionsMetadata


def _results_count(server, sources: int) -> int:
    return int(server.json("/statistics")["CountInstances"]) - sources


def _delete_mid_call(server, start, patient_ids: list[str], sources: int, at_least: int = 20):
    """Run `start()` (the call, in a thread), delete the source patient `patient_ids[0]` once a
    few results (`at_least`) are stored, then wait for the call's answer. The deletion is proven to fall in
    the middle of the call: results were stored before it (the call had begun), and the call
    does not succeed (it had not ended: its sources were all there until then)."""
    answered: list = []
    call = threading.Thread(target=lambda: answered.append(start()))
    call.start()
    deadline = time.monotonic() + 120
    while _results_count(server, sources) < at_least and time.monotonic() < deadline and call.is_alive():
        time.sleep(0.005)
    before = _results_count(server, sources)
    assert server.delete(f"/patients/{patient_ids[0]}").status_code == 200
    call.join(300)
    assert 0 < before < DELETED_SERIES, f"the deletion did not fall in the middle of the call ({before} results)"
    return answered[0]


def _kept(server, source_patients: set[str]) -> dict[str, list[str]]:
    """The anonymized series left, with their instances (everything not of a source patient)."""
    return {series["ID"]: series["Instances"] for series in server.json("/series?expand")
            if server.json(f"/studies/{series['ParentStudy']}")["ParentPatient"] not in source_patients}


def _last_entry(server) -> dict:
    return server.json("/tools/anonymization-log?since=0&limit=10000")["Entries"][-1]


def _upload_series(server, count: int, number: int = 1, members: list | None = None) -> tuple[str, str, list]:
    """A new patient's series of `count` instances (SeriesNumber `number`), or `members` again:
    its patient and series IDs, and its datasets."""
    if members is None:
        (members,) = study_of_series(1, count, new_patient(), number)
    stored = [server.upload(to_bytes(ds)) for ds in members]
    return stored[0]["ParentPatient"], stored[0]["ParentSeries"], members


def _assert_says_what_was_kept(message: str, kept: dict[str, list[str]]) -> None:
    count = sum(len(members) for members in kept.values())
    assert "nothing of this call was kept" not in message, message
    assert f"{count} anonymized instance" in message and all(series in message for series in kept), (message, kept)


def test_a_series_deleted_under_its_call_is_answered_with_what_was_kept(server_factory):
    """The source patient of a series call of 300 instances is deleted while the call runs: the
    results already stored stay (each is the only copy of its source), and the answer, the
    audit entry and the options mark say so: how many, and in which series. Once the source is
    stored again, a call completes the series, counting what stayed as done (the mark)."""
    server = server_factory()
    patient, series, members = _upload_series(server, DELETED_SERIES)
    answer = _delete_mid_call(server, lambda: server.post(f"/series/{series}/anonymize", json={}), [patient],
                              DELETED_SERIES)
    kept = _kept(server, {patient})
    assert answer.status_code == 404, answer.text
    assert kept, "nothing stayed: the test shows nothing"
    _assert_says_what_was_kept(answer.json()["Message"], kept)
    entry = _last_entry(server)
    assert entry["results"] == sorted(kept) and entry["instances"] == sum(map(len, kept.values())), entry
    assert entry["outcome"] == "Failed" and entry["reason"] == "PartlyKept", entry
    for kept_series in kept:
        assert server.get(f"/series/{kept_series}/metadata/{OPTIONS_MARK}").status_code == 200
    _upload_series(server, DELETED_SERIES, members=members)
    again = server.post(f"/series/{series}/anonymize", json={})
    assert again.status_code == 200 and [again.json()["ID"]] == list(kept), again.text
    assert len(server.json(f"/series/{again.json()['ID']}/instances")) == DELETED_SERIES


def test_a_bulk_call_keeps_only_the_results_whose_sources_were_deleted(server_factory):
    """A bulk call over a series that stays and one whose patient is deleted under it: the results
    of the series still there are removed (its sources are there to redo them), those of the
    deleted one are kept and named."""
    server = server_factory()
    staying_patient, staying, _ = _upload_series(server, 40, number=1)
    patient, series, _ = _upload_series(server, DELETED_SERIES - 40, number=2)
    body = {"Resources": [staying, series]}
    answer = _delete_mid_call(server, lambda: server.post("/tools/bulk-anonymize", json=body), [patient],
                              DELETED_SERIES, at_least=80)
    kept = _kept(server, {patient, staying_patient})
    assert answer.status_code == 404, answer.text
    assert len(server.json(f"/series/{staying}/instances")) == 40  # the staying source is intact...
    numbers = {server.json(f"/series/{s}")["MainDicomTags"]["SeriesNumber"] for s in kept}
    assert numbers == {"2"}, "results of sources still there were left"  # ...and its results removed
    _assert_says_what_was_kept(answer.json()["Message"], kept)


def test_a_job_whose_source_is_deleted_names_what_it_kept(server_factory):
    server = server_factory()
    patient, series, _ = _upload_series(server, DELETED_SERIES)

    def job():
        submitted = server.post(f"/series/{series}/anonymize", json={"Asynchronous": True}).json()
        while (state := server.json(f"/jobs/{submitted['ID']}"))["State"] not in ("Success", "Failure"):
            time.sleep(0.05)
        return state
    state = _delete_mid_call(server, job, [patient], DELETED_SERIES)
    kept = _kept(server, {patient})
    assert state["State"] == "Failure" and kept, state
    _assert_says_what_was_kept(state["ErrorDetails"], kept)
    entry = _last_entry(server)
    assert entry["results"] == sorted(kept) and entry["job"] == state["ID"], entry
