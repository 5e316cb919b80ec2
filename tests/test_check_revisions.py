"""`"CheckRevisions": true`: Orthanc refuses to overwrite a metadata unless the writer names the
revision it replaces. The plugin's metadata writes (AnonymizedFrom at four levels, the options
mark on each result series) must succeed under it as they do without it: series by series,
instance by instance, at study level and in concurrent calls (two nodes: test_two_nodes.py).
"""
from __future__ import annotations

import pytest

from coherence import Call, check_study, failed_calls, run_together
from conftest import new_patient, not_applicable, upload
from dicom_factory import two_frame_study
from orthanc_server import OrthancServer

OPTIONS_METADATA = "9732"
ORIGIN_SINCE = (1, 12)  # from this version on, Orthanc lets the plugin write AnonymizedFrom


def version(server: OrthancServer) -> tuple[int, ...]:
    return tuple(int(part) for part in server.json("/system")["Version"].split(".")[:2])


def metadata(server: OrthancServer, level: str, resource_id: str, name: str) -> str | None:
    answer = server.get(f"/{level}/{resource_id}/metadata/{name}")
    return answer.text if answer.status_code == 200 else None


@pytest.fixture(scope="module", params=[False, True], ids=["CheckRevisions false", "CheckRevisions true"])
def revisions_server(request):
    server = OrthancServer(config={"CheckRevisions": request.param}).start()
    yield server
    server.cleanup()


def _assert_origins(server: OrthancServer, sources: list[dict]) -> None:
    """AnonymizedFrom at the series, study and patient levels names the sources' (for sources the
    plugin stored, not an instance-level call), where the version lets the plugin write it."""
    if version(server) < ORIGIN_SINCE:
        return
    for source in sources:
        result_series = [s for s in server.json("/series?expand")
                         if s.get("AnonymizedFrom") == source["ParentSeries"]]
        assert len(result_series) == 1
        series = result_series[0]
        study = server.json(f"/studies/{series['ParentStudy']}")
        assert study.get("AnonymizedFrom") == source["ParentStudy"]
        patient = server.json(f"/patients/{study['ParentPatient']}")
        assert patient.get("AnonymizedFrom") == source["ParentPatient"]


def test_series_by_series_instance_by_instance_then_the_study(revisions_server):
    server = revisions_server
    study = two_frame_study(per_series=2, patient=new_patient())
    uploaded = upload(server, study)
    first_series = [uploaded[ds.SOPInstanceUID]["ID"] for ds in study.series[0]]
    for instance in first_series:  # instance by instance, as a script would: stores nothing itself
        answer = server.post(f"/instances/{instance}/anonymize", json={})
        assert answer.status_code == 200, answer.text
        assert server.upload(answer.content)["Status"] == "Success"
    first = uploaded[study.series[0][0].SOPInstanceUID]["ParentSeries"]
    for series in sorted({answer["ParentSeries"] for answer in uploaded.values()}):
        answer = server.post(f"/series/{series}/anonymize", json={})
        assert answer.status_code == 200, answer.text  # the second series joins an existing study
        if series != first:  # the first was stored by the instance calls: the plugin wrote nothing
            assert metadata(server, "series", answer.json()["ID"], OPTIONS_METADATA)
    source_study = next(iter(uploaded.values()))["ParentStudy"]
    answer = server.post(f"/studies/{source_study}/anonymize", json={})
    assert answer.status_code == 200, answer.text
    check_study(server, study)
    _assert_origins(server, [a for a in uploaded.values() if a["ParentSeries"] != first])


def test_study_level_calls_and_concurrent_calls_on_one_parent(revisions_server):
    """The plugin's own workers write the parents' metadata at once; several calls race too."""
    server = revisions_server
    for _ in range(3):
        study = two_frame_study(per_series=3, patient=new_patient())
        uploaded = upload(server, study)
        source_study = next(iter(uploaded.values()))["ParentStudy"]
        answer = server.post(f"/studies/{source_study}/anonymize", json={})
        assert answer.status_code == 200, answer.text
        check_study(server, study)
        _assert_origins(server, list(uploaded.values()))

    study = two_frame_study(per_series=3, patient=new_patient())
    uploaded = upload(server, study)
    source_study = next(iter(uploaded.values()))["ParentStudy"]
    calls = [Call(f"series {series[:8]}", lambda s=series: [server.post(f"/series/{s}/anonymize", json={})])
             for series in sorted({answer["ParentSeries"] for answer in uploaded.values()})]
    calls += [Call(f"study {n}", lambda: [server.post(f"/studies/{source_study}/anonymize", json={})])
              for n in range(2)]
    run_together(calls)
    assert not failed_calls(calls), "\n".join(failed_calls(calls))
    check_study(server, study)
    _assert_origins(server, list(uploaded.values()))


def _merged_patient_origin(server: OrthancServer) -> tuple[list[int], str | None, list[str]]:
    """Two source patients anonymized into one PatientID: the patient's AnonymizedFrom must be
    replaced by the second call, as native does."""
    sources = []
    statuses = []
    merged = "MERGED-" + new_patient().patient_id
    patient = None
    for _ in range(2):
        study = two_frame_study(per_series=1, patient=new_patient())
        uploaded = upload(server, study)
        source = next(iter(uploaded.values()))
        sources.append(source["ParentPatient"])
        answer = server.post(f"/studies/{source['ParentStudy']}/anonymize",
                             json={"Replace": {"PatientID": merged}, "Force": True})
        statuses.append(answer.status_code)
        patient = answer.json().get("PatientID") if answer.status_code == 200 else patient
    return statuses, server.json(f"/patients/{patient}").get("AnonymizedFrom") if patient else None, sources


def test_an_anonymized_from_that_would_change_succeeds_as_native_does(revisions_server, native):
    """Native names the last source. Under CheckRevisions no plugin can replace AnonymizedFrom
    (Orthanc's HTTP API forbids it, its internal one cannot name the revision): the first stays,
    a true source of the merged patient too."""
    if version(server := revisions_server) < ORIGIN_SINCE:
        not_applicable("Orthanc 1.10 lets no plugin write AnonymizedFrom")
    native_statuses, native_origin, native_sources = _merged_patient_origin(native)
    statuses, origin, sources = _merged_patient_origin(server)
    assert statuses == native_statuses == [200, 200]
    assert native_origin == native_sources[1]
    assert origin == (sources[0] if server.settings.get("CheckRevisions") else sources[1])


def test_options_mark_is_overwritten_under_overwrite_instances(server_factory):
    """With OverwriteInstances the plugin redoes a series under other options: its mark changes."""
    server = server_factory(config={"CheckRevisions": True, "OverwriteInstances": True})
    # Two instances: the series, hence its mark, outlives the replacement of either one.
    study = two_frame_study(per_series=2, patient=new_patient())
    uploaded = upload(server, study)
    series = uploaded[study.series[0][0].SOPInstanceUID]["ParentSeries"]
    marks = []
    for body in ({}, {"Keep": ["SeriesDescription"]}, {}):
        answer = server.post(f"/series/{series}/anonymize", json=body)
        assert answer.status_code == 200, answer.text
        marks.append(metadata(server, "series", answer.json()["ID"], OPTIONS_METADATA))
    assert marks[0] and marks[1] and marks[0] != marks[1]
    assert marks[2] == marks[0]
