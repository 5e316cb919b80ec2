"""The pure core: pseudonyms and the request parser, without a server."""
from __future__ import annotations

import re

import pytest
from hypothesis import given, strategies as st

from consistent_anon.errors import BadRequest
from consistent_anon.options import parse_request, parse_tag
from consistent_anon.pseudonyms import Pseudonymizer, check_uid_root, project_key

UID = re.compile(r"^(0|[1-9][0-9]*)(\.(0|[1-9][0-9]*))+$")
KEY = b"k" * 32
uids = st.from_regex(r"1\.2\.[1-9][0-9]{0,20}(\.[1-9][0-9]{0,10}){1,4}", fullmatch=True)


@given(uids, st.text(min_size=1, max_size=20))
def test_uid_pseudonyms_are_valid_uuid_derived_uids(original, scope):
    uid = Pseudonymizer(KEY).uid(scope, original)
    assert UID.match(uid) and len(uid) <= 64 and uid.startswith("2.25.")
    value = int(uid[5:])
    assert value < 2 ** 128
    assert (value >> 76) & 0xF == 8  # RFC 9562 version 8
    assert (value >> 62) & 0x3 == 2  # RFC 9562 variant


@given(uids, uids)
def test_same_original_same_pseudonym_different_originals_different(a, b):
    pseudonyms = Pseudonymizer(KEY)
    assert pseudonyms.uid("P", a) == Pseudonymizer(KEY).uid("P", a)
    if a != b:
        assert pseudonyms.uid("P", a) != pseudonyms.uid("P", b)


def test_scope_key_and_project_each_change_the_pseudonym():
    base = Pseudonymizer(KEY).uid("P1", "1.2.3.4")
    assert Pseudonymizer(KEY).uid("P2", "1.2.3.4") != base
    assert Pseudonymizer(b"x" * 32).uid("P1", "1.2.3.4") != base
    assert Pseudonymizer(project_key(KEY, "trial")).uid("P1", "1.2.3.4") != base


@given(uids)
def test_a_configured_root_keeps_uids_within_64_characters(original):
    root = "1.2.826.0.1.3680043.10.9999"
    uid = Pseudonymizer(KEY, check_uid_root(root)).uid("P", original)
    assert uid.startswith(root + ".") and len(uid) <= 64 and UID.match(uid)


@pytest.mark.parametrize("root", ["", "1.2.03", "1..2", "abc", "1." + "2" * 40])
def test_bad_roots_are_refused(root):
    with pytest.raises(ValueError):
        check_uid_root(root)


def test_patient_pseudonyms_look_like_natives_and_do_not_reveal_the_key():
    pseudonyms = Pseudonymizer(KEY)
    patient_id = pseudonyms.patient_id("PID-1")
    assert re.match(r"^[0-9a-f]{8}-[0-9a-f]{4}-8[0-9a-f]{3}-[89ab][0-9a-f]{3}-[0-9a-f]{12}$", patient_id)
    assert pseudonyms.patient_name(patient_id).startswith("Anonymized-")
    assert "k" * 32 not in repr(pseudonyms)


@pytest.mark.parametrize("name,tag", [("StudyInstanceUID", 0x0020000D), ("0020,000d", 0x0020000D),
                                      ("(0020,000D)", 0x0020000D), ("0020000D", 0x0020000D),
                                      ("ReferencedImageSequence[0].ReferencedSOPInstanceUID", None),
                                      ("NotAKeyword", None)])
def test_tags_are_read_in_every_form_native_accepts(name, tag):
    assert parse_tag(name) == tag


def test_call_members_are_not_sent_to_native_and_async_is_recognized():
    request = parse_request(b'{"Keep": ["StudyDescription"], "Synchronous": false, "KeepSource": false, '
                            b'"Priority": 3, "Project": "p"}')
    assert request.native_body == {"Keep": ["StudyDescription"]}
    assert request.asynchronous and not request.keep_source and request.priority == 3 and request.project == "p"


@pytest.mark.parametrize("body", [b"", b"{", b"[]", b'{"Priority": true}', b'{"Replace": {"PatientID": "x"}}'])
def test_bad_requests_are_refused_before_anything_happens(body):
    with pytest.raises(BadRequest):
        parse_request(body)


def test_nodes_that_generate_a_key_at_the_same_moment_converge_on_one():
    """Two nodes find no key and both write one: after the pause both use the last one written."""
    from consistent_anon.config import PluginConfig
    from consistent_anon.keys import KeyStore

    database: dict[int, str] = {}
    results: dict[str, bytes] = {}

    def node(name: str, during_pause=lambda: None) -> KeyStore:
        reads = []

        def get(key, default):
            reads.append(key)
            return default if len(reads) == 1 else database.get(key, default)  # first read: no key yet

        def sleep(seconds):
            assert seconds >= 1.0
            during_pause()
        return KeyStore(PluginConfig(), get, database.__setitem__, sleep=sleep)

    second = node("second")
    first = node("first", during_pause=lambda: results.__setitem__("second", second.master_key()))
    results["first"] = first.master_key()
    assert results["first"] == results["second"]
    assert first.master_key() == second.master_key() == results["first"]
