"""Public DICOM files with burned-in text, fetched from the package registry at test time, pinned by
version and sha256, never committed (someone else's data): `deid-data` 0.0.20 (ultrasounds of
Philips and Siemens, single and multi-frame) and `pydicom-data` 1.0.0 (GE, Aloka, secondary
captures, a plain MR); the field's rule file comes from `deid` 0.4.13 (scripts/pixel_rules.py)."""
from __future__ import annotations

import tarfile
import zipfile
from pathlib import Path

from pixel_rules import download, fetch_rule_file

CACHE = Path(__file__).parent / "artifacts" / "pixel-data"
PINS = [
    "deid-data==0.0.20 --hash=sha256:33d455f13c82f76a39e8eb52d2808a35d7cde29c120819e246c863432281b8ed",
    "pydicom-data==1.0.0 --hash=sha256:622ac97265f1d91f76b5120b5bd6eb0f57737c392ef863b72c71779c91e33637",
]
#: The files used, by name: where each is inside its distribution.
FILES = {
    "GREYSCALE_IMAGE.dcm": "deid-data-0.0.20/deid_data/data/ultrasounds/GREYSCALE_IMAGE.dcm",
    "RGB_IMAGE.dcm": "deid-data-0.0.20/deid_data/data/ultrasounds/RGB_IMAGE.dcm",
    "ultrasound-multiframe.dcm": "deid-data-0.0.20/deid_data/data/ultrasounds/ultrasound-multiframe.dcm",
    "US1_UNCR.dcm": "data_store/data/US1_UNCR.dcm",
    "US1_J2KR.dcm": "data_store/data/US1_J2KR.dcm",
    "gdcm-US-ALOKA-16.dcm": "data_store/data/gdcm-US-ALOKA-16.dcm",
    "gdcm-US-ALOKA-16_big.dcm": "data_store/data/gdcm-US-ALOKA-16_big.dcm",
    "SC_ybr_full_uncompressed.dcm": "data_store/data/SC_ybr_full_uncompressed.dcm",
    "MR2_UNCR.dcm": "data_store/data/MR2_UNCR.dcm",
}


def _extract(archive: Path, wanted: dict[str, str]) -> None:
    if archive.name.endswith(".tar.gz"):
        with tarfile.open(archive) as tar:
            for name, member in wanted.items():
                if member in tar.getnames():
                    (CACHE / name).write_bytes(tar.extractfile(member).read())
    else:
        with zipfile.ZipFile(archive) as wheel:
            for name, member in wanted.items():
                if member in wheel.namelist():
                    (CACHE / name).write_bytes(wheel.read(member))


def real_files() -> dict[str, Path]:
    """Every file of FILES, downloaded and extracted once into tests/artifacts/pixel-data."""
    if not all((CACHE / name).is_file() for name in FILES):
        for archive in download(PINS, CACHE / "downloads"):
            _extract(archive, FILES)
    missing = [name for name in FILES if not (CACHE / name).is_file()]
    assert not missing, f"not found in the pinned distributions: {missing}"
    return {name: CACHE / name for name in FILES}


def rule_file() -> Path:
    """The `deid` package's rule file, pinned (scripts/pixel_rules.py)."""
    return fetch_rule_file(CACHE / "rules")
