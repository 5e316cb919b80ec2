"""Re-identification data, standard and encrypted: the Encrypted Attributes Sequence (0400,0500).

PS3.15 E.1.1 and PS3.3 C.12.1.1.4: a de-identifier may keep the original values of the
attributes it replaced or removed inside the anonymized instance, in a Modified Attributes
Sequence (0400,0550) of one item, encoded as a dataset (here Explicit VR Little Endian) and
encrypted as a CMS EnvelopedData (RFC 5652) that only the holders of a recipient's private key can
open. The plugin holds recipients' certificates only: it can seal, never open.

The envelope is encoded here (a few DER structures, der.py) rather than by a CMS library, since the
`cryptography` of Debian bookworm (38) has no envelope builder; `cryptography` does the RSA key
transport, AES and certificate parsing. Choices, all read by `openssl cms -decrypt` unaided:
- content encryption AES-256-CBC (RFC 3565), key transport RSAES-OAEP with SHA-256 and MGF1-SHA-256
  (RFC 8017, RFC 4055; OAEP rather than PKCS#1 v1.5, whose padding invites oracle attacks);
- recipients named by issuer and serial number (KeyTransRecipientInfo version 0), which every CMS
  reader supports;
- one content-encryption key per `Envelope` (one anonymization call), wrapped once for every
  recipient; each instance's content has its own random IV, and each output is a complete
  EnvelopedData of its own.

Wiring: `recipients = load_recipients(paths)` when the configuration is read (their
`fingerprint`s belong in the options mark), `reidentification = Reidentification(recipients)`
once per call, then per instance, after the output passed the fail-closed check,
`output = reidentification.add(source_bytes, output)`.
"""
from __future__ import annotations

import hashlib
import io
import os
import struct
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Iterable

from pydicom.dataelem import DataElement
from pydicom.dataset import Dataset
from pydicom.filebase import DicomBytesIO
from pydicom.filereader import read_dataset
from pydicom.filewriter import write_dataset
from pydicom.sequence import Sequence

from ..errors import ConfigurationError
from .der import (SEQUENCE, der, der_explicit, der_integer, der_octets, der_oid, der_sequence, der_set, enveloped_data,
                  members)
from ..dicom.filereader import ITEM, ITEM_END, LONG_VRS, SEQUENCE_END, VRS, Layout, Span, UnreadableHeader, read_layout
from ..dicom.vocabulary import (ENCRYPTED_ATTRIBUTES_SEQUENCE, ENCRYPTED_CONTENT, ENCRYPTED_CONTENT_TRANSFER_SYNTAX_UID,
                                MODIFIED_ATTRIBUTES_SEQUENCE, SPECIFIC_CHARACTER_SET)

#: The transfer syntax of the encrypted dataset, (0400,0510): Explicit VR Little Endian.
ENCRYPTED_CONTENT_TRANSFER_SYNTAX = "1.2.840.10008.1.2.1"

# Object identifiers (RFC 5652, RFC 3565, RFC 4055, RFC 8017).
ID_DATA = "1.2.840.113549.1.7.1"
ID_ENVELOPED_DATA = "1.2.840.113549.1.7.3"
ID_AES256_CBC = "2.16.840.1.101.3.4.1.42"
ID_RSAES_OAEP = "1.2.840.113549.1.1.7"
ID_MGF1 = "1.2.840.113549.1.1.8"
ID_SHA256 = "2.16.840.1.101.3.4.2.1"


class ReidentificationError(ConfigurationError):
    """A recipient certificate the plugin cannot use (unreadable, not RSA)."""


_SHA256 = der_sequence(der_oid(ID_SHA256))  # parameters absent, as RFC 4055 recommends
_DATA, _ENVELOPED_DATA, _AES256_CBC = der_oid(ID_DATA), der_oid(ID_ENVELOPED_DATA), der_oid(ID_AES256_CBC)
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
    """The recipients of these X.509 PEM certificates; a clear error naming an unusable one.
    `cryptography` is needed from here on only: without certificates, the plugin runs without it."""
    try:
        from cryptography import x509
        from cryptography.hazmat.primitives.asymmetric.rsa import RSAPublicKey
        from cryptography.hazmat.primitives.serialization import Encoding
    except ImportError:
        raise ReidentificationError("Re-identification certificates need the Python package cryptography in "
                                    "Orthanc's Python (Debian and Ubuntu: python3-cryptography)") from None

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


def recipient_identifier(recipient: Recipient) -> bytes:
    """How an envelope names the recipient: IssuerAndSerialNumber (DER)."""
    return der_sequence(recipient.issuer, der_integer(recipient.serial_number))


def envelope_recipients(content_info: bytes) -> frozenset[bytes]:
    """The identifiers of the recipients an EnvelopedData is sealed for (whole DER encodings of
    each KeyTransRecipientInfo's rid); DerError, a ValueError, for anything else."""
    infos = enveloped_data(content_info, ID_ENVELOPED_DATA).recipient_infos
    return frozenset(members(info.content, 2)[1].encoding for info in infos if info.tag == SEQUENCE)


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
            recipient_identifier(recipient),
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
            _DATA,
            der_sequence(_AES256_CBC, der_octets(iv)),
            der(0x80, ciphertext),  # [0] IMPLICIT OCTET STRING
        )
        enveloped_data = der_sequence(der_integer(0), self._recipient_infos, encrypted_content_info)
        return der_sequence(_ENVELOPED_DATA, der_explicit(0, enveloped_data))


# --- The DICOM side: files read and written as bytes --------------------------------------------
#
# The engine already holds each source and its anonymized file as bytes; a pydicom read and write
# of both would cost several times the target of +20 % on ~3 ms per instance. The plugin's file
# reader (dicom/filereader.py, which the fail-closed check reads every file with) answers where
# each element lies: what changed is found by comparing bytes, the original elements are copied as
# they are written (Explicit VR Little Endian files, the common case) and the sequence is spliced
# into the anonymized file at its place in tag order.


class UnreadableFile(ValueError):
    """A file whose elements sealing cannot copy or splice (deflated, or malformed)."""


def walk(data: bytes) -> Layout:
    """Where the file's top-level elements lie, as the plugin's reader reads them."""
    try:
        return read_layout(data)
    except UnreadableHeader as error:
        raise UnreadableFile(str(error)) from None


def modified_tags(source: Layout, anonymized: Layout) -> list[int]:
    """The top-level elements of the source that the anonymized file removed or holds with
    another value. A sequence with a change anywhere inside counts whole (PS3.15 E.1.1); a value
    written again with other padding, or a sequence with other lengths, is no change."""
    tags = []
    for tag, before in source.elements.items():
        if not tag & 0xFFFF or tag == ENCRYPTED_ATTRIBUTES_SEQUENCE:
            continue  # group lengths, and the sequence this module writes
        after = anonymized.elements.get(tag)
        if after is None or _changed(source, before, anonymized, after):
            tags.append(tag)
    return tags


def _changed(source: Layout, before: Span, anonymized: Layout, after: Span) -> bool:
    if source.value(before) == anonymized.value(after):
        return False
    return _canonical(source.data, before) != _canonical(anonymized.data, after)


def _canonical(data: bytes, span: Span) -> Any:
    """An element's value without what an encoder may choose: padding, and a sequence's lengths
    (its items' elements then compared the same way)."""
    if span.items is not None:
        return tuple(tuple((inner.tag, _canonical(data, inner)) for inner in item) for item in span.items)
    return data[span.value_start:span.end].rstrip(b" \x00")


def encrypted_attributes_data_set(source: Layout, tags: list[int]) -> bytes:
    """The Encrypted Attributes Data Set (PS3.3 Table C.12-7) in Explicit VR Little Endian: a
    Modified Attributes Sequence of one item holding the source's elements `tags` (in tag order),
    after the source's Specific Character Set, which their texts are written in."""
    elements = [source.elements[tag] for tag in tags]
    charset = source.elements.get(SPECIFIC_CHARACTER_SET)
    if not source.little:
        return _reencoded(source, elements, charset)
    data = source.data
    if source.implicit:  # the values as they are, with their dictionary VRs written out
        encoded = [_explicit(data, element) for element in elements]
        head = _explicit(data, charset) if charset else b""
    else:  # the original elements, byte for byte
        encoded = [data[element.start:element.end] for element in elements]
        head = data[charset.start:charset.end] if charset else b""
    return head + _explicit_sequence(MODIFIED_ATTRIBUTES_SEQUENCE, [b"".join(encoded)])


def _explicit_sequence(tag: int, items: list[bytes]) -> bytes:
    """A sequence in explicit VR little endian, it and its items of undefined length."""
    return (_tag(tag, True) + b"SQ\x00\x00\xff\xff\xff\xff"
            + b"".join(_tag(ITEM, True) + b"\xff\xff\xff\xff" + item + _tag(ITEM_END, True) + bytes(4)
                      for item in items)
            + _tag(SEQUENCE_END, True) + bytes(4))


def _explicit(data: bytes, element: Span) -> bytes:
    """An implicit VR little endian element in explicit VR: its dictionary VR (UN for private,
    unknown and ambiguous ones, and for a value too long for its VR), items converted alike."""
    if element.items is not None:
        return _explicit_sequence(element.tag, [b"".join(_explicit(data, inner) for inner in item)
                                                for item in element.items])
    length = element.end - element.value_start
    vr = element.vr.encode("ascii")
    if vr not in VRS:  # "US or SS", "OB or OW"...
        vr = b"UN"
    if vr in LONG_VRS:
        header = vr + b"\x00\x00" + _length(length, True)
    elif length <= 0xFFFF:
        header = vr + struct.pack("<H", length)
    else:
        header = b"UN\x00\x00" + _length(length, True)
    return _tag(element.tag, True) + header + data[element.value_start:element.end]


def _reencoded(source: Layout, elements: list[Span], charset: Span | None) -> bytes:
    """The same, for a big endian source (a retired transfer syntax): decoded by pydicom, which
    swaps the bytes of binary values, and written again."""
    def read(parts: list[Span]) -> Dataset:
        data_set = read_dataset(io.BytesIO(b"".join(source.data[e.start:e.end] for e in parts)),
                                source.implicit, source.little)
        _decode_all(data_set)
        return data_set

    data_set = read([charset]) if charset else Dataset()
    # the item's texts decoded in the source's character set, which the item holds only if changed
    item = read([charset] + [e for e in elements if e is not charset] if charset else elements)
    if charset and charset not in elements:
        del item[SPECIFIC_CHARACTER_SET]
    data_set.add(DataElement(MODIFIED_ATTRIBUTES_SEQUENCE, "SQ", Sequence([item])))
    buffer = DicomBytesIO()
    buffer.is_little_endian, buffer.is_implicit_VR = True, False
    write_dataset(buffer, data_set)
    return buffer.getvalue()


def _decode_all(data_set: Dataset) -> None:
    """Decodes every element (items included), so that pydicom writes them in another encoding."""
    for element in data_set:
        if element.VR == "SQ":
            for item in element.value:
                _decode_all(item)


def with_encrypted_attributes(anonymized: Layout, encrypted_content: bytes) -> bytes:
    """The anonymized file with an Encrypted Attributes Sequence of one item, placed in tag order
    in the file's own encoding; nothing else is decoded or written again."""
    if ENCRYPTED_ATTRIBUTES_SEQUENCE in anonymized.elements:
        raise UnreadableFile("the file already has an Encrypted Attributes Sequence")
    position = next((element.start for tag, element in anonymized.elements.items()
                     if tag > ENCRYPTED_ATTRIBUTES_SEQUENCE), anonymized.end)
    implicit, little = anonymized.implicit, anonymized.little
    item = (_encode_element(ENCRYPTED_CONTENT_TRANSFER_SYNTAX_UID, "UI",
                            ENCRYPTED_CONTENT_TRANSFER_SYNTAX.encode("ascii"), implicit, little)
            + _encode_element(ENCRYPTED_CONTENT, "OB", encrypted_content, implicit, little))
    item = _tag(ITEM, little) + _length(len(item), little) + item
    sequence = _encode_element(ENCRYPTED_ATTRIBUTES_SEQUENCE, "SQ", item, implicit, little)
    return anonymized.data[:position] + sequence + anonymized.data[position:]


def split_encrypted_attributes(data: bytes) -> tuple[bytes, list[bytes]]:
    """The file without its Encrypted Attributes Sequence, and the Encrypted Content of each of
    its items ([] without the sequence): two sealings of one output differ in these only."""
    sequence = walk(data).elements.get(ENCRYPTED_ATTRIBUTES_SEQUENCE)
    if sequence is None:
        return data, []
    if sequence.items is None:
        raise UnreadableFile("an Encrypted Attributes Sequence that is no sequence")
    contents = [data[element.value_start:element.end]
                for item in sequence.items for element in item if element.tag == ENCRYPTED_CONTENT]
    return data[:sequence.start] + data[sequence.end:], contents


def _tag(tag: int, little: bool) -> bytes:
    return struct.pack("<HH" if little else ">HH", tag >> 16, tag & 0xFFFF)


def _length(length: int, little: bool) -> bytes:
    return struct.pack("<I" if little else ">I", length)


def _encode_element(tag: int, vr: str, value: bytes, implicit: bool, little: bool) -> bytes:
    """An element of defined length; a UI or OB value padded with NUL to an even length."""
    if len(value) % 2 and vr != "SQ":
        value += b"\x00"
    if implicit:
        header = _tag(tag, little) + _length(len(value), little)
    else:
        header = _tag(tag, little) + vr.encode("ascii") + (b"\x00\x00" + _length(len(value), little)
                                                          if vr in ("OB", "SQ") else
                                                          struct.pack("<H" if little else ">H", len(value)))
    return header + value


class Reidentification:
    """What a call of the engine needs: one per call (one content key, wrapped once), then
    `add(source, anonymized)` per instance."""

    def __init__(self, recipients: Iterable[Recipient]) -> None:
        self._envelope = Envelope(recipients)

    def add(self, source: bytes, anonymized: bytes) -> bytes:
        """The anonymized file with its Encrypted Attributes Sequence: the source's values of
        what it replaced or removed, sealed for every recipient. Raises UnreadableFile for a
        file it cannot walk (deflated)."""
        before, after = walk(source), walk(anonymized)
        return with_encrypted_attributes(after, self._envelope.seal(
            encrypted_attributes_data_set(before, modified_tags(before, after))))
