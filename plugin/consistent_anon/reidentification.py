"""Re-identification data, standard and encrypted: the Encrypted Attributes Sequence (0400,0500).

PS3.15 E.1.1 and PS3.3 C.12.1.1.4: a de-identifier may keep the original values of the
attributes it replaced or removed inside the anonymized instance, in a Modified Attributes
Sequence (0400,0550) of one item, encoded as a dataset (here Explicit VR Little Endian) and
encrypted as a CMS EnvelopedData (RFC 5652) that only the holders of a recipient's private key can
open. The plugin holds recipients' certificates only: it can seal, never open.

The envelope is encoded here (a few DER structures) rather than by a CMS library, since the
`cryptography` of Debian bookworm (38) has no envelope builder; `cryptography` does the RSA key
transport, AES and certificate parsing. Choices, all read by `openssl cms -decrypt` unaided:
- content encryption AES-256-CBC (RFC 3565), key transport RSAES-OAEP with SHA-256 and MGF1-SHA-256
  (RFC 8017, RFC 4055; OAEP rather than PKCS#1 v1.5, whose padding invites oracle attacks);
- recipients named by issuer and serial number (KeyTransRecipientInfo version 0), which every CMS
  reader supports;
- one content-encryption key per `Envelope` (one anonymization call), wrapped once for every
  recipient; each instance's content has its own random IV, and each output is a complete
  EnvelopedData of its own.

Wiring: `Envelope(load_recipients(paths))` once per call, then per instance
`encrypted_attributes_item(envelope, modified_attributes(original, anonymized))`, or the same
as `replace_value(...)` for Orthanc's "Replace", or spliced into the file by
`insert_encrypted_attributes(file_bytes, item)`.
"""
from __future__ import annotations

import base64
import hashlib
import io
import os
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Iterable

from pydicom.dataelem import DataElement, RawDataElement
from pydicom.dataset import Dataset
from pydicom.filebase import DicomBytesIO
from pydicom.filereader import data_element_generator, read_preamble, _read_file_meta_info
from pydicom.filewriter import write_data_element, write_dataset
from pydicom.sequence import Sequence

from .errors import BadRequest

#: The transfer syntax of the encrypted dataset, (0400,0510): Explicit VR Little Endian.
ENCRYPTED_CONTENT_TRANSFER_SYNTAX = "1.2.840.10008.1.2.1"
ENCRYPTED_ATTRIBUTES_SEQUENCE = 0x04000500
ENCRYPTED_CONTENT_TRANSFER_SYNTAX_UID = 0x04000510
ENCRYPTED_CONTENT = 0x04000520
MODIFIED_ATTRIBUTES_SEQUENCE = 0x04000550
SPECIFIC_CHARACTER_SET = 0x00080005

# Object identifiers (RFC 5652, RFC 3565, RFC 4055, RFC 8017).
ID_DATA = "1.2.840.113549.1.7.1"
ID_ENVELOPED_DATA = "1.2.840.113549.1.7.3"
ID_AES256_CBC = "2.16.840.1.101.3.4.1.42"
ID_RSAES_OAEP = "1.2.840.113549.1.1.7"
ID_MGF1 = "1.2.840.113549.1.1.8"
ID_SHA256 = "2.16.840.1.101.3.4.2.1"


class ReidentificationError(BadRequest):
    """A recipient certificate the plugin cannot use (unreadable, not RSA)."""


# --- DER (ITU-T X.690): only what an EnvelopedData needs --------------------------------------

def der(tag: int, content: bytes) -> bytes:
    """One TLV with a definite length in the fewest bytes."""
    length = len(content)
    if length < 0x80:
        return bytes((tag, length)) + content
    size = (length.bit_length() + 7) // 8
    return bytes((tag, 0x80 | size)) + length.to_bytes(size, "big") + content


def der_sequence(*parts: bytes) -> bytes:
    return der(0x30, b"".join(parts))


def der_set(parts: Iterable[bytes]) -> bytes:
    """A SET OF: DER sorts the encoded members."""
    return der(0x31, b"".join(sorted(parts)))


def der_integer(value: int) -> bytes:
    """A non-negative INTEGER (a serial number, a version), two's complement."""
    return der(0x02, value.to_bytes(value.bit_length() // 8 + 1, "big"))


def der_octets(value: bytes) -> bytes:
    return der(0x04, value)


def der_oid(dotted: str) -> bytes:
    arcs = [int(arc) for arc in dotted.split(".")]
    body = bytearray()
    for arc in [arcs[0] * 40 + arcs[1], *arcs[2:]]:
        chunk = [arc & 0x7F]
        arc >>= 7
        while arc:
            chunk.append(0x80 | (arc & 0x7F))
            arc >>= 7
        body.extend(reversed(chunk))
    return der(0x06, bytes(body))


def der_explicit(number: int, content: bytes) -> bytes:
    """A constructed context-specific tag [number] around an encoding (EXPLICIT tagging)."""
    return der(0xA0 | number, content)


_SHA256 = der_sequence(der_oid(ID_SHA256))  # parameters absent, as RFC 4055 recommends
#: RSAES-OAEP-params (RFC 4055): SHA-256, MGF1 with SHA-256, the default empty label.
OAEP_SHA256 = der_sequence(der_oid(ID_RSAES_OAEP), der_sequence(
    der_explicit(0, _SHA256), der_explicit(1, der_sequence(der_oid(ID_MGF1), _SHA256))))


# --- Recipients and the envelope ---------------------------------------------------------------

@dataclass(frozen=True)
class Recipient:
    """A recipient's certificate: whom to name in the envelope, and the key to wrap with."""

    issuer: bytes  # the DER Name of the certificate's issuer
    serial_number: int
    public_key: Any  # cryptography's RSAPublicKey
    fingerprint: str  # SHA-256 of the certificate's DER, hex (for the options mark)


def load_recipients(paths: Iterable[str | Path]) -> tuple[Recipient, ...]:
    """The recipients of these X.509 PEM certificates; a clear error naming an unusable one."""
    from cryptography import x509
    from cryptography.hazmat.primitives.asymmetric.rsa import RSAPublicKey
    from cryptography.hazmat.primitives.serialization import Encoding

    recipients = []
    for path in paths:
        try:
            certificate = x509.load_pem_x509_certificate(Path(path).read_bytes())
        except (OSError, ValueError) as error:
            raise ReidentificationError(f"Re-identification certificate {path} is not readable as an "
                                        f"X.509 certificate in PEM ({type(error).__name__})") from None
        public_key = certificate.public_key()
        if not isinstance(public_key, RSAPublicKey):
            raise ReidentificationError(f"Re-identification certificate {path} has no RSA key: only RSA "
                                        "key transport is supported")
        recipients.append(Recipient(
            certificate.issuer.public_bytes(), certificate.serial_number, public_key,
            hashlib.sha256(certificate.public_bytes(Encoding.DER)).hexdigest()))
    if not recipients:
        raise ReidentificationError("No re-identification certificate given")
    return tuple(recipients)


class Envelope:
    """Seals contents for a fixed set of recipients: one AES-256 content key, wrapped once for
    every recipient (the costly part, paid once per call), and a fresh IV for every content."""

    def __init__(self, recipients: Iterable[Recipient]) -> None:
        from cryptography.hazmat.primitives import hashes
        from cryptography.hazmat.primitives.asymmetric import padding

        self._key = os.urandom(32)
        oaep = padding.OAEP(mgf=padding.MGF1(algorithm=hashes.SHA256()), algorithm=hashes.SHA256(), label=None)
        self._recipient_infos = der_set(der_sequence(
            der_integer(0),
            der_sequence(recipient.issuer, der_integer(recipient.serial_number)),
            OAEP_SHA256,
            der_octets(recipient.public_key.encrypt(self._key, oaep)),
        ) for recipient in recipients)

    def seal(self, content: bytes) -> bytes:
        """A CMS ContentInfo holding an EnvelopedData of `content` (DER)."""
        from cryptography.hazmat.primitives import padding as symmetric_padding
        from cryptography.hazmat.primitives.ciphers import Cipher, algorithms, modes

        iv = os.urandom(16)
        padder = symmetric_padding.PKCS7(128).padder()
        encryptor = Cipher(algorithms.AES(self._key), modes.CBC(iv)).encryptor()
        ciphertext = encryptor.update(padder.update(content) + padder.finalize()) + encryptor.finalize()
        encrypted_content_info = der_sequence(
            der_oid(ID_DATA),
            der_sequence(der_oid(ID_AES256_CBC), der_octets(iv)),
            der(0x80, ciphertext),  # [0] IMPLICIT OCTET STRING
        )
        enveloped_data = der_sequence(der_integer(0), self._recipient_infos, encrypted_content_info)
        return der_sequence(der_oid(ID_ENVELOPED_DATA), der_explicit(0, enveloped_data))


# --- The DICOM side ----------------------------------------------------------------------------

def _kept_apart(tag: int) -> bool:
    """Elements never put in the Modified Attributes Sequence: group lengths, the pixel data
    (which anonymization does not change) and the Encrypted Attributes Sequence itself."""
    return not tag & 0xFFFF or tag >> 16 == 0x7FE0 or tag == ENCRYPTED_ATTRIBUTES_SEQUENCE


def _same(original: Dataset, anonymized: Dataset, tag: int) -> bool:
    """Whether an element came through unchanged: raw bytes first (no decoding), then values (a
    re-encoding that changed only padding or lengths is no change)."""
    before, after = original.get_item(tag), anonymized.get_item(tag)
    if isinstance(before, RawDataElement) and isinstance(after, RawDataElement) and before.VR != "SQ" \
            and before.value == after.value and before.VR == after.VR:
        return True
    return original[tag].value == anonymized[tag].value


def modified_attributes(original: Dataset, anonymized: Dataset) -> Dataset:
    """The item of the Modified Attributes Sequence: every top-level element of `original` that
    `anonymized` removed or holds with another value, with its original value; a sequence with a
    change anywhere inside is kept whole (PS3.15 E.1.1). Both datasets as `dcmread` gives them
    (with `stop_before_pixels` or not)."""
    item = Dataset()
    for tag in original.keys():
        if _kept_apart(tag):
            continue
        if tag not in anonymized or not _same(original, anonymized, tag):
            item.add(original[tag])
    return item


def encrypted_attributes_data_set(modified: Dataset, character_set: Any = None) -> bytes:
    """The Encrypted Attributes Data Set (PS3.3 Table C.12-7) in Explicit VR Little Endian: a
    Modified Attributes Sequence holding `modified`. `character_set` is the original's Specific
    Character Set (0008,0005) value, which the texts in `modified` are written in."""
    data_set = Dataset()
    if character_set:
        data_set.SpecificCharacterSet = character_set
    data_set.add(DataElement(MODIFIED_ATTRIBUTES_SEQUENCE, "SQ", Sequence([modified])))
    return _encode(data_set, implicit=False)


def _encode(data_set: Dataset, implicit: bool) -> bytes:
    buffer = DicomBytesIO()
    buffer.is_little_endian = True
    buffer.is_implicit_VR = implicit
    write_dataset(buffer, data_set)
    return buffer.getvalue()


def encrypted_attributes_item(envelope: Envelope, modified: Dataset, character_set: Any = None) -> Dataset:
    """The item of the Encrypted Attributes Sequence (0400,0500) for one instance."""
    item = Dataset()
    item.add(DataElement(ENCRYPTED_CONTENT_TRANSFER_SYNTAX_UID, "UI", ENCRYPTED_CONTENT_TRANSFER_SYNTAX))
    item.add(DataElement(ENCRYPTED_CONTENT, "OB",
                         envelope.seal(encrypted_attributes_data_set(modified, character_set))))
    return item


def replace_value(item: Dataset) -> list[dict[str, str]]:
    """The Encrypted Attributes Sequence as a value of Orthanc's "Replace" (binary as a data URI)."""
    content = base64.b64encode(item[ENCRYPTED_CONTENT].value).decode("ascii")
    return [{"EncryptedContentTransferSyntaxUID": item[ENCRYPTED_CONTENT_TRANSFER_SYNTAX_UID].value,
             "EncryptedContent": "data:application/octet-stream;base64," + content}]


def insert_encrypted_attributes(file: bytes, item: Dataset) -> bytes:
    """The Part 10 file with an Encrypted Attributes Sequence holding `item`, put in its place in
    tag order, without decoding or re-encoding the rest (the pixel data is copied as it is).
    Deflated files are refused (ValueError): their dataset is compressed as a whole."""
    stream = io.BytesIO(file)
    read_preamble(stream, force=True)
    meta = _read_file_meta_info(stream)
    syntax = str(meta.get("TransferSyntaxUID", ENCRYPTED_CONTENT_TRANSFER_SYNTAX))
    if syntax == "1.2.840.10008.1.2.1.99":
        raise ValueError("a deflated file: insert the Encrypted Attributes Sequence before deflating")
    implicit, little = syntax == "1.2.840.10008.1.2", syntax != "1.2.840.10008.1.2.2"
    for element in data_element_generator(stream, implicit, little, defer_size=0,
                                          stop_when=lambda tag, vr, length: tag >= ENCRYPTED_ATTRIBUTES_SEQUENCE):
        pass
    position = stream.tell()
    if file[position:position + 4] == _tag_bytes(ENCRYPTED_ATTRIBUTES_SEQUENCE, little):
        raise ValueError("the file already has an Encrypted Attributes Sequence")
    buffer = DicomBytesIO()
    buffer.is_little_endian = little
    buffer.is_implicit_VR = implicit
    write_data_element(buffer, DataElement(ENCRYPTED_ATTRIBUTES_SEQUENCE, "SQ", Sequence([item])))
    return file[:position] + buffer.getvalue() + file[position:]


def _tag_bytes(tag: int, little: bool) -> bytes:
    order = "little" if little else "big"
    return (tag >> 16).to_bytes(2, order) + (tag & 0xFFFF).to_bytes(2, order)
