"""Subject-ID tables, without a server: parsing, refusals that name no value, reloads."""
from __future__ import annotations

import os
import time

import pytest

from consistent_anon.identity.subjects import Subject, SubjectTable, SubjectTableError, parse_subjects

SECRET = "MRN-0042-SECRET"


def test_a_table_maps_patients_to_subjects():
    table = parse_subjects("\ufeffPatientID,SubjectID,SubjectName\nMRN1,S-001,Subject^One\nMRN2,S-002,\n", "t.csv")
    assert table == {("", "MRN1"): Subject("S-001", "Subject^One"), ("", "MRN2"): Subject("S-002")}


def test_an_issuer_column_tells_patients_apart():
    table = parse_subjects("PatientID,IssuerOfPatientID,SubjectID\nMRN1,HOSP-A,S-1\nMRN1,HOSP-B,S-2\n", "t.csv")
    assert table[("HOSP-A", "MRN1")].subject_id == "S-1"
    assert table[("HOSP-B", "MRN1")].subject_id == "S-2"


@pytest.mark.parametrize("text, line, words", [
    ("PatientID\nMRN1\n", 1, "missing: SubjectID"),
    ("PatientID,SubjectID,Age\nMRN1,S1,40\n", 1, "unknown column"),
    (f"PatientID,SubjectID\n{SECRET},S1\n{SECRET},S2\n", 3, "already listed"),
    (f"PatientID,SubjectID\n{SECRET},S1\nMRN2,S1\n", 3, "already given to another patient"),
    (f"PatientID,SubjectID\n{SECRET},\n", 2, "SubjectID is empty"),
    (f"PatientID,SubjectID\n{SECRET},S1,extra\n", 2, "not as many fields"),
    (f"PatientID,SubjectID\n{SECRET},S\\1\n", 2, "not a valid DICOM value"),
    (f"PatientID,SubjectID\n{SECRET},{'S' * 65}\n", 2, "not a valid DICOM value"),
])
def test_a_bad_table_is_refused_naming_the_line_never_the_value(text, line, words):
    with pytest.raises(SubjectTableError) as refused:
        parse_subjects(text, "subjects.csv")
    message = str(refused.value)
    assert f"subjects.csv, line {line}:" in message and words in message
    assert SECRET not in message and "S1" not in message.split(":", 1)[1]


def test_the_table_follows_its_file_and_a_broken_file_stops_lookups(tmp_path):
    path = tmp_path / "subjects.csv"
    path.write_text("PatientID,SubjectID\nMRN1,S-001\n")
    table = SubjectTable(path)
    assert table.lookup("MRN1") == Subject("S-001")
    assert table.lookup("MRN2") is None
    path.write_text("PatientID,SubjectID\nMRN1,S-001\nMRN2,S-002\n")
    os.utime(path, ns=(time.time_ns(), time.time_ns() + 1_000_000))
    assert table.lookup("MRN2") == Subject("S-002")          # no restart
    path.write_text("PatientID,SubjectID\nMRN1,S-001\nMRN1,S-003\n")
    with pytest.raises(SubjectTableError, match="line 3"):
        table.lookup("MRN1")                                 # never half-used
    path.write_text("PatientID,SubjectID\nMRN1,S-001\n")
    assert table.lookup("MRN1") == Subject("S-001")


def test_a_table_that_cannot_be_used_at_start_is_refused(tmp_path):
    with pytest.raises(SubjectTableError, match="cannot be read"):
        SubjectTable(tmp_path / "absent.csv")
    (tmp_path / "latin1.csv").write_bytes("PatientID,SubjectID\nM\xe9,S1\n".encode("latin-1"))
    with pytest.raises(SubjectTableError, match="not UTF-8"):
        SubjectTable(tmp_path / "latin1.csv")
