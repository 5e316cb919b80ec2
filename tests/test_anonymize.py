"""The core promise on a real Orthanc: every /anonymize call, at every level, agrees."""
from __future__ import annotations

import re
from collections import Counter

import pytest

from anonymized import AnonymizedSet, dataset, find_patient, parse
from conftest import new_patient, upload
from dicom_factory import two_frame_study


def series_ids(uploaded: dict[str, dict]) -> list[str]:
    return sorted({answer["ParentSeries"] for answer in uploaded.values()})


def pseudonymous_patient(orthanc, study) -> str:
    answer = orthanc.get("/tools/generate-uid", params={"level": "patient",
                                                         "patient-id": study.study.patient.patient_id})
    assert answer.status_code == 200
    return answer.text


def test_series_by_series_and_a_lone_instance_make_one_study_with_the_frames_of_reference(orthanc, study):
    uploaded = upload(orthanc, study)
    lone = study.series[2][0]
    lone_file = orthanc.post(f"/instances/{uploaded[lone.SOPInstanceUID]['ID']}/anonymize", json={})
    assert lone_file.status_code == 200
    assert lone_file.headers["content-type"].startswith("application/dicom")
    stored_lone = orthanc.upload(lone_file.content)

    answers = []
    for series in series_ids(uploaded):
        answer = orthanc.post(f"/series/{series}/anonymize", json={})
        assert answer.status_code == 200, answer.text
        answers.append(answer.json())

    patients = find_patient(orthanc, pseudonymous_patient(orthanc, study))
    assert len(patients) == 1
    result = AnonymizedSet.of_patient(orthanc, patients[0])
    assert len(result.instances) == len(study.instances)  # the lone instance was not duplicated
    assert stored_lone["ID"] in result.instances
    assert len(result.studies) == 1
    assert len({a["PatientID"] for a in answers}) == 1 and answers[0]["PatientID"] == patients[0]

    frames = {number: result.frame_of_reference_of(number) for number in (1, 2, 3)}
    assert all(len(f) == 1 for f in frames.values())
    assert frames[1] == frames[2]
    assert frames[1] != frames[3]
    sources = {str(ds.FrameOfReferenceUID) for ds in study.instances if "FrameOfReferenceUID" in ds}
    assert not (frames[1] | frames[3]) & sources


def test_rtstruct_anonymized_alone_still_references_its_images(orthanc, study):
    uploaded = upload(orthanc, study)
    images = study.series[0]
    image_series = uploaded[images[0].SOPInstanceUID]["ParentSeries"]
    rt_series = uploaded[study.structure_set.SOPInstanceUID]["ParentSeries"]
    # The structure set first, the images a separate call later: order must not matter.
    rt_answer = orthanc.post(f"/series/{rt_series}/anonymize", json={})
    image_answer = orthanc.post(f"/series/{image_series}/anonymize", json={})
    assert rt_answer.status_code == image_answer.status_code == 200

    rt_instance = orthanc.json(f"/series/{rt_answer.json()['ID']}/instances")[0]["ID"]
    rt = dataset(orthanc, rt_instance)
    anonymized_images = [dataset(orthanc, i["ID"]) for i in orthanc.json(f"/series/{image_answer.json()['ID']}/instances")]
    image_uids = {str(ds.SOPInstanceUID) for ds in anonymized_images}
    frame = {str(ds.FrameOfReferenceUID) for ds in anonymized_images}
    assert len(frame) == 1

    for_item = rt.ReferencedFrameOfReferenceSequence[0]
    study_item = for_item.RTReferencedStudySequence[0]
    series_item = study_item.RTReferencedSeriesSequence[0]
    assert {str(for_item.FrameOfReferenceUID)} == frame
    assert str(study_item.ReferencedSOPInstanceUID) == str(anonymized_images[0].StudyInstanceUID)
    assert str(study_item.ReferencedSOPClassUID) == "1.2.840.10008.3.1.2.3.1"  # a class: untouched
    assert str(series_item.SeriesInstanceUID) == str(anonymized_images[0].SeriesInstanceUID)
    assert {str(i.ReferencedSOPInstanceUID) for i in series_item.ContourImageSequence} == image_uids
    assert {str(roi.ReferencedFrameOfReferenceUID) for roi in rt.StructureSetROISequence} == frame
    contour_refs = {str(img.ReferencedSOPInstanceUID) for c in rt.ROIContourSequence[0].ContourSequence
                    for img in c.ContourImageSequence}
    assert contour_refs == image_uids
    assert str(rt.StudyInstanceUID) == str(anonymized_images[0].StudyInstanceUID)


def test_study_level_call_lands_on_the_same_study_and_reruns_are_idempotent(orthanc, study):
    uploaded = upload(orthanc, study)
    study_id = next(iter(uploaded.values()))["ParentStudy"]
    by_series = [orthanc.post(f"/series/{s}/anonymize", json={}).json() for s in series_ids(uploaded)]
    first = orthanc.post(f"/studies/{study_id}/anonymize", json={})
    again = orthanc.post(f"/studies/{study_id}/anonymize", json={})
    assert first.status_code == again.status_code == 200
    first, again = first.json(), again.json()
    assert first["ID"] == again["ID"]
    assert first["InstancesCount"] == len(study.instances)
    anonymized_study = orthanc.json(f"/studies/{first['ID']}")
    assert {orthanc.json(f"/series/{a['ID']}")["ParentStudy"] for a in by_series} == {first["ID"]}
    assert len(orthanc.json(f"/studies/{first['ID']}/instances")) == len(study.instances)
    assert anonymized_study["ParentPatient"] == first["PatientID"]
    patient_answer = orthanc.post(f"/patients/{next(iter(uploaded.values()))['ParentPatient']}/anonymize", json={})
    assert patient_answer.status_code == 200
    assert patient_answer.json()["ID"] == first["PatientID"]
    assert len(orthanc.json(f"/patients/{first['PatientID']}/instances")) == len(study.instances)


def test_answer_has_the_native_shape_and_points_to_existing_resources(orthanc, native, study):
    uploaded = upload(orthanc, study)
    upload(native, study)
    for level, key in (("series", "ParentSeries"), ("studies", "ParentStudy"), ("patients", "ParentPatient")):
        source = next(iter(uploaded.values()))[key]
        ours = orthanc.post(f"/{level}/{source}/anonymize", json={})
        theirs = native.post(f"/{level}/{source}/anonymize", json={})
        assert ours.status_code == theirs.status_code == 200
        assert set(ours.json()) == set(theirs.json())
        assert ours.json()["Type"] == theirs.json()["Type"]
        assert ours.json()["Path"] == f"/{level}/{ours.json()['ID']}"
        assert orthanc.get(ours.json()["Path"]).status_code == 200
        assert orthanc.get(f"/patients/{ours.json()['PatientID']}").status_code == 200


def test_instance_level_returns_the_file_and_stores_nothing(orthanc, study):
    uploaded = upload(orthanc, study)
    before = len(orthanc.json("/instances"))
    answer = orthanc.post(f"/instances/{next(iter(uploaded.values()))['ID']}/anonymize", json={})
    assert answer.status_code == 200
    assert parse(answer.content).PatientID != study.study.patient.patient_id
    assert len(orthanc.json("/instances")) == before


def test_the_same_uid_gets_the_same_pseudonym_in_every_call_and_different_uids_different_ones(orthanc, study):
    uploaded = upload(orthanc, study)
    image = study.series[0][0]
    instance = uploaded[image.SOPInstanceUID]["ID"]
    first = parse(orthanc.post(f"/instances/{instance}/anonymize", json={}).content)
    second = parse(orthanc.post(f"/instances/{instance}/anonymize", json={}).content)
    for keyword in ("PatientID", "PatientName", "StudyInstanceUID", "SeriesInstanceUID",
                    "SOPInstanceUID", "FrameOfReferenceUID"):
        assert first.get(keyword) and first.get(keyword) == second.get(keyword), keyword
    assert first.file_meta.MediaStorageSOPInstanceUID == first.SOPInstanceUID
    uids = [str(first.get(k)) for k in ("StudyInstanceUID", "SeriesInstanceUID", "SOPInstanceUID",
                                         "FrameOfReferenceUID")]
    assert len(set(uids)) == 4
    assert all(uid.startswith("2.25.") and len(uid) <= 64 for uid in uids)

    # The generate-uid route tells scripts the same pseudonym /anonymize writes.
    pseudonym = orthanc.get("/tools/generate-uid", params={
        "level": "frame-of-reference", "uid": image.FrameOfReferenceUID,
        "patient-id": study.study.patient.patient_id})
    assert pseudonym.status_code == 200
    assert pseudonym.text == str(first.FrameOfReferenceUID)


def test_uids_are_scoped_by_the_resulting_patient(orthanc, study):
    uploaded = upload(orthanc, study)
    instance = next(iter(uploaded.values()))["ID"]
    default = parse(orthanc.post(f"/instances/{instance}/anonymize", json={}).content)
    trial = parse(orthanc.post(f"/instances/{instance}/anonymize",
                               json={"Force": True, "Replace": {"PatientID": "TRIAL-0042"}}).content)
    assert str(trial.PatientID) == "TRIAL-0042"
    assert trial.StudyInstanceUID != default.StudyInstanceUID
    assert trial.SOPInstanceUID != default.SOPInstanceUID
    by_route = orthanc.get("/tools/generate-uid", params={
        "level": "study", "uid": study.study.study_uid, "anonymized-patient-id": "TRIAL-0042"}).text
    assert by_route == str(trial.StudyInstanceUID)


def test_the_callers_replace_and_keep_win_and_follow_nested_references(orthanc, study):
    uploaded = upload(orthanc, study)
    rt = uploaded[study.structure_set.SOPInstanceUID]["ID"]
    replaced = parse(orthanc.post(f"/instances/{rt}/anonymize", json={
        "Force": True, "Replace": {"StudyInstanceUID": "1.2.3.4.5.6.7"}}).content)
    assert str(replaced.StudyInstanceUID) == "1.2.3.4.5.6.7"
    study_ref = replaced.ReferencedFrameOfReferenceSequence[0].RTReferencedStudySequence[0]
    assert str(study_ref.ReferencedSOPInstanceUID) == "1.2.3.4.5.6.7"

    kept = parse(orthanc.post(f"/instances/{rt}/anonymize", json={
        "Force": True, "Keep": ["SeriesInstanceUID", "StudyDescription"]}).content)
    assert str(kept.SeriesInstanceUID) == study.structure_set.SeriesInstanceUID
    assert kept.StudyDescription == study.structure_set.StudyDescription
    # The RTSTRUCT's own series is kept; the images' series it references is another one.
    series_ref = kept.ReferencedFrameOfReferenceSequence[0].RTReferencedStudySequence[0].RTReferencedSeriesSequence[0]
    assert str(series_ref.SeriesInstanceUID) != study.series[0][0].SeriesInstanceUID


def test_keeping_a_referenced_uid_keeps_it_in_nested_references_too(orthanc, study):
    uploaded = upload(orthanc, study)
    rt = uploaded[study.structure_set.SOPInstanceUID]["ID"]
    kept = parse(orthanc.post(f"/instances/{rt}/anonymize", json={
        "Force": True, "Keep": ["StudyInstanceUID"]}).content)
    assert str(kept.StudyInstanceUID) == study.study.study_uid
    study_ref = kept.ReferencedFrameOfReferenceSequence[0].RTReferencedStudySequence[0]
    assert str(study_ref.ReferencedSOPInstanceUID) == study.study.study_uid


@pytest.mark.parametrize("options", [
    {},
    {"Keep": ["StudyDescription", "SeriesDescription"]},
    {"KeepPrivateTags": True},
    {"Remove": ["InstitutionName"], "Replace": {"ReferringPhysicianName": "Somebody"}},
    {"DicomVersion": "2008"},
    {"DicomVersion": "2017c", "Keep": ["StudyDate"]},
])
def test_native_still_does_the_de_identification(orthanc, native, study, options):
    """Same tags, same values as native, but for the identities the plugin decides and the
    de-identification's codes, which the plugin records in every result (native writes none)."""
    uploaded = upload(orthanc, study)
    upload(native, study)
    instance = uploaded[study.structure_set.SOPInstanceUID]["ID"]
    ours = orthanc.post(f"/instances/{instance}/anonymize", json=options)
    theirs = native.post(f"/instances/{instance}/anonymize", json=options)
    assert ours.status_code == theirs.status_code == 200
    ours, theirs = parse(ours.content), parse(theirs.content)

    def flat(ds, prefix=""):
        out = {}
        for elem in ds:
            key = prefix + elem.keyword if elem.keyword else prefix + str(elem.tag)
            if elem.VR == "SQ":
                for index, item in enumerate(elem.value):
                    out.update(flat(item, f"{key}[{index}]."))
            else:
                out[key] = elem.value
        return out

    ours_flat, theirs_flat = flat(ours), flat(theirs)
    assert [item.CodeValue for item in ours.DeidentificationMethodCodeSequence] == ["113100"]
    assert "DeidentificationMethodCodeSequence" not in theirs
    ours_flat = {key: value for key, value in ours_flat.items()
                 if not key.startswith("DeidentificationMethodCodeSequence[")}
    assert set(ours_flat) == set(theirs_flat)
    identity = ("UID", "PatientID", "PatientName")
    for key, value in theirs_flat.items():
        if not key.split(".")[-1].endswith(identity):
            assert ours_flat[key] == value, key
    assert ours.get("DeidentificationMethod") == theirs.get("DeidentificationMethod")
    assert ours.get("PatientIdentityRemoved") == theirs.get("PatientIdentityRemoved")


def test_anonymized_from_is_recorded_where_orthanc_allows_it(orthanc, native, study):
    uploaded = upload(orthanc, study)
    upload(native, study)
    source = next(iter(uploaded.values()))
    ours = orthanc.post(f"/series/{source['ParentSeries']}/anonymize", json={}).json()
    theirs = native.post(f"/series/{source['ParentSeries']}/anonymize", json={}).json()
    assert native.json(f"/series/{theirs['ID']}").get("AnonymizedFrom") == source["ParentSeries"]
    series = orthanc.json(f"/series/{ours['ID']}")
    version = tuple(int(p) for p in orthanc.json("/system")["Version"].split(".")[:2])
    if version >= (1, 12):
        assert series.get("AnonymizedFrom") == source["ParentSeries"]
        study_id = series["ParentStudy"]
        assert orthanc.json(f"/studies/{study_id}").get("AnonymizedFrom") == source["ParentStudy"]
        assert orthanc.json(f"/patients/{ours['PatientID']}").get("AnonymizedFrom") == source["ParentPatient"]
        instance = orthanc.json(f"/series/{ours['ID']}/instances")[0]
        assert instance.get("AnonymizedFrom") in {a["ID"] for a in uploaded.values()}
    else:  # 1.10 refuses the metadata to plugins: the link is absent, never wrong
        assert "AnonymizedFrom" not in series


#: Orthanc keeps recently read files in memory (1.10+), and 1.13 does not log a read from there:
#: with no such cache, every read of a file is one line of Orthanc's verbose log.
UNCACHED = {"MaximumStorageCacheSize": 0}


def file_reads(server) -> Counter:
    """How many times Orthanc has read each DICOM file so far, by attachment, whoever asked (the
    plugin through the SDK or the REST API, native's anonymization): from Orthanc's own log, on
    a server started with UNCACHED."""
    return Counter(re.findall(r'Reading attachment "([0-9a-f-]+)" of "DICOM"', server.log()))


def read_instances(server, since: Counter, instance_ids) -> set[str]:
    """The instances among instance_ids whose file was read after `since`; every read is of one."""
    reads = file_reads(server) - since
    files = {server.json(f"/instances/{i}/attachments/dicom/info")["Uuid"]: i for i in instance_ids}
    assert set(reads) <= set(files), "a file read that is none of these instances'"
    return {files[uuid] for uuid in reads}


def test_a_rerun_reads_no_file_and_redoes_only_what_is_missing(server_factory, study):
    server = server_factory(config=UNCACHED)
    uploaded = upload(server, study)
    sources = [answer["ID"] for answer in uploaded.values()]
    study_id = next(iter(uploaded.values()))["ParentStudy"]
    first = server.post(f"/studies/{study_id}/anonymize", json={}).json()
    reads = file_reads(server)
    assert reads, "the witness sees the first run's reads"
    again = server.post(f"/studies/{study_id}/anonymize", json={}).json()
    assert again == first
    assert file_reads(server) == reads  # everything recognized from the index alone
    victim = server.json(f"/studies/{first['ID']}/instances")[0]["ID"]
    assert server.delete(f"/instances/{victim}").status_code == 200
    third = server.post(f"/studies/{study_id}/anonymize", json={}).json()
    assert third["ID"] == first["ID"]
    assert victim in {i["ID"] for i in server.json(f"/studies/{first['ID']}/instances")}
    read = read_instances(server, reads, sources + [victim])
    assert len(read - {victim}) == 1  # only the missing one's source was read again


def test_with_overwrite_instances_a_rerun_redoes_everything(server_factory):
    server = server_factory(config={"OverwriteInstances": True, **UNCACHED})
    study = two_frame_study(per_series=2, patient=new_patient())
    uploaded = upload(server, study)
    study_id = next(iter(uploaded.values()))["ParentStudy"]
    first = server.post(f"/studies/{study_id}/anonymize", json={}).json()
    reads = file_reads(server)
    again = server.post(f"/studies/{study_id}/anonymize", json={}).json()
    assert again["ID"] == first["ID"]
    sources = [answer["ID"] for answer in uploaded.values()]
    results = [i["ID"] for i in server.json(f"/studies/{first['ID']}/instances")]
    assert set(sources) <= read_instances(server, reads, sources + results)
