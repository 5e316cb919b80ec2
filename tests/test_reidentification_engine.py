"""ReidentificationCertificates, wired: the option checked at start, the engine's output step
(every stored or answered instance sealed, then checked), the options mark and re-runs. Against
the in-memory Orthanc of tests/fake_orthanc.py; tests/test_reidentification_orthanc.py does it on
a real one. Recipients are made here by the openssl command line."""
from __future__ import annotations

import io
import json
import subprocess
import sys
from pathlib import Path

import pydicom
import pytest

from conftest import new_patient
from consistent_anon.reidentification import envelope
from consistent_anon.identity.config import ConfigurationError, parse_config
from consistent_anon.pipeline.engine import Anonymizer
from consistent_anon.errors import BadRequest, Conflict, VerificationFailed
from consistent_anon.identity.keys import KeyStore, PropertyChecks
from consistent_anon.pipeline.options import parse_request
from dicom_factory import to_bytes, two_frame_study
from fake_orthanc import FakeOrthanc
from recipients import make_recipients, openssl, originals_by_openssl

KEY = "unit-test-key-0123456789abcdef0123456789"
SECTION = "ConsistentAnonymization"
ENCRYPTED_ATTRIBUTES_SEQUENCE = 0x04000500
IDENTIFIERS = ("PatientID", "StudyInstanceUID", "SeriesInstanceUID", "SOPInstanceUID", "FrameOfReferenceUID")


@pytest.fixture(scope="module")
def keys(tmp_path_factory) -> dict[str, tuple[Path, Path]]:
    return make_recipients(tmp_path_factory.mktemp("recipients"), ("alice", "bob"))


def _config(**section) -> object:
    return parse_config({SECTION: {"Key": KEY, **section}})


class Node:
    """An engine on a shared in-memory Orthanc, under one configuration."""

    def __init__(self, orthanc: FakeOrthanc, properties: dict[int, str], **section) -> None:
        self.config = _config(**section)
        checks = PropertyChecks(lambda key, default: properties.get(key, default), properties.__setitem__)
        self.keys = KeyStore(self.config, lambda: KEY.encode(), lambda: checks)
        self.engine = Anonymizer(orthanc, self.keys)

    def request(self, **body) -> object:
        request = parse_request(json.dumps(body))
        return request.for_project(self.keys.settings(request.project))

    def study(self, study_id: str, **body) -> dict:
        return self.engine.anonymize_resource("studies", study_id, self.request(**body))


@pytest.fixture
def fake() -> FakeOrthanc:
    """The in-memory Orthanc (not named `orthanc`: that name marks a test as needing a server)."""
    return FakeOrthanc()


@pytest.fixture
def properties() -> dict[int, str]:
    return {}


def _upload(orthanc: FakeOrthanc) -> tuple[str, dict[str, pydicom.Dataset]]:
    made = two_frame_study(per_series=2, patient=new_patient())
    stored = [orthanc.upload(to_bytes(ds)) for ds in made.instances]
    return stored[0]["ParentStudy"], {ds.SOPInstanceUID: ds for ds in made.instances}


def _results(orthanc: FakeOrthanc, answer: dict) -> list[bytes]:
    return [orthanc.files[instance["ID"]] for instance in orthanc.instances_of("studies", answer["ID"])]


# --- the option --------------------------------------------------------------------------------

def test_certificates_are_read_at_start_and_belong_to_every_project_unless_it_opts_out(keys):
    config = _config(ReidentificationCertificates=[str(keys["alice"][1])],
                     Projects={"trial": {}, "open": {"ReidentificationCertificates": []},
                               "other": {"ReidentificationCertificates": [str(keys["bob"][1])]}})
    fingerprints = {name: [r.fingerprint for r in settings.recipients] for name, settings in config.project_settings.items()}
    alice, bob = (envelope.load_recipients([keys[name][1]])[0].fingerprint for name in ("alice", "bob"))
    assert fingerprints == {"trial": [alice], "open": [], "other": [bob], "default": [alice]}
    assert "reidentification=['default', 'other', 'trial']" in repr(config)  # the start's log line
    assert _config().project_settings["default"].recipients == ()


def test_unusable_certificates_stop_the_start_naming_the_option_and_not_the_key(keys, tmp_path):
    elliptic_key, elliptic = tmp_path / "ec.key.pem", tmp_path / "ec.cert.pem"
    made = openssl("req", "-x509", "-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:prime256v1", "-nodes",
                   "-keyout", str(elliptic_key), "-out", str(elliptic), "-days", "1", "-subj", "/CN=EC")
    assert made.returncode == 0, made.stderr
    private_key = keys["alice"][0]
    key_lines = [line for line in private_key.read_text().splitlines() if not line.startswith("-----")]
    cases = {str(tmp_path / "missing.pem"): "cannot be read (no such file)", str(private_key): "not readable",
             str(elliptic): "no RSA key"}
    for path, reason in cases.items():
        for section in ({"ReidentificationCertificates": [path]},
                        {"Projects": {"trial": {"ReidentificationCertificates": [path]}}}):
            with pytest.raises(ConfigurationError) as raised:
                _config(**section)
            message = str(raised.value)
            assert "ReidentificationCertificates" in message and reason in message and path in message
            assert not any(line in message for line in key_lines)
    for wrong in ("alice.pem", [""], [3]):
        with pytest.raises(ConfigurationError, match="ReidentificationCertificates must list"):
            _config(ReidentificationCertificates=wrong)


def test_without_certificates_the_plugin_needs_no_cryptography(tmp_path):
    """A Python without `cryptography` (Debian's python3-cryptography not installed) runs every
    call that seals nothing: the package is imported only where certificates are configured."""
    (tmp_path / "c.pem").write_text("a certificate, read only once cryptography is there\n")
    script = """
import sys
sys.modules["cryptography"] = None  # any import of it fails
sys.path[:0] = [sys.argv[1], sys.argv[2]]
import consistent_anon.orthanc.plugin, consistent_anon.pipeline.engine
from consistent_anon.identity.config import ConfigurationError, parse_config
parse_config({"ConsistentAnonymization": {"Key": "k" * 32}})
try:
    parse_config({"ConsistentAnonymization": {"Key": "k" * 32, "ReidentificationCertificates": ["c.pem"]}})
except ConfigurationError as error:
    print(error)
"""
    folder = Path(__file__).parent
    result = subprocess.run([sys.executable, "-c", script, str(folder.parent / "plugin"), str(folder)],
                            capture_output=True, text=True, cwd=tmp_path)
    assert result.returncode == 0, result.stderr
    assert "ReidentificationCertificates: Re-identification certificates need the Python package cryptography" \
        in result.stdout


def test_the_options_mark_names_the_certificates(keys):
    def mark(*names: str) -> str:
        node = Node(FakeOrthanc(), {}, ReidentificationCertificates=[str(keys[n][1]) for n in names])
        return node.keys.pseudonymizer(None).options_fingerprint(node.request().output_options)
    assert len({mark(), mark("alice"), mark("bob"), mark("alice", "bob")}) == 4
    assert mark("alice", "bob") == mark("bob", "alice")


# --- the output step ---------------------------------------------------------------------------

def test_every_result_carries_the_originals_sealed_for_each_recipient(fake, properties, keys, tmp_path):
    node = Node(fake, properties, ReidentificationCertificates=[str(keys["alice"][1]), str(keys["bob"][1])])
    study, sources = _upload(fake)
    answer = node.study(study)
    results = _results(fake, answer)
    assert len(results) == len(sources)
    for data in results:
        anonymized = pydicom.dcmread(io.BytesIO(data))
        for name in ("alice", "bob"):
            originals = originals_by_openssl(data, *keys[name], tmp_path)
            source = next(ds for ds in sources.values() if ds.SOPInstanceUID == originals.SOPInstanceUID)
            for keyword in (k for k in IDENTIFIERS if k in source):  # an RTSTRUCT has no FrameOfReferenceUID
                assert originals[keyword].value == source[keyword].value != anonymized[keyword].value


def test_an_instance_answered_and_not_stored_is_sealed_too(fake, properties, keys, tmp_path):
    node = Node(fake, properties, ReidentificationCertificates=[str(keys["alice"][1])])
    _, sources = _upload(fake)
    instance = next(iter(fake.files))
    data = node.engine.anonymize_instance(instance, node.request()).data
    originals = originals_by_openssl(data, *keys["alice"], tmp_path)
    assert originals.SOPInstanceUID in sources


def test_without_certificates_no_result_carries_the_sequence(fake, properties):
    study, _ = _upload(fake)
    for data in _results(fake, Node(fake, properties).study(study)):
        assert ENCRYPTED_ATTRIBUTES_SEQUENCE not in pydicom.dcmread(io.BytesIO(data))


def test_the_check_ignores_the_ciphertext_and_still_finds_a_real_leak(fake, properties, keys, monkeypatch):
    """A ciphertext that happened to spell the source's PatientID and a UID is no leak; the
    PatientID kept in a description still is one."""
    node = Node(fake, properties, ReidentificationCertificates=[str(keys["alice"][1])])
    study, sources = _upload(fake)
    source = next(iter(sources.values()))
    spelled = f"{source.PatientID} {source.StudyInstanceUID}".encode("ascii")
    monkeypatch.setattr(envelope.Envelope, "seal", lambda self, content: spelled)
    node.study(study)  # passes the check
    leaky = two_frame_study(per_series=1, patient=new_patient())
    for ds in leaky.instances:
        ds.StudyDescription = f"follow-up of {ds.PatientID}"
        fake.upload(to_bytes(ds))
    with pytest.raises(VerificationFailed) as failed:
        node.study(fake.parent_of("series", leaky_series(fake, leaky)), Keep=["StudyDescription"])
    assert "PatientID remains in StudyDescription" in failed.value.message and "0400" not in failed.value.message


def test_a_sequence_the_source_brought_is_searched_as_before(fake, properties):
    """Only the sequence the plugin adds is skipped: one native kept from the source (here holding
    the PatientID in plain) is searched as any other element."""
    node = Node(fake, properties)
    made = two_frame_study(per_series=1, patient=new_patient())
    for ds in made.instances:
        item = pydicom.Dataset()
        item.EncryptedContentTransferSyntaxUID = "1.2.840.10008.1.2.1"
        item.EncryptedContent = f"plain {ds.PatientID} ".encode("ascii")
        ds.EncryptedAttributesSequence = pydicom.Sequence([item])
        stored = fake.upload(to_bytes(ds))
    with pytest.raises(VerificationFailed, match=r"PatientID remains in EncryptedAttributesSequence"):
        node.study(stored["ParentStudy"])


def leaky_series(orthanc: FakeOrthanc, study) -> str:
    sop = study.instances[0].SOPInstanceUID
    return next(orthanc.parent_of("instances", i) for i, data in orthanc.files.items()
                if pydicom.dcmread(io.BytesIO(data), stop_before_pixels=True).SOPInstanceUID == sop)


def test_a_deflated_instance_is_refused_and_nothing_stored(fake, properties, keys):
    node = Node(fake, properties, ReidentificationCertificates=[str(keys["alice"][1])])
    ds = two_frame_study(per_series=1, patient=new_patient()).instances[0]
    ds.file_meta.TransferSyntaxUID = pydicom.uid.DeflatedExplicitVRLittleEndian
    stored = fake.upload(to_bytes(ds))
    before = set(fake.files)
    with pytest.raises(BadRequest, match="re-identification data"):
        node.engine.anonymize_resource("series", stored["ParentSeries"], node.request())
    assert set(fake.files) == before


def test_a_source_sealed_before_is_refused_unless_its_sequence_is_removed(fake, properties, keys, tmp_path):
    """Native keeps an Encrypted Attributes Sequence (an earlier de-identification's): no second
    one is spliced beside it; removing it makes room for this call's."""
    node = Node(fake, properties, ReidentificationCertificates=[str(keys["alice"][1])])
    study, _ = _upload(fake)
    first = _results(fake, node.study(study))[0]
    stored = fake.upload(first)  # an anonymized instance, stored as a source of its own
    with pytest.raises(BadRequest, match="EncryptedAttributesSequence"):
        node.engine.anonymize_instance(stored["ID"], node.request(Project="default"))
    again = node.engine.anonymize_instance(stored["ID"], node.request(Remove=["EncryptedAttributesSequence"])).data
    originals = originals_by_openssl(again, *keys["alice"], tmp_path)
    assert originals.SOPInstanceUID == pydicom.dcmread(io.BytesIO(first)).SOPInstanceUID


# --- re-runs -----------------------------------------------------------------------------------

def _unmark(orthanc: FakeOrthanc, answer: dict) -> None:
    """Forget the options mark of the result's series, as after a call that stopped before marking
    them: a re-run then compares what Orthanc answers AlreadyStored for."""
    for series in orthanc.children(answer["ID"]):
        orthanc.stored_metadata.get(series, {}).clear()


def test_a_rerun_answers_the_same_result_marked_or_not(fake, properties, keys):
    node = Node(fake, properties, ReidentificationCertificates=[str(keys["alice"][1])])
    study, _ = _upload(fake)
    first = node.study(study)
    stored = _results(fake, first)
    assert node.study(study) == first
    _unmark(fake, first)
    assert node.study(study) == first  # every instance AlreadyStored, recognized though sealed anew
    assert _results(fake, first) == stored


def test_series_by_series_land_in_one_study(fake, properties, keys):
    node = Node(fake, properties, ReidentificationCertificates=[str(keys["alice"][1])])
    study, _ = _upload(fake)
    series = fake.children(study)
    parents = {fake.parent_of("series", node.engine.anonymize_resource("series", s, node.request())["ID"])
               for s in series}
    assert parents == {node.study(study)["ID"]}


@pytest.mark.parametrize("unmarked", [False, True])
def test_other_certificates_or_none_are_other_options(fake, properties, keys, unmarked):
    study, _ = _upload(fake)
    alice = Node(fake, properties, ReidentificationCertificates=[str(keys["alice"][1])])
    first = alice.study(study)
    for other in (Node(fake, properties, ReidentificationCertificates=[str(keys["bob"][1])]),
                  Node(fake, properties)):
        if unmarked:
            _unmark(fake, first)
        with pytest.raises(Conflict, match="other options"):
            other.study(study)
