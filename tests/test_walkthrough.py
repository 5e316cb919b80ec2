"""The README's walk-through needs nothing `make run` did not install: its DICOM generator runs
on the system Python with pydicom alone (Debian's python3-pydicom, no numpy)."""
from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pydicom

FACTORY = Path(__file__).parent / "dicom_factory.py"


def test_the_generator_needs_no_numpy(tmp_path):
    """Run with numpy made unimportable, whatever this Python has."""
    code = ("import runpy, sys; sys.modules['numpy'] = None; sys.argv = ['dicom_factory.py', sys.argv[1]]; "
            "runpy.run_path(%r, run_name='__main__')" % str(FACTORY))
    subprocess.run([sys.executable, "-c", code, str(tmp_path / "study")], check=True)
    files = sorted((tmp_path / "study").glob("*.dcm"))
    assert len(files) == 10  # three MR series of three slices and an RT structure set
    modalities = sorted(pydicom.dcmread(f, stop_before_pixels=True).Modality for f in files)
    assert modalities == ["MR"] * 9 + ["RTSTRUCT"]


def test_the_walkthrough_command_runs_on_the_system_python(tmp_path):
    """`python3 tests/dicom_factory.py study`, as the README writes it, with the Python `make
    run` installs pydicom for (python3-pydicom is one of its packages)."""
    subprocess.run(["/usr/bin/python3", "-I", str(FACTORY), str(tmp_path / "study")], check=True, cwd=tmp_path)
    assert len(list((tmp_path / "study").glob("*.dcm"))) == 10
