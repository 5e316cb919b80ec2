"""Bad input gets native's status (or a clearer message), a JSON body, and loses nothing."""
from __future__ import annotations

import re

import pytest

from conftest import upload

UID = re.compile(r"^[0-9]+(\.(0|[1-9][0-9]*))+$")
UUID = re.compile(r"^[0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12}$")

BAD_BODIES = [
    ("malformed JSON", b"{bad"),
    ("empty body", b""),
    ("not an object", b"[1]"),
    ("flag of the wrong type", b'{"Force": "yes"}'),
    ("Keep not a list", b'{"Keep": "PatientName"}'),
    ("Replace not an object", b'{"Replace": ["PatientName"]}'),
    ("identifier replaced without Force", b'{"Replace": {"StudyInstanceUID": "1.2.3"}}'),
    ("identifier removed without Force", b'{"Remove": ["SeriesInstanceUID"]}'),
    ("identifier kept without Force", b'{"Keep": ["SOPInstanceUID"]}'),
    ("unknown tag", b'{"Keep": ["NoSuchAttributeAnywhere"]}'),
]


#: What each bad body's answer says (the plugin's own words where native says only "Bad request").
MESSAGES = {
    "malformed JSON": "The body of the request must be a JSON object (it is not valid JSON)",
    "empty body": "The body of the request must be a JSON object (it is not valid JSON)",
    "not an object": "The body of the request must be a JSON object",
    "flag of the wrong type": 'Member "Force" should be a Boolean value',
    "Keep not a list": 'Member "Keep" should be an array of strings',
    "Replace not an object": 'Member "Replace" should be an object',
    "identifier replaced without Force": 'Marking tag "StudyInstanceUID" as to be replaced requires the "Force" '
                                         'option to be set to true',
    "identifier removed without Force": 'Marking tag "SeriesInstanceUID" as to be removed requires the "Force" '
                                        'option to be set to true',
    "identifier kept without Force": 'Marking tag "SOPInstanceUID" as to be kept requires the "Force" option '
                                     'to be set to true',
    "unknown tag": "Unknown DICOM tag",
}


@pytest.mark.parametrize("level", ["instances", "series"])
@pytest.mark.parametrize("name,body", BAD_BODIES, ids=[b[0] for b in BAD_BODIES])
def test_bad_bodies_get_natives_status_and_change_nothing(orthanc, native, study, level, name, body):
    uploaded = upload(orthanc, study)
    upload(native, study)
    source = next(iter(uploaded.values()))
    resource = source["ID"] if level == "instances" else source["ParentSeries"]
    before = orthanc.json("/instances")
    ours = orthanc.post(f"/{level}/{resource}/anonymize", data=body)
    theirs = native.post(f"/{level}/{resource}/anonymize", data=body)
    assert ours.status_code == theirs.status_code, ours.text
    assert ours.status_code in (400, 500)
    answer, reference = ours.json(), theirs.json()
    assert answer["HttpStatus"] == ours.status_code
    assert answer["OrthancStatus"] == reference["OrthancStatus"], (answer, reference)
    assert answer["Message"] == MESSAGES[name]
    assert (answer["Method"], answer["Uri"]) == ("POST", f"/{level}/{resource}/anonymize")
    assert sorted(orthanc.json("/instances")) == sorted(before)


@pytest.mark.parametrize("level", ["patients", "studies", "series", "instances"])
def test_unknown_resource_is_404_with_a_json_body(orthanc, native, level):
    """Native 1.13.0 answers 400 "Parameter out of range" above the instance level (an upstream
    regression); the plugin keeps the 404 every other version answers."""
    ours = orthanc.post(f"/{level}/0000-no-such-resource/anonymize", json={})
    theirs = native.post(f"/{level}/0000-no-such-resource/anonymize", json={})
    assert ours.status_code == 404
    assert ours.json()["HttpStatus"] == 404 and ours.json()["OrthancStatus"] == 17
    if native.version() >= (1, 13, 0) and level != "instances":
        assert (theirs.status_code, theirs.json()["OrthancStatus"]) == (400, 3)
    else:
        assert theirs.status_code == 404


def test_other_methods_are_refused_as_native_does(orthanc, native, study):
    uploaded = upload(orthanc, study)
    upload(native, study)
    series = next(iter(uploaded.values()))["ParentSeries"]
    for method, path, allowed in (("GET", f"/series/{series}/anonymize", "POST"),
                                  ("POST", "/tools/generate-uid?level=study", "GET")):
        ours, theirs = orthanc.request(method, path), native.request(method, path)
        assert ours.status_code == theirs.status_code == 405
        assert ours.headers["Allow"] == theirs.headers["Allow"] == allowed


def test_generate_uid_frame_of_reference_level(orthanc):
    uids = {orthanc.get("/tools/generate-uid", params={"level": "frame-of-reference"}).text for _ in range(20)}
    assert len(uids) == 20
    assert all(UID.match(uid) and len(uid) <= 64 for uid in uids)


@pytest.mark.parametrize("level", ["patient", "study", "series", "instance"])
def test_generate_uid_native_levels_are_forwarded(orthanc, native, level):
    ours = orthanc.get("/tools/generate-uid", params={"level": level})
    theirs = native.get("/tools/generate-uid", params={"level": level})
    assert ours.status_code == theirs.status_code == 200
    assert ours.headers["content-type"].split(";")[0] == theirs.headers["content-type"].split(";")[0]
    assert ours.text != theirs.text
    if level == "patient":  # native answers a UUID for the patient level
        assert UUID.match(ours.text) and UUID.match(theirs.text)
    else:  # the same generator: the same root for the level and host
        assert ours.text.rsplit(".", 3)[0] == theirs.text.rsplit(".", 3)[0]


@pytest.mark.parametrize("params", [{}, {"level": "frame"}, {"level": "FRAME-OF-REFERENCE"}])
def test_generate_uid_unknown_or_missing_level_is_400_naming_the_levels(orthanc, params):
    answer = orthanc.get("/tools/generate-uid", params=params)
    assert answer.status_code == 400
    message = answer.json()["Message"]
    assert all(level in message for level in ("patient", "study", "series", "instance", "frame-of-reference"))


def test_pseudonym_queries_need_the_patient(orthanc):
    answer = orthanc.get("/tools/generate-uid", params={"level": "study", "uid": "1.2.3.4"})
    assert answer.status_code == 400
    assert "patient-id" in answer.json()["Message"]


def test_the_server_survives_all_of_it_and_logs_no_unexpected_error(orthanc, study):
    """Every kind of bad request above, sent here (not relying on the other tests having run
    before), leaves a server that still anonymizes and logs no Python traceback, and no error
    line of the plugin's own but the unknown tag's 500 (native logs that one too): a bug's
    line reads "unexpected <exception>" followed by frames, with no "Traceback" in it."""
    log_before = len(orthanc.log())
    uploaded = upload(orthanc, study)
    source = next(iter(uploaded.values()))
    for level, resource in (("instances", source["ID"]), ("series", source["ParentSeries"])):
        for _, body in BAD_BODIES:
            assert orthanc.post(f"/{level}/{resource}/anonymize", data=body).status_code in (400, 500)
    for level in ("patients", "studies", "series", "instances"):
        assert orthanc.post(f"/{level}/0000-no-such-resource/anonymize", json={}).status_code == 404
    assert orthanc.post(f"/studies/{source['ParentSeries']}/anonymize", json={}).status_code == 404
    assert orthanc.get(f"/series/{source['ParentSeries']}/anonymize").status_code == 405
    for params in ({}, {"level": "frame"}, {"level": "study", "uid": "1.2.3.4"}):
        assert orthanc.get("/tools/generate-uid", params=params).status_code == 400

    assert orthanc.get("/system").status_code == 200
    answer = orthanc.post(f"/series/{source['ParentSeries']}/anonymize", json={})
    assert answer.status_code == 200 and len(orthanc.json(f"/series/{answer.json()['ID']}/instances")) == 3
    assert "Traceback" not in orthanc.log()[log_before:]
    errors = orthanc.errors_logged(since=log_before)
    # The check sees the plugin's own error lines: the unknown tag's 500 is one.
    assert any(f"POST /series/{source['ParentSeries']}/anonymize: Unknown DICOM tag" in line for line in errors)
    # Orthanc 1.10 also logs each failed call of a plugin into its API, handled or not.
    assert [line for line in errors if "anonymize: Unknown DICOM tag" not in line
            and "Exception while invoking plugin service" not in line] == []


def test_an_id_of_another_level_is_a_clear_404(orthanc, study):
    """Native anonymizes /studies/{a series ID} as if it were a study; the plugin says what is wrong."""
    uploaded = upload(orthanc, study)
    series = next(iter(uploaded.values()))["ParentSeries"]
    answer = orthanc.post(f"/studies/{series}/anonymize", json={})
    assert answer.status_code == 404
    assert answer.json()["Message"].startswith(f"Unknown resource: no studies has the ID {series} (if there was "
                                               "one, it was deleted: an anonymization with KeepSource false")


def test_a_series_anonymized_under_other_options_is_refused_not_silently_kept(orthanc, study):
    """Results carry the same identifiers whatever the options (they follow from the key), so a
    call under other options would get the earlier results back: it is refused with 409."""
    uploaded = upload(orthanc, study)
    series = next(iter(uploaded.values()))["ParentSeries"]
    first = orthanc.post(f"/series/{series}/anonymize", json={})
    assert first.status_code == 200, first.text
    result = first.json()["ID"]
    assert "SeriesDescription" not in orthanc.json(f"/series/{result}")["MainDicomTags"]
    before, jobs = sorted(orthanc.json("/instances")), orthanc.json("/jobs")
    for body in ({"Keep": ["SeriesDescription"]}, {"Keep": ["SeriesDescription"], "Asynchronous": True},
                 {"Replace": {"StudyDescription": "another"}}):
        answer = orthanc.post(f"/series/{series}/anonymize", json=body)
        assert answer.status_code == 409, answer.text
        assert answer.json()["HttpStatus"] == 409 and "other options" in answer.json()["Message"]
        assert result in answer.json()["Message"]
    assert sorted(orthanc.json("/instances")) == before and orthanc.json("/jobs") == jobs
    # How a call runs is not an option of its results: same results, same answer.
    again = orthanc.post(f"/series/{series}/anonymize",
                         json={"Force": True, "KeepSource": True, "Priority": 2, "Synchronous": True})
    assert again.status_code == 200 and again.json()["ID"] == result
    # Once the earlier results are deleted, the other options apply (under the same identifiers).
    assert orthanc.delete(f"/series/{result}").status_code == 200
    redo = orthanc.post(f"/series/{series}/anonymize", json={"Keep": ["SeriesDescription"]})
    assert redo.status_code == 200 and redo.json()["ID"] == result
    assert orthanc.json(f"/series/{result}")["MainDicomTags"]["SeriesDescription"].startswith("Synthetic")
    assert orthanc.post(f"/series/{series}/anonymize", json={}).status_code == 409


def test_every_message_bounds_what_it_echoes():
    """errors.bounded, applied to every error's message and description: a run of a caller's text
    is cut to 64 characters, a message to 2048, IDs and the plugin's own words are left whole."""
    from consistent_anon.errors import ECHOED, MESSAGE_LENGTH, NotFound, PluginError

    orthanc_id = "4546af6c-774f4851-430a8d8f-0e6f1c42-5e7cb1f6"
    message = NotFound(f"Unknown resource {'x' * 7_000_000} or {orthanc_id} at /studies/{'y' * 100}/anonymize").message
    assert message == f"Unknown resource {'x' * ECHOED}... or {orthanc_id} at /studies/{'y' * ECHOED}.../anonymize"
    spaced = PluginError(" ".join(["z" * ECHOED] * 100_000), description="d" * 1000)
    assert len(spaced.message) == MESSAGE_LENGTH and spaced.message.endswith("...")
    assert spaced.description == "d" * ECHOED + "..."


def test_a_partly_kept_call_says_what_stayed_instead_of_nothing():
    from consistent_anon.errors import NOTHING_KEPT, SERIES_NAMED, NotFound, PartlyKept

    series = [f"{n:08x}-00000000-00000000-00000000-00000000" for n in range(SERIES_NAMED + 2)]
    error = PartlyKept(NotFound(f"Sources deleted: {NOTHING_KEPT}; call again"), series, 42, marked=True)
    assert NOTHING_KEPT not in error.message and "42 anonymized instance(s)" in error.message
    assert all(s in error.message for s in series[:SERIES_NAMED]) and "and 2 more" in error.message
    assert error.message.endswith("; call again") and error.series == tuple(series) and error.instances == 42
