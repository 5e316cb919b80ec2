"""Fixtures: real Orthanc servers (with and without the plugin) and synthetic studies."""
from __future__ import annotations

import inspect
import os
import sys
import uuid
from pathlib import Path

import pytest

sys.path.insert(0, str(Path(__file__).parent))
sys.path.insert(0, str(Path(__file__).parents[1] / "plugin"))
sys.path.insert(0, str(Path(__file__).parents[1] / "scripts"))

from dicom_factory import Patient, TwoFrameStudy, to_bytes, two_frame_study  # noqa: E402
from orthanc_server import RUNTIME, OrthancServer  # noqa: E402

TEST_KEY = "test-key-0123456789abcdef0123456789abcdef"
#: The standard's tables in machine-readable form (PS3.15 Annex E), beside the repository as CI has them.
STANDARD_DATA = Path(__file__).resolve().parents[2] / "shared" / "data"


#: The reason's prefix of a skip that states a version difference (a documented fact, kept as a
#: skip under CI); every other skip is a missing dependency.
NOT_APPLICABLE = "Not applicable on this Orthanc version: "


def not_applicable(reason: str) -> None:
    """Skip a test that does not apply to the Orthanc under test, saying why."""
    pytest.skip(NOT_APPLICABLE + reason)


@pytest.hookimpl(hookwrapper=True)
def pytest_runtest_makereport(item, call):
    """Under CI (CI=true) a skipped test fails, unless it states a version difference: a missing
    dependency must never let the suite pass without testing what needs it."""
    outcome = yield
    _fail_a_skip_under_ci(outcome.get_result())


@pytest.hookimpl(hookwrapper=True)
def pytest_make_collect_report(collector):
    """The same for a whole module skipped while it is collected (`pytest.importorskip` at its
    top), which never reaches the hook above."""
    outcome = yield
    _fail_a_skip_under_ci(outcome.get_result())


def _fail_a_skip_under_ci(report) -> None:
    if os.environ.get("CI") != "true" or not report.skipped or hasattr(report, "wasxfail"):
        return
    reason = report.longrepr[2] if isinstance(report.longrepr, tuple) else str(report.longrepr)
    if not reason.startswith(("Skipped: " + NOT_APPLICABLE, NOT_APPLICABLE)):
        report.outcome = "failed"
        report.longrepr = f"skipped under CI=true, where every dependency must be present: {reason}"


def pytest_report_header(config):
    where = os.environ.get("ORTHANC_CHROOT", "this machine")
    return f"Orthanc runtime: {RUNTIME.kind} ({where})"


#: Fixtures that start a real Orthanc: a test using one (directly or through another fixture), or
#: in a module that starts servers itself, is marked `server`; `make test-unit` runs the others,
#: which need no Orthanc installed.
SERVER_FIXTURES = {"orthanc", "native", "server_factory", "nodes", "postgres", "guarded"}


def _fixture_starts_a_server(name: str, definitions) -> bool:
    """A server fixture, or a test module's own fixture that makes an OrthancServer."""
    return name in SERVER_FIXTURES or any("OrthancServer(" in inspect.getsource(d.func) for d in definitions)


def pytest_collection_modifyitems(config, items):
    for item in items:
        module = getattr(item, "module", None)
        definitions = getattr(getattr(item, "_fixtureinfo", None), "name2fixturedefs", {})
        if (hasattr(module, "OrthancServer")
                or any(_fixture_starts_a_server(name, definitions.get(name, ())) for name in item.fixturenames)):
            item.add_marker(pytest.mark.server)


def pytest_configure(config):
    config.addinivalue_line("markers", "server: the test starts a real Orthanc")


@pytest.fixture(scope="session")
def orthanc():
    """The Orthanc with the plugin, its key generated and kept in its database."""
    server = OrthancServer().start()
    yield server
    server.cleanup()


@pytest.fixture(scope="session")
def native():
    """A plain Orthanc, to compare with what native anonymization does."""
    server = OrthancServer(plugin=False).start()
    yield server
    server.cleanup()


@pytest.fixture(scope="module")
def guarded(request):
    """An Orthanc with the plugin and authentication on, for the module's `USER` (login, password),
    as a browser meets it."""
    user = request.module.USER
    server = OrthancServer(config={"AuthenticationEnabled": True, "RegisteredUsers": {user[0]: user[1]}})
    server.auth = user
    server.start()
    yield server
    server.cleanup()


@pytest.fixture
def browser(request):
    """Chromium signed in as the module's `USER`: the page must reach no other host than Orthanc
    and raise no error. (test_orthanc_explorer.py, which signs in as nobody, has its own.)"""
    from test_orthanc_explorer import chromium
    user = request.module.USER
    with chromium({"username": user[0], "password": user[1]}) as state:
        yield state
    assert state.foreign_requests == [], "the page tried to reach another host than Orthanc"
    assert state.page_errors == []


@pytest.fixture
def server_factory():
    """Start extra servers for a test; all are stopped and removed after it."""
    started: list[OrthancServer] = []

    def make(start: bool = True, **kwargs) -> OrthancServer:
        server = OrthancServer(**kwargs)
        started.append(server)
        return server.start() if start else server

    yield make
    for server in started:
        server.cleanup()


def new_patient() -> Patient:
    """A synthetic patient no other test uses."""
    suffix = uuid.uuid4().hex[:10].upper()
    return Patient(patient_id=f"PID-{suffix}", name=f"Doe^Jane^{suffix}")


@pytest.fixture
def study() -> TwoFrameStudy:
    return two_frame_study(per_series=3, patient=new_patient())


def upload(server: OrthancServer, study: TwoFrameStudy) -> dict[str, dict]:
    """Store every instance of the study; map each SOPInstanceUID to Orthanc's answer."""
    return {ds.SOPInstanceUID: server.upload(to_bytes(ds)) for ds in study.instances}
