"""DER (ITU-T X.690): what a CMS EnvelopedData (RFC 5652) needs, written and read.

One module for both sides: the plugin writes envelopes and reads their recipients back (to
recognize its own result on a re-run), and scripts/reidentify.py, on a recipient's machine
without Orthanc, reads them to open them. It therefore imports only the standard library, and the
script loads it by its path in a checkout of the project.

The reader is bounded: every length is checked against what holds it, and anything else than
definite-length DER with low tag numbers (what a CMS writer emits) raises `DerError`, a ValueError
with a message, never an IndexError from a truncated or garbled input.
"""
from __future__ import annotations

from typing import Iterable, NamedTuple

#: Tags of the universal types used here, and the constructed context-specific [0].
INTEGER, OCTET_STRING, OID, SEQUENCE, SET, CONTEXT_0 = 0x02, 0x04, 0x06, 0x30, 0x31, 0xA0
#: Longest length field read (4 bytes: 4 GiB), far beyond any DICOM value.
MAX_LENGTH_BYTES = 4


class DerError(ValueError):
    """Bytes that are not the DER expected here: truncated, garbled, or of another structure."""


# --- Writing ------------------------------------------------------------------------------------

def der(tag: int, content: bytes) -> bytes:
    """One TLV with a definite length in the fewest bytes."""
    length = len(content)
    if length < 0x80:
        return bytes((tag, length)) + content
    size = (length.bit_length() + 7) // 8
    return bytes((tag, 0x80 | size)) + length.to_bytes(size, "big") + content


def der_sequence(*parts: bytes) -> bytes:
    return der(SEQUENCE, b"".join(parts))


def der_set(parts: Iterable[bytes]) -> bytes:
    """A SET OF: DER sorts the encoded members."""
    return der(SET, b"".join(sorted(parts)))


def der_integer(value: int) -> bytes:
    """A non-negative INTEGER (a serial number, a version), two's complement."""
    return der(INTEGER, value.to_bytes(value.bit_length() // 8 + 1, "big"))


def der_octets(value: bytes) -> bytes:
    return der(OCTET_STRING, value)


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
    return der(OID, bytes(body))


def der_explicit(number: int, content: bytes) -> bytes:
    """A constructed context-specific tag [number] around an encoding (EXPLICIT tagging)."""
    return der(CONTEXT_0 | number, content)


# --- Reading ------------------------------------------------------------------------------------

class Tlv(NamedTuple):
    """One DER element: its tag byte, its content, and its whole encoding."""

    tag: int
    content: bytes
    encoding: bytes


def element_at(data: bytes, position: int = 0) -> Tlv:
    """The element at `position`, checked to lie inside `data`."""
    if position + 2 > len(data):
        raise DerError("a DER element is cut short")
    tag, first = data[position], data[position + 1]
    if tag & 0x1F == 0x1F:
        raise DerError("a DER tag number above 30")
    start = position + 2
    if first == 0x80:
        raise DerError("an indefinite length (BER, not DER)")
    if first & 0x80:
        size = first & 0x7F
        if size > MAX_LENGTH_BYTES or start + size > len(data):
            raise DerError("a DER length is cut short or too long")
        length = int.from_bytes(data[start:start + size], "big")
        start += size
    else:
        length = first
    if start + length > len(data):
        raise DerError("a DER element runs past what holds it")
    return Tlv(tag, data[start:start + length], data[position:start + length])


def members(content: bytes, at_least: int = 0) -> list[Tlv]:
    """The elements inside a constructed value, which must fill it exactly; at least `at_least`."""
    found, position = [], 0
    while position < len(content):
        element = element_at(content, position)
        found.append(element)
        position += len(element.encoding)
    if len(found) < at_least:
        raise DerError(f"a DER structure holds {len(found)} elements where {at_least} are expected")
    return found


def expect(element: Tlv, tag: int) -> bytes:
    """The content of `element`, which must carry `tag`."""
    if element.tag != tag:
        raise DerError(f"a DER tag {element.tag:#04x} where {tag:#04x} is expected")
    return element.content


def oid(content: bytes) -> str:
    """An OBJECT IDENTIFIER's content in dotted form."""
    if not content or content[-1] & 0x80:
        raise DerError("an object identifier is empty or cut short")
    arcs, value = [], 0
    for byte in content:
        value = (value << 7) | (byte & 0x7F)
        if not byte & 0x80:
            arcs.append(value)
            value = 0
    first = min(arcs[0] // 40, 2)
    return ".".join(str(arc) for arc in [first, arcs[0] - 40 * first, *arcs[1:]])


class Enveloped(NamedTuple):
    """The parts of a CMS EnvelopedData that opening it needs."""

    recipient_infos: list[Tlv]  # the RecipientInfo choices, as written
    content_algorithm: list[Tlv]  # the content-encryption AlgorithmIdentifier's members
    ciphertext: bytes


def enveloped_data(content_info: bytes, enveloped_data_oid: str) -> Enveloped:
    """A ContentInfo holding an EnvelopedData, taken apart; DerError for anything else. Bytes
    after the ContentInfo are ignored (a DICOM value may end with a padding NUL)."""
    content_type, explicit = members(expect(element_at(content_info), SEQUENCE), 2)[:2]
    if oid(expect(content_type, OID)) != enveloped_data_oid:
        raise DerError("not a CMS EnvelopedData")
    parts = members(expect(element_at(expect(explicit, CONTEXT_0)), SEQUENCE), 3)
    at = next((index for index, part in enumerate(parts) if part.tag == SET), len(parts))
    if at + 1 >= len(parts):  # recipientInfos, then encryptedContentInfo
        raise DerError("an EnvelopedData without recipients or content")
    encrypted_content_info = members(expect(parts[at + 1], SEQUENCE), 3)
    return Enveloped(members(parts[at].content), members(expect(encrypted_content_info[1], SEQUENCE), 1),
                     encrypted_content_info[2].content)
