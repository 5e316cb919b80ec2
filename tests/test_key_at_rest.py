"""The key at rest (a 0600 file, never in Orthanc's index) and key changes (refused until accepted)."""
from __future__ import annotations

import sqlite3
import stat
from contextlib import closing

from anonymized import parse
from conftest import TEST_KEY, new_patient
from dicom_factory import to_bytes, two_frame_study

from consistent_anon.identity.keys import CHECKS_PROPERTY, KEY_FILE_NAME, KEY_PROPERTY
from consistent_anon.identity.pseudonyms import Pseudonymizer, project_key

OTHER_KEY = "another-key-fedcba9876543210fedcba9876543210"
KEY_TEXT_PREFIX = "consistent-anonymization-key-v1:"


def anonymized_patient_id(server, instance_id: str, **body) -> str:
    answer = server.post(f"/instances/{instance_id}/anonymize", json=body)
    assert answer.status_code == 200, answer.text
    return str(parse(answer.content).PatientID)


def index_properties(server) -> dict[int, str]:
    """The global properties of a stopped server's SQLite index."""
    with closing(sqlite3.connect(server.workdir / "storage" / "index")) as database:
        return dict(database.execute("SELECT property, value FROM GlobalProperties"))


def test_a_generated_key_lives_in_a_0600_file_and_never_in_the_index(server_factory):
    server = server_factory()
    study = two_frame_study(per_series=1, patient=new_patient())
    instance = server.upload(to_bytes(study.series[0][0]))["ID"]
    pseudonym = anonymized_patient_id(server, instance)
    server.stop()
    key_file = server.workdir / "storage" / KEY_FILE_NAME
    assert stat.S_IMODE(key_file.stat().st_mode) == 0o600
    key = bytes.fromhex(key_file.read_text()[len(KEY_TEXT_PREFIX):])
    assert Pseudonymizer(project_key(key, "default")).patient_id(study.study.patient.patient_id) == pseudonym
    index = (server.workdir / "storage" / "index").read_bytes()
    assert KEY_TEXT_PREFIX.encode() not in index and key.hex().encode() not in index
    # The index holds the project's keyed check value, which is not the key.
    checks = index_properties(server)[CHECKS_PROPERTY]
    assert "default" in checks and key.hex() not in checks


def test_a_key_an_earlier_version_kept_in_the_index_moves_to_the_file_and_keeps_the_pseudonyms(server_factory):
    server = server_factory()
    study = two_frame_study(per_series=1, patient=new_patient())
    instance = server.upload(to_bytes(study.series[0][0]))["ID"]
    server.stop()
    old_key = bytes(range(32))
    with closing(sqlite3.connect(server.workdir / "storage" / "index")) as database:  # as earlier versions left it
        database.execute("INSERT OR REPLACE INTO GlobalProperties VALUES (?, ?)",
                         (KEY_PROPERTY, KEY_TEXT_PREFIX + old_key.hex()))
        database.commit()
    server.start()
    expected = Pseudonymizer(project_key(old_key, "default")).patient_id(study.study.patient.patient_id)
    assert anonymized_patient_id(server, instance) == expected
    server.stop()
    key_file = server.workdir / "storage" / KEY_FILE_NAME
    assert key_file.read_text() == KEY_TEXT_PREFIX + old_key.hex()
    assert stat.S_IMODE(key_file.stat().st_mode) == 0o600
    assert index_properties(server).get(KEY_PROPERTY, "") == ""
    server.start()
    assert anonymized_patient_id(server, instance) == expected


def test_a_changed_key_is_refused_naming_the_project_until_accepted(server_factory):
    section = {"Key": TEST_KEY, "Projects": {"trial-b": {"Key": TEST_KEY[::-1]}}}
    server = server_factory(config={"ConsistentAnonymization": section})
    study = two_frame_study(per_series=2, patient=new_patient())
    uploaded = [server.upload(to_bytes(ds)) for ds in study.instances]
    series = sorted({answer["ParentSeries"] for answer in uploaded})
    first = server.post(f"/series/{series[0]}/anonymize", json={})
    assert first.status_code == 200, first.text
    trial_b = anonymized_patient_id(server, uploaded[0]["ID"], Project="trial-b")
    before = server.json("/instances")

    server.stop()
    server.configure({"ConsistentAnonymization": dict(section, Key=OTHER_KEY)})
    server.start()
    for call in (lambda: server.post(f"/series/{series[1]}/anonymize", json={}),
                 lambda: server.post(f"/studies/{uploaded[0]['ParentStudy']}/anonymize", json={}),
                 lambda: server.post(f"/instances/{uploaded[0]['ID']}/anonymize", json={}),
                 lambda: server.get("/tools/generate-uid", params={"level": "patient", "patient-id": "P"})):
        refused = call()
        assert refused.status_code == 500, refused.text
        message = refused.json()["Message"]
        assert '"default"' in message and "AcceptNewKey" in message
        assert OTHER_KEY not in refused.text and TEST_KEY not in refused.text
    assert server.json("/instances") == before  # nothing stored
    # Another project, whose own key did not change, goes on as before.
    assert anonymized_patient_id(server, uploaded[0]["ID"], Project="trial-b") == trial_b

    server.stop()
    server.configure({"ConsistentAnonymization": dict(section, Key=OTHER_KEY, AcceptNewKey=["default"])})
    server.start()
    assert server.post(f"/series/{series[1]}/anonymize", json={}).status_code == 200
    server.stop()  # once accepted, the new key is the recorded one: the option can go
    server.configure({"ConsistentAnonymization": dict(section, Key=OTHER_KEY)})
    server.start()
    assert server.post(f"/series/{series[1]}/anonymize", json={}).status_code == 200
    server.stop()  # and the old key is now the wrong one
    server.configure({"ConsistentAnonymization": section})
    server.start()
    assert server.post(f"/series/{series[1]}/anonymize", json={}).status_code == 500
    assert "Traceback" not in server.log() and TEST_KEY not in server.log() and OTHER_KEY not in server.log()


def test_a_lost_key_file_is_noticed_and_restoring_it_works(server_factory):
    server = server_factory()
    study = two_frame_study(per_series=1, patient=new_patient())
    instance = server.upload(to_bytes(study.series[0][0]))["ID"]
    pseudonym = anonymized_patient_id(server, instance)
    server.stop()
    key_file = server.workdir / "storage" / KEY_FILE_NAME
    backup = key_file.read_text()
    key_file.unlink()
    server.start()
    refused = server.post(f"/instances/{instance}/anonymize", json={})
    assert refused.status_code == 500 and '"default"' in refused.json()["Message"]
    server.stop()
    key_file.write_text(backup)  # the backup put back in place
    server.start()
    assert anonymized_patient_id(server, instance) == pseudonym


def test_a_key_in_the_index_that_differs_from_the_file_is_refused_not_guessed(tmp_path):
    import pytest

    from consistent_anon.errors import PluginError
    from consistent_anon.identity.keys import SharedFileKey, migrate_property_key

    key_file = SharedFileKey(tmp_path)
    file_key = key_file()
    database = {KEY_PROPERTY: KEY_TEXT_PREFIX + bytes(32).hex()}
    with pytest.raises(PluginError, match="Two generated pseudonymization keys"):
        migrate_property_key(lambda p, d: database.get(p, d), database.__setitem__, key_file)
    assert database[KEY_PROPERTY] and key_file() == file_key  # nothing lost, nothing overwritten


def test_the_first_node_to_record_a_check_wins_and_accepting_replaces_it(tmp_path):
    from consistent_anon.identity.keys import FileChecks

    nodes = [FileChecks(tmp_path), FileChecks(tmp_path)]
    assert nodes[0].record("trial", "aaaa") == "aaaa"
    assert nodes[1].record("trial", "bbbb") == "aaaa"
    assert nodes[1].record("trial", "bbbb", replace=True) == "bbbb"
    assert nodes[0].record("trial", "aaaa") == "bbbb"
    assert nodes[0].record("other", "cccc") == "cccc"
    assert all(stat.S_IMODE(p.stat().st_mode) == 0o600 for p in tmp_path.iterdir())
    assert len(list(tmp_path.iterdir())) == 2  # no draft left behind


def test_a_generated_key_is_read_once_and_again_only_when_its_file_changes(tmp_path, monkeypatch):
    """Every call derives its pseudonyms from the key: the file is read once, then only checked
    (its identity and times), and read again once replaced, changed or removed."""
    import os
    from pathlib import Path

    from consistent_anon.identity.keys import SharedFileKey

    reads: list[Path] = []
    real_read = Path.read_text
    monkeypatch.setattr(Path, "read_text", lambda path, *a, **k: (reads.append(path), real_read(path, *a, **k))[1])
    key_file = SharedFileKey(tmp_path)
    first = key_file()
    reads.clear()
    assert all(key_file() == first for _ in range(20))
    assert len(reads) == 0
    replacement = tmp_path / "replacement"
    replacement.write_text(KEY_TEXT_PREFIX + bytes(range(32)).hex())
    os.replace(replacement, key_file.path)  # another key put in place (a restored backup, say)
    assert key_file() == bytes(range(32)) and len(reads) == 1
    key_file.path.unlink()  # lost: a new key is generated, as before (the projects' checks refuse it)
    assert key_file() not in (first, bytes(range(32)))
