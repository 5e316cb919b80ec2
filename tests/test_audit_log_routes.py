"""The audit log against a real Orthanc: one entry per anonymization request whatever its end,
written before the answer, jobs' entries at their end, the user Orthanc authenticated, the log
route, no source identifier anywhere in the log, entries kept across a kill, one sequence for
two nodes on one database and storage, and Orthanc's audit-log channel where it exists."""
from __future__ import annotations

import base64
import json
import threading
import time
import uuid
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path

import pydicom
import pytest
import requests

from conftest import TEST_KEY, new_patient, upload
from consistent_anon.traceability.audit import MAX_ANSWER_BYTES
from consistent_anon.traceability.audit_log import MAX_ENTRY_BYTES, SAMPLE_SIZE, AuditEntry, FileAuditLog
from consistent_anon.identity.config import AUDIT_LOG_NAME
from consistent_anon.orthanc_ids import resource_id
from dicom_factory import to_bytes, two_frame_study
from holdings import study_of_series
from orthanc_server import RUNTIME, OrthancServer
from test_two_nodes import nodes, postgres  # noqa: F401  (fixtures)

USER = ("alice", "a-long-test-password-7734")
#: Orthanc 1.12.9 brought the audit-log channel; of the tested runtimes, only 1.13.0's
#: orthanc-python (7.1) wraps its call.
AUDIT_CHANNEL_SINCE = (1, 12, 9)


def _wait_for_job(server: OrthancServer, job_id: str, timeout: float = 120) -> dict:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        job = server.json(f"/jobs/{job_id}")
        if job["State"] in ("Success", "Failure"):
            return job
        time.sleep(0.1)
    raise AssertionError(f"job {job_id} did not end")


def _entries(server: OrthancServer, since: int = 0) -> list[dict]:
    """Every entry after `since`, page by page through the route."""
    entries = []
    while True:
        answer = server.get(f"/tools/anonymization-log?since={since}&limit=7")
        assert answer.status_code == 200, answer.text
        page = answer.json()
        entries += page["Entries"]
        since = page["Last"]
        if not page["More"]:
            return entries


def _uids(dataset: pydicom.Dataset) -> set[str]:
    found = set()
    for element in dataset.iterall():
        if element.VR == "UI" and element.value:
            found.update(str(v) for v in (element.value if element.VM > 1 else [element.value]))
    return found


@dataclass
class Run:
    """What a full run did: the server, the answers, the identifiers of its sources."""
    server: OrthancServer
    expected: list[tuple] = field(default_factory=list)  # (route, outcome, reason) of each sync request
    jobs: dict[str, str] = field(default_factory=dict)  # job ID -> expected outcome
    identifiers: set[str] = field(default_factory=set)
    study: str = ""
    result: str = ""


@pytest.fixture(scope="module")
def run():
    """One Orthanc with authentication on and a project that requires a subject table, through a
    run of requests that succeed, are refused, fail, become jobs, are canceled."""
    server = OrthancServer()
    listed = new_patient()
    (server.workdir / "subjects.csv").write_text(f"PatientID,SubjectID,SubjectName\n{listed.patient_id},S-001,S^1\n")
    server.configure({"AuthenticationEnabled": True, "RegisteredUsers": {USER[0]: USER[1]}, "ConcurrentJobs": 1,
                      "ConsistentAnonymization": {
                          "Key": TEST_KEY, "Projects": {"trial": {
                              "Subjects": RUNTIME.inside(server.workdir / "subjects.csv"), "RequireSubject": True}}}})
    server.auth = USER
    server.start()
    try:
        yield _full_run(server)
    finally:
        server.cleanup()


def _full_run(server: OrthancServer) -> Run:
    first, second = two_frame_study(per_series=2, patient=new_patient()), two_frame_study(per_series=5,
                                                                                          patient=new_patient())
    result = Run(server)
    for study in (first, second):
        result.identifiers |= {study.study.patient.patient_id, study.study.patient.name, study.study.accession}
        for dataset in study.instances:
            result.identifiers |= _uids(dataset)
    leaky = first.series[1][0]  # a source UID in private binary data: the fail-closed check refuses it kept
    block = leaky.private_block(0x0011, "SYNTHETIC VENDOR", create=True)
    block.add_new(0x10, "OB", f"uid={leaky.SOPInstanceUID}".encode())
    stored = upload(server, first)
    some = next(iter(stored.values()))
    series = sorted({s["ParentSeries"] for s in stored.values()})
    result.study = some["ParentStudy"]
    other_study = next(iter(upload(server, second).values()))["ParentStudy"]
    patient_id = first.study.patient.patient_id

    def call(route: str, path: str, status: int, outcome: str, reason: str, **kwargs) -> requests.Response:
        answer = server.post(path, **kwargs)
        assert answer.status_code == status, (path, answer.text)
        result.expected.append((route, outcome, reason))
        return answer

    done = call("/studies/{id}/anonymize", f"/studies/{result.study}/anonymize", 200, "Success", "Completed", json={})
    result.result = done.json()["ID"]
    call("/series/{id}/anonymize", f"/series/{series[0]}/anonymize", 409, "Refused", "Conflict",
         json={"Keep": ["SeriesDescription"]})
    call("/instances/{id}/anonymize", f"/instances/{some['ID']}/anonymize", 200, "Success", "Completed", json={})
    call("/series/{id}/anonymize", f"/series/{series[1]}/anonymize", 400, "Refused", "BadRequest",
         data=b"{not json")
    call("/studies/{id}/anonymize", f"/studies/{resource_id('NO-SUCH', '1.2.3')}/anonymize", 404, "Refused",
         "UnknownResource", json={})
    call("/studies/{id}/anonymize", f"/studies/{patient_id}/anonymize", 404, "Refused", "UnknownResource", json={})
    call("/series/{id}/anonymize", f"/series/{series[2]}/anonymize", 500, "Failed", "OrthancError",
         json={"Remove": ["NoSuchTagAnywhere"]})
    call("/tools/bulk-anonymize", "/tools/bulk-anonymize", 200, "Success", "Completed",
         json={"Resources": [next(s for s in series if s != some["ParentSeries"]), some["ID"]]})
    call("/studies/{id}/anonymize", f"/studies/{result.study}/anonymize", 403, "Refused", "Forbidden",
         json={"Project": "trial"})
    call("/studies/{id}/anonymize", f"/studies/{result.study}/anonymize", 400, "Refused", "BadRequest",
         json={"Project": patient_id})
    call("/instances/{id}/anonymize", f"/instances/{stored[leaky.SOPInstanceUID]['ID']}/anonymize", 500, "Failed",
         "VerificationFailed", json={"KeepPrivateTags": True})
    # not anonymization requests: no entry (Orthanc refuses the first two before the plugin hears of them)
    assert requests.post(f"{server.url}/studies/{result.study}/anonymize", json={}, timeout=60).status_code == 401
    assert requests.post(f"{server.url}/studies/{result.study}/anonymize", json={}, auth=(USER[0], "wrong"),
                         timeout=60).status_code == 401
    assert server.get(f"/studies/{result.study}/anonymize").status_code == 405
    # two jobs, one at a time: the second, still pending, is canceled
    running = call("/studies/{id}/anonymize", f"/studies/{other_study}/anonymize", 200, "", "",
                   json={"Asynchronous": True}).json()["ID"]
    pending = call("/series/{id}/anonymize", f"/series/{series[0]}/anonymize", 200, "", "",
                   json={"Asynchronous": True}).json()["ID"]
    result.expected[-2:] = []  # their entries come at their end
    assert server.post(f"/jobs/{pending}/cancel", json={}).status_code == 200
    result.jobs = {running: "Success", pending: "Canceled"}
    for job in result.jobs:
        _wait_for_job(server, job)
    return result


def test_every_request_has_one_entry_with_its_outcome(run):
    entries = _entries(run.server)
    assert [entry["sequence"] for entry in entries] == list(range(1, len(entries) + 1))
    synchronous = [entry for entry in entries if entry["job"] is None]
    assert [(e["route"], e["outcome"], e["reason"]) for e in synchronous] == run.expected
    assert {entry["job"]: entry["outcome"] for entry in entries if entry["job"]} == run.jobs
    assert all(entry["user"] == USER[0] for entry in entries)
    done = synchronous[0]
    assert (done["level"], done["sources"], done["results"], done["instances"], done["project"]) == (
        "Study", [run.study], [run.result], 7, "default")
    assert done["failed_instances"] == 0
    result_series = run.server.json(f"/studies/{run.result}")["Series"][0]  # the mark recorded beside the results
    assert run.server.get(f"/series/{result_series}/metadata/9732").text == done["options_mark"]
    assert synchronous[2]["level"] == "Instance" and synchronous[2]["instances"] == 1
    assert synchronous[4]["sources"] == [resource_id("NO-SUCH", "1.2.3")]
    assert synchronous[5]["sources"] == []  # the ID asked for was a PatientID: left out
    bulk = synchronous[7]
    assert bulk["level"] == "Bulk" and len(bulk["sources"]) == 2 and len(bulk["results"]) == 2
    assert synchronous[8]["project"] == "trial" and synchronous[9]["project"] is None
    assert all(entry["options_mark"] is None for entry in synchronous if entry["outcome"] == "Refused")
    finished = next(entry for entry in entries if run.jobs.get(entry["job"]) == "Success")
    assert finished["instances"] == 16 and len(finished["results"]) == 1 and finished["level"] == "Study"


def test_no_source_identifier_nor_password_is_in_the_log(run):
    text = (run.server.workdir / "storage" / AUDIT_LOG_NAME).read_text()
    answer = run.server.get("/tools/anonymization-log?limit=10000").text
    assert len(text.splitlines()) == len(_entries(run.server))
    for where in (text, answer):
        leaked = sorted(identifier for identifier in run.identifiers if identifier in where)
        assert leaked == []
        assert USER[1] not in where and base64.b64encode(USER[1].encode()).decode() not in where


def test_the_log_route_refuses_bad_arguments_and_other_methods(run):
    for query in ("since=-1", "since=abc", "limit=0", "limit=10001", "limit=", "since=1.5"):
        answer = run.server.get(f"/tools/anonymization-log?{query}")
        assert answer.status_code == 400, query
        assert answer.json()["HttpStatus"] == 400
    assert run.server.post("/tools/anonymization-log", json={}).status_code == 405
    assert requests.get(f"{run.server.url}/tools/anonymization-log", timeout=60).status_code == 401
    last = _entries(run.server)[-1]["sequence"]
    assert run.server.json(f"/tools/anonymization-log?since={last}") == {"Entries": [], "Last": last, "More": False}


def test_orthancs_audit_log_channel_gets_each_entry_where_it_exists(run):
    log = run.server.log()
    if run.server.version() >= AUDIT_CHANNEL_SINCE:
        assert "also emitted to Orthanc's audit-log channel" in log
    else:
        assert "not emitted to (no such call here) Orthanc's audit-log channel" in log
    assert "could not be emitted" not in log


def test_an_answered_call_and_an_interrupted_job_are_logged_across_kills(server_factory):
    server = server_factory(start=False)
    log_file = server.workdir / "audit" / "anonymizations.jsonl"
    server.configure({"ConsistentAnonymization": {"Key": TEST_KEY,
                                                  "AuditLogFile": RUNTIME.inside(log_file)}})
    server.start()
    stored = upload(server, two_frame_study(per_series=4, patient=new_patient()))
    some = next(iter(stored.values()))
    assert server.post(f"/series/{some['ParentSeries']}/anonymize", json={}).status_code == 200
    server.kill()  # right after the answer
    server.start()
    [entry] = _entries(server)
    assert (entry["outcome"], entry["sources"], entry["user"]) == ("Success", [some["ParentSeries"]], None)
    job = server.post(f"/studies/{some['ParentStudy']}/anonymize", json={"Asynchronous": True}).json()["ID"]
    server.kill()  # the job had not ended: it runs again after the restart, and writes its entry then
    server.start()
    assert _wait_for_job(server, job)["State"] == "Success"
    entries = _entries(server)
    assert [(e["sequence"], e["job"], e["outcome"]) for e in entries[1:]] == [(2, job, "Success")]
    assert len(log_file.read_text().splitlines()) == 2


@pytest.mark.parametrize("nodes", ["configured key"], indirect=True)
def test_two_nodes_share_one_sequence_without_gaps_or_duplicates(nodes):  # noqa: F811
    first, second = nodes
    stored = upload(first, two_frame_study(per_series=3, patient=new_patient()))
    series = sorted({s["ParentSeries"] for s in stored.values()})
    requests_made = []
    for number in range(12):  # real anonymizations and refused ones, alternating nodes
        node = (first, second)[number % 2]
        target = series[number % 3] if number < 6 else resource_id(f"NONE-{uuid.uuid4()}", "1.2")
        requests_made.append((node, f"/series/{target}/anonymize"))
    with ThreadPoolExecutor(len(requests_made)) as pool:
        statuses = list(pool.map(lambda call: call[0].post(call[1], json={}).status_code, requests_made))
    assert sorted(statuses) == [200] * 6 + [404] * 6
    for node in nodes:
        entries = _entries(node)
        assert [entry["sequence"] for entry in entries] == list(range(1, len(requests_made) + 1))
        assert sorted(entry["outcome"] for entry in entries) == ["Refused"] * 6 + ["Success"] * 6
    assert _entries(first) == _entries(second)
    inside = first.settings["StorageDirectory"]
    storage = RUNTIME.root / inside.lstrip("/") if RUNTIME.root else Path(inside)
    assert len((storage / AUDIT_LOG_NAME).read_text().splitlines()) == len(requests_made)


def test_a_synchronous_call_killed_midway_has_one_entry_from_the_job_that_completes_it(server_factory):
    server = server_factory(start=False)
    server.configure({"AuthenticationEnabled": True, "RegisteredUsers": {USER[0]: USER[1]},
                      "ConsistentAnonymization": {"Key": TEST_KEY}})
    server.auth = USER
    server.start()
    total = 3 * 100
    study = [server.upload(to_bytes(ds)) for members in study_of_series(3, 100, new_patient())
             for ds in members][0]["ParentStudy"]
    answered: list = []

    def call() -> None:
        try:
            answered.append(server.post(f"/studies/{study}/anonymize", json={}))
        except requests.RequestException:
            answered.append(None)
    caller = threading.Thread(target=call)
    caller.start()
    deadline = time.monotonic() + 120
    while int(server.json("/statistics")["CountInstances"]) < total + total // 10 and time.monotonic() < deadline:
        time.sleep(0.01)
    server.kill()
    caller.join(60)
    assert answered == [None], "the call ended before the kill"
    server.start()
    [job] = server.json("/jobs")  # the first call to the plugin resubmits the interrupted one
    assert _wait_for_job(server, job, 300)["State"] == "Success"
    [entry] = _entries(server)
    assert (entry["job"], entry["user"], entry["outcome"], entry["sources"], entry["instances"]) == (
        job, USER[0], "Success", [study], total)


def test_the_configured_maximum_bounds_the_log_and_numbering_goes_on(server_factory):
    server = server_factory(start=False)
    server.configure({"ConsistentAnonymization": {"Key": TEST_KEY, "AuditLogMaxEntries": 100}})
    server.start()
    unknown = resource_id("NO-SUCH", "1.2.3")
    with requests.Session() as session:
        for _ in range(1001):  # the retention is checked every 1,000 entries
            assert session.post(f"{server.url}/studies/{unknown}/anonymize", json={}, timeout=60).status_code == 404
    entries = _entries(server)
    assert [entry["sequence"] for entry in entries] == list(range(911, 1002))  # the newest nine tenths, then one


PROJECTS = ("trial#7", "T7 (site A)", "\u00e9tude-\u03a9 \U0001F9EA")


def test_project_names_are_kept_in_entries_whatever_characters_they_hold(server_factory):
    server = server_factory(start=False)
    server.configure({"ConsistentAnonymization": {"Key": TEST_KEY, "Projects": {name: {} for name in PROJECTS}}})
    server.start()
    study = next(iter(upload(server, two_frame_study(per_series=1, patient=new_patient())).values()))["ParentStudy"]
    for name in PROJECTS:
        answer = server.post(f"/studies/{study}/anonymize", json={"Project": name})
        assert answer.status_code == 200, answer.text
    assert server.post(f"/studies/{study}/anonymize", json={"Project": "trial#8"}).status_code == 400
    assert [entry["project"] for entry in _entries(server)] == [*PROJECTS, None]  # an undeclared one: none


def _ids(count: int, seed: str) -> list[str]:
    """`count` IDs of an Orthanc ID's shape that name nothing stored."""
    base = resource_id(seed)
    return [f"{n:08x}{base[8:]}" for n in range(count)]


def test_a_bulk_call_naming_100000_ids_writes_a_bounded_entry_and_the_route_a_bounded_answer(server_factory):
    """Its entry counts what it named and names a sample (it was one 4.8 MB line); the log
    route answers at most MAX_ANSWER_BYTES, fewer entries than asked with More, and pages on."""
    server = server_factory(start=False)
    log_file = server.workdir / "audit" / "anonymizations.jsonl"
    widest = AuditEntry(route="/tools/bulk-anonymize", level="Bulk", outcome="Refused", reason="UnknownResource",
                        sources=_ids(SAMPLE_SIZE, "earlier"), results=_ids(SAMPLE_SIZE, "made"), source_count=10 ** 5)
    earlier = MAX_ANSWER_BYTES // len(widest.to_json()) + 20  # more than one answer holds
    prefilled = FileAuditLog(log_file)
    for _ in range(earlier):
        prefilled.append(widest)
    server.configure({"ConsistentAnonymization": {"Key": TEST_KEY, "AuditLogFile": RUNTIME.inside(log_file)}})
    server.start()
    answer = server.post("/tools/bulk-anonymize", json={"Resources": _ids(100_000, "unknown")})
    assert answer.status_code == 404, answer.text
    last_line = log_file.read_bytes().split(b"\n")[-2]
    assert len(last_line) + 1 <= MAX_ENTRY_BYTES
    entry = json.loads(last_line)
    assert (entry["sequence"], entry["level"], entry["outcome"], entry["source_count"]) == (
        earlier + 1, "Bulk", "Refused", 100_000)
    assert entry["sources"] == _ids(SAMPLE_SIZE, "unknown")
    full = server.get("/tools/anonymization-log?limit=10000")
    assert full.status_code == 200 and len(full.content) <= MAX_ANSWER_BYTES
    assert full.json()["More"] and len(full.json()["Entries"]) < earlier
    assert [e["sequence"] for e in _entries(server)] == list(range(1, earlier + 2))
