"""Native parity, per Orthanc version: each answer, job, option and error compared with native's
on the same request and data (the same files give the same Orthanc IDs on both servers)."""
from __future__ import annotations

import io
import time

import pydicom
import pytest

from conftest import new_patient, not_applicable, upload
from dicom_factory import to_bytes, two_frame_study

JPEG_BASELINE = "1.2.840.10008.1.2.4.50"
#: The members of an answer that name the results: the pseudonyms make them differ from native's.
RESULT_FIELDS = ("ID", "Path", "PatientID")


def sources(server, study) -> tuple[str, str, str]:
    """The series, study and patient IDs of the study's first instance."""
    first = next(iter(upload(server, study).values()))
    return first["ParentSeries"], first["ParentStudy"], first["ParentPatient"]


def without_results(answer: dict) -> dict:
    return {name: value for name, value in answer.items() if name not in RESULT_FIELDS}


def wait_finished(server, path: str, timeout: float = 120) -> dict:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        job = server.json(path)
        if job["State"] in ("Success", "Failure"):
            return job
        time.sleep(0.05)
    raise AssertionError(f"{path} did not finish")


def transfer_syntax(server, level: str, resource: str) -> str:
    instance = server.json(f"/{level}/{resource}/instances")[0]["ID"]
    return server.get(f"/instances/{instance}/metadata/TransferSyntax").text


# --- Answers -------------------------------------------------------------------------------------
@pytest.mark.parametrize("body", [{}, {"KeepSource": True, "Keep": ["StudyDescription"], "Force": True}])
def test_synchronous_answers_equal_natives_field_by_field(orthanc, native, study, body):
    series, study_id, patient = sources(orthanc, study)
    sources(native, study)
    for level, resource in (("series", series), ("studies", study_id), ("patients", patient)):
        ours = orthanc.post(f"/{level}/{resource}/anonymize", json=body)
        theirs = native.post(f"/{level}/{resource}/anonymize", json=body)
        assert ours.status_code == theirs.status_code == 200, ours.text
        assert without_results(ours.json()) == without_results(theirs.json())
        assert set(ours.json()) == set(theirs.json())
        if native.version() >= (1, 12, 11):
            assert ours.json()["Resources"] == [{"ID": resource, "Type": ours.json()["Type"]}]


def test_bulk_answers_equal_natives_field_by_field(orthanc, native, study):
    series, study_id, _ = sources(orthanc, study)
    sources(native, study)
    body = {"Resources": [series]}
    ours, theirs = orthanc.post("/tools/bulk-anonymize", json=body), native.post("/tools/bulk-anonymize", json=body)
    assert ours.status_code == theirs.status_code == 200
    assert set(ours.json()) == set(theirs.json())
    assert without_results({**ours.json(), "Resources": None}) == without_results({**theirs.json(), "Resources": None})
    assert [r["Type"] for r in ours.json()["Resources"]] == [r["Type"] for r in theirs.json()["Resources"]]
    empty_ours, empty_theirs = (server.post("/tools/bulk-anonymize", json={"Resources": []}) for server in (orthanc, native))
    assert empty_ours.status_code == empty_theirs.status_code == 200
    assert empty_ours.json() == empty_theirs.json()


def test_job_content_equals_natives_while_pending_and_once_finished(server_factory, native, study):
    """Native's content before success is its answer's without the result fields (1.12 and
    later; 1.10 fills the result fields in as it goes). One job at a time ("ConcurrentJobs": 1)
    keeps the second job pending while the first runs."""
    orthanc = server_factory(config={"ConcurrentJobs": 1})
    busy = two_frame_study(per_series=40, patient=new_patient())
    busy_study = sources(orthanc, busy)[1]
    series, _, _ = sources(orthanc, study)
    sources(native, study)
    body = {"Synchronous": False, "UserData": {"note": "parity"}}
    orthanc.post(f"/studies/{busy_study}/anonymize", json={"Synchronous": False})
    ours = orthanc.post(f"/series/{series}/anonymize", json=body).json()
    pending = orthanc.json(ours["Path"])
    bulk_body = {"Resources": [series], "Synchronous": False}
    pending_bulk = orthanc.json(orthanc.post("/tools/bulk-anonymize", json=bulk_body).json()["Path"])
    theirs_bulk = wait_finished(native, native.post("/tools/bulk-anonymize", json=bulk_body).json()["Path"])
    assert pending_bulk["State"] == "Pending", pending_bulk
    assert pending_bulk["Content"] == {**theirs_bulk["Content"], "Resources": []}  # native's, pending
    theirs = wait_finished(native, native.post(f"/series/{series}/anonymize", json=body).json()["Path"])
    finished = wait_finished(orthanc, ours["Path"])
    assert pending["State"] == "Pending", pending
    expected_pending = without_results(theirs["Content"])
    del expected_pending["Type"]
    assert pending["Content"] == expected_pending
    assert without_results(finished["Content"]) == without_results(theirs["Content"])
    assert set(finished) == set(theirs)
    assert finished.get("UserData") == theirs.get("UserData")
    if native.version() >= (1, 12, 9):
        assert finished["UserData"] == pending["UserData"] == {"note": "parity"}


def test_user_data_is_no_anonymization_option(orthanc, native, study):
    series, _, _ = sources(orthanc, study)
    first = orthanc.post(f"/series/{series}/anonymize", json={"UserData": "first"})
    again = orthanc.post(f"/series/{series}/anonymize", json={"UserData": {"other": 2}})
    sources(native, study)
    theirs = native.post(f"/series/{series}/anonymize", json={"UserData": "first"})
    assert first.status_code == again.status_code == 200, again.text
    assert again.json()["ID"] == first.json()["ID"]
    assert set(first.json()) == set(theirs.json())  # no UserData in a synchronous answer


# --- KeepLabels ---------------------------------------------------------------------------------
def labelled(server, study) -> tuple[str, str, str, str]:
    series, study_id, patient = sources(server, study)
    instance = server.json(f"/series/{series}/instances")[0]["ID"]
    if server.version() >= (1, 12, 0):
        for level, resource, label in (("series", series, "s1"), ("studies", study_id, "t1"),
                                       ("patients", patient, "p1"), ("instances", instance, "i1")):
            assert server.request("PUT", f"/{level}/{resource}/labels/{label}").status_code == 200
    return series, study_id, patient, instance


def result_labels(server, answer: dict) -> dict:
    level = {"Series": "series", "Study": "studies"}[answer["Type"]]
    series = [answer["ID"]] if level == "series" else server.json(f"/studies/{answer['ID']}")["Series"]
    study = server.json(f"/series/{series[0]}")["ParentStudy"]
    return {"series": sorted(label for s in series for label in server.json(f"/series/{s}/labels")),
            "studies": server.json(f"/studies/{study}/labels"),
            "patients": server.json(f"/patients/{answer['PatientID']}/labels"),
            "instances": sorted(label for s in series for i in server.json(f"/series/{s}/instances")
                                for label in server.json(f"/instances/{i['ID']}/labels"))}


@pytest.mark.parametrize("level", ["series", "studies"])
def test_keep_labels_copies_labels_where_native_does(orthanc, native, study, level):
    ours_ids, theirs_ids = labelled(orthanc, study), labelled(native, study)
    resource = ours_ids[0] if level == "series" else ours_ids[1]
    assert resource == (theirs_ids[0] if level == "series" else theirs_ids[1])
    for body in ({"KeepLabels": True}, {"KeepLabels": False}, {}):
        ours = orthanc.post(f"/{level}/{resource}/anonymize", json=body)
        theirs = native.post(f"/{level}/{resource}/anonymize", json=body)
        assert ours.status_code == theirs.status_code == 200, ours.text
        if native.version() < (1, 12, 0):
            continue  # Orthanc 1.10 has no labels: native ignores KeepLabels, so does the plugin
        assert result_labels(orthanc, ours.json()) == result_labels(native, theirs.json()), body
        # Each call adds labels only: delete the results so the next body starts from none.
        orthanc.delete(f"/patients/{ours.json()['PatientID']}")
        native.delete(f"/patients/{theirs.json()['PatientID']}")
    bad_ours = orthanc.post(f"/{level}/{resource}/anonymize", json={"KeepLabels": "yes"})
    bad_theirs = native.post(f"/{level}/{resource}/anonymize", json={"KeepLabels": "yes"})
    assert bad_ours.status_code == bad_theirs.status_code == (400 if native.version() >= (1, 12, 3) else 200)


# --- Transcode, LossyQuality ------------------------------------------------------------------
def eight_bit(study):
    """The study's images as 8-bit pixels, which JPEG baseline can hold."""
    for ds in study.instances:
        if "PixelData" in ds:
            ds.BitsAllocated, ds.BitsStored, ds.HighBit = 8, 8, 7
            ds.PixelData = bytes((i * 37 + ds.InstanceNumber) % 256 for i in range(ds.Rows * ds.Columns))
    return study


def test_transcode_native_cannot_honour_is_answered_as_native(orthanc, native, study):
    """JPEG baseline asked for 16-bit pixels: native's job keeps the source's syntax (200);
    native's instance route fails (1.12, 1.13) or ignores Transcode (1.10). On 1.10 the plugin
    transcodes with Orthanc's transcoder, as native's job does."""
    series, _, _ = sources(orthanc, study)
    sources(native, study)
    instance = orthanc.json(f"/series/{series}/instances")[0]["ID"]
    body = {"Transcode": JPEG_BASELINE}
    ours_file, theirs_file = (server.post(f"/instances/{instance}/anonymize", json=body) for server in (orthanc, native))
    assert ours_file.status_code == theirs_file.status_code
    if theirs_file.status_code != 200:
        assert {k: v for k, v in ours_file.json().items() if k != "Message"} == \
               {k: v for k, v in theirs_file.json().items() if k not in ("Message", "Details")}
    ours = orthanc.post(f"/series/{series}/anonymize", json=body)
    theirs = native.post(f"/series/{series}/anonymize", json=body)
    assert ours.status_code == theirs.status_code == 200, ours.text
    assert without_results(ours.json()) == without_results(theirs.json())
    assert transfer_syntax(orthanc, "series", ours.json()["ID"]) == transfer_syntax(native, "series", theirs.json()["ID"])


@pytest.mark.parametrize("syntax", ["1.2.840.10008.1.2.4.80", "1.2.840.10008.1.2.4.70", "1.2.840.10008.1.2"],
                         ids=["JPEG-LS lossless", "JPEG lossless", "implicit VR"])
def test_transcode_of_whole_resources_gives_natives_syntax(orthanc, native, study, syntax):
    series, _, _ = sources(orthanc, study)
    sources(native, study)
    ours = orthanc.post(f"/series/{series}/anonymize", json={"Transcode": syntax})
    theirs = native.post(f"/series/{series}/anonymize", json={"Transcode": syntax})
    assert ours.status_code == theirs.status_code == 200, ours.text
    assert without_results(ours.json()) == without_results(theirs.json())
    assert transfer_syntax(orthanc, "series", ours.json()["ID"]) == transfer_syntax(native, "series", theirs.json()["ID"]) \
        == syntax


def test_an_unknown_transfer_syntax_is_refused_as_native(orthanc, native, study):
    series, _, _ = sources(orthanc, study)
    sources(native, study)
    body = {"Transcode": "1.2.3.4"}
    ours = orthanc.post(f"/series/{series}/anonymize", json=body)
    theirs = native.post(f"/series/{series}/anonymize", json=body)
    assert ours.status_code == theirs.status_code == 400
    assert ours.json()["OrthancStatus"] == theirs.json()["OrthancStatus"]


def pixel_bytes(server, level: str, resource: str, body: dict) -> int:
    """The size of the pixel data an anonymization with `body` gives (all of a series' instances)."""
    if level == "instances":
        answer = server.post(f"/instances/{resource}/anonymize", json=body)
        assert answer.status_code == 200, answer.text
        return len(pydicom.dcmread(io.BytesIO(answer.content)).PixelData)
    answer = server.post(f"/series/{resource}/anonymize", json=body)
    assert answer.status_code == 200, answer.text
    result = answer.json()["ID"]
    assert transfer_syntax(server, "series", result) == JPEG_BASELINE
    size = sum(len(pydicom.dcmread(io.BytesIO(server.get(f"/instances/{i['ID']}/file").content)).PixelData)
               for i in server.json(f"/series/{result}/instances"))
    assert server.delete(f"/series/{result}").status_code == 200
    return size


def test_lossy_quality_reaches_natives_transcoding_where_native_reads_it(orthanc, native):
    """Native's instance route reads LossyQuality; its job ignores it (1.12.7, 1.13.0): the
    plugin's routes do the same, so each size equals native's."""
    if native.version() < (1, 12, 7):
        not_applicable("LossyQuality exists from Orthanc 1.12.7 on")
    study = eight_bit(two_frame_study(per_series=2, size=64, patient=new_patient()))
    series, _, _ = sources(orthanc, study)
    sources(native, study)
    instance = orthanc.json(f"/series/{series}/instances")[0]["ID"]
    if native.version() < (1, 13, 0):
        # Orthanc 1.12's lossy transcoding gives the instance a new random SOPInstanceUID, which no
        # consistent anonymization can keep: the plugin's check refuses it and stores nothing.
        before = orthanc.json("/instances")
        for level, resource in (("instances", instance), ("series", series)):
            refused = orthanc.post(f"/{level}/{resource}/anonymize", json={"Transcode": JPEG_BASELINE})
            assert refused.status_code == 500 and "SOPInstanceUID" in refused.json()["Message"], refused.text
        assert sorted(orthanc.json("/instances")) == sorted(before)
        return
    sizes = {(name, level, quality): pixel_bytes(server, level, resource,
                                                 {"Transcode": JPEG_BASELINE, "LossyQuality": quality})
             for name, server in (("plugin", orthanc), ("native", native))
             for level, resource in (("instances", instance), ("series", series)) for quality in (5, 95)}
    for level in ("instances", "series"):
        for quality in (5, 95):
            assert sizes["plugin", level, quality] == sizes["native", level, quality], sizes
    assert sizes["plugin", "instances", 5] < sizes["plugin", "instances", 95]


# --- OverwriteInstances -----------------------------------------------------------------------
OVERWRITE_MODES = [(False, "refused"), (True, "redone"), ("Never", "refused"), ("Always", "redone"),
                   ("IfChanged", "redone")]


@pytest.mark.parametrize("mode,other_options", OVERWRITE_MODES, ids=[str(m) for m, _ in OVERWRITE_MODES])
def test_overwrite_instances_in_every_form(server_factory, native, mode, other_options):
    """A re-run under the same options answers the same results; under other options, Orthanc
    keeping the first copy ("Never", false) makes it a 409, replacing it ("Always", true,
    "IfChanged") makes it redo the results under the new options."""
    if isinstance(mode, str) and native.version() < (1, 13, 0):
        not_applicable("OverwriteInstances takes a string from Orthanc 1.13.0 on")
    server = server_factory(config={"OverwriteInstances": mode})
    study = two_frame_study(per_series=2, patient=new_patient())
    series, _, _ = sources(server, study)
    first = server.post(f"/series/{series}/anonymize", json={})
    rerun = server.post(f"/series/{series}/anonymize", json={})
    assert first.status_code == rerun.status_code == 200
    assert rerun.json()["ID"] == first.json()["ID"]
    other = server.post(f"/series/{series}/anonymize", json={"Keep": ["SeriesDescription"]})
    instance = server.json(f"/series/{first.json()['ID']}/instances")[0]["ID"]
    description = server.json(f"/instances/{instance}/tags?simplify").get("SeriesDescription")
    if other_options == "refused":
        assert other.status_code == 409, other.text
        assert description != study.series[0][0].SeriesDescription
    else:
        assert other.status_code == 200, other.text
        assert other.json()["ID"] == first.json()["ID"]
        assert description == study.series[0][0].SeriesDescription
        back = server.post(f"/series/{series}/anonymize", json={})
        assert back.status_code == 200
        again = server.json(f"/series/{first.json()['ID']}/instances")[0]["ID"]
        assert server.json(f"/instances/{again}/tags?simplify").get("SeriesDescription") != description


# --- PatientLevelEnabled ------------------------------------------------------------------------
def test_patient_level_disabled_works_as_native(server_factory, native):
    if native.version() < (1, 12, 11):
        not_applicable("PatientLevelEnabled exists from Orthanc 1.12.11 on")
    settings = {"PatientLevelEnabled": False}
    ours_server, theirs_server = server_factory(config=settings), server_factory(plugin=False, config=settings)
    study = two_frame_study(per_series=2, patient=new_patient())
    series, study_id, patient = sources(ours_server, study)
    sources(theirs_server, study)
    for level, resource in (("series", series), ("studies", study_id)):
        ours = ours_server.post(f"/{level}/{resource}/anonymize", json={})
        theirs = theirs_server.post(f"/{level}/{resource}/anonymize", json={})
        assert ours.status_code == theirs.status_code == 200, ours.text
        assert without_results(ours.json()) == without_results(theirs.json())
        assert ours_server.get(f"/{level}/{ours.json()['ID']}/metadata/AnonymizedFrom").text == resource
    ours = ours_server.post(f"/patients/{patient}/anonymize", json={})
    theirs = theirs_server.post(f"/patients/{patient}/anonymize", json={})
    assert ours.status_code == theirs.status_code == 404
    assert {k: v for k, v in ours.json().items() if k != "Message"} == \
           {k: v for k, v in theirs.json().items() if k != "Message"}


# --- Errors ---------------------------------------------------------------------------------------
ERROR_BODIES = [
    ("malformed JSON", b"{bad"),
    ("not an object", b"[1]"),
    ("flag of the wrong type", b'{"Force": "yes"}'),
    ("KeepLabels of the wrong type", b'{"KeepLabels": 1}'),
    ("Keep not a list", b'{"Keep": "PatientName"}'),
    ("Replace not an object", b'{"Replace": ["PatientName"]}'),
    ("identifier replaced without Force", b'{"Replace": {"StudyInstanceUID": "1.2.3"}}'),
    ("unknown tag", b'{"Keep": ["NoSuchAttributeAnywhere"]}'),
]


@pytest.mark.parametrize("level", ["instances", "series"])
@pytest.mark.parametrize("name,body", ERROR_BODIES, ids=[b[0] for b in ERROR_BODIES])
def test_error_answers_have_natives_members_and_values(orthanc, native, study, level, name, body):
    """Every member of native's error but "Message" (the plugin's may say more, native's
    "Details" is then in it) is equal."""
    series, _, _ = sources(orthanc, study)
    sources(native, study)
    resource = series if level == "series" else orthanc.json(f"/series/{series}/instances")[0]["ID"]
    ours = orthanc.post(f"/{level}/{resource}/anonymize", data=body)
    theirs = native.post(f"/{level}/{resource}/anonymize", data=body)
    assert ours.status_code == theirs.status_code
    if theirs.status_code == 200:
        assert native.version() < (1, 12, 3) and name.startswith("KeepLabels")  # unknown to 1.10: ignored
        return
    expected = {k: v for k, v in theirs.json().items() if k not in ("Message", "Details")}
    assert {k: v for k, v in ours.json().items() if k != "Message"} == expected
    assert ours.json()["Message"]


def test_a_priority_of_the_wrong_type_is_refused_as_native(orthanc, native, study):
    """At the series level; native's instance route ignores Priority, the plugin refuses it there too."""
    series, _, _ = sources(orthanc, study)
    sources(native, study)
    ours = orthanc.post(f"/series/{series}/anonymize", json={"Priority": "high"})
    theirs = native.post(f"/series/{series}/anonymize", json={"Priority": "high"})
    assert ours.status_code == theirs.status_code == 400
    assert ours.json()["OrthancStatus"] == theirs.json()["OrthancStatus"]


def test_the_status_of_each_orthanc_error_code_is_natives(orthanc, native, study):
    """answers.status_for_orthanc_error against the status native answers with each code it gives."""
    from consistent_anon.orthanc.http_answers import status_for_orthanc_error

    series, _, _ = sources(native, study)
    instance = native.json(f"/series/{series}/instances")[0]["ID"]
    requests = [("POST", f"/series/{series}/anonymize", b"{bad"),                       # 15
                ("POST", f"/series/{series}/anonymize", b'{"Keep": ["NoSuchTag"]}'),    # 27
                ("POST", f"/instances/{instance}/anonymize", b'{"Transcode": "1.2.3"}'),  # 3 (1.12+)
                ("POST", f"/instances/{instance}/anonymize", b'{"Transcode": "%s"}' % JPEG_BASELINE.encode()),
                ("POST", "/studies/nope/anonymize", b"{}"),                              # 17, or 3
                ("GET", f"/instances/{instance}/metadata/Nope", None),                  # 7
                ("POST", "/tools/find", b"{}"),                                          # 8
                ("GET", "/patients/nope", None)]
    seen = {}
    for method, path, body in requests:
        answer = native.request(method, path, data=body)
        if answer.status_code >= 400 and answer.content:
            seen[answer.json()["OrthancStatus"]] = answer.status_code
    assert len(seen) >= 5, seen
    assert {code: status_for_orthanc_error(code) for code in seen} == seen


@pytest.mark.parametrize("resources", ["abc", 5, {"a": 1}, [1, 2], None, "absent"],
                         ids=["string", "number", "object", "numbers", "null", "absent"])
def test_bulk_resources_of_the_wrong_type_are_refused_as_native(orthanc, native, resources):
    body = {"Resources": resources} if resources != "absent" else {}
    ours = orthanc.post("/tools/bulk-anonymize", json=body)
    theirs = native.post("/tools/bulk-anonymize", json=body)
    assert ours.status_code == theirs.status_code
    if theirs.status_code != 200:
        assert ours.json()["OrthancStatus"] == theirs.json()["OrthancStatus"], (ours.text, theirs.text)
