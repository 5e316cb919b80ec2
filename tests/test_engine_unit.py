"""The engine's decisions, without a server: against the in-memory Orthanc of tests/fake_orthanc.py
(held to a real Orthanc by tests/test_port_contract.py). Each runs in milliseconds."""
from __future__ import annotations

import threading

import pytest

from conftest import new_patient
from consistent_anon import orthanc_ids
from consistent_anon.identity.config import parse_config
from consistent_anon.pipeline.engine import Anonymizer
from consistent_anon.errors import Conflict, JobCanceled, NotFound, PluginError
from consistent_anon.identity.keys import KeyStore, PropertyChecks
from consistent_anon.pipeline.options import parse_request
from dicom_factory import to_bytes, two_frame_study
from fake_orthanc import FakeOrthanc

KEY = b"unit-test-key-0123456789abcdef0123456789"


def _engine(version=(1, 12, 7), workers: int = 1) -> tuple[Anonymizer, FakeOrthanc]:
    orthanc = FakeOrthanc(version=version, workers=workers)
    config = parse_config({"ConsistentAnonymization": {"Key": KEY.decode()}})
    properties: dict[int, str] = {}  # Orthanc's global properties, where the key check is kept
    checks = PropertyChecks(lambda key, default: properties.get(key, default), properties.__setitem__)
    return Anonymizer(orthanc, KeyStore(config, lambda: KEY, lambda: checks)), orthanc


def _study(orthanc: FakeOrthanc, per_series: int = 2) -> tuple[str, list[dict]]:
    made = two_frame_study(per_series=per_series, patient=new_patient())
    stored = [orthanc.upload(to_bytes(ds)) for ds in made.instances]
    return stored[0]["ParentStudy"], stored


def _request(**body) -> object:
    import json
    return parse_request(json.dumps(body))


def test_a_study_gives_one_result_per_source_and_a_native_shaped_answer():
    engine, orthanc = _engine()
    study, sources = _study(orthanc)
    answer = engine.anonymize_resource("studies", study, _request())
    assert answer["Type"] == "Study" and answer["InstancesCount"] == len(sources)
    assert answer["Path"] == f"/studies/{answer['ID']}" and answer["ParentResources"] == [study]
    results = orthanc.instances_of("studies", answer["ID"])
    assert len(results) == len(sources)
    assert orthanc.parent_of("studies", answer["ID"]) == answer["PatientID"]


def test_a_rerun_reads_no_file_and_answers_the_same_result():
    engine, orthanc = _engine()
    study, _ = _study(orthanc)
    first = engine.anonymize_resource("studies", study, _request())
    reads = orthanc.count("read_file")
    again = engine.anonymize_resource("studies", study, _request())
    assert again == first
    assert orthanc.count("read_file") == reads  # the results are known from the index alone


def test_a_rerun_writes_nothing_and_asks_each_series_identifiers_once():
    engine, orthanc = _engine()
    study, sources = _study(orthanc)
    engine.anonymize_resource("studies", study, _request())
    writes, lookups = orthanc.count("set_metadata"), orthanc.count("identifiers")
    engine.anonymize_resource("studies", study, _request())
    assert orthanc.count("set_metadata") == writes  # the options' mark is there already
    assert orthanc.count("identifiers") == lookups  # a series' identifiers never change
    assert lookups == len({source["ParentSeries"] for source in sources})


def test_series_by_series_land_in_one_study():
    engine, orthanc = _engine()
    study, sources = _study(orthanc)
    studies = {orthanc.parent_of("series", engine.anonymize_resource("series", series, _request())["ID"])
               for series in {s["ParentSeries"] for s in sources}}
    whole = engine.anonymize_resource("studies", study, _request())
    assert studies == {whole["ID"]}


def test_a_failed_store_removes_what_the_call_added_and_keeps_the_source():
    engine, orthanc = _engine()
    study, sources = _study(orthanc)
    before = set(orthanc.files)
    orthanc.fail("store", PluginError("disk full"), after=3)
    with pytest.raises(PluginError, match="disk full"):
        engine.anonymize_resource("studies", study, _request(KeepSource=False))
    assert set(orthanc.files) == before  # every source there, no result left


def test_other_options_on_an_existing_result_are_refused_with_409():
    engine, orthanc = _engine()
    study, _ = _study(orthanc)
    engine.anonymize_resource("studies", study, _request())
    before = dict(orthanc.files)
    with pytest.raises(Conflict):
        engine.anonymize_resource("studies", study, _request(Keep=["StudyDescription"]))
    assert orthanc.files == before
    # The same options written otherwise are the same options.
    engine.anonymize_resource("studies", study, _request(Keep=[], Remove=[]))


@pytest.mark.parametrize("version, written", [((1, 12, 7), True), ((1, 10, 1), False)])
def test_anonymized_from_where_the_version_lets_a_plugin_write_it(version, written):
    engine, orthanc = _engine(version=version)
    study, sources = _study(orthanc)
    answer = engine.anonymize_resource("studies", study, _request())
    patient = answer["PatientID"]
    assert (orthanc.metadata("studies", answer["ID"], "AnonymizedFrom") == study) is written
    assert (orthanc.metadata("patients", patient, "AnonymizedFrom") == sources[0]["ParentPatient"]) is written


def test_a_canceled_call_leaves_nothing():
    engine, orthanc = _engine()
    study, _ = _study(orthanc)
    before = set(orthanc.files)
    progress: list[int] = []
    with pytest.raises(JobCanceled):
        engine.anonymize_resource("studies", study, _request(), lambda done, total: progress.append(done),
                                  lambda: len(progress) > 3)
    assert set(orthanc.files) == before


def test_keep_source_false_deletes_the_sources_once_every_result_is_stored():
    engine, orthanc = _engine()
    study, sources = _study(orthanc)
    answer = engine.anonymize_resource("studies", study, _request(KeepSource=False))
    deletes = [i for i, (name, _) in enumerate(orthanc.calls) if name == "delete"]
    stores = [i for i, (name, _) in enumerate(orthanc.calls) if name == "store"]
    assert min(deletes) > max(stores)
    assert not set(s["ID"] for s in sources) & set(orthanc.files)
    assert len(orthanc.instances_of("studies", answer["ID"])) == len(sources)


def test_an_unknown_resource_is_404():
    engine, orthanc = _engine()
    with pytest.raises(NotFound):
        engine.anonymize_resource("studies", orthanc_ids.resource_id("nobody"), _request())


def test_concurrent_calls_on_one_study_agree():
    engine, orthanc = _engine(workers=4)
    study, sources = _study(orthanc, per_series=4)
    answers, errors = [], []

    def call(level: str, resource: str) -> None:
        try:
            answers.append(engine.anonymize_resource(level, resource, _request()))
        except PluginError as error:
            errors.append(error)
    calls = [("studies", study)] + [("series", s) for s in {s["ParentSeries"] for s in sources}]
    threads = [threading.Thread(target=call, args=target) for target in calls]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert not errors
    result_study = {answer["ID"] if answer["Type"] == "Study" else orthanc.parent_of("series", answer["ID"])
                    for answer in answers}
    assert len(result_study) == 1
    assert len(orthanc.instances_of("studies", result_study.pop())) == len(sources)


def test_a_failure_whose_existence_check_fails_too_still_rolls_back():
    engine, orthanc = _engine()
    study, _ = _study(orthanc)
    before = set(orthanc.files)
    orthanc.fail("store", PluginError("disk full"), after=3)
    orthanc.fail("exists", PluginError("database busy"), times=1)  # the check after the failure
    with pytest.raises(PluginError, match="disk full"):
        engine.anonymize_resource("studies", study, _request())
    assert set(orthanc.files) == before  # rolled back: no partial result left


def test_a_subject_listed_with_its_issuer_is_found_at_every_level(tmp_path):
    from consistent_anon.identity.project_settings import parse_project_settings
    engine, orthanc = _engine()
    patient = new_patient()
    made = two_frame_study(per_series=1, patient=patient)
    for ds in made.instances:
        ds.IssuerOfPatientID = "HOSPITAL-A"
    stored = [orthanc.upload(to_bytes(ds)) for ds in made.instances]
    table = tmp_path / "subjects.csv"
    table.write_text(f"PatientID,IssuerOfPatientID,SubjectID\n{patient.patient_id},HOSPITAL-A,S-1\n")
    settings = parse_project_settings("test", {"Subjects": str(table), "RequireSubject": True})
    request = _request().for_project(settings)
    answer = engine.anonymize_resource("studies", stored[0]["ParentStudy"], request)
    assert orthanc.main_tags[answer["PatientID"]]["PatientID"] == "S-1"
    again = engine.anonymize_resource("studies", stored[0]["ParentStudy"], _request().for_project(settings))
    assert again == answer


def test_a_series_emptied_by_a_consuming_call_that_is_still_running_gets_a_clear_409():
    """A study call with KeepSource false deletes its series one instance after another; a call on
    a series it already emptied, while it still runs, hears that it was consumed (not a bare
    "Unknown resource")."""
    engine, orthanc = _engine()
    study, sources = _study(orthanc)
    series = {source["ParentSeries"] for source in sources}
    heard: dict[str, Exception] = {}
    delete = orthanc.delete

    def delete_then_call_the_emptied_series(level: str, resource_id: str) -> None:
        delete(level, resource_id)
        for gone in series - set(orthanc.levels) - set(heard):
            with pytest.raises(PluginError) as raised:
                engine.anonymize_resource("series", gone, _request(KeepSource=False))
            heard[gone] = raised.value
    orthanc.delete = delete_then_call_the_emptied_series
    engine.anonymize_resource("studies", study, _request(KeepSource=False))
    assert set(heard) == series
    assert all(isinstance(error, Conflict) and "KeepSource false" in str(error) for error in heard.values()), heard


def test_a_result_removed_by_another_calls_rollback_right_after_it_was_found_stored_is_a_clear_409():
    """Another call's rollback removes a result between Orthanc's "AlreadyStored" and this call's
    check of it: the call hears that a result disappeared (409, call again), not a bare 404."""
    engine, orthanc = _engine()
    study, sources = _study(orthanc)
    first = engine.anonymize_resource("studies", study, _request())
    for series in orthanc.children(first["ID"]):
        orthanc.stored_metadata[series].clear()  # unmarked: this call stores again and compares
    store = orthanc.store

    def store_then_roll_back_elsewhere(data: bytes) -> dict:
        answer = store(data)
        if answer["Status"] == "AlreadyStored":
            orthanc.delete("instances", answer["ID"])
        return answer
    orthanc.store = store_then_roll_back_elsewhere
    with pytest.raises(Conflict, match="disappeared"):
        engine.anonymize_resource("studies", study, _request())
    assert {s["ID"] for s in sources} <= set(orthanc.files)


@pytest.mark.parametrize("version, written", [((1, 12, 7), True), ((1, 10, 1), False)])
def test_workers_learn_together_whether_anonymized_from_can_be_written(version, written):
    """Four workers store at once: on 1.10 the first refusal stops every worker's writes (one
    refused write per call, no failure), on 1.12 every level gets its link."""
    engine, orthanc = _engine(version=version, workers=4)
    study, sources = _study(orthanc, per_series=6)
    answer = engine.anonymize_resource("studies", study, _request())
    links = [orthanc.metadata("instances", stored["ID"], "AnonymizedFrom")
             for stored in orthanc.instances_of("studies", answer["ID"])]
    assert links == ([link for link in links if link] if written else [None] * len(sources))
    writes = [argument for name, argument in orthanc.calls if name == "set_metadata" and "AnonymizedFrom" in argument]
    assert len(writes) >= len(sources) if written else 1 <= len(writes) <= 4  # each worker tries once at most


def test_a_series_another_node_consumed_is_a_404_that_says_why():
    """Another node's call with KeepSource false deleted the series: this node cannot know it was
    that, but its 404 names the usual reason, unlike a bare "Unknown resource"."""
    engine, orthanc = _engine()
    study, sources = _study(orthanc)
    other_node = Anonymizer(orthanc, engine._keys)  # its own ledger, as on another node
    other_node.anonymize_resource("studies", study, _request(KeepSource=False))
    with pytest.raises(NotFound) as raised:
        engine.anonymize_resource("series", sources[0]["ParentSeries"], _request(KeepSource=False))
    assert str(raised.value).startswith("Unknown resource") and "KeepSource false" in str(raised.value)


def test_a_bulk_resource_consumed_meanwhile_is_refused_saying_why():
    """Bulk resources are resolved by ID: one that another node consumed is a 404 that names the
    usual reason, one this node consumed a 409 that says so."""
    engine, orthanc = _engine()
    study, sources = _study(orthanc)
    Anonymizer(orthanc, engine._keys).anonymize_resource("studies", study, _request(KeepSource=False))
    with pytest.raises(NotFound) as raised:
        engine.resolve([sources[0]["ParentSeries"]])
    assert str(raised.value).startswith("Unknown resource") and "KeepSource false" in str(raised.value)
    mine, _ = _study(orthanc)
    engine.anonymize_resource("studies", mine, _request(KeepSource=False))
    with pytest.raises(Conflict):
        engine.resolve([mine])


def test_the_check_prepares_the_search_of_a_patients_texts_once_not_per_instance(monkeypatch):
    """The fail-closed check searches each output for its source's identifying texts: the
    search of one patient's texts is prepared once, not at every instance of the study."""
    from consistent_anon.pipeline import output_check

    made = []

    class CountedFinder(output_check.TextFinder):
        def __init__(self, *args, **kwargs):
            made.append(args[0])
            super().__init__(*args, **kwargs)
    monkeypatch.setattr(output_check, "TextFinder", CountedFinder)
    anonymizer, orthanc = _engine()
    study, stored = _study(orthanc, per_series=3)
    anonymizer.anonymize_resource("studies", study, _request())
    assert len(stored) == 10 and 1 <= len(made) <= 2  # the MR series' texts, the RTSTRUCT's if others


def test_the_pseudonyms_instances_share_are_computed_once_not_per_instance(monkeypatch):
    """The instances of a series share their patient, study, series and frame of reference: their
    pseudonyms are keyed hashes computed once, not at every instance (each instance's own
    SOPInstanceUID is the one new hash it needs)."""
    from consistent_anon.identity import pseudonyms

    digests = []
    real_digest = pseudonyms._digest
    monkeypatch.setattr(pseudonyms, "_digest", lambda *args: (digests.append(args[1]), real_digest(*args))[1])
    anonymizer, orthanc = _engine()
    study, stored = _study(orthanc, per_series=8)
    anonymizer.anonymize_resource("studies", study, _request())
    uids = [kind for kind in digests if kind == "uid"]
    assert len(stored) == 25 and len(uids) <= len(stored) + 12, len(uids)  # the SOP UIDs, the shared ones once
    assert digests.count("patient-id") == 1 and digests.count("patient-name") == 1


def test_a_result_whose_own_steps_fail_after_its_store_never_stays():
    """The pixel status is written on a result once it is stored, before the call counts it as its
    own: if that write fails, the result is removed there, not left for no rollback to find."""
    engine, orthanc = _engine()
    made = two_frame_study(per_series=1, patient=new_patient())
    for ds in made.instances:
        del ds.Manufacturer  # no maker named: pixels of unknown risk, flagged, their status written
    stored = [orthanc.upload(to_bytes(ds)) for ds in made.instances]
    orthanc.fail("set_metadata", PluginError("database busy", orthanc_code=11))
    with pytest.raises(PluginError):
        engine.anonymize_resource("studies", stored[0]["ParentStudy"], _request(BurnedInAnnotation="Flag"))
    assert sorted(orthanc.files) == sorted(s["ID"] for s in stored)  # the sources, and nothing else


@pytest.mark.parametrize("keep_labels", [False, True])
def test_a_call_whose_sources_go_looks_up_their_parents_only_to_keep_labels(keep_labels):
    """The gateway's calls (sources deleted once delivered: no AnonymizedFrom to write) read the
    sources' parents only for KeepLabels, which finds a result's source through them: two reads
    of Orthanc's index per series and call saved where labels are not kept."""
    engine, orthanc = _engine()
    _, stored = _study(orthanc)
    results = engine.anonymize_arrivals([s["ID"] for s in stored], _request(KeepLabels=keep_labels), linked=False)
    assert len(results) == len(stored)
    assert (orthanc.count("parent_of") > 0) == keep_labels
