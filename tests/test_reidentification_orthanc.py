"""ReidentificationCertificates on a real Orthanc: a study anonymized series by series on two nodes
gives back every original identifier through `openssl cms -decrypt`; without certificates the
output is what it was; every route seals; no source identifier is kept in plain anywhere the
plugin or Orthanc writes (jobs, metadata, logs, the database file). Recipients are made by the
openssl command line, in folders that Orthanc reads (inside the chroot when there is one)."""
from __future__ import annotations

import io
import re
import shutil
import subprocess
import sys
import time
from pathlib import Path

import pydicom
import pytest

from conftest import TEST_KEY, new_patient, upload
from consistent_anon.reidentification.envelope import split_encrypted_attributes
from dicom_factory import TwoFrameStudy, to_bytes, two_frame_study
from orthanc_server import RUNTIME, OrthancServer
from postgres_server import PostgresServer
from recipients import make_recipients, originals_by_openssl
from test_lua import LUA_SCRIPT
from test_two_nodes import POSTGRESQL_INDEX, _plugin_available

SCRIPT = Path(__file__).parents[1] / "scripts" / "reidentify.py"
IDENTIFIERS = ("PatientID", "StudyInstanceUID", "SeriesInstanceUID", "SOPInstanceUID", "FrameOfReferenceUID")
ENCRYPTED_ATTRIBUTES_SEQUENCE = 0x04000500


@pytest.fixture(scope="module")
def keys():
    """alice and bob: recipients whose certificates Orthanc can read."""
    folder = RUNTIME.workdir()
    yield make_recipients(folder, ("alice", "bob"))
    shutil.rmtree(folder, ignore_errors=True)


def _section(server: OrthancServer, keys, *names: str, **more) -> dict:
    """The plugin's section with the shared key and these recipients' certificates."""
    certificates = [RUNTIME.inside(keys[name][1]) for name in names]
    section = dict(server.settings["ConsistentAnonymization"], Key=TEST_KEY, **more)
    if certificates:
        section["ReidentificationCertificates"] = certificates
    return {"ConsistentAnonymization": section}


def _single(server_factory, keys, *names: str, **settings) -> OrthancServer:
    server = server_factory(start=False, **settings)
    server.configure(_section(server, keys, *names))
    return server.start()


def _files(server: OrthancServer, level: str, resource_id: str) -> dict[str, bytes]:
    return {instance["ID"]: server.get(f"/instances/{instance['ID']}/file").content
            for instance in server.json(f"/{level}/{resource_id}/instances")}


def _assert_originals(files: dict[str, bytes], instances: list[pydicom.Dataset], keys, name: str,
                      folder: Path) -> None:
    """Every file opens with `name`'s key through openssl, and gives back its source's PatientID
    and UIDs; together they give back every source of `instances`."""
    sources = {ds.SOPInstanceUID: ds for ds in instances}
    found = set()
    for data in files.values():
        originals = originals_by_openssl(data, *keys[name], folder)
        source = sources[originals.SOPInstanceUID]
        anonymized = pydicom.dcmread(io.BytesIO(data), stop_before_pixels=True)
        for keyword in (k for k in IDENTIFIERS if k in source):  # an RTSTRUCT has no FrameOfReferenceUID
            assert originals[keyword].value == source[keyword].value != anonymized[keyword].value, keyword
        found.add(originals.SOPInstanceUID)
    assert found == set(sources)


# --- two nodes ---------------------------------------------------------------------------------

@pytest.fixture
def postgres():
    if not _plugin_available():
        pytest.skip(f"{POSTGRESQL_INDEX} is missing (Debian package orthanc-postgresql)")
    server = PostgresServer().start()
    yield server
    server.cleanup()


@pytest.fixture
def nodes(postgres, keys):
    """Two Orthancs on one PostgreSQL index and one storage folder, sealing for alice."""
    with postgres.nodes(lambda server, number: server.configure(_section(server, keys, "alice"))) as (_, servers):
        yield servers


def test_series_by_series_on_two_nodes_openssl_gives_back_every_original(nodes, keys, tmp_path):
    node1, node2 = nodes
    study = two_frame_study(per_series=3, patient=new_patient())
    uploaded = upload(node1, study)
    source_study = next(iter(uploaded.values()))["ParentStudy"]
    series = sorted({answer["ParentSeries"] for answer in uploaded.values()})
    answers = [(node1, node2)[index % 2].post(f"/series/{series_id}/anonymize", json={})
               for index, series_id in enumerate(series)]
    assert [answer.status_code for answer in answers] == [200] * len(series), [a.text for a in answers]
    studies = {node1.json(f"/series/{answer.json()['ID']}")["ParentStudy"] for answer in answers}
    assert len(studies) == 1
    anonymized_study = studies.pop()
    files = _files(node2, "studies", anonymized_study)
    assert len(files) == len(study.instances)
    _assert_originals(files, study.instances, keys, "alice", tmp_path)

    # The set verification reads no leak in the sequence.
    report = node1.post("/tools/verify-anonymization", json={"Source": source_study, "Anonymized": anonymized_study})
    assert report.status_code == 200 and report.json()["Clean"], report.text

    # Re-runs, each series on the other node: the same results, recognized although sealed anew;
    # also where a series' options mark is missing (Orthanc then answers AlreadyStored).
    node1.delete(f"/series/{answers[0].json()['ID']}/metadata/9732")
    again = [(node2, node1)[index % 2].post(f"/series/{series_id}/anonymize", json={})
             for index, series_id in enumerate(series)]
    assert [a.status_code for a in again] == [200] * len(series), [a.text for a in again]
    assert [a.json()["ID"] for a in again] == [a.json()["ID"] for a in answers]
    assert _files(node1, "studies", anonymized_study) == files  # nothing stored again

    # Another recipient is another set of options: 409, nothing changed.
    node2.stop()
    node2.configure(_section(node2, keys, "bob"))
    node2.start()
    refused = node2.post(f"/series/{series[1]}/anonymize", json={})
    assert refused.status_code == 409, refused.text
    node1.delete(f"/series/{answers[0].json()['ID']}/metadata/9732")
    refused = node2.post(f"/series/{series[0]}/anonymize", json={})  # unmarked: found by comparing
    assert refused.status_code == 409, refused.text
    assert _files(node1, "studies", anonymized_study) == files


# --- one node ----------------------------------------------------------------------------------

def test_a_private_key_given_as_certificate_stops_orthanc_at_start_without_showing_it(server_factory, keys):
    server = server_factory(start=False)
    section = _section(server, keys)["ConsistentAnonymization"]
    server.configure({"ConsistentAnonymization": {
        **section, "Projects": {"trial": {"ReidentificationCertificates": [RUNTIME.inside(keys["alice"][0])]}}}})
    with pytest.raises(RuntimeError, match=r"ConsistentAnonymization\.Projects\.trial\.ReidentificationCertificates: "
                                           r"Re-identification certificate .* is not readable"):
        server.start()
    key_lines = [line for line in keys["alice"][0].read_text().splitlines() if not line.startswith("-----")]
    assert not any(line in server.log() for line in key_lines)


def test_without_certificates_the_output_is_the_sealed_one_without_its_sequence(server_factory, keys):
    """The same study, key and options on two Orthancs, one sealing: the files are the same bytes
    but the Encrypted Attributes Sequence; without certificates there is none."""
    plain, sealed = _single(server_factory, keys), _single(server_factory, keys, "alice")
    study = two_frame_study(per_series=2, patient=new_patient())
    results = []
    for server in (plain, sealed):
        source = next(iter(upload(server, study).values()))["ParentStudy"]
        answer = server.post(f"/studies/{source}/anonymize", json={})
        assert answer.status_code == 200, answer.text
        results.append(_files(server, "studies", answer.json()["ID"]))
    assert results[0].keys() == results[1].keys()
    for instance, data in results[0].items():
        rest, contents = split_encrypted_attributes(results[1][instance])
        assert ENCRYPTED_ATTRIBUTES_SEQUENCE not in pydicom.dcmread(io.BytesIO(data))
        assert rest == data and len(contents) == 1


def _wait(server: OrthancServer, job: str) -> dict:
    deadline = time.monotonic() + 120
    while time.monotonic() < deadline:
        state = server.json(f"/jobs/{job}")
        if state["State"] in ("Success", "Failure"):
            assert state["State"] == "Success", state
            return state
        time.sleep(0.1)
    raise AssertionError(f"job {job} did not finish")


def test_every_route_seals_and_the_script_reads_a_stored_file(server_factory, keys, tmp_path):
    """Instance level (answered, not stored), bulk and a job; scripts/reidentify.py on a file
    downloaded from Orthanc."""
    server = _single(server_factory, keys, "alice")
    study = two_frame_study(per_series=2, patient=new_patient())
    uploaded = upload(server, study)
    instance = next(iter(uploaded.values()))["ID"]
    answered = server.post(f"/instances/{instance}/anonymize", json={})
    assert answered.status_code == 200
    _assert_originals({instance: answered.content}, _sources(study, uploaded, lambda answer: answer["ID"] == instance),
                      keys, "alice", tmp_path)

    series = sorted({answer["ParentSeries"] for answer in uploaded.values()})
    bulk = server.post("/tools/bulk-anonymize", json={"Resources": series[:2]})
    assert bulk.status_code == 200, bulk.text
    job = server.post(f"/series/{series[2]}/anonymize", json={"Asynchronous": True})
    _wait(server, job.json()["ID"])
    result_series = server.json(f"/jobs/{job.json()['ID']}")["Content"]["ID"]
    files = _files(server, "studies", server.json(f"/series/{result_series}")["ParentStudy"])
    _assert_originals(files, _sources(study, uploaded, lambda answer: answer["ParentSeries"] in series[:3]),
                      keys, "alice", tmp_path)

    path = tmp_path / "stored.dcm"
    path.write_bytes(next(iter(files.values())))
    printed = subprocess.run([sys.executable, str(SCRIPT), "--key", str(keys["alice"][0]), str(path)],
                             capture_output=True, text=True)
    assert printed.returncode == 0, printed.stderr
    assert f"PatientID (0010,0020) LO: {study.study.patient.patient_id}" in printed.stdout
    stranger = subprocess.run([sys.executable, str(SCRIPT), "--key", str(keys["bob"][0]), str(path)],
                              capture_output=True, text=True)
    assert stranger.returncode == 1 and study.study.patient.patient_id not in stranger.stdout + stranger.stderr


def _sources(study: TwoFrameStudy, uploaded: dict[str, dict], chosen) -> list[pydicom.Dataset]:
    """The source instances whose upload answer is `chosen`."""
    return [ds for ds in study.instances if chosen(uploaded[ds.SOPInstanceUID])]


def test_anonymize_on_arrival_seals(server_factory, keys, tmp_path):
    server = _single(server_factory, keys, "alice", lua=[LUA_SCRIPT])
    study = two_frame_study(per_series=1, patient=new_patient())
    for ds in study.instances:
        server.upload(to_bytes(ds))
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline and (_source_patients(server, study) or
                                           len(server.json("/instances")) != len(study.instances)):
        time.sleep(0.2)  # each source replaced by its result, one at a time
    files = {instance: server.get(f"/instances/{instance}/file").content for instance in server.json("/instances")}
    _assert_originals(files, study.instances, keys, "alice", tmp_path)


def _source_patients(server: OrthancServer, study: TwoFrameStudy) -> list[str]:
    return server.post("/tools/find", json={"Level": "Patient", "Query": {
        "PatientID": study.study.patient.patient_id}}).json()


# --- no plaintext map --------------------------------------------------------------------------

def _needles(study: TwoFrameStudy) -> set[str]:
    """The source's identifiers: PatientID, name, accession number, every UID it holds."""
    needles = {study.study.patient.patient_id, str(study.study.patient.name).split("^")[-1]}
    for ds in study.instances:
        needles.add(str(ds.get("AccessionNumber", "")))
        for element in ds.iterall():
            if element.VR == "UI" and element.value and not str(element.value).startswith("1.2.840.10008."):
                needles.add(str(element.value))
    return {needle for needle in needles if len(needle) >= 6}


def _found(data: bytes, needles: set[str]) -> list[str]:
    return sorted(needle for needle in needles
                  if any(needle.encode(codec) in data for codec in ("ascii", "utf-16-le", "utf-16-be")))


def _database(server: OrthancServer) -> bytes:
    """The SQLite index's files (with its journal, if any)."""
    files = sorted((server.workdir / "storage").glob("index*"))
    assert files, "no SQLite index found"
    return b"".join(path.read_bytes() for path in files)


def test_no_source_identifier_stays_in_jobs_metadata_logs_or_the_database(server_factory, keys):
    server = _single(server_factory, keys, "alice", config={"SaveJobs": True})
    study = two_frame_study(per_series=2, patient=new_patient())
    uploaded = upload(server, study)
    source_study = next(iter(uploaded.values()))["ParentStudy"]
    series = sorted({answer["ParentSeries"] for answer in uploaded.values()})
    needles = _needles(study)
    assert _found(_database(server), needles), "the scan does not find the sources in the database"
    assert server.post(f"/instances/{next(iter(uploaded.values()))['ID']}/anonymize", json={}).status_code == 200
    bulk = server.post("/tools/bulk-anonymize", json={"Resources": series[:1], "Asynchronous": True})
    _wait(server, bulk.json()["ID"])
    job = server.post(f"/studies/{source_study}/anonymize", json={"Asynchronous": True, "KeepSource": False})
    _wait(server, job.json()["ID"])
    assert _source_patients(server, study) == []  # the sources are gone

    jobs = server.get("/jobs", params={"expand": ""}).content
    metadata = b"".join(server.get(f"/{level}/{resource}/metadata", params={"expand": ""}).content
                        for level in ("patients", "studies", "series", "instances")
                        for resource in server.json(f"/{level}"))
    server.stop()  # the jobs saved, the database and the log closed
    log = server.log_path.read_bytes()
    database = _database(server)
    for where, data in (("jobs", jobs), ("metadata", metadata), ("log", log), ("database", database)):
        assert _found(data, needles) == [], f"a source identifier in the {where}"
    assert re.search(rb"^I\d{4} ", log, re.MULTILINE), "Orthanc's log holds no info-level line (--verbose)"
