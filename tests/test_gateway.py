"""The anonymizing gateway (OnArrival), on a real Orthanc receiving over DICOM, with a second real
Orthanc as its destination: one consistent study from series sent separately, a destination down
for a while, a crash in the middle of a stream, and the sources kept until their results are
stored, checked and acknowledged. TCP_NODELAY=1 is in the environment of every Orthanc and of
storescu (DCMTK stalls on delayed ACKs on loopback otherwise)."""
from __future__ import annotations

import os
import subprocess
import threading
import time
from typing import Callable

import pytest
from pynetdicom import AE, StoragePresentationContexts

from anonymized import AnonymizedSet, find_patient
from conftest import new_patient, not_applicable
from dicom_factory import TwoFrameStudy, to_bytes, two_frame_study

ROUTE = "/consistent-anonymization/gateway"
#: Every wait is on a condition; this is only how long before a test gives up.
DEADLINE = 240


@pytest.fixture(autouse=True)
def no_delay(monkeypatch):
    """Both sides of every DICOM connection (the Orthancs started by the test, storescu)."""
    monkeypatch.setenv("TCP_NODELAY", "1")


def wait_until(condition: Callable[[], object], what: str, deadline: float = DEADLINE) -> object:
    end = time.monotonic() + deadline
    while time.monotonic() < end:
        value = condition()
        if value:
            return value
        time.sleep(0.3)
    raise AssertionError(f"not reached in {deadline} s: {what}")


def storescu(port: int, datasets, folder, calling_aet: str = "MODALITY") -> None:
    """Send as a modality does: DCMTK's storescu, one association."""
    files = []
    for index, ds in enumerate(datasets):
        path = folder / f"{calling_aet}-{index:04d}-{ds.SOPInstanceUID}.dcm"
        path.write_bytes(to_bytes(ds))
        files.append(str(path))
    done = subprocess.run(["storescu", "-aet", calling_aet, "-aec", "ORTHANC", "127.0.0.1", str(port), *files],
                          capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stderr


def gateway_config(on_arrival: dict, **orthanc: object) -> dict:
    return {"ConsistentAnonymization": {"OnArrival": on_arrival}, **orthanc}


def as_modality(destination) -> dict:
    return {"DicomModalities": {"central": ["ORTHANC", "127.0.0.1", destination.dicom_port]}}


def listing(server) -> dict:
    return server.json(ROUTE)


def pseudonymous_patient(gateway, study: TwoFrameStudy) -> str:
    return gateway.get("/tools/generate-uid", params={"level": "patient",
                                                       "patient-id": study.study.patient.patient_id}).text


def instances_of(server, patient_id: str) -> list[str]:
    return [i["ID"] for p in find_patient(server, patient_id) for i in server.json(f"/patients/{p}/instances")]


def assert_one_consistent_study(server, patient: str, study: TwoFrameStudy) -> None:
    """All of the study under one pseudonymous patient and study: frames of reference shared as in
    the source, the RTSTRUCT's references resolved."""
    result = AnonymizedSet.of_patient(server, find_patient(server, patient)[0])
    assert len(result.instances) == len(study.instances)
    assert len(result.studies) == 1
    assert result.frame_of_reference_of(1) == result.frame_of_reference_of(2) != result.frame_of_reference_of(3)
    rt = next(ds for ds in result.instances.values() if ds.Modality == "RTSTRUCT")
    images = {str(ds.SOPInstanceUID) for ds in result.by_series_number()[1]}
    assert {str(c.ContourImageSequence[0].ReferencedSOPInstanceUID)
            for c in rt.ROIContourSequence[0].ContourSequence} == images


def audited_sources(gateway) -> list[str]:
    """The sources the gateway's successful calls name in the audit log, one entry a call (each
    call over the instances read together from Orthanc's changes)."""
    log = gateway.json("/tools/anonymization-log?limit=1000")["Entries"]
    return [source for entry in log if entry["outcome"] == "Success" for source in entry["sources"]]


def delivered(destination, gateway, patient: str, study: TwoFrameStudy, count: int) -> bool:
    """`count` instances at the destination, no source and nothing pending at the gateway."""
    state = listing(gateway)
    return (len(instances_of(destination, patient)) == count and state["PendingCount"] == 0
            and state["FailedCount"] == 0 and not instances_of(gateway, study.study.patient.patient_id))


def test_two_series_sent_apart_reach_the_destination_as_one_consistent_study(server_factory, tmp_path):
    central = server_factory(plugin=False)
    gateway = server_factory(config=gateway_config({"Destination": "central"}, **as_modality(central)))
    study = two_frame_study(per_series=3, patient=new_patient())
    patient = pseudonymous_patient(gateway, study)
    first, rest = study.series[0], [ds for ds in study.instances if ds not in study.series[0]]

    storescu(gateway.dicom_port, first, tmp_path)
    wait_until(lambda: delivered(central, gateway, patient, study, len(first)), "the first series delivered")
    storescu(gateway.dicom_port, rest, tmp_path)
    wait_until(lambda: delivered(central, gateway, patient, study, len(study.instances)), "the rest delivered")

    assert_one_consistent_study(central, patient, study)
    assert not find_patient(central, study.study.patient.patient_id)  # nothing of the source went out
    assert sorted(instances_of(gateway, patient)) == sorted(instances_of(central, patient))
    assert not gateway.errors_logged()


def test_a_destination_down_for_a_while_gets_everything_once_up_and_nothing_is_deleted_meanwhile(
        server_factory, tmp_path):
    central = server_factory(plugin=False, start=False)
    gateway = server_factory(config=gateway_config(
        {"Destination": "central"}, OrthancPeers={"central": {"Url": central.url}}))
    study = two_frame_study(per_series=2, patient=new_patient())
    patient = pseudonymous_patient(gateway, study)
    storescu(gateway.dicom_port, study.instances, tmp_path)

    failed = wait_until(lambda: (state := listing(gateway))["FailedCount"] == len(study.instances) and state,
                        "every source listed as failed while the destination is down")
    assert {entry["Step"] for entry in failed["Failed"]} == {"Deliver"}
    assert len(instances_of(gateway, study.study.patient.patient_id)) == len(study.instances)  # sources kept
    assert len(instances_of(gateway, patient)) == len(study.instances)  # results stored

    central.start()
    wait_until(lambda: delivered(central, gateway, patient, study, len(study.instances)),
               "everything delivered once the destination is up (retried with backoff)")
    assert_one_consistent_study(central, patient, study)
    audited = audited_sources(gateway)  # a delivery is retried with the stored result, not anonymized again
    assert len(audited) == len(set(audited)) == len(study.instances)


def send_until_killed(port: int, datasets, acknowledged: list[str], started: threading.Event,
                      resume: threading.Event) -> None:
    """One association, one C-STORE each, a pause after the first (the receiver is killed then,
    the association open); the SOP Instance UIDs Orthanc acknowledged."""
    sender = AE(ae_title="MODALITY")
    sender.requested_contexts = StoragePresentationContexts[:120]
    association = sender.associate("127.0.0.1", port, ae_title="ORTHANC")
    try:
        for index, ds in enumerate(datasets):
            if index == 1:
                started.set()
                resume.wait(DEADLINE)
            try:
                status = association.send_c_store(ds)
            except RuntimeError:  # the association was aborted: the receiver is gone
                return
            if not status or status.Status != 0x0000:
                return
            acknowledged.append(str(ds.SOPInstanceUID))
    finally:
        started.set()
        association.release()


def test_after_a_crash_mid_stream_every_acknowledged_source_ends_delivered(server_factory, tmp_path):
    central = server_factory(plugin=False)
    gateway = server_factory(config=gateway_config({"Destination": "central"}, **as_modality(central)))
    study = two_frame_study(per_series=12, patient=new_patient())
    half = len(study.instances) // 2
    storescu(gateway.dicom_port, study.instances[:half], tmp_path)
    acknowledged = [str(ds.SOPInstanceUID) for ds in study.instances[:half]]
    started, resume = threading.Event(), threading.Event()
    sending = threading.Thread(target=send_until_killed,
                               args=(gateway.dicom_port, study.instances[half:], acknowledged, started, resume))
    sending.start()
    assert started.wait(DEADLINE)
    wait_until(lambda: gateway.json("/statistics")["CountInstances"] > half + 1, "the first results stored")
    gateway.kill()  # SIGKILL, an association open: arrivals, anonymizations and deliveries cut short
    resume.set()
    sending.join(DEADLINE)
    assert half <= len(acknowledged) < len(study.instances)

    gateway.start()
    patient = pseudonymous_patient(gateway, study)
    expected = {gateway.get("/tools/generate-uid", params={"level": "instance", "uid": uid,
                                                           "patient-id": study.study.patient.patient_id}).text
                for uid in acknowledged}

    def at_central() -> set[str]:
        return {central.json(f"/instances/{i}")["MainDicomTags"]["SOPInstanceUID"]
                for i in instances_of(central, patient)}

    wait_until(lambda: expected <= at_central() and listing(gateway)["PendingCount"] == 0
               and not instances_of(gateway, study.study.patient.patient_id),
               "every acknowledged source anonymized and delivered, no source left")
    assert listing(gateway)["FailedCount"] == 0
    storescu(gateway.dicom_port, study.instances[half:], tmp_path)  # the modality sends the rest again
    wait_until(lambda: delivered(central, gateway, patient, study, len(study.instances)), "the rest delivered")
    assert_one_consistent_study(central, patient, study)


def test_without_a_destination_sources_go_once_stored_and_checked_and_what_fails_stays_listed(
        server_factory, tmp_path):
    gateway = server_factory(config=gateway_config({"CallingAets": ["MODALITY"],
                                                    "Request": {"KeepPrivateTags": True}}))
    study = two_frame_study(per_series=2, patient=new_patient())
    leaky = study.series[1][0]  # a source UID in private binary data: the check refuses its result
    leaky.private_block(0x0011, "SYNTHETIC VENDOR", create=True).add_new(
        0x10, "OB", f"see {leaky.FrameOfReferenceUID}".encode())
    other = two_frame_study(per_series=1, patient=new_patient())
    patient = pseudonymous_patient(gateway, study)

    storescu(gateway.dicom_port, study.instances, tmp_path)
    storescu(gateway.dicom_port, other.instances, tmp_path, calling_aet="ELSEWHERE")  # not a listed sender

    failed = wait_until(lambda: (state := listing(gateway))["FailedCount"] == 1
                        and len(instances_of(gateway, study.study.patient.patient_id)) == 1 and state,
                        "every source but the leaky one anonymized and deleted, the leaky one listed")
    [entry] = failed["Failed"]
    assert entry["Step"] == "Anonymize" and entry["Attempts"] >= 1 and entry["Reason"]
    assert instances_of(gateway, study.study.patient.patient_id) == [entry["ID"]]  # kept: its result failed
    assert len(instances_of(gateway, patient)) == len(study.instances) - 1
    assert len(instances_of(gateway, other.study.patient.patient_id)) == len(other.instances)  # left alone
    log = gateway.json("/tools/anonymization-log?limit=1000")["Entries"]
    assert {(e["route"], e["outcome"]) for e in log} == {("OnArrival", "Success"), ("OnArrival", "Failed")}

    assert gateway.post(ROUTE + "/retry", json={"Resources": entry["ID"]}).status_code == 400
    assert gateway.post(ROUTE + "/retry", json={"Resources": [entry["ID"]]}).json() == {"Retried": 1}
    wait_until(lambda: (now := listing(gateway)["Failed"]) and now[0]["Attempts"] > entry["Attempts"], "the retry made")
    assert gateway.post(ROUTE + "/release").json() == {"Released": 1}
    assert listing(gateway)["FailedCount"] == 0
    assert '"Released"' in gateway.get(f"/instances/{entry['ID']}/metadata/9733").text  # stays, marked

    process = gateway.process
    gateway.stop()
    assert process.returncode == 0  # a clean stop with the gateway's callback and worker


def test_with_keep_source_the_sources_stay_marked_done_and_a_restart_does_them_no_more(server_factory, tmp_path):
    gateway = server_factory(config=gateway_config({"KeepSource": True}))
    study = two_frame_study(per_series=1, patient=new_patient())
    patient = pseudonymous_patient(gateway, study)
    storescu(gateway.dicom_port, study.instances, tmp_path)
    sources = wait_until(lambda: len(instances_of(gateway, patient)) == len(study.instances)
                         and instances_of(gateway, study.study.patient.patient_id), "every result stored")
    wait_until(lambda: all('"Done"' in gateway.get(f"/instances/{s}/metadata/9733").text for s in sources),
               "every source marked done")
    audited = audited_sources(gateway)
    if gateway.version() >= (1, 12):  # the sources stay: each result names its own, as native's would
        linked = {gateway.get(f"/instances/{result}/metadata/AnonymizedFrom").text
                  for result in instances_of(gateway, patient)}
        assert linked == set(sources)
    gateway.stop()
    gateway.start()
    later = two_frame_study(per_series=1, patient=new_patient())  # read after the earlier ones, in order
    storescu(gateway.dicom_port, later.series[0], tmp_path)
    wait_until(lambda: len(instances_of(gateway, pseudonymous_patient(gateway, later))) == len(later.series[0]),
               "the later arrival anonymized")
    # its result is stored before its call ends (the audit entry, then the mark): wait for the mark
    wait_until(lambda: all('"Done"' in gateway.get(f"/instances/{s}/metadata/9733").text
                           for s in instances_of(gateway, later.study.patient.patient_id)),
               "the later arrival's source marked done")
    assert len(audited_sources(gateway)) == len(audited) + len(later.series[0])
    assert sorted(instances_of(gateway, study.study.patient.patient_id)) == sorted(sources)
    assert listing(gateway)["PendingCount"] == 0


def test_an_unknown_destination_stops_orthanc_at_start(server_factory):
    with pytest.raises(RuntimeError, match=r"OnArrival\.Destination 'central' is neither in DicomModalities"):
        server_factory(config=gateway_config({"Destination": "central"}))


def test_calls_and_jobs_run_beside_the_gateway_and_uploads_are_left_alone(server_factory, tmp_path):
    """orthanc-python 4.0 holds Python's lock in every Orthanc call: the change callback and the
    worker must never wait on a call that waits on them (native's synchronous jobs included)."""
    gateway = server_factory(config=gateway_config({}))
    uploaded_study = two_frame_study(per_series=2, patient=new_patient())
    uploaded = [gateway.upload(to_bytes(ds)) for ds in uploaded_study.instances]
    arriving = two_frame_study(per_series=4, patient=new_patient())
    sending = threading.Thread(target=storescu, args=(gateway.dicom_port, arriving.instances, tmp_path))
    sending.start()
    study = uploaded[0]["ParentStudy"]
    assert gateway.post(f"/studies/{study}/anonymize", json={}).status_code == 200
    job = gateway.post(f"/studies/{study}/anonymize", json={"Asynchronous": True}).json()["ID"]
    assert gateway.post(f"/studies/{study}/modify", json={"Replace": {"StudyDescription": "native"}}).status_code == 200
    wait_until(lambda: gateway.json(f"/jobs/{job}")["State"] == "Success", "the job done")
    sending.join(120)
    patient = pseudonymous_patient(gateway, arriving)
    wait_until(lambda: len(instances_of(gateway, patient)) == len(arriving.instances)
               and not instances_of(gateway, arriving.study.patient.patient_id), "the arrivals anonymized")
    # the uploads (and native's modified copies) are not the gateway's: nothing of them was deleted
    assert len(instances_of(gateway, uploaded_study.study.patient.patient_id)) == 2 * len(uploaded)


def test_results_awaiting_their_study_stability_are_found_again_and_sent_after_a_restart(server_factory, tmp_path):
    central = server_factory(plugin=False)
    gateway = server_factory(config=gateway_config({"Destination": "central"}, StableAge=3600, **as_modality(central)))
    study = two_frame_study(per_series=1, patient=new_patient())
    storescu(gateway.dicom_port, study.instances, tmp_path)
    wait_until(lambda: listing(gateway)["PendingCount"] == len(study.instances), "every result awaiting stability")
    sources = instances_of(gateway, study.study.patient.patient_id)
    assert all('"Stored"' in gateway.get(f"/instances/{s}/metadata/9733").text for s in sources)
    gateway.stop()  # the stability Orthanc was waiting for is forgotten; the marks stay
    gateway.configure({"StableAge": 1})
    gateway.start()
    patient = pseudonymous_patient(gateway, study)
    wait_until(lambda: delivered(central, gateway, patient, study, len(study.instances)),
               "the marked sources found again, their results sent, the sources deleted")
    assert len(audited_sources(gateway)) == len(study.instances)


def test_instances_that_arrive_together_are_anonymized_in_one_call_and_each_source_audited_once(
        server_factory, tmp_path):
    """The worker reads Orthanc's changes a page at a time: the arrivals it finds together are one
    call of the engine (its per-call work and its audit entry done once), not one call each. The
    gateway anonymizes slower than storescu sends, so 40 instances in one association are met in
    fewer than 40 reads."""
    gateway = server_factory(config=gateway_config({}))
    study = two_frame_study(per_series=10, patient=new_patient())
    storescu(gateway.dicom_port, study.instances, tmp_path)
    patient = pseudonymous_patient(gateway, study)
    wait_until(lambda: len(instances_of(gateway, patient)) == len(study.instances)
               and not instances_of(gateway, study.study.patient.patient_id), "every source anonymized and deleted")
    assert_one_consistent_study(gateway, patient, study)
    audited = audited_sources(gateway)
    assert len(audited) == len(set(audited)) == len(study.instances)
    entries = gateway.json("/tools/anonymization-log?limit=1000")["Entries"]
    assert len(entries) < len(study.instances) and max(entry["source_count"] for entry in entries) > 1
    assert sum(entry["instances"] for entry in entries) == len(study.instances)
    # the sources are gone: no result names one in "AnonymizedFrom" (native's Lua path writes none either)
    assert all(gateway.get(f"/instances/{result}/metadata/AnonymizedFrom").status_code == 404
               for result in instances_of(gateway, patient))


def test_keep_labels_gives_the_results_the_labels_of_the_study_they_arrived_into(server_factory, tmp_path):
    """An arrival into a study Orthanc holds already, labelled: under KeepLabels its result's
    study and patient get the labels, as native's KeepLabels gives them, though the gateway
    deletes the source and writes no AnonymizedFrom (the call knows its own sources)."""
    gateway = server_factory(config=gateway_config({"Request": {"KeepLabels": True}}))
    if gateway.version() < (1, 12, 3):
        not_applicable("labels came with Orthanc 1.12.3")
    study = two_frame_study(per_series=2, patient=new_patient())
    first, *later = study.series
    uploaded = [gateway.upload(to_bytes(ds)) for ds in first]  # a REST upload: not the gateway's
    source_study, source_patient = uploaded[0]["ParentStudy"], uploaded[0]["ParentPatient"]
    assert gateway.request("PUT", f"/studies/{source_study}/labels/TRIAL-A").status_code == 200
    assert gateway.request("PUT", f"/patients/{source_patient}/labels/COHORT-7").status_code == 200
    storescu(gateway.dicom_port, [ds for series in later for ds in series], tmp_path)
    patient = pseudonymous_patient(gateway, study)
    wait_until(lambda: len(instances_of(gateway, patient)) == sum(len(series) for series in later)
               and len(instances_of(gateway, study.study.patient.patient_id)) == len(first),
               "the arrivals anonymized and their sources deleted (the call ended, its labels copied)")
    [result_patient] = find_patient(gateway, patient)
    [result_study] = gateway.json(f"/patients/{result_patient}")["Studies"]
    assert gateway.json(f"/studies/{result_study}/labels") == ["TRIAL-A"]
    assert gateway.json(f"/patients/{result_patient}/labels") == ["COHORT-7"]
