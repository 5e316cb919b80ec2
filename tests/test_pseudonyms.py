"""The pure core: pseudonyms and the request parser, without a server."""
from __future__ import annotations

import re

import pytest
from hypothesis import given, strategies as st

from consistent_anon.errors import BadRequest
from consistent_anon.pipeline.options import parse_request, parse_tag
from consistent_anon.identity.pseudonyms import Pseudonymizer, check_uid_root, project_key

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


def _race(functions, rounds: int = 8) -> list[bytes]:
    """Call every function from its own thread, all released at once."""
    import threading

    barrier = threading.Barrier(len(functions) * rounds)
    results: list[bytes] = []

    def run(function):
        barrier.wait()
        results.append(function())
    threads = [threading.Thread(target=run, args=(f,)) for f in functions for _ in range(rounds)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(10)
    return results


def test_nodes_racing_to_generate_the_shared_file_key_all_get_the_same(tmp_path):
    import stat
    from consistent_anon.identity.keys import KEY_FILE_NAME, SharedFileKey

    nodes = [SharedFileKey(tmp_path) for _ in range(3)]  # three Orthancs sharing one storage folder
    keys = _race(nodes)
    assert len(keys) == 24 and len(set(keys)) == 1
    assert [p.name for p in tmp_path.iterdir()] == [KEY_FILE_NAME]  # no draft left behind
    assert stat.S_IMODE((tmp_path / KEY_FILE_NAME).stat().st_mode) == 0o600
    assert SharedFileKey(tmp_path)() == keys[0]  # and a node started later reads it


def test_a_storage_plugin_without_a_configured_key_is_refused():
    from consistent_anon.identity.config import parse_config
    from consistent_anon.errors import PluginError
    from consistent_anon.identity.keys import KeyStore, no_generated_key

    from consistent_anon.identity.keys import PropertyChecks

    checks = PropertyChecks({}.get, lambda *_: None)
    with pytest.raises(PluginError, match="Key or KeyFile"):
        KeyStore(parse_config({}), no_generated_key, lambda: checks).pseudonymizer(None)
    configured = KeyStore(parse_config({"ConsistentAnonymization": {"Key": "k" * 32}}), no_generated_key,
                          lambda: checks)
    assert configured.pseudonymizer(None).uid("P", "1.2.3") == \
        Pseudonymizer(project_key(b"k" * 32, "default")).uid("P", "1.2.3")


def test_the_byte_level_shortcut_of_the_leak_search_does_not_miss_a_deflated_file():
    import io

    from pydicom.uid import DeflatedExplicitVRLittleEndian

    from consistent_anon.dicom.filereader import read_header
    from consistent_anon.dicom.scanning import find_uids
    from dicom_factory import Study, mr_series, to_bytes

    image = mr_series(Study(), "1.2.3.4.5.6.7.8.9", 1, 1)[0]
    image.ImageComments = "copied from 1.2.3.4.5.6.7.8.9.10.11"
    plain = to_bytes(image)
    image.file_meta.TransferSyntaxUID = DeflatedExplicitVRLittleEndian
    buffer = io.BytesIO()
    image.save_as(buffer, enforce_file_format=True)
    deflated = buffer.getvalue()
    wanted = {"1.2.3.4.5.6.7.8.9.10.11"}
    assert wanted.pop().encode() not in deflated  # compressed: invisible to a byte search
    wanted = {"1.2.3.4.5.6.7.8.9.10.11"}
    for data in (plain, deflated):
        found = find_uids(read_header(data), wanted)
        assert [element.path for element, _ in found] == [((), 0x00204000)]


def test_a_uid_with_a_stray_byte_is_searched_without_crashing():
    from consistent_anon.dicom.filereader import read_header
    from consistent_anon.dicom.scanning import find_uids
    from dicom_factory import Study, mr_series, to_bytes

    data = to_bytes(mr_series(Study(), "1.2.3.4.5", 1, 1)[0])
    assert find_uids(read_header(data), {"1.2.3\ufffd4"}) == []


def test_the_mark_of_a_requests_options_is_keyed_and_ignores_how_the_call_runs():
    from consistent_anon.identity.config import DEFAULT_OPTIONS_METADATA, ConfigurationError, parse_config
    from consistent_anon.pipeline.options import parse_request

    runs_differently = parse_request(b'{"Keep": ["SeriesDescription"], "Force": true, "KeepSource": false, '
                                     b'"Priority": 3, "Asynchronous": true, "Project": "p"}')
    plain = parse_request(b'{"Keep": ["SeriesDescription"]}')
    other = parse_request(b'{}')
    assert runs_differently.output_options == plain.output_options != other.output_options
    # The same options written otherwise: by number, in another order, empty or default members.
    same = [b'{"Keep": ["SeriesDescription", "StudyDescription"]}',
            b'{"Keep": ["0008,1030", "0008,103E", "SeriesDescription"], "Remove": [], "Replace": {}}',
            b'{"Keep": ["StudyDescription", "(0008,103e)"], "KeepPrivateTags": false}']
    assert len({parse_request(body).output_options for body in same}) == 1
    assert parse_request(b'{"KeepPrivateTags": true}').output_options != other.output_options
    assert parse_request(b'{"Replace": {"StudyDescription": "x"}}').output_options == \
        parse_request(b'{"Replace": {"0008,1030": "x"}}').output_options != \
        parse_request(b'{"Replace": {"0008,1030": "y"}}').output_options
    ours, theirs = Pseudonymizer(b"k" * 32), Pseudonymizer(b"o" * 32)
    assert ours.options_fingerprint(plain.output_options) == ours.options_fingerprint(runs_differently.output_options)
    assert ours.options_fingerprint(plain.output_options) != ours.options_fingerprint(other.output_options)
    assert ours.options_fingerprint(plain.output_options) != theirs.options_fingerprint(plain.output_options)
    assert parse_config({}).options_metadata == DEFAULT_OPTIONS_METADATA
    assert parse_config({"ConsistentAnonymization": {"OptionsMetadata": 4321}}).options_metadata == 4321
    for bad in (1023, 65536, "9732", True):
        with pytest.raises(ConfigurationError, match="OptionsMetadata"):
            parse_config({"ConsistentAnonymization": {"OptionsMetadata": bad}})
