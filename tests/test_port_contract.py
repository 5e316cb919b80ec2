"""The in-memory Orthanc of the engine's unit tests answers as a real Orthanc does.

Each scenario runs the same calls through the plugin's RestPort against a real native Orthanc
of the version under test, and against tests/fake_orthanc.FakeOrthanc set to that version, and
the two must observe the same: identifiers, IDs, statuses, errors, what anonymization does with
the body the engine sends. A change in Orthanc (or in the fake) that the engine would see fails
here, not silently in the unit tests.
"""
from __future__ import annotations

import hashlib
import io
import re
import uuid
from typing import Any, Callable

import pydicom
import pytest

from conftest import new_patient
from consistent_anon.orthanc.rest_port import RestPort
from consistent_anon.orthanc.http_answers import http_status
from consistent_anon.errors import PluginError
from dicom_factory import to_bytes, two_frame_study
from fake_orthanc import FakeOrthanc
from orthanc_over_http import OrthancOverHttp


def _version(server) -> tuple[int, ...]:
    return tuple(int(p) for p in re.findall(r"\d+", server.json("/system")["Version"])[:3])


def _status(call: Callable[[], Any]) -> Any:
    """The call's answer, or the HTTP status of its error: what the engine can tell apart."""
    try:
        return call()
    except PluginError as error:
        return ("error", http_status(error))


def _both(native, scenario: Callable[[Any, list[bytes]], dict]) -> tuple[dict, dict]:
    """The scenario's observations on the real Orthanc and on the fake, with the same files."""
    study = two_frame_study(per_series=2, patient=new_patient())
    files = [to_bytes(ds) for ds in study.instances]
    real = scenario(RestPort(OrthancOverHttp(native), {"HttpPort": native.http_port}), files)
    fake = scenario(FakeOrthanc(version=_version(native)), files)
    return real, fake


def _stored(port, files: list[bytes]) -> list[dict]:
    return [port.store(data) for data in files]


def test_storing_and_the_resource_tree(native):
    def scenario(port, files):
        first = _stored(port, files)
        again = _stored(port, files[:1])
        instance = first[0]
        series, study = instance["ParentSeries"], instance["ParentStudy"]
        listed = port.instances_of("studies", study)
        return {
            "first": [(s["Status"], s["ID"], s["ParentSeries"], s["ParentStudy"], s["ParentPatient"]) for s in first],
            "again": [s["Status"] for s in again],
            "listed": sorted((s["ID"], s["ParentSeries"], s["SOPInstanceUID"], s["FileSize"] > 0) for s in listed),
            "series level": sorted(s["ID"] for s in port.instances_of("series", series)),
            "instance level": [s["ID"] for s in port.instances_of("instances", instance["ID"])],
            "identifiers": port.identifiers(series),
            "existing": sorted(port.existing_instances(series)),
            "existing of nothing": sorted(port.existing_instances(str(uuid.uuid4()))),
            "parents": (port.parent_of("instances", instance["ID"]), port.parent_of("series", series),
                        port.parent_of("studies", study)),
            "levels": [port.level_of(r) for r in (instance["ID"], series, study, instance["ParentPatient"])],
            "unknown level": _status(lambda: port.level_of("0" * 8)),
            "wrong level": _status(lambda: port.instances_of("series", study)),
            "unknown": _status(lambda: port.instances_of("studies", str(uuid.uuid4()))),
            "header": port.header(instance["ID"]).text(0x00080018),
            "exists": [port.exists(level, resource) for level, resource in
                       (("instances", instance["ID"]), ("series", series), ("series", study), ("studies", "0" * 8))],
            "md5": port.stored_md5(instance["ID"]) == hashlib.md5(files[0]).hexdigest(),
        }
    real, fake = _both(native, scenario)
    assert real == fake
    assert real["again"] == ["AlreadyStored"] and {s[0] for s in real["first"]} == {"Success"}
    assert real["unknown"] == ("error", 404)
    assert real["wrong level"] == ([] if _version(native) < (1, 12) else ("error", 404))


def test_metadata(native):
    def scenario(port, files):
        stored = _stored(port, files[:1])[0]
        series = stored["ParentSeries"]
        observed = {"absent": port.metadata("series", series, "9732"),
                    "of an unknown resource": port.metadata("series", str(uuid.uuid4()), "9732")}
        port.set_metadata("series", series, "9732", "mark")
        observed["written"] = port.metadata("series", series, "9732")
        observed["unknown resource"] = _status(lambda: port.set_metadata("series", "0" * 8, "9732", "x"))
        # AnonymizedFrom is not compared: the HTTP API refuses it (403) on every version, while the
        # plugin's built-in call writes it from 1.12 on; the real-Orthanc tests cover that.
        observed["AnonymizedFrom absent"] = port.metadata("instances", stored["ID"], "AnonymizedFrom")
        return observed
    real, fake = _both(native, scenario)
    assert real == fake
    assert real["written"] == "mark" and real["absent"] is None


def test_labels(native):
    if _version(native) < (1, 12, 3):
        from conftest import not_applicable
        not_applicable("labels exist from Orthanc 1.12.3 on")

    def scenario(port, files):
        stored = _stored(port, files[:1])[0]
        before = port.labels("studies", stored["ParentStudy"])
        port.add_label("studies", stored["ParentStudy"], "trial-7")
        port.add_label("studies", stored["ParentStudy"], "trial-7")
        return {"before": before, "after": port.labels("studies", stored["ParentStudy"]),
                "series": port.labels("series", stored["ParentSeries"])}
    real, fake = _both(native, scenario)
    assert real == fake == {"before": [], "after": ["trial-7"], "series": []}


def test_deleting_an_instance_removes_the_parents_it_leaves_empty(native):
    def scenario(port, files):
        stored = _stored(port, files[:2])
        alone, other = stored
        port.delete("instances", alone["ID"])
        observed = {"gone": _status(lambda: port.header(alone["ID"])),
                    "series left": sorted(port.existing_instances(alone["ParentSeries"]))}
        port.delete("instances", other["ID"])
        observed["series gone"] = _status(lambda: port.level_of(other["ParentSeries"]))
        observed["patient gone"] = _status(lambda: port.level_of(other["ParentPatient"]))
        observed["twice"] = _status(lambda: port.delete("instances", other["ID"]))
        return observed
    real, fake = _both(native, scenario)
    assert real == fake
    assert real["series gone"] == real["patient gone"] == real["twice"] == ("error", 404)


def _anonymized(port, files, body) -> dict:
    """What anonymizing the RT structure set (nested references) with `body` gives: each value as
    written when the body fixed it or it is the source's, else "new" (random values differ)."""
    stored = _stored(port, files)
    rtstruct = stored[-1]["ID"]
    source = pydicom.dcmread(io.BytesIO(files[-1]))
    answer = _status(lambda: port.anonymize_instance(rtstruct, body))
    if isinstance(answer, tuple):
        return {"error": answer}
    output = pydicom.dcmread(io.BytesIO(answer))
    fixed = set(body.get("Replace", {}).values())

    def shown(value: Any, before: Any) -> Any:
        return value if value in fixed or value == before else "new"

    def nested_for(ds) -> str:
        return ds.ReferencedFrameOfReferenceSequence[0].FrameOfReferenceUID
    return {
        "PatientID": shown(output.PatientID, source.PatientID),
        "StudyInstanceUID": shown(output.StudyInstanceUID, source.StudyInstanceUID),
        "SeriesInstanceUID": shown(output.SeriesInstanceUID, source.SeriesInstanceUID),
        "SOPInstanceUID": shown(output.SOPInstanceUID, source.SOPInstanceUID),
        "MediaStorageSOPInstanceUID follows": output.file_meta.MediaStorageSOPInstanceUID == output.SOPInstanceUID,
        "nested FrameOfReferenceUID": shown(nested_for(output), nested_for(source)),
        "SOPClassUID": shown(output.SOPClassUID, source.SOPClassUID),
        "PatientBirthDate empty": not output.get("PatientBirthDate"),
        "InstitutionName kept": "InstitutionName" in output,
        "PatientIdentityRemoved": output.get("PatientIdentityRemoved"),
    }


@pytest.mark.parametrize("body", [
    {"Force": True, "Replace": {"PatientID": "P-1", "StudyInstanceUID": "2.25.1",
                                "3006,0010[0].0020,0052": "2.25.2"}},
    {"Force": True, "Replace": {"ReferencedFrameOfReferenceSequence[0].FrameOfReferenceUID": "2.25.3"},
     "Keep": ["StudyInstanceUID"]},
    {},
])
def test_single_instance_anonymization(native, body):
    real, fake = _both(native, lambda port, files: _anonymized(port, files, body))
    assert real == fake


@pytest.mark.parametrize("member", ["Keep", "Remove"])
def test_identifiers_need_force(native, member):
    body = {member: ["PatientID"]}
    real, fake = _both(native, lambda port, files: _anonymized(port, files, body))
    assert real == fake == {"error": ("error", 400)}
