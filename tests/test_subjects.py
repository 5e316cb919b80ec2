"""Subject-ID tables, without a server: parsing, refusals that name no value, reloads."""
from __future__ import annotations

import json
import os
import time

import pytest

from consistent_anon.identity import subjects
from consistent_anon.errors import BadRequest, SubjectRequired
from consistent_anon.dicom.filereader import Header
from consistent_anon.pipeline.identities import resulting_patient
from consistent_anon.pipeline.options import parse_request
from consistent_anon.identity.project_settings import ProjectSettings
from consistent_anon.identity.pseudonyms import Pseudonymizer
from consistent_anon.dicom.vocabulary import PATIENT_ID
from consistent_anon.identity.subjects import Subject, SubjectTable, SubjectTableError, read_subjects

SECRET = "MRN-0042-SECRET"


def _parse(text: str, source: str) -> subjects.Subjects:
    return read_subjects(text.encode("utf-8"), source)


def test_a_table_maps_patients_to_subjects():
    table = _parse("\ufeffPatientID,SubjectID,SubjectName\nMRN1,S-001,Subject^One\nMRN2,S-002,\n\n", "t.csv")
    assert len(table) == 2
    assert (table.get("MRN1"), table.get("MRN2"), table.get("MRN3")) == (Subject("S-001", "Subject^One"),
                                                                         Subject("S-002"), None)


def test_an_issuer_column_tells_patients_apart():
    table = _parse("PatientID,IssuerOfPatientID,SubjectID\nMRN1,HOSP-A,S-1\nMRN1,HOSP-B,S-2\n", "t.csv")
    assert table.get("MRN1", "HOSP-A").subject_id == "S-1"
    assert table.get("MRN1", "HOSP-B").subject_id == "S-2"
    assert table.get("MRN1") is None and table.get("MRN1", "HOSP-C") is None


@pytest.mark.parametrize("end", ["\n", "\r\n", "\r"])
def test_any_line_end_and_a_missing_last_one(end):
    text = end.join(["PatientID,SubjectID,SubjectName", "MRN1,S-001,One", "", "MRN2,S-002,Two"])
    table = _parse(text, "t.csv")
    assert (table.get("MRN1"), table.get("MRN2")) == (Subject("S-001", "One"), Subject("S-002", "Two"))


def test_equal_hashes_are_told_apart_by_the_rows_themselves(monkeypatch):
    """The index keeps hashes only: every key colliding, lookups and repeats still hold."""
    monkeypatch.setattr(subjects, "_HASH_MASK", 0)
    text = "PatientID,IssuerOfPatientID,SubjectID\nMRN1,,S-1\nMRN1,HOSP-A,S-2\nMRN2,,S-3\n"
    table = _parse(text, "t.csv")
    assert [table.get(*key) for key in (("MRN1",), ("MRN1", "HOSP-A"), ("MRN2",), ("MRN3",))] == [
        Subject("S-1"), Subject("S-2"), Subject("S-3"), None]
    with pytest.raises(SubjectTableError, match="line 6: this patient is already listed"):
        _parse(text + "MRN4,,S-4\nMRN1,HOSP-A,S-5\nMRN2,,S-6\n", "t.csv")
    with pytest.raises(SubjectTableError, match="line 6: this SubjectID is already given"):
        _parse(text + "MRN4,,S-4\nMRN5,,S-2\nMRN1,,S-6\n", "t.csv")


def test_a_table_longer_than_the_index_allows_is_refused(monkeypatch):
    monkeypatch.setattr(subjects, "MAX_LINES", 3)
    assert len(_parse("PatientID,SubjectID\nMRN1,S1\nMRN2,S2", "t.csv")) == 2
    with pytest.raises(SubjectTableError, match="t.csv: more than 3 lines"):
        _parse("PatientID,SubjectID\nMRN1,S1\nMRN2,S2\nMRN3,S3\n", "t.csv")


def test_a_row_without_issuer_matches_only_a_source_without_issuer():
    """The cautious rule: two patients of different issuers sharing a PatientID are never merged
    into the subject of a row that names no issuer."""
    table = _parse("PatientID,SubjectID,IssuerOfPatientID\nMRN1,S-001,\nMRN1,S-002,HOSP-B\n", "t.csv")
    assert table.get("MRN1", "") == Subject("S-001")
    assert table.get("MRN1", "HOSP-A") is None
    assert table.get("MRN1", "HOSP-B") == Subject("S-002")
    assert table.get("HOSP-B\\MRN1") is None  # a multi-valued PatientID never meets a joined key


@pytest.mark.parametrize("text, line, words", [
    ("PatientID\nMRN1\n", 1, "missing: SubjectID"),
    ("PatientID,SubjectID,Age\nMRN1,S1,40\n", 1, "unknown column"),
    (f"PatientID,SubjectID\n{SECRET},S1\n{SECRET},S2\n", 3, "already listed"),
    (f"PatientID,SubjectID\n{SECRET},S1\nMRN2,S1\n", 3, "already given to another patient"),
    (f"PatientID,SubjectID\n{SECRET},\n", 2, "SubjectID is empty"),
    (f"PatientID,SubjectID\n{SECRET},S1,extra\n", 2, "not as many fields"),
    (f"PatientID,SubjectID\n{SECRET},S\\1\n", 2, "not a valid DICOM value"),
    (f"PatientID,SubjectID\n{SECRET},{'S' * 65}\n", 2, "not a valid DICOM value"),
    (f"PatientID,SubjectID\n{SECRET},S\t1\n", 2, "not a valid DICOM value"),
    ("PatientID,SubjectID,PatientID\nMRN-1,T-001,MRN-2\n", 1, "column(s) PatientID named twice"),
    ("PatientID,SubjectID,SubjectID\nMRN-1,T-001,T-002\n", 1, "column(s) SubjectID named twice"),
    ("", 1, "missing: PatientID, SubjectID"),
    (f"PatientID,SubjectID\nMRN1,S1\n{SECRET}," + "x" * 200_000 + "\n", 3, "field limit"),
    (f"PatientID,SubjectID\nMRN1,S1\n{SECRET},\"S2\"x\"\n", 3, "not a valid CSV file"),
    (f"PatientID,SubjectID,SubjectName\nMRN1,S1,\"\n\"\n{SECRET},S2,\n", 3, "goes over more than one line"),
])
def test_a_bad_table_is_refused_naming_the_line_never_the_value(text, line, words):
    with pytest.raises(SubjectTableError) as refused:
        _parse(text, "subjects.csv")
    message = str(refused.value)
    assert f"subjects.csv, line {line}:" in message and words in message
    assert SECRET not in message and "S1" not in message.split(":", 1)[1]


class Deferred:
    """Background work held until the test runs it: what a lookup does meanwhile is then seen
    without timing anything."""

    def __init__(self) -> None:
        self.tasks: list = []

    def __call__(self, task) -> None:
        self.tasks.append(task)

    def run(self) -> None:
        tasks, self.tasks = self.tasks, []
        for task in tasks:
            task()


def _table(path, text: str) -> tuple[SubjectTable, Deferred]:
    path.write_text(text)
    deferred = Deferred()
    return SubjectTable(path, interval=0, run=deferred), deferred


def test_the_table_follows_its_file_and_a_broken_file_stops_lookups(tmp_path):
    path = tmp_path / "subjects.csv"
    table, deferred = _table(path, "PatientID,SubjectID\nMRN1,S-001\n")
    assert table.lookup("MRN1") == Subject("S-001")
    assert table.lookup("MRN2") is None
    deferred.run()
    path.write_text("PatientID,SubjectID\nMRN1,S-001\nMRN2,S-002\n")
    assert table.lookup("MRN2") is None                      # the table in use serves meanwhile
    deferred.run()
    assert table.lookup("MRN2") == Subject("S-002")          # no restart
    deferred.run()
    path.write_text("PatientID,SubjectID\nMRN1,S-001\nMRN1,S-003\n")
    table.lookup("MRN1")
    deferred.run()
    with pytest.raises(SubjectTableError, match="subjects.csv, line 3"):
        table.lookup("MRN1")                                 # never half-used
    deferred.run()
    path.write_text("PatientID,SubjectID\nMRN1,S-001\n")
    with pytest.raises(SubjectTableError):
        table.lookup("MRN1")
    deferred.run()
    assert table.lookup("MRN1") == Subject("S-001")


def test_a_rewrite_keeping_size_and_time_is_seen(tmp_path):
    path = tmp_path / "subjects.csv"
    table, deferred = _table(path, "PatientID,SubjectID\nMRN1,S-001\n")
    status = os.stat(path)
    path.write_text("PatientID,SubjectID\nMRN1,S-002\n")
    os.utime(path, ns=(status.st_atime_ns, status.st_mtime_ns))
    assert os.stat(path).st_size == status.st_size
    table.lookup("MRN1")
    deferred.run()
    assert table.lookup("MRN1") == Subject("S-002")


def test_a_reload_is_off_the_request_path(tmp_path, monkeypatch):
    """The lookup after a change neither parses nor waits: it starts one background check, and
    the table in use serves until the new one is parsed; an unchanged file is not parsed again."""
    path = tmp_path / "subjects.csv"
    table, deferred = _table(path, "PatientID,SubjectID\nMRN1,S-001\n")
    parsed = []
    real_read = subjects.read_subjects
    monkeypatch.setattr(subjects, "read_subjects", lambda *args: parsed.append(1) or real_read(*args))
    path.write_text("PatientID,SubjectID\nMRN1,S-002\n")
    assert [table.lookup("MRN1") for _ in range(3)] == [Subject("S-001")] * 3
    assert (len(deferred.tasks), parsed) == (1, [])          # one check started, none parsed yet
    deferred.run()
    assert parsed == [1] and table.lookup("MRN1") == Subject("S-002")
    deferred.run()
    assert parsed == [1]                                     # same content: not parsed again


def test_checks_are_spaced_by_the_interval(tmp_path):
    path = tmp_path / "subjects.csv"
    path.write_text("PatientID,SubjectID\nMRN1,S-001\n")
    deferred = Deferred()
    table = SubjectTable(path, interval=3600, run=deferred)
    path.write_text("PatientID,SubjectID\nMRN1,S-002\n")
    assert table.lookup("MRN1") == Subject("S-001") and deferred.tasks == []


def test_a_real_background_reload_swaps_the_table(tmp_path):
    """The default runner: a thread; the test waits for the new table, it asserts no duration."""
    path = tmp_path / "subjects.csv"
    path.write_text("PatientID,SubjectID\nMRN1,S-001\n")
    table = SubjectTable(path, interval=0)
    path.write_text("PatientID,SubjectID\nMRN1,S-002\n")
    deadline = time.monotonic() + 30
    while table.lookup("MRN1") != Subject("S-002") and time.monotonic() < deadline:
        time.sleep(0.01)
    assert table.lookup("MRN1") == Subject("S-002")


def test_a_table_that_cannot_be_used_at_start_is_refused(tmp_path):
    with pytest.raises(SubjectTableError, match="cannot be read"):
        SubjectTable(tmp_path / "absent.csv")
    (tmp_path / "latin1.csv").write_bytes("PatientID,SubjectID\nM1,S1\nM\xe9,S2\n".encode("latin-1"))
    with pytest.raises(SubjectTableError, match="latin1.csv, line 3: not UTF-8"):
        SubjectTable(tmp_path / "latin1.csv")



@pytest.mark.parametrize("body, outcome", [
    ({}, ("S-001", "S-001")),
    ({"Replace": {"PatientID": "S-001"}, "Force": True}, ("S-001", "S-001")),
    ({"Replace": {"PatientID": "OTHER"}, "Force": True}, BadRequest),
    ({"Keep": ["PatientID"], "Force": True}, BadRequest),
    ({"Remove": ["PatientID"], "Force": True}, BadRequest),
])
@pytest.mark.parametrize("identity", ["caller", "project"])
def test_a_listed_patient_gets_its_subject_id_or_the_call_is_refused(tmp_path, body, outcome, identity):
    """Under "project" the caller's Keep and Replace of PatientID are dropped (the subject wins);
    a Remove is not, and would leave the subject without its ID."""
    table, _ = _table(tmp_path / "subjects.csv", "PatientID,SubjectID\nMRN1,S-001\n")
    settings = ProjectSettings(name="t", subjects=table, require_subject=True, patient_identity=identity)
    request = parse_request(json.dumps(body)).for_project(settings)
    pseudonyms = Pseudonymizer(b"k" * 32)
    if identity == "project" and "Remove" not in body:
        outcome = ("S-001", "S-001")
    if outcome is BadRequest:
        with pytest.raises(BadRequest, match='subject table of project "t".*only be its SubjectID'):
            resulting_patient(Header.of_values({PATIENT_ID: "MRN1"}), request, pseudonyms)
    else:
        assert resulting_patient(Header.of_values({PATIENT_ID: "MRN1"}), request, pseudonyms) == outcome
    with pytest.raises(SubjectRequired, match='"t"'):  # outside the table: refused whatever the body says
        resulting_patient(Header.of_values({PATIENT_ID: "MRN2"}), request, pseudonyms)
