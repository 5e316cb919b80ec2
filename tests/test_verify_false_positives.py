"""verify-anonymization and the fail-closed check report no leak where a source's identifying
text is only the source's own value of a non-identifying attribute at that place, nor in the
plugin's own pseudonymous name; true leaks are still reported."""
from __future__ import annotations

import pytest

from conftest import new_patient, upload
from dicom_factory import Patient, two_frame_study


def anonymize_and_verify(orthanc, study, body: dict | None = None) -> dict:
    uploaded = upload(orthanc, study)
    source = uploaded[study.series[0][0].SOPInstanceUID]["ParentStudy"]
    answer = orthanc.post(f"/studies/{source}/anonymize", json=body or {})
    assert answer.status_code == 200, answer.text
    report = orthanc.post("/tools/verify-anonymization", json={"Source": source, "Anonymized": answer.json()["ID"]})
    assert report.status_code == 200, report.text
    return report.json()


def named(name: str):
    patient = new_patient()
    return two_frame_study(per_series=2, patient=Patient(patient_id=patient.patient_id, name=name))


def test_a_source_named_like_the_plugins_pseudonymous_name_is_no_leak(orthanc):
    report = anonymize_and_verify(orthanc, named("Anonymized"))
    assert report["Leaks"] == [] and report["Clean"] is True


@pytest.mark.parametrize("attribute, value, name, institution", [
    ("BodyPartExamined", "CHEST", "Chest^Anna", None),
    ("Manufacturer", "SIEMENS", None, "Siemens"),
])
def test_a_word_that_is_also_the_sources_value_of_a_plain_attribute_there_is_no_leak(orthanc, attribute, value,
                                                                                       name, institution):
    study = named(name) if name else two_frame_study(per_series=2, patient=new_patient())
    for ds in study.instances:
        setattr(ds, attribute, value)
        if institution:
            ds.InstitutionName = institution
    report = anonymize_and_verify(orthanc, study)
    assert report["Leaks"] == [] and report["Clean"] is True


def test_the_same_word_kept_in_an_identifying_attribute_is_still_a_leak(orthanc):
    study = two_frame_study(per_series=2, patient=new_patient())
    for ds in study.instances:
        ds.Manufacturer = "SIEMENS"
        ds.InstitutionName = "Siemens"
    report = anonymize_and_verify(orthanc, study, {"Keep": ["InstitutionName"]})
    assert report["Clean"] is False
    assert {(leak["Path"], leak["Found"]) for leak in report["Leaks"]} == {("InstitutionName", "InstitutionName")}
    assert report["LeaksCount"] == len(study.instances)


def test_the_word_at_another_place_than_the_plain_attribute_is_still_a_leak():
    from pydicom.dataset import Dataset

    from consistent_anon.verification.report import SourceIdentifiers
    from test_set_verification import header

    source = Dataset()
    source.PatientName = "Chest^Anna"
    source.BodyPartExamined = "CHEST"
    identifiers = SourceIdentifiers()
    identifiers.add(header(source))
    output = Dataset()
    output.PatientName = "Anonymized-0123456789"
    output.BodyPartExamined = "CHEST"
    output.ImageComments = "CHEST"        # not the source's value there
    output.StationName = "Anonymized-0123456789 Chest"
    found = identifiers.finder().find(header(output), header(source))
    assert sorted((path[1], label) for path, label in found) == [(0x00081010, "PatientName"), (0x00204000, "PatientName")]


# --- The "Anonymized" side must be an anonymized set -------------------------------------------

def _anonymized_pair(orthanc) -> tuple[str, str, dict]:
    """A source study and its anonymized study, and the source instances as uploaded."""
    study = two_frame_study(per_series=2, patient=new_patient())
    uploaded = upload(orthanc, study)
    source = next(iter(uploaded.values()))["ParentStudy"]
    answer = orthanc.post(f"/studies/{source}/anonymize", json={})
    assert answer.status_code == 200, answer.text
    return source, answer.json()["ID"], uploaded


def test_swapped_sides_are_never_clean(orthanc):
    """{"Source": <anonymized study>, "Anonymized": <its identifiable source>}: the "Anonymized"
    side holds no de-identification marker, so every instance of it is reported and Clean is false
    (before, the source's pseudonyms were looked for in the identifiable study, found nowhere: Clean)."""
    source, anonymized, uploaded = _anonymized_pair(orthanc)
    report = orthanc.post("/tools/verify-anonymization", json={"Source": anonymized, "Anonymized": source})
    assert report.status_code == 200, report.text
    assert report.json()["Clean"] is False, report.text
    assert report.json()["NotAnonymizedInstancesCount"] == len(uploaded)
    assert sorted(report.json()["NotAnonymizedInstances"]) == sorted(i["ID"] for i in uploaded.values())
    straight = orthanc.post("/tools/verify-anonymization", json={"Source": source, "Anonymized": anonymized}).json()
    assert straight["Clean"] is True and straight["NotAnonymizedInstances"] == [], straight


def test_a_set_checked_against_itself_is_never_clean(orthanc):
    """The source as its own "Anonymized" side: no marker, and its own identifiers on it."""
    source, _, uploaded = _anonymized_pair(orthanc)
    report = orthanc.post("/tools/verify-anonymization", json={"Source": source, "Anonymized": source}).json()
    assert report["Clean"] is False and report["NotAnonymizedInstancesCount"] == len(uploaded), report
    assert {leak["Found"] for leak in report["Leaks"]} >= {"PatientID", "PatientName", "StudyInstanceUID"}


def test_an_anonymized_instance_stripped_of_its_markers_is_reported(orthanc):
    """A set whose markers were taken off one instance (stored again without PatientIdentityRemoved
    and DeidentificationMethod) is no anonymized set there: reported, not Clean."""
    source, anonymized, _ = _anonymized_pair(orthanc)
    first = orthanc.json(f"/studies/{anonymized}/instances")[0]["ID"]
    modified = orthanc.post(f"/instances/{first}/modify",
                            json={"Remove": ["PatientIdentityRemoved", "DeidentificationMethod"], "Force": True})
    assert modified.status_code == 200, modified.text
    assert orthanc.delete(f"/instances/{first}").status_code == 200
    stored = orthanc.upload(modified.content)
    report = orthanc.post("/tools/verify-anonymization", json={"Source": source, "Anonymized": anonymized}).json()
    assert report["Clean"] is False and report["NotAnonymizedInstances"] == [stored["ID"]], report
