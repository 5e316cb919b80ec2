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
#: What names each probe in pytest's summary: its reason (a skip is reported where it is raised,
#: which for not_applicable is conftest.py).
REASONS = {"test_in_body.py": "a tool is missing", "test_by_marker.py": "a package is missing",
           "test_whole_module.py": "no_such_module_anywhere", "test_version.py": "a feature of a later version"}
MISSING_DEPENDENCY = ["test_in_body.py", "test_by_marker.py", "test_whole_module.py"]


def run_probes(folder: Path, ci: bool) -> dict[str, str]:
    """The probe modules run by pytest with the suite's conftest as a plugin; each probe's line
    of the short summary (SKIPPED, FAILED or ERROR)."""
    for name, text in PROBES.items():
        (folder / name).write_text(text)
    env = {**os.environ, "PYTHONPATH": str(Path(__file__).parent), "CI": "true" if ci else "false"}
    run = subprocess.run([sys.executable, "-m", "pytest", "-p", "conftest", "-p", "no:cacheprovider", "-q",
                          "-rfEs", "--continue-on-collection-errors", str(folder)],
                         cwd=folder, env=env, capture_output=True, text=True, timeout=120)
    summary = run.stdout.split("short test summary info")[-1].splitlines()
    return {name: next((line for line in summary if REASONS[name] in line), "") for name in PROBES}


@pytest.fixture(scope="module")
def outcomes(tmp_path_factory) -> dict[bool, dict[str, str]]:
    return {ci: run_probes(tmp_path_factory.mktemp(f"ci-{ci}"), ci) for ci in (False, True)}


@pytest.mark.parametrize("name", MISSING_DEPENDENCY)
def test_a_skip_for_a_missing_dependency_fails_under_ci(outcomes, name):
    assert outcomes[False][name].startswith("SKIPPED"), outcomes[False]
    assert outcomes[True][name].startswith(("FAILED", "ERROR")), outcomes[True]
    assert "skipped under CI=true, where every dependency must be present" in outcomes[True][name]


def test_a_version_difference_stays_a_skip_under_ci(outcomes):
    line = outcomes[True]["test_version.py"]
    assert line.startswith("SKIPPED") and "Not applicable on this Orthanc version" in line, outcomes[True]
