#!/usr/bin/env python3
"""Print the original values that anonymized DICOM files keep, encrypted, for their recipients.

Usage: reidentify.py --key KEY.pem [--cert CERT.pem] FILE...

Each file's Encrypted Attributes Sequence (0400,0500) holds a CMS EnvelopedData (RFC 5652) that
the recipient's private key opens; inside is a DICOM dataset whose Modified Attributes Sequence
(0400,0550) holds the values the anonymization replaced or removed. This prints them: keyword,
tag, VR and value, the items of sequences indented. With --cert, only the envelope's entry for
that certificate is tried; without it, every entry. Runs on the recipient's machine (needs
pydicom and cryptography, and this checkout's plugin/consistent_anon/reidentification/der.py,
which it loads by path), never on the anonymizing server: it needs the private key.

The same by hand, with pydicom and the openssl command line:
  python3 -c 'import sys, pydicom; sys.stdout.buffer.write(pydicom.dcmread(sys.argv[1])
      .EncryptedAttributesSequence[0].EncryptedContent)' FILE > content.der
  openssl cms -decrypt -inform DER -in content.der -inkey KEY.pem -recip CERT.pem -out originals.bin
  python3 -c 'import sys, pydicom.filereader as r; print(r.read_dataset(open(sys.argv[1], "rb"), False, True))' \
      originals.bin
"""
from __future__ import annotations

import argparse
import importlib.util
import io
import sys
from pathlib import Path
from types import ModuleType
from typing import Any, Iterator

import pydicom
from pydicom.dataset import Dataset
from pydicom.errors import InvalidDicomError
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


def _load_der() -> ModuleType:
    """The project's DER module (standard library only), loaded by its path in this checkout:
    the script needs neither Orthanc nor the plugin's package, and reads DER as the plugin does."""
    path = Path(__file__).resolve().parents[1] / "plugin" / "consistent_anon" / "reidentification" / "der.py"
    spec = importlib.util.spec_from_file_location("consistent_anon_der", path)
    if spec is None or spec.loader is None:
        raise ImportError(f"{path} is missing: run this script from a checkout of the project")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


der = _load_der()


# --- The envelope (RFC 5652): the recipient's key and the content ------------------------------

def _hash(algorithm: Any) -> str:
    """The name of the digest an AlgorithmIdentifier names, for `cryptography.hazmat.primitives.hashes`."""
    name = der.oid(der.expect(der.members(der.expect(algorithm, der.SEQUENCE), 1)[0], der.OID))
    if name not in HASHES:
        raise ValueError(f"digest {name} is not supported")
    return HASHES[name]


def _oaep(parameters: list[Any]) -> Any:
    """The OAEP padding that RSAES-OAEP-params (RFC 4055) describe; SHA-1 where absent."""
    from cryptography.hazmat.primitives import hashes
    from cryptography.hazmat.primitives.asymmetric import padding

    digest, mask_digest = "SHA1", "SHA1"
    for parameter in parameters:
        if parameter.tag == 0xA0:  # [0] hashAlgorithm
            digest = _hash(der.members(parameter.content, 1)[0])
        elif parameter.tag == 0xA1:  # [1] maskGenAlgorithm: MGF1 and its digest
            mask_digest = _hash(der.members(der.expect(der.members(parameter.content, 1)[0], der.SEQUENCE), 2)[1])
        elif parameter.tag == 0xA2:
            raise ValueError("OAEP with a label is not supported")
    return padding.OAEP(mgf=padding.MGF1(getattr(hashes, mask_digest)()), algorithm=getattr(hashes, digest)(),
                        label=None)


def _padding(algorithm: Any) -> Any:
    """The RSA padding a key-transport AlgorithmIdentifier names; None for another algorithm."""
    from cryptography.hazmat.primitives.asymmetric import padding

    parts = der.members(der.expect(algorithm, der.SEQUENCE), 1)
    name = der.oid(der.expect(parts[0], der.OID))
    if name == ID_RSA_ENCRYPTION:
        return padding.PKCS1v15()
    if name == ID_RSAES_OAEP:
        return _oaep(der.members(der.expect(parts[1], der.SEQUENCE)) if len(parts) > 1 else [])
    return None


def _names(rid: Any, certificate: Any) -> bool:
    """Whether a recipient identifier may name `certificate` (one by issuer and serial number
    must match it; a subject key identifier is tried)."""
    if certificate is None or rid.tag != der.SEQUENCE:
        return True
    issuer, serial = der.members(rid.content, 2)[:2]
    return issuer.encoding == certificate.issuer.public_bytes() and \
        int.from_bytes(der.expect(serial, der.INTEGER), "big", signed=True) == certificate.serial_number


def _recipient_keys(recipient_infos: list[Any], private_key: Any, certificate: Any) -> Iterator[bytes]:
    """The content keys this private key unwraps, from the entries that may be for it."""
    for info in recipient_infos:
        if info.tag != der.SEQUENCE:
            continue  # not a KeyTransRecipientInfo
        _, rid, algorithm, encrypted_key = der.members(info.content, 4)[:4]
        padding = _padding(algorithm)
        if padding is None or not _names(rid, certificate):
            continue  # not RSA key transport, or named for another certificate
        try:
            yield private_key.decrypt(der.expect(encrypted_key, der.OCTET_STRING), padding)
        except ValueError:  # an entry for another key
            continue


def open_envelope(content_info: bytes, private_key: Any, certificate: Any = None) -> bytes:
    """The content of a CMS EnvelopedData, for the recipient holding `private_key`; a ValueError
    (der.DerError) names what is wrong with a truncated or garbled envelope."""
    from cryptography.hazmat.primitives import padding as symmetric_padding
    from cryptography.hazmat.primitives.ciphers import Cipher, algorithms, modes

    enveloped = der.enveloped_data(content_info, ID_ENVELOPED_DATA)
    algorithm = der.oid(der.expect(enveloped.content_algorithm[0], der.OID))
    key_size = AES_CBC.get(algorithm)
    if key_size is None or len(enveloped.content_algorithm) < 2:
        raise ValueError(f"content encryption {algorithm} is not AES-CBC with an IV")
    iv = der.expect(enveloped.content_algorithm[1], der.OCTET_STRING)
    if len(iv) != 16 or not enveloped.ciphertext or len(enveloped.ciphertext) % 16:
        raise der.DerError("the IV or the encrypted content is cut short")
    for key in _recipient_keys(enveloped.recipient_infos, private_key, certificate):
        if len(key) != key_size:
            continue
        decryptor = Cipher(algorithms.AES(key), modes.CBC(iv)).decryptor()
        unpadder = symmetric_padding.PKCS7(128).unpadder()
        try:
            padded = decryptor.update(enveloped.ciphertext) + decryptor.finalize()
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
        except (NotForThisKey, ValueError, OSError, InvalidDicomError) as error:
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
