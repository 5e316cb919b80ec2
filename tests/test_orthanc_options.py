"""The plugin under the Orthanc options sites run, next to native under the same option.

One scenario (a two-FoR study with an RT structure set, anonymized series by series, then the
whole study in a job) runs under each option of the matrix, on a plugin server and a native one
configured alike: every call succeeds as native's does, the result is one coherent study that
the plugin's verification finds clean as Orthanc stores it (what Orthanc keeps, read back, not
what the plugin sent), a re-run changes nothing and other options still get their 409.
Options under which a call must fail (storage full, read-only) are tested after the matrix.
"""
from __future__ import annotations

import threading

import pytest

from anonymized import dataset, find_patient
from coherence import check_study, pseudonym
from conftest import new_patient, not_applicable, upload
from dicom_factory import to_bytes, two_frame_study
from test_check_revisions import version
from test_jobs import finished, wait_for

JPEG_LOSSLESS = "1.2.840.10008.1.2.4.70"
JPEG_LOSSY_12_BITS = "1.2.840.10008.1.2.4.51"
REJECT_SINCE = READ_ONLY_SINCE = (1, 12)
#: Every option of the matrix, by name: the scenario must succeed under each, as native does.
MATRIX = {
    "CheckRevisions": {"CheckRevisions": True},
    "IngestTranscoding": {"IngestTranscoding": JPEG_LOSSLESS},
    "StorageCompression": {"StorageCompression": True},
    # Native's series-by-series calls make a patient each: 6 with the source and the study's.
    "MaximumPatientCount (recycling, room left)": {"MaximumPatientCount": 10},
    "MaximumStorageSize (recycling, room left)": {"MaximumStorageSize": 100},
    "SaveJobs false": {"SaveJobs": False},
    "JobsHistorySize 1": {"JobsHistorySize": 1},
    "ConcurrentJobs 1": {"ConcurrentJobs": 1},
    "UserMetadata on the plugin's index": {"UserMetadata": {"AnonymizationOptions": 9732}},
    "DeidentifyLogs": {"DeidentifyLogs": True},
}


@pytest.fixture
def throwaway(server_factory):
    """server_factory's servers, killed at the end rather than stopped: nothing of theirs is
    kept, and Orthanc takes seconds to stop cleanly."""
    made = []

    def make(**kwargs):
        made.append(server_factory(**kwargs))
        return made[-1]
    yield make
    for server in made:
        server.kill()


def _anonymize_series_then_study(server, study) -> tuple[list[int], dict | None, str]:
    """Series by series (synchronous), then the study in a job: the statuses, the job's
    Content when it succeeded, and the source study's ID."""
    uploaded = upload(server, study)
    source_study = next(iter(uploaded.values()))["ParentStudy"]
    statuses = [server.post(f"/series/{series}/anonymize", json={}).status_code
                for series in sorted({answer["ParentSeries"] for answer in uploaded.values()})]
    answer = server.post(f"/studies/{source_study}/anonymize", json={"Asynchronous": True})
    statuses.append(answer.status_code)
    content = None
    if answer.status_code == 200:
        job = wait_for(server, answer.json()["Path"], finished)
        statuses.append(200 if job["State"] == "Success" else job["ErrorCode"])
        content = job["Content"] if job["State"] == "Success" else None
    return statuses, content, source_study


def _check_as_stored(server, study, content: dict, source_study: str) -> None:
    """The result as Orthanc keeps it: one coherent study, clean for the plugin's verification."""
    check_study(server, study)
    report = server.post("/tools/verify-anonymization", json={"Source": source_study, "Anonymized": content["ID"]})
    assert report.status_code == 200, report.text
    assert report.json()["Clean"], report.json()
    before = sorted(server.json("/instances"))
    again = server.post(f"/studies/{source_study}/anonymize", json={})  # the re-run shortcut
    assert again.status_code == 200 and again.json()["ID"] == content["ID"]
    assert sorted(server.json("/instances")) == before
    other = server.post(f"/studies/{source_study}/anonymize", json={"Keep": ["StudyDescription"]})
    assert other.status_code == 409, other.text  # the options mark holds
    assert sorted(server.json("/instances")) == before


@pytest.mark.parametrize("option", list(MATRIX), ids=list(MATRIX))
def test_the_scenario_under_each_option_as_native(option, throwaway):
    settings = MATRIX[option]
    plugin = throwaway(config=settings)
    native = throwaway(plugin=False, config=settings)
    study = two_frame_study(per_series=2, patient=new_patient())
    native_statuses, native_content, _ = _anonymize_series_then_study(native, study)
    statuses, content, source_study = _anonymize_series_then_study(plugin, study)
    assert statuses == native_statuses == [200] * 6
    assert native_content is not None and content is not None
    _check_as_stored(plugin, study, content, source_study)
    if "IngestTranscoding" in settings:  # what is stored is what Orthanc transcoded, as native's
        for server, result in ((plugin, content["ID"]), (native, native_content["ID"])):
            for instance in server.json(f"/studies/{result}/instances"):
                if "PixelData" in dataset(server, instance["ID"]):
                    syntax = server.get(f"/instances/{instance['ID']}/metadata/TransferSyntax").text
                    assert syntax == settings["IngestTranscoding"]
    if "DeidentifyLogs" in settings:  # the plugin adds no identifier to what Orthanc logs
        source_pid = study.study.patient.patient_id
        assert (source_pid in plugin.log()) == (source_pid in native.log())


def _sources_and_call(server, study, later: dict | None) -> tuple[set[str], int, set[str]]:
    """Store the study (then restart with `later` settings, if any), anonymize its first series:
    the source instances, the call's status, and the instances left afterwards."""
    uploaded = upload(server, study)
    if later:
        server.stop()
        server.configure(later)
        server.start()
    sources = set(server.json("/instances"))
    series = uploaded[study.series[0][0].SOPInstanceUID]["ParentSeries"]
    status = server.post(f"/series/{series}/anonymize", json={}).status_code
    return sources, status, set(server.json("/instances"))


#: Options under which anonymizing fails: (settings from the start, settings after the upload,
#: the first version that has the option, the status the plugin gives where native's differs).
FAILING = {
    # Storing the first result recycles the source patient (the oldest): the call cannot go on.
    # The plugin answers 404 (the source is gone), as native 1.13; native 1.10 answers 500.
    "MaximumPatientCount 1, recycling the source": ({"MaximumPatientCount": 1}, None, (1, 10), 404),
    # The source (6 images of 153 KB and a structure set) fits in 1 MB; with 2 results it does not.
    "MaximumStorageSize 1 MB, recycling the source": ({"MaximumStorageSize": 1}, None, (1, 10), 404),
    "MaximumStorageMode Reject": ({"MaximumPatientCount": 1, "MaximumStorageMode": "Reject"}, None,
                                  REJECT_SINCE, None),
    "ReadOnly": ({}, {"ReadOnly": True}, READ_ONLY_SINCE, None),
}


@pytest.mark.parametrize("option", list(FAILING), ids=list(FAILING))
def test_a_call_that_cannot_be_stored_fails_cleanly_with_natives_status(option, throwaway):
    settings, later, since, own_status = FAILING[option]
    plugin = throwaway(config=settings)
    if version(plugin) < since:
        not_applicable(f"{option} needs Orthanc {'.'.join(map(str, since))}")
    native = throwaway(plugin=False, config=settings)
    study = two_frame_study(per_series=2, size=280, patient=new_patient())
    native_sources, native_status, native_left = _sources_and_call(native, study, later)
    sources, status, left = _sources_and_call(plugin, study, later)
    assert native_status != 200 and status == (own_status or native_status)
    recycled = sources - left
    # A result stays only where Orthanc recycled its source: then it is the only copy left.
    assert len(left - sources) <= len(recycled), "the plugin left a partial result beside its sources"
    assert len(recycled) == len(native_sources - native_left)  # only what Orthanc itself recycled


def test_lossy_ingest_transcoding(throwaway):
    """A lossy IngestTranscoding gives every stored instance a new SOPInstanceUID. Sources stored
    under it are anonymized consistently (the re-run and the options mark hold); a result Orthanc
    would transcode as it stores it fails cleanly, with 500 (native answers 200 with SOPInstanceUIDs that no
    pseudonym, reference or re-run can follow, or itself fails)."""
    lossy = {"IngestTranscoding": JPEG_LOSSY_12_BITS}
    server = throwaway(config=lossy)
    study = two_frame_study(per_series=2, patient=new_patient())
    statuses, content, source_study = _anonymize_series_then_study(server, study)
    assert statuses == [200] * 6
    report = server.post("/tools/verify-anonymization", json={"Source": source_study, "Anonymized": content["ID"]})
    assert report.status_code == 200 and report.json()["Clean"], report.text
    before = sorted(server.json("/instances"))
    assert server.post(f"/studies/{source_study}/anonymize", json={}).json()["ID"] == content["ID"]
    assert server.post(f"/studies/{source_study}/anonymize", json={"Keep": ["StudyDescription"]}).status_code == 409
    assert sorted(server.json("/instances")) == before

    late = throwaway()  # sources stored uncompressed, then the site turns lossy ingest on
    native_late = throwaway(plugin=False)
    outcomes = [_sources_and_call(each, study, lossy) for each in (late, native_late)]
    (sources, status, left), (native_sources, native_status, native_left) = outcomes
    assert status == 500 and left == sources  # refused, nothing left, the sources intact
    print(f"\nlossy ingest transcoding of results: native answered {native_status}, "
          f"{len(native_left - native_sources)} instance(s) of it left")


def _deleted_after(server, patient: str, seq: int) -> bool:
    """Whether Orthanc's change log shows the patient deleted after change `seq`."""
    changes = server.get("/changes", params={"since": seq, "limit": 10000}).json()["Changes"]
    return any(c["ChangeType"] == "Deleted" and c["ID"] == patient for c in changes)


def test_recycling_in_the_middle_of_calls_never_answers_success_for_what_is_gone(throwaway):
    """MaximumPatientCount with other patients arriving while a study is anonymized: Orthanc may
    recycle the source or the result in the middle of the call. Whatever it removed, a call that
    answers 200 has its whole result stored; one that fails leaves results only for sources that
    Orthanc recycled meanwhile (then the only copy of them)."""
    server = throwaway(config={"MaximumPatientCount": 3})
    stop = threading.Event()

    def arrivals() -> None:
        while not stop.is_set():
            server.upload(to_bytes(two_frame_study(per_series=1, patient=new_patient()).instances[0]))

    outcomes = []
    for _ in range(3):
        study = two_frame_study(per_series=8, patient=new_patient())
        source_study = next(iter(upload(server, study).values()))["ParentStudy"]
        stop.clear()
        uploader = threading.Thread(target=arrivals)
        uploader.start()
        try:
            answer = server.post(f"/studies/{source_study}/anonymize", json={})
            answered_at = server.json("/changes?last")["Last"]
        finally:
            stop.set()
            uploader.join()
        outcomes.append(answer.status_code)
        patient = pseudonym(server, "patient", study.study.patient.patient_id)
        stored = [i for p in find_patient(server, patient) for i in server.json(f"/patients/{p}/instances")]
        if answer.status_code != 200:  # results stay only for sources recycled meanwhile (the only copy)
            listed = server.get(f"/studies/{source_study}/instances")
            gone = len(study.instances) - (len(listed.json()) if listed.status_code == 200 else 0)
            assert len(stored) <= gone, f"{answer.status_code}: {answer.text[:200]}"
        elif len(stored) != len(study.instances):  # then an arrival after the answer recycled it
            assert _deleted_after(server, answer.json()["PatientID"], answered_at)
    print(f"\nrecycling during calls: statuses {outcomes}")
