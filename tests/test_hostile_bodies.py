"""Hostile bodies: answered 400 from their text, before any parser or per-element work; Orthanc stays up."""
from __future__ import annotations

import threading
import time

import pytest

from conftest import new_patient, upload
from dicom_factory import two_frame_study

from consistent_anon.pipeline.options import MAX_BODY_BYTES, MAX_DEPTH, MAX_MEMBER_LENGTHS, parse_json_object
from consistent_anon.errors import BadRequest


def nested(depth: int) -> str:
    return '{"Keep": []' + ', "x": ' + "[" * (depth - 1) + "]" * (depth - 1) + "}"


def routes(server, study) -> list[str]:
    uploaded = upload(server, study)
    some = next(iter(uploaded.values()))
    return [f"/studies/{some['ParentStudy']}/anonymize", f"/series/{some['ParentSeries']}/anonymize",
            f"/instances/{some['ID']}/anonymize", "/tools/bulk-anonymize", "/tools/verify-anonymization"]


@pytest.fixture
def targets(orthanc):
    return routes(orthanc, two_frame_study(per_series=1, patient=new_patient()))


@pytest.mark.parametrize("depth", [550, 5000, 100_000])
def test_a_deeply_nested_body_is_400_and_orthanc_stays_up(orthanc, targets, depth):
    body = "[" * depth + "]" * depth
    for route in targets:
        for text in (body, nested(depth), '{"Keep": ' + "[" * depth):
            answer = orthanc.post(route, data=text)
            assert answer.status_code == 400, (route, answer.text)
            assert f"{MAX_DEPTH} levels" in answer.json()["Message"]
    assert orthanc.get("/system").status_code == 200


def test_the_depth_bound_is_exact():
    assert parse_json_object(nested(MAX_DEPTH))["Keep"] == []
    with pytest.raises(BadRequest, match="levels deep"):
        parse_json_object(nested(MAX_DEPTH + 1))
    # Brackets inside strings are text, not nesting.
    assert parse_json_object('{"Replace": {"StudyDescription": "' + "[{" * 5000 + '\\""}}')


@pytest.mark.parametrize("member", sorted(MAX_MEMBER_LENGTHS))
def test_lists_beyond_their_limit_are_400_at_once(orthanc, targets, member):
    limit = MAX_MEMBER_LENGTHS[member]
    entries = [f"{i:08x}" for i in range(limit + 1)]
    value = {e: "x" for e in entries} if member == "Replace" else entries
    for route in targets[:4]:
        started = time.monotonic()
        answer = orthanc.post(route, json={member: value, "Force": True})
        assert answer.status_code == 400, (route, answer.text)
        assert str(limit) in answer.json()["Message"] and member in answer.json()["Message"]
        assert time.monotonic() - started < 5


def test_two_million_keep_entries_are_400_at_once(orthanc, targets):
    body = '{"Keep": [' + ",".join(['"a"'] * 2_000_000) + "]}"
    started = time.monotonic()
    answer = orthanc.post(targets[0], data=body)
    assert answer.status_code == 400, answer.text
    assert time.monotonic() - started < 10


def test_a_body_beyond_the_size_limit_is_400(orthanc, targets):
    body = '{"Replace": {"StudyDescription": "' + "x" * MAX_BODY_BYTES + '"}}'
    answer = orthanc.post(targets[0], data=body)
    assert answer.status_code == 400
    assert "MiB" in answer.json()["Message"]


def test_the_api_stays_responsive_while_large_legitimate_calls_run(orthanc):
    """A study call with the longest lists accepted runs while the rest of the API answers."""
    study = two_frame_study(per_series=1, patient=new_patient())
    uploaded = upload(orthanc, study)
    study_id = next(iter(uploaded.values()))["ParentStudy"]
    body = {"Remove": [f"0009,{0x1000 + i:04x}" for i in range(MAX_MEMBER_LENGTHS["Remove"])],
            "Keep": ["StudyDescription"] * MAX_MEMBER_LENGTHS["Keep"]}  # repeated: native's slow case
    answers: list = []
    calls = [threading.Thread(target=lambda: answers.append(orthanc.post(f"/studies/{study_id}/anonymize", json=body)))
             for _ in range(2)]
    for call in calls:
        call.start()
    slowest = 0.0
    while any(call.is_alive() for call in calls):
        started = time.monotonic()
        assert orthanc.get("/system").status_code == 200
        assert orthanc.get(f"/studies/{study_id}").status_code == 200
        slowest = max(slowest, time.monotonic() - started)
        time.sleep(0.05)
    for call in calls:
        call.join()
    assert [answer.status_code for answer in answers] == [200, 200], [a.text for a in answers]
    assert slowest < 2


def test_the_server_survives_every_body_and_logs_no_error(orthanc, targets):
    """Sent here, not relying on the tests above having run first: each kind of hostile body on
    every route, then the API still answers and nothing was logged at error level."""
    log_before = len(orthanc.log())
    bodies = ["[" * 100_000 + "]" * 100_000, '{"Keep": ' + "[" * 5000,
              '{"Keep": [' + ",".join(['"a"'] * (MAX_MEMBER_LENGTHS["Keep"] + 1)) + "]}",
              '{"Replace": {"StudyDescription": "' + "x" * MAX_BODY_BYTES + '"}}']
    for route in targets:
        for body in bodies:
            assert orthanc.post(route, data=body).status_code == 400, route
    assert orthanc.get("/system").status_code == 200
    assert orthanc.post(targets[1], json={}).status_code == 200  # the series still anonymizes
    assert "Traceback" not in orthanc.log()[log_before:]
    assert orthanc.errors_logged(since=log_before) == []
