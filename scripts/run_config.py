#!/usr/bin/env python3
"""Write the configuration Orthanc runs with: orthanc.json, with the ports, storage folder and
plugin path of this run. Used by `make run` (from the environment) and by the tests.

Usage: run_config.py OUTPUT   (reads ORTHANC_HTTP_PORT, ORTHANC_DICOM_PORT, ORTHANC_STORAGE)
"""
from __future__ import annotations

import json
import os
import sys
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]


def effective_config(http_port: int, dicom_port: int, storage: str, plugin_dir: str,
                     base: Path = REPO / "orthanc.json") -> dict:
    config = json.loads(base.read_text())
    config.update({
        "HttpPort": http_port,
        "DicomPort": dicom_port,
        "StorageDirectory": storage,
        "IndexDirectory": storage,
        "PythonScript": str(Path(plugin_dir) / "consistent_anonymization.py"),
    })
    return config


def main(output: str) -> None:
    storage = os.path.abspath(os.environ.get("ORTHANC_STORAGE") or "data")
    config = effective_config(int(os.environ.get("ORTHANC_HTTP_PORT") or 8042),
                              int(os.environ.get("ORTHANC_DICOM_PORT") or 4242),
                              storage, str(REPO / "plugin"))
    Path(output).write_text(json.dumps(config, indent=2) + "\n")


if __name__ == "__main__":
    main(sys.argv[1])
