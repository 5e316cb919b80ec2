"""Throwaway re-identification recipients (an RSA key and its self-signed certificate), made by
the openssl command line in a temporary folder, as a recipient would make theirs: none is ever
committed."""
from __future__ import annotations

import io
import shutil
import subprocess
from pathlib import Path

import pydicom
import pytest
from pydicom.dataset import Dataset
from pydicom.filereader import read_dataset


def openssl(*arguments: str, data: bytes | None = None) -> subprocess.CompletedProcess:
    return subprocess.run(["openssl", *arguments], input=data, capture_output=True)


def make_recipients(folder: Path, names: tuple[str, ...]) -> dict[str, tuple[Path, Path]]:
    """name -> (private key, certificate), both PEM, the key without a passphrase."""
    if shutil.which("openssl") is None:
        pytest.skip("the openssl command line is missing")
    made = {}
    for name in names:
        key, certificate = folder / f"{name}.key.pem", folder / f"{name}.cert.pem"
        result = openssl("req", "-x509", "-newkey", "rsa:2048", "-nodes", "-keyout", str(key), "-out",
                         str(certificate), "-days", "1", "-subj", f"/CN=Re-identification {name}")
        assert result.returncode == 0, result.stderr
        made[name] = (key, certificate)
    return made


def originals_by_openssl(data: bytes, key: Path, certificate: Path, folder: Path) -> Dataset:
    """The item of the Modified Attributes Sequence of an anonymized file, as a recipient reads it
    with standard tools: the Encrypted Content extracted, `openssl cms -decrypt` (the command line,
    not the project's code), the data set read in Explicit VR Little Endian."""
    sequence = pydicom.dcmread(io.BytesIO(data)).EncryptedAttributesSequence
    assert len(sequence) == 1 and sequence[0].EncryptedContentTransferSyntaxUID == "1.2.840.10008.1.2.1"
    envelope = folder / "content.der"
    envelope.write_bytes(sequence[0].EncryptedContent)
    result = openssl("cms", "-decrypt", "-inform", "DER", "-in", str(envelope), "-inkey", str(key),
                     "-recip", str(certificate))
    assert result.returncode == 0, result.stderr
    return read_dataset(io.BytesIO(result.stdout), False, True).ModifiedAttributesSequence[0]
