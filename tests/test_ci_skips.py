"""Under CI (CI=true) a skip fails the run unless it states a version difference: whatever way a
test skips (in its body, by a marker, or a whole module at collection), the suite cannot go green
without testing what a missing dependency stood for."""
from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

PROBES = {
    "test_in_body.py": "import pytest\n\ndef test_it():\n    pytest.skip('a tool is missing')\n",
    "test_by_marker.py": "import pytest\n\n@pytest.mark.skipif(True, reason='a package is missing')\n"
                        "def test_it():\n    pass\n",
    "test_whole_module.py": "import pytest\n\npytest.importorskip('no_such_module_anywhere')\n\n"
                            "def test_it():\n    pass\n",
    "test_version.py": "from conftest import not_applicable\n\n"
                       "def test_it():\n    not_applicable('a feature of a later version')\n",
}


def run_probe(tmp_path: Path, name: str, ci: bool) -> subprocess.CompletedProcess:
    """One probe module run by pytest with the suite's conftest as a plugin."""
    (tmp_path / name).write_text(PROBES[name])
    env = {**os.environ, "PYTHONPATH": str(Path(__file__).parent), "CI": "true" if ci else "false"}
    return subprocess.run([sys.executable, "-m", "pytest", "-p", "conftest", "-p", "no:cacheprovider",
                           "-q", "-rfEs", str(tmp_path / name)],
                          cwd=tmp_path, env=env, capture_output=True, text=True, timeout=120)


@pytest.mark.parametrize("name", ["test_in_body.py", "test_by_marker.py", "test_whole_module.py"])
def test_a_skip_for_a_missing_dependency_fails_under_ci(tmp_path, name):
    relaxed = run_probe(tmp_path, name, ci=False)
    # 5: pytest's "no tests collected", when the whole module was skipped
    assert relaxed.returncode in (0, 5) and "1 skipped" in relaxed.stdout, relaxed.stdout
    strict = run_probe(tmp_path, name, ci=True)
    assert strict.returncode != 0, strict.stdout
    assert "skipped under CI=true, where every dependency must be present" in strict.stdout


def test_a_version_difference_stays_a_skip_under_ci(tmp_path):
    strict = run_probe(tmp_path, "test_version.py", ci=True)
    assert strict.returncode == 0 and "1 skipped" in strict.stdout, strict.stdout
    assert "Not applicable on this Orthanc version: a feature of a later version" in strict.stdout
