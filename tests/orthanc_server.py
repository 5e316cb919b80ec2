"""Start a real Orthanc (Debian bookworm's on the host, or trixie's or sid's in a chroot) for the tests.

ORTHANC_RUNTIME selects the Orthanc: "host" (default: the Orthanc installed on this machine) or
"chroot" with ORTHANC_CHROOT naming a root made by scripts/debian-chroot.sh. Each server gets
free loopback ports and its own temporary folder; in a chroot that folder lives inside the root
and the plugin is copied there, so the chroot sees the same code as the host.
"""
from __future__ import annotations

import json
import os
import re
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import requests

REPO = Path(__file__).resolve().parents[1]
PLUGIN_DIR = REPO / "plugin"
sys.path.insert(0, str(REPO / "scripts"))

from run_config import effective_config  # noqa: E402


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def knock(port: int) -> bool:
    """Open and close a connection to a loopback port, to wake a server waiting on it; False
    when nothing listens there (any more)."""
    try:
        with socket.create_connection(("127.0.0.1", port), timeout=0.2):
            return True
    except OSError:
        return False


#: Set by `make test-unit`: starting an Orthanc is then an error, so a test that needs one but is
#: not marked `server` fails there instead of passing on machines that happen to have Orthanc.
UNIT_ONLY = "CONSISTENT_ANON_UNIT_ONLY"


class Runtime:
    """Where Orthanc runs: the host's root, or a chroot whose paths are seen from inside."""

    def __init__(self) -> None:
        self.kind = os.environ.get("ORTHANC_RUNTIME", "host")
        self.root = Path(os.environ["ORTHANC_CHROOT"]) if self.kind == "chroot" else None
        if self.root is not None and not (self.root / "proc" / "self").exists():
            subprocess.run(["mount", "-t", "proc", "proc", str(self.root / "proc")], check=True)

    def workdir(self) -> Path:
        base = (self.root / "tmp") if self.root else None
        return Path(tempfile.mkdtemp(prefix="orthanc-test-", dir=base))

    def inside(self, path: Path) -> str:
        """The path as Orthanc sees it."""
        if self.root is None:
            return str(path)
        return "/" + str(path.relative_to(self.root))

    def command(self, config: Path) -> list[str]:
        if self.root is None:
            return ["Orthanc", "--verbose", str(config)]
        return ["chroot", str(self.root), "Orthanc", "--verbose", self.inside(config)]


RUNTIME = Runtime()


class OrthancServer:
    """One Orthanc process with the plugin (or without it, `plugin=False`, for native baselines)."""

    def __init__(self, plugin: bool = True, config: dict | None = None,
                 workdir: Path | None = None, lua: list[Path] | None = None,
                 pseudonym_lookup: bool | None = True) -> None:
        self.workdir = workdir or RUNTIME.workdir()
        self.http_port = free_port()
        self.dicom_port = free_port()
        self.url = f"http://127.0.0.1:{self.http_port}"
        self.log_path = self.workdir / "orthanc.log"
        self.process: subprocess.Popen | None = None
        self.auth: tuple[str, str] | None = None
        plugin_copy = self.workdir / "plugin"
        if plugin and not plugin_copy.exists():
            shutil.copytree(PLUGIN_DIR, plugin_copy, ignore=shutil.ignore_patterns("__pycache__"))
        # The repository's orthanc.json, as `make run` uses it, with this server's ports and folders.
        settings = effective_config(self.http_port, self.dicom_port,
                                    RUNTIME.inside(self.workdir / "storage"), RUNTIME.inside(plugin_copy))
        settings.update({"Name": "consistent-anon-test", "StableAge": 1})
        if not plugin:
            settings["Plugins"] = []
            for name in [k for k in settings if k.startswith("Python") or k == "ConsistentAnonymization"]:
                del settings[name]
        if lua:
            copies = []
            for script in lua:
                target = self.workdir / script.name
                shutil.copy(script, target)
                copies.append(RUNTIME.inside(target))
            settings["LuaScripts"] = copies
        self.settings = settings
        # The tests check pseudonyms through generate-uid, so their servers answer pseudonym
        # queries unless the test's own section says otherwise (None: the shipped default, off).
        self.pseudonym_lookup = pseudonym_lookup if plugin else None
        self.config_path = self.workdir / "orthanc.json"
        self.configure(config or {})

    def configure(self, changes: dict) -> None:
        """Change settings; they apply at the next start."""
        self.settings.update(changes)
        section = self.settings.get("ConsistentAnonymization")
        changed = changes.get("ConsistentAnonymization")
        if (self.pseudonym_lookup is not None and isinstance(section, dict)
                and not (isinstance(changed, dict) and "PseudonymLookup" in changed)):
            self.settings["ConsistentAnonymization"] = {**section, "PseudonymLookup": self.pseudonym_lookup}
        self.config_path.write_text(json.dumps(self.settings, indent=1))

    def start(self, timeout: float = 60) -> "OrthancServer":
        if os.environ.get(UNIT_ONLY):
            raise RuntimeError(f"a test selected as needing no Orthanc starts one ({UNIT_ONLY} is set): "
                               "it must be marked `server` (tests/conftest.py)")
        log = open(self.log_path, "ab")
        self.process = subprocess.Popen(RUNTIME.command(self.config_path), stdout=log,
                                        stderr=subprocess.STDOUT, start_new_session=True)
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.process.poll() is not None:
                raise RuntimeError(f"Orthanc exited with {self.process.returncode}:\n{self.log()[-4000:]}")
            try:
                if requests.get(self.url + "/system", auth=self.auth, timeout=2).status_code in (200, 401):
                    return self
            except requests.ConnectionError:
                pass
            time.sleep(0.1)
        self.stop()
        raise RuntimeError(f"Orthanc did not answer in {timeout}s:\n{self.log()[-4000:]}")

    def stop(self, timeout: float = 30) -> None:
        """A clean stop (SIGTERM), hurried: Orthanc's HTTP and DICOM listeners see the stop only
        when their wait for a connection ends (up to 2 s and 1 s) or a connection arrives, so
        their ports are knocked on until the process has exited (about 1 s instead of 3.5 s).
        The DICOM port only once the HTTP server is gone (Orthanc stops them in that order):
        1.13 logs each knock there as an association with an invalid AET, at its error level."""
        if self.process and self.process.poll() is None:
            os.killpg(self.process.pid, signal.SIGTERM)
            deadline = time.monotonic() + timeout
            while self.process.poll() is None and time.monotonic() < deadline:
                if not knock(self.http_port):
                    knock(self.dicom_port)
                try:
                    self.process.wait(0.05)
                except subprocess.TimeoutExpired:
                    pass
            if self.process.poll() is None:
                os.killpg(self.process.pid, signal.SIGKILL)
                self.process.wait()
        self.process = None

    def kill(self) -> None:
        """SIGKILL, as a crash would."""
        if self.process and self.process.poll() is None:
            os.killpg(self.process.pid, signal.SIGKILL)
            self.process.wait()
        self.process = None

    def log(self) -> str:
        return self.log_path.read_text(errors="replace") if self.log_path.exists() else ""

    def errors_logged(self, since: int = 0) -> list[str]:
        """The lines logged at Orthanc's error level (the plugin's own included), from `since`:
        a length of log() read before. A bug's line from the plugin reads "unexpected
        <exception>" with the frames, without the word "Traceback"."""
        return [line for line in self.log()[since:].splitlines() if re.match(r"E\d{4} ", line)]

    def cleanup(self) -> None:
        """Kill the server and remove its folder: nothing of it is kept, so a graceful stop (about
        3 s of Orthanc's shutdown per server) would only slow the suite down."""
        self.kill()
        shutil.rmtree(self.workdir, ignore_errors=True)

    # --- REST helpers -------------------------------------------------------------------
    def request(self, method: str, path: str, **kwargs) -> requests.Response:
        return requests.request(method, self.url + path, auth=self.auth, timeout=600, **kwargs)

    def get(self, path: str, **kwargs) -> requests.Response:
        return requests.get(self.url + path, auth=self.auth, timeout=300, **kwargs)

    def post(self, path: str, **kwargs) -> requests.Response:
        return requests.post(self.url + path, auth=self.auth, timeout=600, **kwargs)

    def delete(self, path: str) -> requests.Response:
        return requests.delete(self.url + path, auth=self.auth, timeout=300)

    def json(self, path: str):
        answer = self.get(path)
        answer.raise_for_status()
        return answer.json()

    def version(self) -> tuple[int, ...]:
        """Orthanc's version, e.g. (1, 12, 7)."""
        return tuple(int(part) for part in self.json("/system")["Version"].split(".")[:3])

    def upload(self, data: bytes) -> dict:
        answer = self.post("/instances", data=data)
        answer.raise_for_status()
        return answer.json()
