"""Re-identification data: the Encrypted Attributes Sequence, opened by the openssl command line
as a recipient would, and by scripts/reidentify.py. Keys and certificates are made here, in a
temporary folder, by the openssl command line: none is ever committed. No Orthanc needed."""
from __future__ import annotations

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
from pydicom.filebase import DicomBytesIO
from pydicom.filereader import read_dataset
from pydicom.filewriter import write_dataset
from pydicom.sequence import Sequence
from pydicom.uid import DeflatedExplicitVRLittleEndian, ExplicitVRLittleEndian, ImplicitVRLittleEndian

from consistent_anon.dicom.filereader import read_header
from consistent_anon.reidentification.envelope import (
                                                       ENCRYPTED_CONTENT_TRANSFER_SYNTAX, Envelope, Reidentification, ReidentificationError, UnreadableFile,
                                                       encrypted_attributes_data_set, envelope_recipients, load_recipients,
                                                       modified_tags, walk)
from consistent_anon.reidentification import der as der_module
from consistent_anon.reidentification.der import der, der_integer, der_oid, der_set
from dicom_factory import CT_IMAGE_STORAGE, Study, image_series, to_bytes
from recipients import make_recipients, openssl
import reidentify

SCRIPT = Path(__file__).parents[1] / "scripts" / "reidentify.py"
EXPLICIT_BIG_ENDIAN = "1.2.840.10008.1.2.2"


@pytest.fixture(scope="module")
def keys(tmp_path_factory) -> dict[str, tuple[Path, Path]]:
    """Three throwaway RSA recipients (key, certificate): two configured, one stranger."""
    return make_recipients(tmp_path_factory.mktemp("recipients"), ("alice", "bob", "stranger"))


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
    return pydicom.dcmread(io.BytesIO(data))


EXPECTED_MODIFIED = {"PatientName", "PatientID", "PatientBirthDate", "StudyInstanceUID", "SeriesInstanceUID",
                     "SOPInstanceUID", "FrameOfReferenceUID", "StudyDate", "InstitutionName",
                     "ReferencedImageSequence", 0x00090010, 0x00091001}
IDENTIFIERS = ("PatientID", "StudyInstanceUID", "SeriesInstanceUID", "SOPInstanceUID", "FrameOfReferenceUID")


def _names(tags) -> set:
    return {pydicom.datadict.keyword_for_tag(tag) or int(tag) for tag in tags}


def files(syntax: str | None = None, charset: bool = True) -> tuple[bytes, bytes]:
    """A source file and its anonymized version, both as Orthanc hands them over."""
    original = original_instance(syntax)
    if not charset:
        del original.SpecificCharacterSet
        original.PatientName = "Muller^Jorg"
    return to_bytes(original), to_bytes(anonymized_version(original))


def test_modified_tags_are_what_was_replaced_or_removed():
    source, anonymized = files()
    assert _names(modified_tags(walk(source), walk(anonymized))) == EXPECTED_MODIFIED


def test_values_written_again_differently_are_no_change():
    """Other padding (NUL for space) or a sequence written with undefined lengths is no change."""
    original = original_instance()
    original.StudyDescription = "ABC"
    source = to_bytes(original)
    same = copy.deepcopy(original)
    same["ReferencedImageSequence"].is_undefined_length = True
    same.ReferencedImageSequence[0].is_undefined_length_sequence_item = True
    written = to_bytes(same).replace(b"ABC ", b"ABC\x00")
    assert written != source and b"ABC\x00" in written
    assert modified_tags(walk(source), walk(written)) == []


@pytest.mark.parametrize("syntax", [None, ImplicitVRLittleEndian, EXPLICIT_BIG_ENDIAN])
def test_the_data_set_holds_the_original_values(syntax):
    source, anonymized = files(syntax)
    before = walk(source)
    data_set = read_dataset(io.BytesIO(encrypted_attributes_data_set(before, modified_tags(before, walk(anonymized)))),
                            is_implicit_VR=False, is_little_endian=True)
    original = read_back(source)
    assert data_set.SpecificCharacterSet == "ISO_IR 192"
    (modified,) = data_set.ModifiedAttributesSequence
    assert _names(modified.keys()) == EXPECTED_MODIFIED
    assert modified.PatientName == "Müller^Jörg"
    for keyword in IDENTIFIERS + ("StudyDate", "InstitutionName", "PatientBirthDate"):
        assert modified[keyword].value == original[keyword].value, keyword
    assert modified.ReferencedImageSequence[0].ReferencedSOPInstanceUID == \
        original.ReferencedImageSequence[0].ReferencedSOPInstanceUID
    private = modified[0x00091001].value  # UN (bytes) when the source was in implicit VR
    assert (private.decode() if isinstance(private, bytes) else private).strip() == "private identifying text"


def test_an_implicit_vr_source_is_written_in_explicit_vr():
    """Dictionary VRs written out (UN for ambiguous and private ones), items of both lengths."""
    original = original_instance(ImplicitVRLittleEndian)
    original.SmallestImagePixelValue = 5  # VR "US or SS"
    original.ReferencedImageSequence.append(copy.deepcopy(original.ReferencedImageSequence[0]))
    original.ReferencedImageSequence[1].ReferencedSOPInstanceUID = pydicom.uid.generate_uid()
    original["ReferencedImageSequence"].is_undefined_length = True
    original.ReferencedImageSequence[0].is_undefined_length_sequence_item = True
    anonymized = anonymized_version(original)
    del anonymized.SmallestImagePixelValue
    source = walk(to_bytes(original))
    encoded = encrypted_attributes_data_set(source, modified_tags(source, walk(to_bytes(anonymized))))
    assert walk(encoded).implicit is False
    assert b"\x28\x00\x06\x01UN\x00\x00\x02\x00\x00\x00\x05\x00" in encoded  # (0028,0106) as UN
    (modified,) = read_dataset(io.BytesIO(encoded), False, True).ModifiedAttributesSequence
    assert _names(modified.keys()) == EXPECTED_MODIFIED | {"SmallestImagePixelValue"}
    assert modified.PatientName == "Müller^Jörg"
    assert [item.ReferencedSOPInstanceUID for item in modified.ReferencedImageSequence] == \
        [item.ReferencedSOPInstanceUID for item in original.ReferencedImageSequence]


def test_a_file_written_in_explicit_vr_under_an_implicit_transfer_syntax():
    original = original_instance()
    data = to_bytes(original)
    explicit = ExplicitVRLittleEndian.encode() + b"\x00"
    implicit = ImplicitVRLittleEndian.encode() + b"\x00"
    mislabeled = data.replace(b"\x10\x00UI\x14\x00" + explicit, b"\x10\x00UI\x12\x00" + implicit, 1)
    assert mislabeled != data
    layout = walk(mislabeled)
    assert not layout.implicit and layout.little and list(layout.elements) == list(walk(data).elements)


def test_a_source_without_character_set():
    original = original_instance()
    del original.SpecificCharacterSet
    original.PatientName = "Doe^Jane"
    source = walk(to_bytes(original))
    data_set = read_dataset(io.BytesIO(encrypted_attributes_data_set(source, [0x00100020])), False, True)
    assert "SpecificCharacterSet" not in data_set
    assert data_set.ModifiedAttributesSequence[0].PatientID == original.PatientID


def anonymized_file_with_originals(keys, tmp_path, recipients=("alice",), syntax=None,
                                   charset=True) -> tuple[Path, Dataset]:
    source, anonymized = files(syntax, charset)
    path = tmp_path / "anonymized.dcm"
    path.write_bytes(Reidentification(load_recipients([keys[name][1] for name in recipients])).add(source, anonymized))
    return path, read_back(source)


def content_of(path: Path) -> bytes:
    """The Encrypted Content as a recipient reads it from the file (with DICOM's pad byte)."""
    return read_back(path.read_bytes()).EncryptedAttributesSequence[0].EncryptedContent


def decrypt_with_openssl(content: bytes, key: Path, certificate: Path, tmp_path: Path) -> subprocess.CompletedProcess:
    envelope = tmp_path / "content.der"
    envelope.write_bytes(content)
    return openssl("cms", "-decrypt", "-inform", "DER", "-in", str(envelope), "-inkey", str(key),
                   "-recip", str(certificate))


def test_openssl_decrypts_the_file_and_finds_the_originals(keys, tmp_path):
    path, original = anonymized_file_with_originals(keys, tmp_path)
    (item,) = read_back(path.read_bytes()).EncryptedAttributesSequence
    assert item.EncryptedContentTransferSyntaxUID == ENCRYPTED_CONTENT_TRANSFER_SYNTAX == "1.2.840.10008.1.2.1"
    result = decrypt_with_openssl(content_of(path), *keys["alice"], tmp_path)
    assert result.returncode == 0, result.stderr
    data_set = read_dataset(io.BytesIO(result.stdout), is_implicit_VR=False, is_little_endian=True)
    (modified,) = data_set.ModifiedAttributesSequence
    assert _names(modified.keys()) == EXPECTED_MODIFIED
    for keyword in IDENTIFIERS:
        assert modified[keyword].value == original[keyword].value, keyword
    # in the file itself, no original identifier is readable
    for keyword in IDENTIFIERS + ("PatientName",):
        assert str(original[keyword].value).encode() not in path.read_bytes()


#: docs/traceability.md's one-liner that prints the decrypted data set. Not `dcmread(..., force=True)`: it
#: takes a data set that starts with group 0400 (no Specific Character Set before it) for big endian.
READ_ORIGINALS = "import sys, pydicom.filereader as r; print(r.read_dataset(open(sys.argv[1], 'rb'), False, True))"


@pytest.mark.parametrize("charset", [True, False])
def test_the_manual_procedure_reads_the_decrypted_dataset(keys, tmp_path, charset):
    """The documented by-hand steps: the pydicom one-liners and openssl."""
    path, original = anonymized_file_with_originals(keys, tmp_path, charset=charset)
    extract = ("import sys, pydicom; sys.stdout.buffer.write(pydicom.dcmread(sys.argv[1])"
               ".EncryptedAttributesSequence[0].EncryptedContent)")
    content = subprocess.run([sys.executable, "-c", extract, str(path)], capture_output=True, check=True).stdout
    envelope, plain = tmp_path / "content.der", tmp_path / "originals.bin"
    envelope.write_bytes(content)
    result = openssl("cms", "-decrypt", "-inform", "DER", "-in", str(envelope), "-inkey", str(keys["alice"][0]),
                     "-recip", str(keys["alice"][1]), "-out", str(plain))
    assert result.returncode == 0, result.stderr
    printed = subprocess.run([sys.executable, "-c", READ_ORIGINALS, str(plain)], capture_output=True, check=True)
    assert f"Patient ID                          LO: '{original.PatientID}'" in printed.stdout.decode()
    assert str(original.PatientName) in printed.stdout.decode()


def test_the_manual_procedure_with_dcmtk(keys, tmp_path):
    """The documented DCMTK steps: dcmdump prints the content in hex, decrypted by openssl, read by
    dcmdump (xxd turns the hex into bytes; Python does where xxd is missing)."""
    if shutil.which("dcmdump") is None:
        pytest.skip("DCMTK (dcmdump) is missing")
    path, original = anonymized_file_with_originals(keys, tmp_path)
    dump = subprocess.run(f"dcmdump -q +L +P 0400,0520 {path} | sed 's/^[^ ]* OB //; s/ *#.*//; s/\\\\//g'",
                          shell=True, capture_output=True, check=True).stdout
    content = (subprocess.run(["xxd", "-r", "-p"], input=dump, capture_output=True, check=True).stdout
               if shutil.which("xxd") else bytes.fromhex(dump.decode()))
    envelope, plain = tmp_path / "content.der", tmp_path / "originals.bin"
    envelope.write_bytes(content)
    result = openssl("cms", "-decrypt", "-inform", "DER", "-in", str(envelope), "-inkey", str(keys["alice"][0]),
                     "-recip", str(keys["alice"][1]), "-out", str(plain))
    assert result.returncode == 0, result.stderr
    printed = subprocess.run(["dcmdump", "-f", "-te", str(plain)], capture_output=True, text=True, check=True).stdout
    assert f"(0010,0020) LO [{original.PatientID}]" in printed
    assert f"(0008,0018) UI [{original.SOPInstanceUID}]" in printed


def test_every_recipient_decrypts_and_a_stranger_cannot(keys, tmp_path):
    path, original = anonymized_file_with_originals(keys, tmp_path, ("alice", "bob"))
    content = content_of(path)
    for name in ("alice", "bob"):
        result = decrypt_with_openssl(content, *keys[name], tmp_path)
        assert result.returncode == 0, (name, result.stderr)
        data_set = read_dataset(io.BytesIO(result.stdout), is_implicit_VR=False, is_little_endian=True)
        assert data_set.ModifiedAttributesSequence[0].PatientID == original.PatientID
    stranger = decrypt_with_openssl(content, *keys["stranger"], tmp_path)
    assert stranger.returncode != 0 and original.PatientID.encode() not in stranger.stdout
    # the stranger's key with a configured recipient's certificate: the unwrap fails
    mixed = decrypt_with_openssl(content, keys["stranger"][0], keys["alice"][1], tmp_path)
    assert mixed.returncode != 0 and original.PatientID.encode() not in mixed.stdout


def seal(keys, *names: str, content: bytes = b"content") -> bytes:
    return Envelope(load_recipients([keys[name][1] for name in names])).seal(content)


def test_der_is_what_openssl_reads(keys, tmp_path):
    content = seal(keys, "alice", "bob")
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
    assert der_module.oid(der_oid("2.16.840.1.101.3.4.1.42")[2:]) == "2.16.840.1.101.3.4.1.42"
    assert der_set([b"\x04\x01\x02", b"\x04\x01\x01"]) == bytes.fromhex("3106040101040102")


def test_fresh_iv_per_instance_one_key_wrap_per_call(keys, tmp_path):
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
    infos = der_module.enveloped_data(sealed, "1.2.840.113549.1.7.3").recipient_infos
    return [der_module.members(info.content)[3].content for info in infos]


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


def test_without_cryptography_certificates_are_a_clear_error(keys, monkeypatch):
    monkeypatch.setitem(sys.modules, "cryptography", None)  # as in an Orthanc Python without it
    with pytest.raises(ReidentificationError, match="python3-cryptography"):
        load_recipients([keys["alice"][1]])


def test_fingerprints_are_the_certificates_sha256(keys):
    (recipient,) = load_recipients([keys["alice"][1]])
    printed = openssl("x509", "-noout", "-fingerprint", "-sha256", "-in", str(keys["alice"][1])).stdout.decode()
    assert recipient.fingerprint == printed.split("=")[1].strip().replace(":", "").lower()


@pytest.mark.parametrize("syntax", [None, ImplicitVRLittleEndian, EXPLICIT_BIG_ENDIAN])
def test_the_sequence_is_spliced_in_place_and_the_rest_is_untouched(keys, syntax):
    source, anonymized = files(syntax)
    written = Reidentification(load_recipients([keys["alice"][1]])).add(source, anonymized)
    layout = walk(written)
    assert list(layout.elements) == sorted(layout.elements)  # in tag order
    (item,) = read_back(written).EncryptedAttributesSequence
    assert item.EncryptedContentTransferSyntaxUID == ENCRYPTED_CONTENT_TRANSFER_SYNTAX
    element = layout.elements[0x04000500]
    assert written[:element.start] + written[element.end:] == anonymized  # nothing else changed
    assert len(item.EncryptedContent) % 2 == 0  # DICOM's even length (a NUL after the DER if needed)
    after = read_back(written)
    del after.EncryptedAttributesSequence
    assert after == read_back(anonymized)


def test_a_file_written_in_implicit_vr_under_an_explicit_transfer_syntax(keys):
    """Read as written, as pydicom and DCMTK do."""
    source, anonymized = files(ImplicitVRLittleEndian)
    explicit = ExplicitVRLittleEndian.encode() + b"\x00"
    implicit = ImplicitVRLittleEndian.encode() + b"\x00"
    source, anonymized = (data.replace(b"\x10\x00UI\x12\x00" + implicit, b"\x10\x00UI\x14\x00" + explicit, 1)
                          for data in (source, anonymized))
    assert walk(source).implicit
    assert _names(modified_tags(walk(source), walk(anonymized))) == EXPECTED_MODIFIED
    written = Reidentification(load_recipients([keys["alice"][1]])).add(source, anonymized)
    layout = walk(written)
    assert layout.implicit and list(layout.elements) == sorted(layout.elements) and 0x04000500 in layout.elements


def bare_big_endian(ds: Dataset) -> bytes:
    """The dataset alone, no preamble nor file meta information, in explicit VR big endian."""
    buffer = DicomBytesIO()
    buffer.is_little_endian, buffer.is_implicit_VR = False, False
    write_dataset(buffer, ds)
    return buffer.getvalue()


def test_a_bare_big_endian_data_set_is_sealed_as_the_check_reads_it(keys, tmp_path):
    """Without file meta information the byte order is guessed from the first group. Sealing reads
    a file by the same reader as the fail-closed check (filereader), so both see the same elements
    in the same encoding; a walker of its own used to take this file for little endian and refuse it."""
    original = original_instance()
    source, anonymized = bare_big_endian(original), bare_big_endian(anonymized_version(original))
    layout = walk(source)
    assert (layout.implicit, layout.little) == (False, False)
    assert [tag for tag, span in layout.elements.items() if span.items is None] == \
        [element.tag for element in read_header(source).elements if not element.path[0]]  # sequences aside
    assert _names(modified_tags(layout, walk(anonymized))) == EXPECTED_MODIFIED
    written = Reidentification(load_recipients([keys["alice"][1]])).add(source, anonymized)
    (content,) = [element.raw for element in read_header(written).elements if element.tag == 0x04000520]
    result = decrypt_with_openssl(content, *keys["alice"], tmp_path)
    assert result.returncode == 0, result.stderr
    (modified,) = read_dataset(io.BytesIO(result.stdout), False, True).ModifiedAttributesSequence
    assert modified.PatientID == original.PatientID and modified.PatientName == "Müller^Jörg"


@pytest.mark.parametrize("syntax", [None, ImplicitVRLittleEndian])
def test_damaged_files_give_unreadable_file_and_nothing_else(keys, syntax):
    """Any damage is either harmless or an UnreadableFile: never another exception."""
    source, anonymized = files(syntax)
    reidentification = Reidentification(load_recipients([keys["alice"][1]]))
    damaged = [source[:end] for end in range(0, len(source), 37)]
    damaged += [source[:at] + bytes([source[at] ^ 0xFF]) + source[at + 1:] for at in range(132, len(source), 5)]
    for data in damaged:
        for pair in ((data, anonymized), (source, data)):
            try:
                reidentification.add(*pair)
            except UnreadableFile:
                pass


def test_a_file_with_the_sequence_already_is_refused(keys):
    source, anonymized = files()
    reidentification = Reidentification(load_recipients([keys["alice"][1]]))
    with pytest.raises(UnreadableFile, match="already has"):
        reidentification.add(source, reidentification.add(source, anonymized))


def test_deflated_and_malformed_files_are_refused(keys):
    source, anonymized = files()
    with pytest.raises(UnreadableFile, match="deflated"):
        walk(to_bytes(original_instance(DeflatedExplicitVRLittleEndian)))
    with pytest.raises(UnreadableFile, match="runs past the end"):
        cut = source.index("Müller".encode()) + 3  # inside a value: the file ends mid-element
        walk(source[:cut] + b"\x10\x00\x10\x00PN\xff\x00")


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


def test_script_reports_a_damaged_envelope_without_a_traceback(keys, tmp_path):
    """A truncated envelope is a clear error: exit code 1, the file and the fault named."""
    path, _ = anonymized_file_with_originals(keys, tmp_path)
    data_set = read_back(path.read_bytes())
    content = data_set.EncryptedAttributesSequence[0].EncryptedContent
    for cut in (len(content) // 2, 3):
        data_set.EncryptedAttributesSequence[0].EncryptedContent = content[:cut]
        damaged = tmp_path / f"damaged-{cut}.dcm"
        data_set.save_as(damaged)
        result = run_script("--key", str(keys["alice"][0]), str(damaged))
        assert result.returncode == 1 and "Traceback" not in result.stderr, result.stderr
        assert result.stderr.startswith(f"{damaged}: ") and "DER" in result.stderr


def test_damaged_envelopes_are_value_errors_in_both_readers(keys):
    """Every truncation of an envelope, and a changed byte every few bytes: both readers (the
    script's opening and the plugin's reading of recipients) answer or raise a ValueError with a
    message; no IndexError or other exception."""
    from cryptography.hazmat.primitives.serialization import load_pem_private_key

    key = load_pem_private_key(keys["alice"][0].read_bytes(), None)
    sealed = seal(keys, "alice", "bob")
    damaged = [sealed[:end] for end in range(len(sealed))]
    damaged += [sealed[:at] + bytes([sealed[at] ^ 0xA5]) + sealed[at + 1:] for at in range(0, len(sealed), 3)]
    for data in damaged:
        for read in (lambda content: reidentify.open_envelope(content, key), envelope_recipients):
            try:
                read(data)
            except (ValueError, reidentify.NotForThisKey) as error:
                assert str(error)


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
