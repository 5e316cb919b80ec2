"""Check that everything anonymized from one two-frame study forms one coherent result, and run
anonymization calls at the same time. Shared by the concurrency and the two-node tests."""
from __future__ import annotations

import threading
import time
from collections import Counter
from dataclasses import dataclass, field
from typing import Callable

from anonymized import dataset, find_patient
from dicom_factory import TwoFrameStudy
from orthanc_server import OrthancServer

RT_SERIES_NUMBER = 99


def pseudonym(server: OrthancServer, level: str, source_patient_id: str, uid: str | None = None) -> str:
    """What the plugin of this server says /anonymize gives a UID (or, without uid, the PatientID)."""
    params = {"level": level, "patient-id": source_patient_id}
    if uid is not None:
        params["uid"] = uid
    answer = server.get("/tools/generate-uid", params=params)
    assert answer.status_code == 200, answer.text
    return answer.text.strip()


def check_study(server: OrthancServer, study: TwoFrameStudy) -> dict:
    """Assert that `server` holds exactly one coherent anonymized copy of `study`.

    One pseudonymous patient holding one study, the four series with their exact instance
    counts and no duplicate, every UID the pseudonym the plugin announces for its source, the
    two series that shared a frame of reference sharing one new one, the third its own, and the
    RT structure set pointing at the anonymized images. Answers a summary of what was found,
    to compare what several nodes see.
    """
    source_pid = study.study.patient.patient_id
    anonymized_pid = pseudonym(server, "patient", source_pid)
    patients = find_patient(server, anonymized_pid)
    assert len(patients) == 1, f"{len(patients)} anonymized patients"
    patient = patients[0]
    studies = server.json(f"/patients/{patient}/studies")
    assert len(studies) == 1, f"{len(studies)} anonymized studies"
    series = server.json(f"/studies/{studies[0]['ID']}/series")
    assert len(series) == 1 + len(study.series), f"{len(series)} anonymized series"
    instance_ids = [i["ID"] for i in server.json(f"/patients/{patient}/instances")]
    assert len(instance_ids) == len(set(instance_ids)) == len(study.instances), \
        f"{len(instance_ids)} anonymized instances for {len(study.instances)} sources"
    statistics = server.json(f"/patients/{patient}/statistics")
    assert int(statistics["CountInstances"]) == len(study.instances)

    datasets = {i: dataset(server, i) for i in instance_ids}
    sop_uids = Counter(str(ds.SOPInstanceUID) for ds in datasets.values())
    assert all(n == 1 for n in sop_uids.values()), "an SOPInstanceUID is stored twice"
    expected_sops = {pseudonym(server, "instance", source_pid, str(ds.SOPInstanceUID))
                     for ds in study.instances}
    assert set(sop_uids) == expected_sops
    assert {str(ds.PatientID) for ds in datasets.values()} == {anonymized_pid}
    study_uid = pseudonym(server, "study", source_pid, study.study.study_uid)
    assert {str(ds.StudyInstanceUID) for ds in datasets.values()} == {study_uid}

    by_number: dict[int, list] = {}
    for ds in datasets.values():
        by_number.setdefault(int(ds.SeriesNumber), []).append(ds)
    sources_by_number = {int(s[0].SeriesNumber): s for s in study.series}
    sources_by_number[RT_SERIES_NUMBER] = [study.structure_set]
    assert {n: len(d) for n, d in by_number.items()} == {n: len(s) for n, s in sources_by_number.items()}
    series_uid = {}
    for number, members in by_number.items():
        uids = {str(ds.SeriesInstanceUID) for ds in members}
        assert uids == {pseudonym(server, "series", source_pid, str(sources_by_number[number][0].SeriesInstanceUID))}
        series_uid[number] = uids.pop()

    frames = {n: {str(ds.FrameOfReferenceUID) for ds in by_number[n]} for n in (1, 2, 3)}
    assert all(len(f) == 1 for f in frames.values()), f"a series has several frames of reference: {frames}"
    assert frames[1] == frames[2], "the series that shared a frame of reference no longer do"
    assert frames[1] != frames[3]
    source_frames = {str(s[0].FrameOfReferenceUID) for s in study.series}
    assert not (frames[1] | frames[3]) & source_frames
    frame = next(iter(frames[1]))
    assert frame == pseudonym(server, "frame-of-reference", source_pid, str(study.series[0][0].FrameOfReferenceUID))

    rt = by_number[RT_SERIES_NUMBER][0]
    reference = rt.ReferencedFrameOfReferenceSequence[0]
    assert str(reference.FrameOfReferenceUID) == frame
    assert str(rt.StructureSetROISequence[0].ReferencedFrameOfReferenceUID) == frame
    referenced_study = reference.RTReferencedStudySequence[0]
    assert str(referenced_study.ReferencedSOPInstanceUID) == study_uid
    referenced_series = referenced_study.RTReferencedSeriesSequence[0]
    assert str(referenced_series.SeriesInstanceUID) == series_uid[1]
    contour_refs = {str(item.ReferencedSOPInstanceUID) for item in referenced_series.ContourImageSequence}
    assert contour_refs == {str(ds.SOPInstanceUID) for ds in by_number[1]}

    return {
        "patient": patient,
        "study": studies[0]["ID"],
        "series": sorted(s["ID"] for s in series),
        "instances": sorted((str(datasets[i].SOPInstanceUID), i, str(datasets[i].SeriesInstanceUID),
                             str(datasets[i].get("FrameOfReferenceUID", ""))) for i in instance_ids),
    }


@dataclass
class Call:
    """One HTTP call run by `run_together`, with what it answered and when."""
    name: str
    run: Callable[[], list]  # the responses of the requests this call made
    responses: list = field(default_factory=list)
    error: BaseException | None = None
    started: float = 0.0
    ended: float = 0.0

    @property
    def statuses(self) -> list[int]:
        return [r.status_code for r in self.responses]


def run_together(calls: list[Call], timeout: float = 120) -> float:
    """Start every call at the same moment, one thread each; wait for all. Answers the seconds taken."""
    barrier = threading.Barrier(len(calls))

    def worker(call: Call) -> None:
        try:
            barrier.wait(timeout=30)
            call.started = time.monotonic()
            call.responses = call.run()
        except BaseException as error:  # reported by the test, never lost in the thread
            call.error = error
        finally:
            call.ended = time.monotonic()

    threads = [threading.Thread(target=worker, args=(call,), name=call.name) for call in calls]
    begin = time.monotonic()
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(timeout)
    assert not any(thread.is_alive() for thread in threads), "a call did not finish in time"
    return time.monotonic() - begin


def failed_calls(calls: list[Call]) -> list[str]:
    """A line for each call that raised or got an answer other than 200."""
    failures = []
    for call in calls:
        if call.error is not None:
            failures.append(f"{call.name}: {call.error!r}")
        elif any(status != 200 for status in call.statuses):
            failures.append(f"{call.name}: {call.statuses} {call.responses[-1].text[:300]}")
    return failures


def most_in_flight(calls: list[Call]) -> int:
    """The largest number of calls that were running at one moment (seen from the client)."""
    events = sorted([(c.started, 1) for c in calls] + [(c.ended, -1) for c in calls])
    current = best = 0
    for _, step in events:
        current += step
        best = max(best, current)
    return best
