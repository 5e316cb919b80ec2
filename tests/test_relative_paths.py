"""Relative paths in the configuration mean what they mean to Orthanc: Orthanc reads a relative
StorageDirectory from the configuration file's folder (not from the folder it was started in),
so the plugin keeps its generated key and its audit log there too, and reads its own relative
paths (a subject table, a certificate, a key file) from that folder as well."""
from __future__ import annotations

import os
import shutil
from pathlib import Path

from conftest import new_patient
from consistent_anon.traceability.audit_log import FileAuditLog
from consistent_anon.identity.config import AUDIT_LOG_NAME
from consistent_anon.identity.keys import KEY_FILE_NAME
from dicom_factory import to_bytes, two_frame_study
from orthanc_server import RUNTIME


def _made_outside(relative: str) -> list[Path]:
    """The folder, if it was made where Orthanc was started (the tests' own folder on the host,
    the root of a chroot) rather than beside the configuration; removed, so that no run leaves it."""
    started_in = [Path(os.getcwd()) / relative] + ([RUNTIME.root / relative] if RUNTIME.root else [])
    made = [path for path in started_in if path.exists()]
    for path in made:
        shutil.rmtree(path)
    return made


def test_a_relative_storage_folder_holds_the_generated_key_and_the_audit_log(server_factory):
    server = server_factory(start=False)
    storage = f"relative-storage-{server.http_port}"
    server.configure({"StorageDirectory": storage, "IndexDirectory": storage,
                      "ConsistentAnonymization": {"PseudonymLookup": False}})
    server.start()
    try:
        patient = new_patient()
        study = [server.upload(to_bytes(ds)) for ds in two_frame_study(per_series=1, patient=patient).instances]
        answer = server.post(f"/studies/{study[0]['ParentStudy']}/anonymize", json={})
        assert answer.status_code == 200, answer.text
    finally:
        made_outside = _made_outside(storage)
    folder = server.workdir / storage  # where Orthanc put its own files: beside the configuration
    assert (folder / KEY_FILE_NAME).exists()
    assert [entry.outcome for entry in FileAuditLog(folder / AUDIT_LOG_NAME).read()] == ["Success"]
    assert made_outside == []


def test_a_relative_subject_table_is_read_from_the_configuration_folder(server_factory):
    server = server_factory(start=False)
    patient = new_patient()
    (server.workdir / "subjects.csv").write_text(f"PatientID,SubjectID\n{patient.patient_id},S-REL-1\n")
    server.configure({"ConsistentAnonymization": {
        "Projects": {"trial": {"Subjects": "subjects.csv", "RequireSubject": True}}}})
    server.start()
    study = [server.upload(to_bytes(ds)) for ds in two_frame_study(per_series=1, patient=patient).instances]
    answer = server.post(f"/studies/{study[0]['ParentStudy']}/anonymize", json={"Project": "trial"})
    assert answer.status_code == 200, answer.text
    tags = server.get(f"/studies/{answer.json()['ID']}").json()["PatientMainDicomTags"]
    assert tags["PatientID"] == "S-REL-1"
