"""The text reader of verify (ocr/text_service.py), started for the tests from its own environment
(`make ocr-venv`: .venv-ocr, ocr/requirements.txt). It runs on the host and listens on loopback,
where an Orthanc in a chroot reaches it too."""
from __future__ import annotations

import os
import re
import subprocess
import sys
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]
#: The interpreter of the reader's environment (OCR_PYTHON overrides it).
PYTHON = Path(os.environ.get("OCR_PYTHON", REPO / ".venv-ocr" / "bin" / "python"))
_LISTENING = re.compile(r"reading text on (http://127\.0\.0\.1:\d+)")


class TextService:
    """One reader process on a free loopback port; `url` once its models are loaded."""

    def __init__(self) -> None:
        if not PYTHON.is_file():
            pytest.skip(f"the text reader's environment is missing ({PYTHON}): make ocr-venv")
        self.process = subprocess.Popen([str(PYTHON), str(REPO / "ocr" / "text_service.py"), "--port", "0"],
                                        stdout=subprocess.PIPE, stderr=sys.stderr, text=True)
        line = self.process.stdout.readline()  # printed once the models are loaded
        match = _LISTENING.search(line)
        if match is None:
            self.stop()
            raise RuntimeError(f"the text reader did not start: {line!r}")
        self.url = match.group(1)

    def stop(self) -> None:
        self.process.terminate()
        self.process.wait(timeout=30)
