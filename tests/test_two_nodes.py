"""Two Orthancs on one PostgreSQL index and one storage folder, anonymizing one study together.

No key is configured: the first anonymizations, sent to both nodes at the same moment, race to
generate it in the shared database, and both nodes must end up with the same pseudonyms, hence
one anonymized patient and study, with its frames of reference, seen alike from either node.
"""
from __future__ import annotations

from pathlib import Path

import pytest

from coherence import Call, check_study, failed_calls, most_in_flight, pseudonym, run_together
from conftest import TEST_KEY, new_patient, upload
from dicom_factory import two_frame_study
from orthanc_server import RUNTIME, OrthancServer
from postgres_server import POSTGRESQL_INDEX, PostgresServer

NODES = 2


def _plugin_available() -> bool:
    root = RUNTIME.root or Path("/")
    return (root / POSTGRESQL_INDEX.lstrip("/")).exists()


pytestmark = pytest.mark.skipif(not _plugin_available(),
                                reason=f"{POSTGRESQL_INDEX} is missing (Debian package orthanc-postgresql)")


@pytest.fixture
def postgres():
    server = PostgresServer().start()
    yield server
    server.cleanup()


@pytest.fixture(params=["generated key", "configured key", "configured key, CheckRevisions"])
def nodes(request, postgres):
    """Two Orthancs with the plugin, on the same PostgreSQL database and the same storage folder:
    without a key (generated in the database at the first anonymization), or with the same Key;
    the last also with "CheckRevisions" (the metadata writes of both nodes race on one study)."""
    def configure(server: OrthancServer, number: int) -> None:
        if request.param.startswith("configured key"):
            section = dict(server.settings["ConsistentAnonymization"], Key=TEST_KEY)
            server.configure({"ConsistentAnonymization": section,
                              "CheckRevisions": request.param.endswith("CheckRevisions")})
    with postgres.nodes(configure, NODES) as (_, servers):
        yield servers


def _anonymize_series(server: OrthancServer, series_id: str) -> Call:
    return Call(f"{server.settings['Name']}: series {series_id[:8]}",
                lambda: [server.post(f"/series/{series_id}/anonymize", json={})])


def _key_rows(postgres: PostgresServer) -> str:
    """Where the database keeps the plugin's generated key (property 9731), for the log."""
    tables = postgres.psql("SELECT table_name FROM information_schema.tables "
                           "WHERE table_name IN ('globalproperties', 'serverproperties');").split()
    rows = []
    for table in tables:
        count = postgres.psql(f"SELECT count(*) FROM {table} WHERE property = 9731;").strip()
        rows.append(f"{table}: {count}")
    return ", ".join(rows)


def test_two_nodes_anonymizing_series_of_one_study_at_once_agree(nodes, postgres, capsys, request):
    node1, node2 = nodes
    assert node1.json("/system")["DatabaseBackendPlugin"], "node 1 does not use the PostgreSQL index"
    assert node2.json("/system")["DatabaseBackendPlugin"], "node 2 does not use the PostgreSQL index"
    study = two_frame_study(per_series=3, patient=new_patient())
    uploaded = upload(node1, study)
    assert all(answer["Status"] == "Success" for answer in uploaded.values())
    # Node 2 sees what node 1 stored: one index, one storage.
    any_instance = next(iter(uploaded.values()))["ID"]
    assert node2.get(f"/instances/{any_instance}/file").content == node1.get(f"/instances/{any_instance}/file").content

    series_of = {number: uploaded[members[0].SOPInstanceUID]["ParentSeries"]
                 for number, members in ((int(s[0].SeriesNumber), s) for s in study.series)}
    rt_series = uploaded[study.structure_set.SOPInstanceUID]["ParentSeries"]
    # Series 1 and 2 share a frame of reference and go to different nodes; so do series 3 and
    # the structure set, which references series 1. No key exists yet: all four race for it.
    calls = [_anonymize_series(node1, series_of[1]), _anonymize_series(node2, series_of[2]),
             _anonymize_series(node1, series_of[3]), _anonymize_series(node2, rt_series)]
    seconds = run_together(calls)
    failures = failed_calls(calls)
    in_flight = most_in_flight(calls)

    # Again, each series on the other node, all at once: nothing new, the same answers.
    again = [_anonymize_series(node2, series_of[1]), _anonymize_series(node1, series_of[2]),
             _anonymize_series(node2, series_of[3]), _anonymize_series(node1, rt_series)]
    seconds_again = run_together(again)
    failures += failed_calls(again)

    with capsys.disabled():
        print(f"\n[two nodes, {request.node.callspec.id}] nodes: {NODES}, "
              f"concurrent calls: {len(calls)} then {len(again)} "
              f"(at most {in_flight} in flight), instances: {len(study.instances)}, "
              f"errors: {len(failures)}, {seconds:.1f}s + {seconds_again:.1f}s, "
              f"key rows in PostgreSQL: {_key_rows(postgres)}")
    assert not failures, "\n".join(failures)
    assert in_flight >= 2, "the calls did not overlap: the test proved nothing"

    source_pid = study.study.patient.patient_id
    announced = {node.settings["Name"]: pseudonym(node, "patient", source_pid) for node in nodes}
    assert len(set(announced.values())) == 1, \
        f"the nodes give different pseudonyms, they do not use the same key ({_key_rows(postgres)})"

    first = [c.responses[0].json() for c in calls]
    second = [c.responses[0].json() for c in again]
    assert len({answer["PatientID"] for answer in first + second}) == 1
    assert [a["ID"] for a in first] == [a["ID"] for a in second]
    assert [a["InstancesCount"] for a in first] == [len(s) for s in study.series] + [1]

    seen = [check_study(node, study) for node in nodes]
    assert seen[0] == seen[1], "the two nodes do not see the same anonymized study"
    assert first[0]["PatientID"] == seen[0]["patient"]
    assert sorted(a["ID"] for a in first) == seen[0]["series"]
