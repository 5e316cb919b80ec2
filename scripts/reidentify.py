#!/usr/bin/env python3
"""Print the original values that anonymized DICOM files keep, encrypted, for their recipients.

Usage: reidentify.py --key KEY.pem [--cert CERT.pem] FILE...

Each file's Encrypted Attributes Sequence (0400,0500) holds a CMS EnvelopedData (RFC 5652) that
the recipient's private key opens; inside is a DICOM dataset whose Modified Attributes Sequence
(0400,0550) holds the values the anonymization replaced or removed. This prints them: keyword,
tag, VR and value, the items of sequences indented. With --cert, only the envelope's entry for
that certificate is tried; without it, every entry. Runs on the recipient's machine (needs
pydicom and cryptography), never on the anonymizing server: it needs the private key.

The same by hand, with pydicom and the openssl command line:
  python3 -c 'import sys, pydicom; sys.stdout.buffer.write(pydicom.dcmread(sys.argv[1])
      .EncryptedAttributesSequence[0].EncryptedContent)' FILE > content.der
  openssl cms -decrypt -inform DER -in content.der -inkey KEY.pem -recip CERT.pem -out originals.bin
  python3 -c 'import sys, pydicom.filereader as r; print(r.read_dataset(open(sys.argv[1], "rb"), False, True))' \
      originals.bin
"""
from __future__ import annotations

import argparse
import io
import sys
from pathlib import Path
from typing import Any, Iterator

import pydicom
from pydicom.dataset import Dataset
from pydicom.filereader import read_dataset

ID_ENVELOPED_DATA = "1.2.840.113549.1.7.3"
ID_RSA_ENCRYPTION = "1.2.840.113549.1.1.1"
ID_RSAES_OAEP = "1.2.840.113549.1.1.7"
#: Content-encryption algorithms (RFC 3565): AES in CBC mode, by key size.
AES_CBC = {"2.16.840.1.101.3.4.1.2": 16, "2.16.840.1.101.3.4.1.22": 24, "2.16.840.1.101.3.4.1.42": 32}
HASHES = {"1.3.14.3.2.26": "SHA1", "2.16.840.1.101.3.4.2.1": "SHA256", "2.16.840.1.101.3.4.2.2": "SHA384",
          "2.16.840.1.101.3.4.2.3": "SHA512"}
#: (0400,0510) values this reads: Explicit and Implicit VR Little Endian, Explicit VR Big Endian.
SYNTAXES = {"1.2.840.10008.1.2.1": (False, True), "1.2.840.10008.1.2": (True, True),
            "1.2.840.10008.1.2.2": (False, False)}


class NotForThisKey(Exception):
    """The envelope names no recipient that this private key (and certificate) opens."""


# --- A minimal DER reader: enough of RFC 5652 to find the recipient's key and the content ------

def tlv(data: bytes, position: int = 0) -> tuple[int, bytes, int]:
    """The tag, content and end of the DER element at `position`."""
    tag, first = data[position], data[position + 1]
    position += 2
    if first & 0x80:
        size = first & 0x7F
        length = int.from_bytes(data[position:position + size], "big")
        position += size
    else:
        length = first
    return tag, data[position:position + length], position + length


def members(content: bytes) -> list[tuple[int, bytes, bytes]]:
    """The elements inside a constructed value: (tag, content, whole encoding)."""
    out, position = [], 0
    while position < len(content):
        tag, value, end = tlv(content, position)
        out.append((tag, value, content[position:end]))
        position = end
    return out


def oid(content: bytes) -> str:
    arcs, value = [], 0
    for byte in content:
        value = (value << 7) | (byte & 0x7F)
        if not byte & 0x80:
            arcs.append(value)
            value = 0
    first = min(arcs[0] // 40, 2)
    return ".".join(str(arc) for arc in [first, arcs[0] - 40 * first, *arcs[1:]])


def _oaep(parameters: list[tuple[int, bytes, bytes]]) -> Any:
    """The OAEP padding that RSAES-OAEP-params (RFC 4055) describe; SHA-1 where absent."""
    from cryptography.hazmat.primitives import hashes
    from cryptography.hazmat.primitives.asymmetric import padding

    digest, mask_digest = "SHA1", "SHA1"
    for tag, value, _ in parameters:
        if tag == 0xA0:
            digest = HASHES[oid(members(members(value)[0][1])[0][1])]
        elif tag == 0xA1:
            mask_digest = HASHES[oid(members(members(members(value)[0][1])[1][1])[0][1])]
        elif tag == 0xA2:
            raise ValueError("OAEP with a label is not supported")
    return padding.OAEP(mgf=padding.MGF1(getattr(hashes, mask_digest)()), algorithm=getattr(hashes, digest)(),
                        label=None)


def _unwrap(private_key: Any, algorithm: bytes, encrypted_key: bytes) -> bytes:
    from cryptography.hazmat.primitives.asymmetric import padding

    parts = members(algorithm)
    name = oid(parts[0][1])
    if name == ID_RSA_ENCRYPTION:
        return private_key.decrypt(encrypted_key, padding.PKCS1v15())
    if name == ID_RSAES_OAEP:
        return private_key.decrypt(encrypted_key, _oaep(members(parts[1][1]) if len(parts) > 1 else []))
    raise NotForThisKey(f"key transport {name} is not RSA")


def _recipient_keys(recipient_infos: bytes, private_key: Any, certificate: Any) -> Iterator[bytes]:
    """The content keys this private key unwraps, from the entries that may be for it."""
    for tag, info, _ in members(recipient_infos):
        if tag != 0x30:
            continue  # not a KeyTransRecipientInfo
        version, rid, algorithm, encrypted_key = members(info)[:4]
        if certificate is not None and rid[0] == 0x30:
            issuer, serial = members(rid[1])[:2]
            if issuer[2] != certificate.issuer.public_bytes() or \
                    int.from_bytes(serial[1], "big", signed=True) != certificate.serial_number:
                continue
        try:
            yield _unwrap(private_key, algorithm[1], encrypted_key[1])
        except ValueError:  # an entry for another key
            continue


def open_envelope(content_info: bytes, private_key: Any, certificate: Any = None) -> bytes:
    """The content of a CMS EnvelopedData, for the recipient holding `private_key`."""
    from cryptography.hazmat.primitives import padding as symmetric_padding
    from cryptography.hazmat.primitives.ciphers import Cipher, algorithms, modes

    content_type, explicit = members(tlv(content_info)[1])[:2]
    if oid(content_type[1]) != ID_ENVELOPED_DATA:
        raise ValueError("the encrypted content is not a CMS EnvelopedData")
    parts = members(tlv(explicit[1])[1])
    recipient_infos = next(value for tag, value, _ in parts if tag == 0x31)
    encrypted_content_info = members(parts[-1][1])
    algorithm = members(encrypted_content_info[1][1])
    key_size = AES_CBC.get(oid(algorithm[0][1]))
    if key_size is None:
        raise ValueError(f"content encryption {oid(algorithm[0][1])} is not AES-CBC")
    iv, ciphertext = algorithm[1][1], encrypted_content_info[2][1]
    for key in _recipient_keys(recipient_infos, private_key, certificate):
        if len(key) != key_size:
            continue
        decryptor = Cipher(algorithms.AES(key), modes.CBC(iv)).decryptor()
        unpadder = symmetric_padding.PKCS7(128).unpadder()
        try:
            padded = decryptor.update(ciphertext) + decryptor.finalize()
            return unpadder.update(padded) + unpadder.finalize()
        except ValueError:  # PKCS#1 v1.5 let a wrong key through: the padding shows it
            continue
    raise NotForThisKey("no recipient of this envelope matches the private key")


# --- DICOM -------------------------------------------------------------------------------------

def originals(path: str | Path, private_key: Any, certificate: Any = None) -> list[Dataset]:
    """The items of the Modified Attributes Sequence that this key opens, one per encrypted item."""
    found = []
    for item in pydicom.dcmread(str(path), stop_before_pixels=True).get("EncryptedAttributesSequence", []):
        implicit, little = SYNTAXES.get(str(item.get("EncryptedContentTransferSyntaxUID", "")), (None, None))
        if implicit is None:
            raise ValueError(f"encrypted content in transfer syntax {item.get('EncryptedContentTransferSyntaxUID')}")
        try:
            plain = open_envelope(bytes(item.EncryptedContent), private_key, certificate)
        except NotForThisKey:
            continue
        data_set = read_dataset(io.BytesIO(plain), implicit, little)
        found.extend(data_set.get("ModifiedAttributesSequence", []))
    if not found:
        raise NotForThisKey("no Encrypted Attributes Sequence item for this key")
    return found


def lines(data_set: Dataset, depth: int = 0) -> Iterator[str]:
    """keyword (gggg,eeee) VR: value, the items of a sequence indented below it."""
    indent = "  " * depth
    for element in data_set:
        name = element.keyword or element.name
        head = f"{indent}{name} ({element.tag.group:04X},{element.tag.element:04X}) {element.VR}"
        if element.VR == "SQ":
            yield head + ":"
            for index, item in enumerate(element.value, 1):
                yield f"{indent}  Item {index}"
                yield from lines(item, depth + 2)
        elif isinstance(element.value, bytes):
            yield f"{head}: {element.value[:32].hex()}{'...' if len(element.value) > 32 else ''} ({len(element.value)} bytes)"
        else:
            yield f"{head}: {element.value}"


def main(argv: list[str] | None = None) -> int:
    from cryptography import x509
    from cryptography.hazmat.primitives.serialization import load_pem_private_key

    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--key", required=True, help="the recipient's private key (PEM)")
    parser.add_argument("--cert", help="the recipient's certificate (PEM): try only its entry")
    parser.add_argument("--password", help="the private key's password, if it has one")
    parser.add_argument("files", nargs="+", metavar="FILE")
    arguments = parser.parse_args(argv)
    password = arguments.password.encode() if arguments.password else None
    private_key = load_pem_private_key(Path(arguments.key).read_bytes(), password)
    certificate = x509.load_pem_x509_certificate(Path(arguments.cert).read_bytes()) if arguments.cert else None
    failed = 0
    for path in arguments.files:
        try:
            items = originals(path, private_key, certificate)
        except (NotForThisKey, ValueError, OSError) as error:
            print(f"{path}: {error}", file=sys.stderr)
            failed += 1
            continue
        print(f"== {path}")
        for item in items:
            for line in lines(item):
                print(line)
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
