"""The journal of synchronous calls, without a server."""
from __future__ import annotations

import json

import pytest

from consistent_anon.journal import CallJournal


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
        assert [call["resource_id"] for call in json.loads(saved[-1])] == ["ran"]
    assert json.loads(saved[-1]) == []
