#!/usr/bin/env python3
"""Fetch the field's rule set for burned-in text: the `deid` package's rule file
(`deid/data/deid.dicom`, MIT licence, the port of CTP's DicomPixelAnonymizer signatures), from the
package registry, pinned by version and sha256, into a folder of the user's (docs/pixels.md). The
plugin does not ship it: it is someone else's data, taken as it is published.

Usage: pixel_rules.py FOLDER   (writes FOLDER/deid.dicom and FOLDER/deid-LICENSE; prints the path
to give in ConsistentAnonymization.PixelRuleFiles)
"""
from __future__ import annotations

import subprocess
import sys
import tempfile
import zipfile
from pathlib import Path

#: The `deid` release whose rule file is used, and its wheel's sha256.
DEID_PIN = "deid==0.4.13 --hash=sha256:c8679a5ee7e985bdeef4f3bf9838f048cbd7d59d7084c145287b5d28a33184a8"
RULE_MEMBER = "deid/data/deid.dicom"
LICENSE_MEMBER = "deid-0.4.13.dist-info/licenses/LICENSE"


def download(pins: list[str], folder: Path) -> list[Path]:
    """The distributions `pins` name (requirement lines with their hashes), downloaded by pip
    into `folder`; pip refuses any whose sha256 differs."""
    folder.mkdir(parents=True, exist_ok=True)
    with tempfile.NamedTemporaryFile("w", suffix=".txt", delete=False) as requirements:
        requirements.write("\n".join(pins) + "\n")
    subprocess.run([sys.executable, "-m", "pip", "download", "-q", "--no-deps", "--require-hashes",
                    "-r", requirements.name, "-d", str(folder)], check=True)
    Path(requirements.name).unlink()
    return sorted(folder.iterdir())


def fetch_rule_file(folder: Path) -> Path:
    """FOLDER/deid.dicom, from the pinned wheel (downloaded once), with its licence beside it."""
    target = folder / "deid.dicom"
    if target.is_file():
        return target
    folder.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory() as scratch:
        wheel = next(p for p in download([DEID_PIN], Path(scratch)) if p.name.endswith(".whl"))
        with zipfile.ZipFile(wheel) as archive:
            (folder / "deid-LICENSE").write_bytes(archive.read(LICENSE_MEMBER))
            target.write_bytes(archive.read(RULE_MEMBER))
    return target


if __name__ == "__main__":
    if len(sys.argv) != 2:
        sys.exit(__doc__)
    print(fetch_rule_file(Path(sys.argv[1]).resolve()))
