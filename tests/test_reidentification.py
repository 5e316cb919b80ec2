"""Re-identification data: the Encrypted Attributes Sequence, opened by the openssl command line
as a recipient would, and by scripts/reidentify.py. Keys and certificates are made here, in a
temporary folder, by the openssl command line: none is ever committed. No Orthanc needed."""
from __future__ import annotations

import base64
import copy
import io
import re
import shutil
import subprocess
import sys
from pathlib import Path

import pydicom
import pytest
from pydicom.dataset import Dataset
from pydicom.filereader import read_dataset
from pydicom.sequence import Sequence
from pydicom.uid import DeflatedExplicitVRLittleEndian, ImplicitVRLittleEndian

pytest.importorskip("cryptography", reason="cryptography is missing from the test environment")

from consistent_anon.reidentification import (  # noqa: E402
    ENCRYPTED_CONTENT_TRANSFER_SYNTAX, Envelope, ReidentificationError, der, der_integer, der_oid,
    der_set, encrypted_attributes_data_set, encrypted_attributes_item, insert_encrypted_attributes,
    load_recipients, modified_attributes, replace_value)
from dicom_factory import CT_IMAGE_STORAGE, Study, image_series, to_bytes  # noqa: E402
import reidentify  # noqa: E402

SCRIPT = Path(__file__).parents[1] / "scripts" / "reidentify.py"


def openssl(*arguments: str, data: bytes | None = None) -> subprocess.CompletedProcess:
    return subprocess.run(["openssl", *arguments], input=data, capture_output=True)


@pytest.fixture(scope="module")
def keys(tmp_path_factory) -> dict[str, tuple[Path, Path]]:
    """Three throwaway RSA recipients (key, certificate): two configured, one stranger."""
    if shutil.which("openssl") is None:
        pytest.skip("the openssl command line is missing")
    folder = tmp_path_factory.mktemp("recipients")
    made = {}
    for name in ("alice", "bob", "stranger"):
        key, certificate = folder / f"{name}.key.pem", folder / f"{name}.cert.pem"
        result = openssl("req", "-x509", "-newkey", "rsa:2048", "-nodes", "-keyout", str(key), "-out",
                         str(certificate), "-days", "1", "-subj", f"/CN=Re-identification {name}")
        assert result.returncode == 0, result.stderr
        made[name] = (key, certificate)
    return made


def original_instance(file_syntax: str | None = None) -> Dataset:
    """A made-up CT instance with identity, UIDs, dates, a nested reference and a private tag."""
    ds = image_series(Study(), CT_IMAGE_STORAGE, "CT", pydicom.uid.generate_uid(), 1, 1)[0]
    ds.SpecificCharacterSet = "ISO_IR 192"
    ds.PatientName = "Müller^Jörg"
    ref = Dataset()
    ref.ReferencedSOPClassUID = CT_IMAGE_STORAGE
    ref.ReferencedSOPInstanceUID = pydicom.uid.generate_uid()
    ds.ReferencedImageSequence = Sequence([ref])
    ds.add_new(0x00090010, "LO", "SYNTHETIC CREATOR")
    ds.add_new(0x00091001, "LO", "private identifying text")
    if file_syntax:
        ds.file_meta.TransferSyntaxUID = file_syntax
    return ds


def anonymized_version(original: Dataset) -> Dataset:
    """What an anonymization makes of it: identity and UIDs replaced, a nested UID replaced, the
    date shifted, the institution and the private tags removed, a marker added."""
    ds = copy.deepcopy(original)
    ds.PatientName = "Anonymized^1"
    ds.PatientID = "PSEUDO-1"
    for keyword in ("StudyInstanceUID", "SeriesInstanceUID", "SOPInstanceUID", "FrameOfReferenceUID"):
        setattr(ds, keyword, pydicom.uid.generate_uid())
    ds.ReferencedImageSequence[0].ReferencedSOPInstanceUID = pydicom.uid.generate_uid()
    ds.StudyDate = "20230815"
    del ds.InstitutionName, ds.PatientBirthDate
    del ds[0x00090010], ds[0x00091001]
    ds.PatientIdentityRemoved = "YES"
    return ds


def read_back(data: bytes) -> Dataset:
    """A file as Orthanc would hand it to the plugin: read back from its bytes."""
    return pydicom.dcmread(io.BytesIO(data))


EXPECTED_MODIFIED = {"PatientName", "PatientID", "PatientBirthDate", "StudyInstanceUID", "SeriesInstanceUID",
                     "SOPInstanceUID", "FrameOfReferenceUID", "StudyDate", "InstitutionName",
                     "ReferencedImageSequence", 0x00090010, 0x00091001}


def _names(item: Dataset) -> set:
    return {element.keyword or int(element.tag) for element in item}


@pytest.fixture()
def instance() -> tuple[Dataset, Dataset]:
    original = original_instance()
    return read_back(to_bytes(original)), read_back(to_bytes(anonymized_version(original)))


def test_modified_attributes_are_what_was_replaced_or_removed(instance):
    original, anonymized = instance
    item = modified_attributes(original, anonymized)
    assert _names(item) == EXPECTED_MODIFIED
    assert item.PatientID == original.PatientID and item.SOPInstanceUID == original.SOPInstanceUID
    # a change inside a sequence keeps the whole original sequence (PS3.15 E.1.1)
    assert item.ReferencedImageSequence == original.ReferencedImageSequence
    assert "Modality" not in item and "PixelData" not in item and "PatientIdentityRemoved" not in item


def test_unchanged_values_reencoded_differently_are_no_change(instance):
    original, _ = instance
    padded = Dataset()
    padded.update(original)
    padded.Modality = "CT "  # the same value with explicit padding
    assert "Modality" not in modified_attributes(original, read_back(to_bytes(_with_meta(padded, original))))


def _with_meta(ds: Dataset, like: Dataset) -> Dataset:
    ds.file_meta = like.file_meta
    return ds


def seal_instance(recipients, instance) -> tuple[Dataset, Dataset]:
    original, anonymized = instance
    item = encrypted_attributes_item(Envelope(recipients), modified_attributes(original, anonymized),
                                     original.get("SpecificCharacterSet"))
    return item, original


def decrypt_with_openssl(content: bytes, key: Path, certificate: Path, tmp_path: Path) -> subprocess.CompletedProcess:
    envelope = tmp_path / "content.der"
    envelope.write_bytes(content)
    return openssl("cms", "-decrypt", "-inform", "DER", "-in", str(envelope), "-inkey", str(key),
                   "-recip", str(certificate))


def test_openssl_decrypts_and_the_dataset_holds_the_originals(keys, instance, tmp_path):
    item, original = seal_instance(load_recipients([keys["alice"][1]]), instance)
    assert item.EncryptedContentTransferSyntaxUID == ENCRYPTED_CONTENT_TRANSFER_SYNTAX == "1.2.840.10008.1.2.1"
    result = decrypt_with_openssl(item.EncryptedContent, *keys["alice"], tmp_path)
    assert result.returncode == 0, result.stderr
    data_set = read_dataset(io.BytesIO(result.stdout), is_implicit_VR=False, is_little_endian=True)
    assert data_set.SpecificCharacterSet == "ISO_IR 192"
    (modified,) = data_set.ModifiedAttributesSequence
    assert _names(modified) == EXPECTED_MODIFIED
    assert modified.PatientName == "Müller^Jörg"
    for keyword in ("PatientID", "StudyInstanceUID", "SeriesInstanceUID", "SOPInstanceUID",
                    "FrameOfReferenceUID", "StudyDate", "InstitutionName", "PatientBirthDate"):
        assert modified[keyword].value == original[keyword].value, keyword
    assert modified.ReferencedImageSequence[0].ReferencedSOPInstanceUID == \
        original.ReferencedImageSequence[0].ReferencedSOPInstanceUID
    assert modified[0x00091001].value == "private identifying text"


def test_the_manual_procedure_reads_the_decrypted_dataset(keys, instance, tmp_path):
    """The README's by-hand steps: openssl's output read by `pydicom.dcmread(..., force=True)`."""
    item, original = seal_instance(load_recipients([keys["alice"][1]]), instance)
    plain = tmp_path / "originals.bin"
    envelope = tmp_path / "content.der"
    envelope.write_bytes(item.EncryptedContent)
    result = openssl("cms", "-decrypt", "-inform", "DER", "-in", str(envelope), "-inkey", str(keys["alice"][0]),
                     "-recip", str(keys["alice"][1]), "-out", str(plain))
    assert result.returncode == 0, result.stderr
    assert pydicom.dcmread(plain, force=True).ModifiedAttributesSequence[0].PatientID == original.PatientID


def test_the_manual_procedure_from_a_file(keys, tmp_path):
    """The same from an anonymized file, the value as pydicom reads it (with DICOM's pad byte)."""
    path, original = anonymized_file_with_originals(keys, tmp_path)
    extract = ("import sys, pydicom; sys.stdout.buffer.write(pydicom.dcmread(sys.argv[1])"
               ".EncryptedAttributesSequence[0].EncryptedContent)")
    content = subprocess.run([sys.executable, "-c", extract, str(path)], capture_output=True, check=True).stdout
    result = decrypt_with_openssl(content, *keys["alice"], tmp_path)
    assert result.returncode == 0, result.stderr
    data_set = read_dataset(io.BytesIO(result.stdout), is_implicit_VR=False, is_little_endian=True)
    assert data_set.ModifiedAttributesSequence[0].SOPInstanceUID == original.SOPInstanceUID


def test_every_recipient_decrypts_and_a_stranger_cannot(keys, instance, tmp_path):
    item, original = seal_instance(load_recipients([keys["alice"][1], keys["bob"][1]]), instance)
    for name in ("alice", "bob"):
        result = decrypt_with_openssl(item.EncryptedContent, *keys[name], tmp_path)
        assert result.returncode == 0, (name, result.stderr)
        data_set = read_dataset(io.BytesIO(result.stdout), is_implicit_VR=False, is_little_endian=True)
        assert data_set.ModifiedAttributesSequence[0].PatientID == original.PatientID
    stranger = decrypt_with_openssl(item.EncryptedContent, *keys["stranger"], tmp_path)
    assert stranger.returncode != 0 and original.PatientID.encode() not in stranger.stdout
    # the stranger's key with a configured recipient's certificate: the unwrap fails
    mixed = decrypt_with_openssl(item.EncryptedContent, keys["stranger"][0], keys["alice"][1], tmp_path)
    assert mixed.returncode != 0 and original.PatientID.encode() not in mixed.stdout


def test_der_is_what_openssl_reads(keys, instance, tmp_path):
    item, _ = seal_instance(load_recipients([keys["alice"][1], keys["bob"][1]]), instance)
    content = bytes(item.EncryptedContent)
    envelope = tmp_path / "content.der"
    envelope.write_bytes(content)
    printed = openssl("cms", "-cmsout", "-print", "-inform", "DER", "-in", str(envelope))
    assert printed.returncode == 0, printed.stderr
    text = printed.stdout.decode()
    assert "contentType: pkcs7-envelopedData (1.2.840.113549.1.7.3)" in text
    assert text.count("d.ktri:") == 2 and "CN=Re-identification alice" in text and "CN=Re-identification bob" in text
    assert text.count("algorithm: rsaesOaep (1.2.840.113549.1.1.7)") == 2
    assert "contentType: pkcs7-data (1.2.840.113549.1.7.1)" in text
    assert "algorithm: aes-256-cbc (2.16.840.1.101.3.4.1.42)" in text
    assert "version: 0" in text and "originatorInfo: <ABSENT>" in text
    # serial numbers as the certificates give them
    printed_serials = {int(line.split("0x")[1], 16) for line in text.splitlines() if "serialNumber:" in line}
    assert printed_serials == {int(openssl("x509", "-noout", "-serial", "-in", str(keys[name][1]))
                                   .stdout.decode().split("=")[1], 16) for name in ("alice", "bob")}
    # strict DER: asn1parse reads one element spanning exactly the whole content
    parsed = openssl("asn1parse", "-inform", "DER", "-in", str(envelope))
    assert parsed.returncode == 0, parsed.stderr
    first = parsed.stdout.decode().splitlines()[0]
    header_length, length = map(int, re.search(r"hl=\s*(\d+) l=\s*(\d+) cons: SEQUENCE", first).groups())
    assert header_length + length == len(content)


@pytest.mark.parametrize("value, encoded", [
    (0, "020100"), (127, "02017f"), (128, "02020080"), (256, "02020100"),
    (0x496D1E0099E36850B8E465E3D8F51615FDB9AE1F, "0214496d1e0099e36850b8e465e3d8f51615fdb9ae1f"),
    (0xC96D1E0099E36850B8E465E3D8F51615FDB9AE1F, "021500c96d1e0099e36850b8e465e3d8f51615fdb9ae1f"),
])
def test_der_integers(value, encoded):
    assert der_integer(value).hex() == encoded


@pytest.mark.parametrize("size", [0, 1, 127, 128, 255, 256, 65535, 65536])
def test_der_lengths_against_openssl(size, tmp_path):
    encoded = der(0x04, b"\xab" * size)
    path = tmp_path / "octets.der"
    path.write_bytes(encoded)
    parsed = openssl("asn1parse", "-inform", "DER", "-in", str(path))
    assert parsed.returncode == 0, parsed.stderr
    assert re.search(rf"hl=\d+ l=\s*{size} prim: OCTET STRING", parsed.stdout.decode())
    assert len(encoded) == size + (2 if size < 128 else 3 if size < 256 else 4 if size < 65536 else 5)


def test_der_object_identifiers_and_sets(tmp_path):
    assert der_oid("1.2.840.113549.1.7.3").hex() == "06092a864886f70d010703"
    assert der_oid("2.16.840.1.101.3.4.1.42").hex() == "060960864801650304012a"
    assert reidentify.oid(der_oid("2.16.840.1.101.3.4.1.42")[2:]) == "2.16.840.1.101.3.4.1.42"
    assert der_set([b"\x04\x01\x02", b"\x04\x01\x01"]) == bytes.fromhex("3106040101040102")


def test_fresh_iv_per_instance_one_key_wrap_per_call(keys, instance, tmp_path):
    envelope = Envelope(load_recipients([keys["alice"][1]]))
    first, second = envelope.seal(b"same content"), envelope.seal(b"same content")
    assert first != second
    for sealed in (first, second):
        result = decrypt_with_openssl(sealed, *keys["alice"], tmp_path)
        assert result.returncode == 0 and result.stdout == b"same content"
    # the RSA-wrapped key is the same within the call, a new one in another call
    wrapped = _encrypted_keys(first)
    assert wrapped == _encrypted_keys(second)
    assert wrapped != _encrypted_keys(Envelope(load_recipients([keys["alice"][1]])).seal(b"same content"))


def _encrypted_keys(sealed: bytes) -> list[bytes]:
    enveloped = reidentify.members(reidentify.tlv(reidentify.members(reidentify.tlv(sealed)[1])[1][1])[1])
    return [reidentify.members(info)[3][1] for _, info, _ in reidentify.members(enveloped[1][1])]


def test_unusable_certificates_are_named(keys, tmp_path):
    not_pem = tmp_path / "not-a-certificate.pem"
    not_pem.write_text("hello")
    with pytest.raises(ReidentificationError, match="not-a-certificate.pem"):
        load_recipients([not_pem])
    with pytest.raises(ReidentificationError, match="missing.pem"):
        load_recipients([tmp_path / "missing.pem"])
    ec_key, ec_certificate = tmp_path / "ec.key.pem", tmp_path / "ec.cert.pem"
    made = openssl("req", "-x509", "-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:prime256v1", "-nodes",
                   "-keyout", str(ec_key), "-out", str(ec_certificate), "-days", "1", "-subj", "/CN=EC")
    assert made.returncode == 0, made.stderr
    with pytest.raises(ReidentificationError, match="no RSA key"):
        load_recipients([ec_certificate])
    with pytest.raises(ReidentificationError, match="No re-identification certificate"):
        load_recipients([])


def test_fingerprints_are_the_certificates_sha256(keys):
    (recipient,) = load_recipients([keys["alice"][1]])
    printed = openssl("x509", "-noout", "-fingerprint", "-sha256", "-in", str(keys["alice"][1])).stdout.decode()
    assert recipient.fingerprint == printed.split("=")[1].strip().replace(":", "").lower()


@pytest.mark.parametrize("syntax", [None, ImplicitVRLittleEndian])
def test_inserted_sequence_keeps_the_rest_of_the_file(keys, syntax):
    original = original_instance(syntax)
    data = to_bytes(anonymized_version(original))
    item = encrypted_attributes_item(Envelope(load_recipients([keys["alice"][1]])), patient("X"))
    written = insert_encrypted_attributes(data, item)
    before, after = read_back(data), read_back(written)
    stored = after.EncryptedAttributesSequence[0].EncryptedContent
    # DICOM pads an odd-length OB with one NUL after the DER, which CMS readers ignore
    assert stored[:len(item.EncryptedContent)] == item.EncryptedContent
    assert stored[len(item.EncryptedContent):] in (b"", b"\x00") and len(stored) % 2 == 0
    del after.EncryptedAttributesSequence
    assert after == before and after.PixelData == before.PixelData
    assert written.startswith(data[:written.index(b"\x00\x04\x00\x05")])
    with pytest.raises(ValueError, match="already has"):
        insert_encrypted_attributes(written, item)


def test_deflated_files_are_refused(keys):
    pytest.importorskip("zlib")
    data = to_bytes(original_instance(DeflatedExplicitVRLittleEndian))
    with pytest.raises(ValueError, match="deflated"):
        insert_encrypted_attributes(data, Dataset())


def test_replace_value_carries_the_content_as_a_data_uri(keys):
    item = encrypted_attributes_item(Envelope(load_recipients([keys["alice"][1]])), patient("X"))
    (value,) = replace_value(item)
    assert value["EncryptedContentTransferSyntaxUID"] == ENCRYPTED_CONTENT_TRANSFER_SYNTAX
    prefix = "data:application/octet-stream;base64,"
    assert value["EncryptedContent"].startswith(prefix)
    assert base64.b64decode(value["EncryptedContent"][len(prefix):]) == item.EncryptedContent


def test_data_set_without_character_set():
    data_set = read_dataset(io.BytesIO(encrypted_attributes_data_set(patient("X"))), False, True)
    assert "SpecificCharacterSet" not in data_set and data_set.ModifiedAttributesSequence[0].PatientID == "X"


def patient(patient_id: str) -> Dataset:
    ds = Dataset()
    ds.PatientID = patient_id
    return ds


def anonymized_file_with_originals(keys, tmp_path, recipients=("alice",)) -> tuple[Path, Dataset]:
    original = original_instance()
    source, anonymized_bytes = to_bytes(original), to_bytes(anonymized_version(original))
    before = read_back(source)
    item = encrypted_attributes_item(Envelope(load_recipients([keys[name][1] for name in recipients])),
                                     modified_attributes(before, read_back(anonymized_bytes)),
                                     before.get("SpecificCharacterSet"))
    path = tmp_path / "anonymized.dcm"
    path.write_bytes(insert_encrypted_attributes(anonymized_bytes, item))
    return path, before


def run_script(*arguments: str) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, str(SCRIPT), *arguments], capture_output=True, text=True)


def test_script_prints_the_original_values(keys, tmp_path):
    path, original = anonymized_file_with_originals(keys, tmp_path, ("alice", "bob"))
    for name in ("alice", "bob"):
        for certificate in ([], ["--cert", str(keys[name][1])]):
            result = run_script("--key", str(keys[name][0]), *certificate, str(path))
            assert result.returncode == 0, result.stderr
            lines = result.stdout.splitlines()
            assert lines[0] == f"== {path}"
            assert f"PatientID (0010,0020) LO: {original.PatientID}" in lines
            assert "PatientName (0010,0010) PN: Müller^Jörg" in lines
            assert f"SOPInstanceUID (0008,0018) UI: {original.SOPInstanceUID}" in lines
            assert f"FrameOfReferenceUID (0020,0052) UI: {original.FrameOfReferenceUID}" in lines
            nested = original.ReferencedImageSequence[0].ReferencedSOPInstanceUID
            at = lines.index("ReferencedImageSequence (0008,1140) SQ:")
            assert lines[at + 1] == "  Item 1"
            assert f"    ReferencedSOPInstanceUID (0008,1155) UI: {nested}" in lines[at + 2:at + 4]
            assert "Modality (0008,0060)" not in result.stdout


def test_script_fails_for_a_key_that_is_no_recipient(keys, tmp_path):
    path, original = anonymized_file_with_originals(keys, tmp_path)
    for arguments in (["--key", str(keys["stranger"][0])],
                      ["--key", str(keys["stranger"][0]), "--cert", str(keys["alice"][1])],
                      ["--key", str(keys["alice"][0]), "--cert", str(keys["bob"][1])]):
        result = run_script(*arguments, str(path))
        assert result.returncode == 1
        assert original.PatientID not in result.stdout + result.stderr
        assert "no Encrypted Attributes Sequence item for this key" in result.stderr


def test_script_reports_files_without_re_identification_data(keys, tmp_path):
    path = tmp_path / "plain.dcm"
    path.write_bytes(to_bytes(original_instance()))
    result = run_script("--key", str(keys["alice"][0]), str(path))
    assert result.returncode == 1 and str(path) in result.stderr


def test_script_opens_envelopes_made_by_openssl(keys, tmp_path):
    """PKCS#1 v1.5 key transport and AES-128, as `openssl cms -encrypt` writes by default."""
    from cryptography.hazmat.primitives.serialization import load_pem_private_key

    plain = tmp_path / "plain.bin"
    plain.write_bytes(b"some content")
    made = openssl("cms", "-encrypt", "-binary", "-outform", "DER", "-aes128", "-in", str(plain),
                   str(keys["bob"][1]), str(keys["alice"][1]))
    assert made.returncode == 0, made.stderr
    key = load_pem_private_key(keys["alice"][0].read_bytes(), None)
    assert reidentify.open_envelope(made.stdout, key) == b"some content"
    stranger = load_pem_private_key(keys["stranger"][0].read_bytes(), None)
    with pytest.raises(reidentify.NotForThisKey):
        reidentify.open_envelope(made.stdout, stranger)
