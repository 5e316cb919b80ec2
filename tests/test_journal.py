"""The journal of synchronous calls, without a server."""
from __future__ import annotations

import json

import pytest

from consistent_anon.jobs.journal import RECORD_VERSION, CallJournal


def test_a_call_whose_record_cannot_be_written_is_never_written_later():
    saved: list[str] = []
    failing = [True]

    def save(text: str) -> None:
        if failing[0]:
            raise OSError("database busy")
        saved.append(text)
    journal = CallJournal(lambda: "[]", save, lambda message: None)
    with pytest.raises(OSError):
        with journal.recorded("studies", "refused", "{}"):
            pass
    failing[0] = False
    with journal.recorded("series", "ran", "{}"):
        assert [call["resource_id"] for call in _calls(saved[-1])] == ["ran"]
    assert _calls(saved[-1]) == []


def _calls(text: str) -> list[dict]:
    record = json.loads(text)
    assert record["Version"] == RECORD_VERSION
    return record["Calls"]


CALL = {"level": "studies", "resource_id": "s1", "body": "{}"}


@pytest.mark.parametrize("saved", [json.dumps([CALL]), json.dumps({"Version": 2, "Calls": [CALL]})])
def test_interrupted_calls_are_read_from_every_version_of_the_record(saved):
    errors: list[str] = []
    journal = CallJournal(lambda: saved, lambda text: None, errors.append)
    assert journal.interrupted() == [CALL]
    assert not errors


@pytest.mark.parametrize("saved", ["{not json", json.dumps({"Version": 2, "Calls": [CALL, {"level": 3}]}), "42"])
def test_a_record_that_cannot_be_read_is_said_at_the_error_level_without_its_content(saved):
    errors: list[str] = []
    journal = CallJournal(lambda: saved, lambda text: None, errors.append)
    calls = journal.interrupted()
    assert calls == ([CALL] if "Calls" in saved else [])
    assert len(errors) == 1 and "cannot be read" in errors[0] and "s1" not in errors[0]


def test_an_interrupted_call_that_cannot_be_run_again_holds_back_none_of_the_others():
    """Each interrupted call is run again on its own: one that fails (a body this version refuses,
    a job queue that refuses it) is said at the error level, and the next ones still run."""
    second = {**CALL, "resource_id": "s2"}
    errors: list[str] = []
    journal = CallJournal(lambda: json.dumps({"Version": 2, "Calls": [CALL, second]}), lambda text: None,
                          errors.append)
    ran: list[str] = []

    def resubmit(call: dict) -> None:
        if call["resource_id"] == "s1":
            raise ValueError("refused")
        ran.append(call["resource_id"])
    assert journal.complete_interrupted(resubmit) == 1
    assert ran == ["s2"]
    assert len(errors) == 1 and "could not be run again" in errors[0] and "ValueError" in errors[0]
