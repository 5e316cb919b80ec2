"""Throwaway re-identification recipients (an RSA key and its self-signed certificate), made by
the openssl command line in a temporary folder, as a recipient would make theirs: none is ever
committed."""
from __future__ import annotations

import shutil
import subprocess
from pathlib import Path

import pytest


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
