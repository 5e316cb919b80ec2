"""Concurrent anonymizations of one study on one Orthanc give one coherent result.

Series-level calls (some on the same series) and instance-level calls (anonymize, then store
the answered file) overlapping the same instances, all sent at once to a fresh Orthanc whose
key does not exist yet, so they also race to generate it.
"""
from __future__ import annotations

from anonymized import parse
from coherence import Call, check_study, failed_calls, most_in_flight, pseudonym, run_together
from conftest import new_patient, upload
from dicom_factory import two_frame_study


def _series_call(server, series_id: str, label: str) -> Call:
    return Call(f"series {label}", lambda: [server.post(f"/series/{series_id}/anonymize", json={})])


def _instance_call(server, instance_id: str, label: str) -> Call:
    """Anonymize one instance, then store the file it answered (as a script would)."""
    def run() -> list:
        anonymized = server.post(f"/instances/{instance_id}/anonymize", json={})
        if anonymized.status_code != 200:
            return [anonymized]
        return [anonymized, server.post("/instances", data=anonymized.content)]
    return Call(f"instance {label}", run)


def test_eight_concurrent_series_and_instance_anonymizations_make_one_study(server_factory, capsys):
    server = server_factory()  # fresh: no key yet, the first calls race to generate it
    study = two_frame_study(per_series=3, patient=new_patient())
    uploaded = upload(server, study)
    series_of = {int(s[0].SeriesNumber): uploaded[s[0].SOPInstanceUID]["ParentSeries"] for s in study.series}
    rt_instance = uploaded[study.structure_set.SOPInstanceUID]
    first_of_1 = uploaded[study.series[0][0].SOPInstanceUID]["ID"]
    second_of_3 = uploaded[study.series[2][1].SOPInstanceUID]["ID"]

    def round_of_calls() -> list[Call]:
        return [
            _series_call(server, series_of[1], "1"),
            _series_call(server, series_of[2], "2"),
            _series_call(server, series_of[2], "2 (twice at once)"),
            _series_call(server, series_of[3], "3"),
            _series_call(server, rt_instance["ParentSeries"], "RTSTRUCT"),
            _instance_call(server, first_of_1, "1/1"),  # also stored by the series 1 call
            _instance_call(server, second_of_3, "3/2"),  # also stored by the series 3 call
            _instance_call(server, rt_instance["ID"], "RTSTRUCT"),  # also stored by its series call
        ]

    calls = round_of_calls()
    seconds = run_together(calls)
    failures = failed_calls(calls)
    in_flight = most_in_flight(calls)
    # The same again, the key now settled: nothing new may appear.
    again = round_of_calls()
    seconds_again = run_together(again)
    failures += failed_calls(again)
    statuses = [s for c in calls + again for s in c.statuses]
    with capsys.disabled():
        print(f"\n[concurrency] nodes: 1, concurrent calls: {len(calls)} (5 series-level, 3 instance-level) "
              f"twice, at most {in_flight} in flight, instances: {len(study.instances)}, "
              f"HTTP requests: {len(statuses)}, errors: {len(failures)} "
              f"(500s: {statuses.count(500)}), {seconds:.1f}s + {seconds_again:.1f}s")
    assert not failures, "\n".join(failures)
    assert in_flight == len(calls), "the calls did not overlap: the test proved nothing"

    answers = {c.name: c.responses[0].json() for c in calls + again if c.name.startswith("series")}
    assert len({a["PatientID"] for a in answers.values()}) == 1
    assert len({a["ID"] for name, a in answers.items() if name.startswith("series 2")}) == 1
    for call in calls + again:
        if call.name.startswith("instance"):
            stored = call.responses[1].json()
            assert stored["Status"] in ("Success", "AlreadyStored")
            assert stored["ParentPatient"] == answers["series 1"]["PatientID"]

    result = check_study(server, study)
    for call in calls + again:
        if call.name.startswith("instance"):
            sop = str(parse(call.responses[0].content).SOPInstanceUID)
            assert call.responses[1].json()["ID"] in {i[1] for i in result["instances"] if i[0] == sop}
    source_pid = study.study.patient.patient_id
    assert str(parse(calls[-1].responses[0].content).SOPInstanceUID) == \
        pseudonym(server, "instance", source_pid, study.structure_set.SOPInstanceUID)
