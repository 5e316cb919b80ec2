#!/usr/bin/env python3
"""Benchmark of the consistent-anonymization plugin against native Orthanc.

What it measures, on the Orthanc selected like the tests select it (ORTHANC_RUNTIME=host: this
machine's Orthanc; ORTHANC_RUNTIME=chroot with ORTHANC_CHROOT: a chroot's, trixie or sid):

- study-level `POST /studies/{id}/anonymize {}` of a synthetic MR study of 400 instances and of
  2,000 instances (256x256, 16 bits, 4 series, the first two on one frame of reference, the last
  two on another): the first run (the result is deleted between repetitions, so every plugin run
  computes everything; native's copies are deleted too so storage does not grow), and the same
  call again while the result is present (the idempotent re-run), against native's normal run;
- the cost of keyed date shifting: the plugin's first run of the 400-instance study under a
  project with `"ShiftDates": true` (`{"Project": "shifted-dates"}`) against the same call with
  `"ShiftDates": false` (plugin only, target within 10 %);
- with --reidentification: the cost of re-identification data, the plugin's first run of the
  400-instance study under a project with one RSA-3072 certificate in
  `"ReidentificationCertificates"` against the same call without it (plugin only, target within 20 %);
- native at its best: where Orthanc has `"JobsEngineThreadsCount": {"ResourceModification": N}`
  (1.11.3+), native's study- and series-level runs are made at its default (N = 1) and at N = 2,
  4 and 2x cores, the plain Orthanc restarted on the same storage for each setting; every row
  then gives native's default, native's best setting and the plugin against both;
- series-level calls (one 100-instance series) and instance-level calls
  (`POST /instances/{id}/anonymize`, which answers a file and stores nothing), per call, one
  after another and from 4 clients at once (calls per second);
- anonymize on arrival over the DICOM network: 1,000 instances (--arrival) sent by storescu
  (one association) to an Orthanc running plugin/lua/anonymize-on-arrival.lua with the plugin,
  to one with the plugin's gateway (OnArrival, no script), and to a plain Orthanc running the
  script (whose RestApiPost then reaches native's instance-level anonymization): instances per
  second from the first C-STORE until every anonymized result is stored and every source
  deleted; the plugin's results must form one study (one patient, the source's series and
  instance counts, its two frames of reference). Then 10,000 instances (--arrival-large), one run
  each of native's script and the gateway.
  TCP_NODELAY=1 is set for both the sender and Orthanc (DCMTK otherwise waits on delayed ACKs);
- `GET /tools/generate-uid?level=frame-of-reference` (plugin) against native's
  `level=instance` (plain Orthanc), requests per second over sequential keep-alive requests;
- the peak resident memory (VmHWM of the Orthanc process itself, reset with
  /proc/<pid>/clear_refs before the run) during a 2,000-instance run and during a 400-instance
  run, each on freshly started servers holding only that study (native at its default), and
  its growth over the resident size before the run (is the plugin's excess over native flat in
  the study size?);
- seconds per instance at 400 and at 2,000 instances (does time grow linearly?);
- with --scale: a study of 20,000 instances of 64x64 (a number after --scale sets another size)
  after one of a tenth of it, on a fresh pair of servers (native at its default): time per
  instance of each, peak memory, the size of the job list each side answers afterwards (GET /jobs?expand),
  and the rate of the verification route (POST /tools/verify-anonymization) over the large
  study and its anonymized copy.

How: one plain Orthanc (`OrthancServer(plugin=False)`) and one with the plugin (`OrthancServer()`)
are started on loopback, the same generated files are uploaded to both (a few threads, one
requests.Session each), and native and plugin runs alternate (in rounds: native at each setting,
the order reversed every other round, the plugin once per round), so that a drift of the
machine hits all alike. Medians are reported with the ratios plugin/native, against the targets
below, as a Markdown table; the numbers are written to bench/results/<version>.json and,
for a full run, to bench/latest-<version>.json (committed, cited by docs/performance.md). Targets:
study- and series-level first run <= 1.0x native's best where the threads setting exists and
<= 0.8x native on 1.10; re-run <= 0.1x native's best run; instance-level call <= 1.2x native's;
on arrival (the Lua script, the gateway) >= 1.05x native's rate, one consistent study; peak memory <= native + 64 MB and flat;
generate-uid >= 0.8x native's rate; and linear time: the plugin's per-instance time at 2,000
grows no more than native's does over that at 400 (Orthanc's own reads and stores slow down as
the study grows, on this machine by 1.5-1.9x), and by at most 1.2x where native's grows less.

Orthanc's UIDs come from DCMTK, which resolves the machine's hostname for each one (glibc
gethostid). Where the runtime's /etc/hosts does not name the machine (the debootstrap chroot),
every UID is a DNS query and a lost one waits 5 s, which swamps the timings: scripts/debian-chroot.sh
adds the name to the chroot's hosts file, and the benchmark warns where it is missing.

    make bench                 # the three versions, one after the other:
    make bench-bookworm        #   Orthanc 1.10.1 of this machine (Debian bookworm)
    make bench-trixie          #   Orthanc 1.12.7 in the trixie chroot
    make bench-sid             #   Orthanc 1.13.0 in the sid chroot
    make bench BENCH_ARGS=--quick                     # fewer repetitions: a smoke run
    make bench BENCH_ARGS="--plugin-rev HEAD"         # the committed plugin, not the working tree
    make bench-trixie BENCH_ARGS="--quick --scale"    # with the 20,000-instance study
    .venv/bin/python bench/run.py --sizes 40,200 --quick --arrival 40   # tiny, for development
"""
from __future__ import annotations

import argparse
import atexit
import datetime
import hashlib
import io
import json
import os
import platform
import shutil
import signal
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import requests

BENCH = Path(__file__).resolve().parent
REPO = BENCH.parent
sys.path.insert(0, str(REPO / "tests"))
sys.path.insert(0, str(REPO / "plugin"))

import orthanc_server  # noqa: E402
from dicom_factory import Patient, Study, mr_series, to_bytes  # noqa: E402
from orthanc_server import RUNTIME, OrthancServer  # noqa: E402
from pydicom import dcmread  # noqa: E402
from pydicom.uid import generate_uid  # noqa: E402

TIMEOUT = 3600
MB = 1024 * 1024


# --- the synthetic studies -------------------------------------------------------------------
def make_study(instances: int, tag: str, size: int = 256) -> list[bytes]:
    """`instances` MR files in 4 series; series 1-2 share a frame of reference, 3-4 another."""
    per_series, extra = divmod(instances, 4)
    study = Study(patient=Patient(patient_id=f"PID-BENCH-{tag}", name=f"Bench^Jane^{tag}"),
                  accession=f"ACC-{tag}")
    frames = [generate_uid(), generate_uid()]
    files: list[bytes] = []
    for number in range(1, 5):
        count = per_series + (1 if number <= extra else 0)
        for ds in mr_series(study, frames[(number - 1) // 2], count, number, size):
            files.append(to_bytes(ds))
    return files


# --- one Orthanc under test ------------------------------------------------------------------
class Node:
    """An OrthancServer with a keep-alive session and the pid of the Orthanc process itself."""

    def __init__(self, name: str, plugin: bool, lua: list[Path] | None = None, config: dict | None = None) -> None:
        self.name = name
        self.server = OrthancServer(plugin=plugin, lua=lua, config=config)
        self.session = requests.Session()
        self.pid = 0
        self.threads: int | None = None  # ResourceModification threads it runs with; None: default

    def start(self) -> "Node":
        self.server.start(timeout=120)
        self.pid = orthanc_pid(self.server.process.pid)
        return self

    def stop(self) -> None:
        self.session.close()
        self.server.cleanup()

    def restart(self, changes: dict, drop: tuple[str, ...] = ()) -> None:
        """Stop, change the configuration (`drop` removes settings), start again on the same
        storage: a setting read at startup only (JobsEngineThreadsCount) without a new upload."""
        self.session.close()
        self.server.stop()
        for name in drop:
            self.server.settings.pop(name, None)
        self.server.configure(changes)
        self.session = requests.Session()
        self.start()

    @property
    def url(self) -> str:
        return self.server.url

    def get_json(self, path: str):
        answer = self.session.get(self.url + path, timeout=TIMEOUT)
        answer.raise_for_status()
        return answer.json()

    def post(self, path: str, body) -> tuple[float, requests.Response]:
        data = body if isinstance(body, (bytes, str)) else json.dumps(body)
        start = time.perf_counter()
        answer = self.session.post(self.url + path, data=data, timeout=TIMEOUT)
        elapsed = time.perf_counter() - start
        if answer.status_code != 200:
            raise RuntimeError(f"{self.name}: POST {path} answered {answer.status_code}: {answer.text[:2000]}")
        return elapsed, answer

    def delete(self, path: str) -> None:
        answer = self.session.delete(self.url + path, timeout=TIMEOUT)
        if answer.status_code not in (200, 404):
            raise RuntimeError(f"{self.name}: DELETE {path} answered {answer.status_code}")


def orthanc_pid(launched: int) -> int:
    """The pid of the Orthanc process: the launched one (host, or `chroot`, which execs Orthanc),
    or a descendant of it if the launcher forked."""
    deadline = time.monotonic() + 10
    while time.monotonic() < deadline:
        pending = [launched]
        while pending:
            pid = pending.pop()
            try:
                if Path(f"/proc/{pid}/comm").read_text().strip() == "Orthanc":
                    return pid
                for task in Path(f"/proc/{pid}/task").iterdir():
                    pending.extend(int(c) for c in (task / "children").read_text().split())
            except (FileNotFoundError, ProcessLookupError):
                continue
        time.sleep(0.1)
    raise RuntimeError(f"no Orthanc process under pid {launched}")


def proc_status(pid: int) -> dict[str, int]:
    """VmHWM and VmRSS of a process, in bytes."""
    values = {}
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        key, _, rest = line.partition(":")
        if key in ("VmHWM", "VmRSS"):
            values[key] = int(rest.split()[0]) * 1024
    return values


def reset_peak(pid: int) -> bool:
    """Reset VmHWM to the current resident size (Linux >= 4.0), so it measures the next run only."""
    try:
        Path(f"/proc/{pid}/clear_refs").write_text("5")
        return True
    except OSError:
        return False


class RssSampler:
    """Samples VmRSS while a run goes: a fallback if VmHWM cannot be reset."""

    def __init__(self, pid: int, period: float = 0.05) -> None:
        self.pid, self.period, self.peak = pid, period, 0
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)

    def _run(self) -> None:
        while not self._stop.is_set():
            try:
                self.peak = max(self.peak, proc_status(self.pid)["VmRSS"])
            except (FileNotFoundError, KeyError):
                return
            self._stop.wait(self.period)

    def __enter__(self) -> "RssSampler":
        self._thread.start()
        return self

    def __exit__(self, *exc) -> None:
        self._stop.set()
        self._thread.join()


def upload(node: Node, files: list[bytes], threads: int = 4) -> str:
    """Store the files; answers the Orthanc ID of their (single) study."""
    local = threading.local()

    def send(data: bytes) -> str:
        if not hasattr(local, "session"):
            local.session = requests.Session()
        answer = local.session.post(node.url + "/instances", data=data, timeout=TIMEOUT)
        answer.raise_for_status()
        return answer.json()["ParentStudy"]

    with ThreadPoolExecutor(threads) as pool:
        studies = set(pool.map(send, files))
    if len(studies) != 1:
        raise RuntimeError(f"{node.name}: the upload made {len(studies)} studies")
    return studies.pop()


def series_of(node: Node, study: str) -> list[str]:
    """The series of a study, by SeriesNumber."""
    series = node.get_json(f"/studies/{study}/series")
    return [s["ID"] for s in sorted(series, key=lambda s: int(s["MainDicomTags"].get("SeriesNumber", 0)))]


# --- measurements ----------------------------------------------------------------------------
class Results:
    def __init__(self) -> None:
        self.samples: dict[str, dict[str, list[float]]] = {}
        self.memory: dict[int, dict] = {}  # study size -> {"native": ..., "plugin": ...}, fresh servers
        self.arrival: dict = {}  # the arrival runs: instances, checks of the plugin's result
        self.arrival_large: dict = {}  # the same for the large arrival row (--arrival-large)
        self.scale: dict = {}  # the large-study option: sizes, memory, verification, job records

    def add(self, metric: str, side: str, value: float) -> None:
        self.samples.setdefault(metric, {}).setdefault(side, []).append(value)

    def median(self, metric: str, side: str) -> float | None:
        values = self.samples.get(metric, {}).get(side)
        return statistics.median(values) if values else None

    def native_best(self, metric: str, fastest=min) -> tuple[str, float] | None:
        """The native setting with the best median (`fastest`: min for times, max for rates)."""
        medians = {side: self.median(metric, side) for side in self.samples.get(metric, {})
                   if side.startswith("native")}
        if not medians:
            return None
        side = fastest(medians, key=medians.get)
        return side, medians[side]


# --- native at its best: ResourceModification threads ----------------------------------------
THREADS_SETTING = "JobsEngineThreadsCount"


def has_threads_setting(version: str) -> bool:
    """`JobsEngineThreadsCount.ResourceModification` exists since Orthanc 1.11.3."""
    parts = tuple(int(p) for p in version.split(".")[:3] if p.isdigit())
    return parts >= (1, 11, 3)


def native_settings(version: str) -> list[int | None]:
    """Native's ResourceModification threads to measure: None is Orthanc's default (1 thread
    where the setting exists, so N=1 is measured as the default), then 2, 4 and 2x cores."""
    if not has_threads_setting(version):
        return [None]
    return [None] + sorted({2, 4, 2 * (os.cpu_count() or 1)})


def native_side(threads: int | None) -> str:
    return "native" if threads is None else f"native {threads} threads"


def use_native_setting(native: Node, threads: int | None, warm_up: str) -> None:
    """Restart the plain Orthanc with `threads` ResourceModification threads (same storage),
    then the same warm-up as at the start (one instance-level call)."""
    if native.threads == threads:
        return
    if threads is None:
        native.restart({}, drop=(THREADS_SETTING,))
    else:
        native.restart({THREADS_SETTING: {"ResourceModification": threads}})
    native.threads = threads
    native.post(f"/instances/{warm_up}/anonymize", {})


def anonymize_run(node: Node, level: str, resource: str, results: Results, metric: str,
                  side: str, keep: bool = False, memory: dict | None = None, body: dict | None = None) -> dict:
    """One timed /anonymize call (body `{}` unless given); its result is deleted unless `keep`.
    With `memory`, the peak resident size during the call is recorded in it."""
    status_before = proc_status(node.pid)
    reset = reset_peak(node.pid)
    before = proc_status(node.pid)
    with RssSampler(node.pid) as sampler:
        elapsed, answer = node.post(f"/{level}/{resource}/anonymize", body or {})
    after = proc_status(node.pid)
    peak = after["VmHWM"] if reset else max(sampler.peak, after["VmRSS"])
    results.add(metric, side, elapsed)
    results.add(metric + " peak RSS growth MB", side, (peak - before["VmRSS"]) / MB)
    if memory is not None:
        memory.update({"hwm_reset": reset, "vmhwm_since_start_mb": status_before["VmHWM"] / MB,
                       "rss_before_mb": before["VmRSS"] / MB, "peak_mb": peak / MB,
                       "growth_mb": (peak - before["VmRSS"]) / MB, "rss_after_mb": after["VmRSS"] / MB,
                       "seconds": elapsed})
    payload = answer.json()
    if not keep:
        node.delete(f"/patients/{payload['PatientID']}")
    return payload


def plugin_study_run(plugin: Node, study: str, size: int, results: Results,
                     memory: dict | None = None) -> None:
    """The plugin's first run, then the same call while the result is present (the re-run)."""
    answer = anonymize_run(plugin, "studies", study, results, f"study {size} first run", "plugin",
                           keep=True, memory=memory)
    elapsed, again = plugin.post(f"/studies/{study}/anonymize", {})
    results.add(f"study {size} re-run", "plugin", elapsed)
    if again.json().get("ID") != answer.get("ID"):
        raise RuntimeError(f"the re-run answered study {again.json().get('ID')}, the first run {answer.get('ID')}")
    plugin.delete(f"/patients/{answer['PatientID']}")


def last(results: Results, metric: str, side: str) -> str:
    return f"{results.samples[metric][side][-1]:.2f} s"


#: A project of the plugin that shifts dates, and the metrics of its study-level first runs with
#: and without the shift (the request's "ShiftDates": false: the same project, keys and calls).
SHIFTED_PROJECT = "shifted-dates"
SHIFTED = {True: "study {} first run, dates shifted", False: "study {} first run, same project unshifted"}


def shifted_dates_runs(plugin: Node, study: str, size: int, round_: int, results: Results, log) -> None:
    """One first run of the study with the project's date shifting and one without, in an order
    that alternates with the rounds."""
    for shift in (True, False) if round_ % 2 == 0 else (False, True):
        body = {"Project": SHIFTED_PROJECT} if shift else {"Project": SHIFTED_PROJECT, "ShiftDates": False}
        anonymize_run(plugin, "studies", study, results, SHIFTED[shift].format(size), "plugin", body=body)
    log(f"  round {round_ + 1}, plugin: {size} instances, dates shifted {last(results, SHIFTED[True].format(size), 'plugin')}"
        f", not shifted {last(results, SHIFTED[False].format(size), 'plugin')}")


#: --reidentification: a project that seals re-identification data for one recipient (a throwaway
#: certificate made at start), and the metrics of its first runs and of the same call without it.
SEALED_PROJECT = "reidentification"
SEALED = {True: "study {} first run, one re-identification certificate", False: "study {} first run, no certificate"}


def recipient_certificate(folder: Path) -> str:
    """A throwaway RSA-3072 certificate (its key is left in `folder`, with the server's files), as
    Orthanc sees its path."""
    certificate = folder / "recipient.cert.pem"
    subprocess.run(["openssl", "req", "-x509", "-newkey", "rsa:3072", "-nodes", "-keyout",
                    str(folder / "recipient.key.pem"), "-out", str(certificate), "-days", "1", "-subj",
                    "/CN=benchmark recipient"], check=True, capture_output=True)
    return RUNTIME.inside(certificate)


def sealed_runs(plugin: Node, study: str, size: int, rounds: int, results: Results, log) -> None:
    """First runs of the study with and without the certificate, in an order that alternates."""
    for round_ in range(rounds):
        for sealed in (True, False) if round_ % 2 == 0 else (False, True):
            body = {"Project": SEALED_PROJECT} if sealed else {}
            anonymize_run(plugin, "studies", study, results, SEALED[sealed].format(size), "plugin", body=body)
        log(f"  round {round_ + 1}, plugin: {size} instances, sealed {last(results, SEALED[True].format(size), 'plugin')}"
            f", not sealed {last(results, SEALED[False].format(size), 'plugin')}")


def measurement_rounds(native: Node, plugin: Node, studies: dict[int, dict[str, str]],
                       series: dict[str, str], repetitions: dict[int, int], settings: list[int | None],
                       warm_up: str, results: Results, done: set, log) -> None:
    """Rounds of study- and series-level runs. In each round native runs once per setting
    (the order reversed every other round, so that a drift of the machine hits all alike) and
    the plugin once, after native's first setting. `done` holds (round, side, size) already
    measured (the memory run of the large study)."""
    for round_ in range(max(repetitions.values())):
        order = settings if round_ % 2 == 0 else settings[::-1]
        for position, threads in enumerate(order):
            side = native_side(threads)
            use_native_setting(native, threads, warm_up)
            for size, count in repetitions.items():
                if round_ < count and (round_, side, size) not in done:
                    anonymize_run(native, "studies", studies[size]["native"], results,
                                  f"study {size} first run", side)
                    log(f"  round {round_ + 1}, {side}: {size} instances {last(results, f'study {size} first run', side)}")
            if round_ < repetitions[min(repetitions)]:
                anonymize_run(native, "series", series["native"], results, "series first run", side)
            if position == 0:
                for size, count in repetitions.items():
                    if round_ < count and (round_, "plugin", size) not in done:
                        plugin_study_run(plugin, studies[size]["plugin"], size, results)
                        log(f"  round {round_ + 1}, plugin: {size} instances "
                            f"{last(results, f'study {size} first run', 'plugin')}, "
                            f"re-run {last(results, f'study {size} re-run', 'plugin')}")
                if round_ < repetitions[min(repetitions)]:
                    anonymize_run(plugin, "series", series["plugin"], results, "series first run", "plugin")
                    shifted_dates_runs(plugin, studies[min(repetitions)]["plugin"], min(repetitions), round_,
                                       results, log)


def fresh_memory_run(files: list[bytes], size: int, threads: int, results: Results, log) -> None:
    """The peak memory of one study-level run on a fresh pair of servers holding only this study."""
    pair: list[Node] = []
    try:
        for name, plugin in (("native", False), ("plugin", True)):
            pair.append(Node(name, plugin=plugin).start())
        memory = {}
        for node in pair:
            study = upload(node, files, threads)
            some = node.get_json(f"/studies/{study}/instances")[0]["ID"]
            node.post(f"/instances/{some}/anonymize", {})  # the same warm-up as the main servers
            memory[node.name] = {}
            anonymize_run(node, "studies", study, Results(), "memory", node.name, memory=memory[node.name])
        results.memory[size] = memory
        log(f"  {size} instances on fresh servers: peak RSS native {memory['native']['peak_mb']:.0f} MB, "
            f"plugin {memory['plugin']['peak_mb']:.0f} MB")
    finally:
        for node in pair:
            node.stop()


def instance_runs(native: Node, plugin: Node, instances: dict[str, list[str]], calls: int,
                  results: Results, log) -> None:
    for call in range(calls):
        for node, side in ((native, "native"), (plugin, "plugin")):
            ids = instances[side]
            elapsed, answer = node.post(f"/instances/{ids[call % len(ids)]}/anonymize", {})
            if not answer.content.startswith(b"\0" * 128 + b"DICM"):
                raise RuntimeError(f"{side}: the instance-level call did not answer a DICOM file")
            results.add("instance call", side, elapsed)
    log(f"  instance: native {1000 * results.median('instance call', 'native'):.1f} ms, "
        f"plugin {1000 * results.median('instance call', 'plugin'):.1f} ms")


#: Clients calling the instance route at once, for the row of concurrent instance calls.
INSTANCE_CLIENTS = 4


def concurrent_instance_runs(native: Node, plugin: Node, instances: dict[str, list[str]], calls: int,
                             results: Results, log) -> None:
    """Instance-level calls from INSTANCE_CLIENTS clients at once (a session each): calls per
    second, in blocks that alternate native and plugin. The plugin's audit entries of calls that
    end together are written and synced together (group commit)."""
    for block in range(4):
        order = ((native, "native"), (plugin, "plugin"))
        for node, side in order if block % 2 == 0 else order[::-1]:
            ids = instances[side]
            sessions = [requests.Session() for _ in range(INSTANCE_CLIENTS)]

            def client(index: int) -> None:
                for call in range(index, calls, INSTANCE_CLIENTS):
                    answer = sessions[index].post(f"{node.url}/instances/{ids[call % len(ids)]}/anonymize",
                                                  data="{}", timeout=TIMEOUT)
                    if answer.status_code != 200:
                        raise RuntimeError(f"{side}: instance call at once answered {answer.status_code}")
            start = time.perf_counter()
            with ThreadPoolExecutor(INSTANCE_CLIENTS) as pool:
                list(pool.map(client, range(INSTANCE_CLIENTS)))
            results.add("instance calls at once", side, calls / (time.perf_counter() - start))
            for session in sessions:
                session.close()
    log(f"  {INSTANCE_CLIENTS} clients at once: native {results.median('instance calls at once', 'native'):.0f}/s, "
        f"plugin {results.median('instance calls at once', 'plugin'):.0f}/s")


def generate_uid_runs(native: Node, plugin: Node, requests_per_side: int, blocks: int,
                      results: Results, log) -> None:
    """Sequential GETs on one session, in alternating blocks; the rate of each block."""
    per_block = max(1, requests_per_side // blocks)
    sides = ((native, "native", "instance", "generate-uid"),
             (plugin, "plugin", "frame-of-reference", "generate-uid"),
             (plugin, "plugin", "instance", "generate-uid instance (plugin pass-through)"),
             (native, "native", "instance", "generate-uid instance (plugin pass-through)"))
    for _ in range(blocks):
        for node, side, level, metric in sides:
            url = f"{node.url}/tools/generate-uid?level={level}"
            start = time.perf_counter()
            for _ in range(per_block):
                answer = node.session.get(url, timeout=60)
                if answer.status_code != 200 or not answer.text.strip():
                    raise RuntimeError(f"{side}: generate-uid?level={level} answered {answer.status_code}")
            results.add(metric, side, per_block / (time.perf_counter() - start))
    log(f"  generate-uid: native instance {results.median('generate-uid', 'native'):.0f}/s, "
        f"plugin frame-of-reference {results.median('generate-uid', 'plugin'):.0f}/s")


# --- anonymize on arrival over the DICOM network ---------------------------------------------
def lua_on_arrival() -> Path:
    """The project's on-arrival script, from the plugin being measured."""
    return Path(orthanc_server.PLUGIN_DIR) / "lua" / "anonymize-on-arrival.lua"


def write_files(files: list[bytes], folder: Path) -> Path:
    folder.mkdir(parents=True, exist_ok=True)
    for index, data in enumerate(files):
        (folder / f"{index:06d}.dcm").write_bytes(data)
    return folder


def wipe(node: Node) -> None:
    """Stop, delete the storage, start again: an empty Orthanc for the next repetition."""
    node.session.close()
    node.server.stop()
    shutil.rmtree(node.server.workdir / "storage", ignore_errors=True)
    node.session = requests.Session()
    node.start()


def send_and_wait(node: Node, folder: Path, study_uid: str, count: int) -> tuple[float, float]:
    """C-STORE every file of `folder` with storescu (one association), then wait until the Lua
    script has anonymized them all: the source study is gone (the script deletes each source once
    its result is stored) and Orthanc holds `count` instances. Answers (sender seconds, seconds
    until every result is stored)."""
    deadline = time.monotonic() + max(120.0, 0.25 * count)
    command = ["storescu", "-aec", str(node.server.settings.get("DicomAet", "ORTHANC")), "+sd",
               "127.0.0.1", str(node.server.dicom_port), str(folder)]
    start = time.perf_counter()
    sender = subprocess.run(command, capture_output=True, timeout=deadline - time.monotonic())
    if sender.returncode:
        raise RuntimeError(f"{node.name}: storescu exited with {sender.returncode}: "
                           f"{sender.stderr.decode(errors='replace')[-2000:]}\nOrthanc's log:\n{node.server.log()[-3000:]}")
    sent = time.perf_counter() - start
    while time.monotonic() < deadline:
        sources = node.session.post(node.url + "/tools/lookup", data=study_uid, timeout=60).json()
        if not sources and node.get_json("/statistics")["CountInstances"] == count:
            return sent, time.perf_counter() - start
        time.sleep(0.05)
    raise RuntimeError(f"{node.name}: the arrivals were not all anonymized in time "
                       f"(statistics {node.get_json('/statistics')}); log:\n{node.server.log()[-3000:]}")


def arrival_problems(node: Node, files: list[bytes], study_uid: str) -> list[str]:
    """What keeps the plugin's results from forming one consistent study: one patient, one
    study under a new UID, the source's series with their instance counts, and the source's two
    frames of reference, two series each."""
    per_series, extra = divmod(len(files), 4)
    expected = sorted(per_series + (1 if number <= extra else 0) for number in range(1, 5))
    problems = []
    patients, studies = node.get_json("/patients"), node.get_json("/studies")
    if len(patients) != 1 or len(studies) != 1:
        return [f"{len(patients)} patients and {len(studies)} studies, not one of each"]
    study = node.get_json(f"/studies/{studies[0]}")
    if study["MainDicomTags"].get("StudyInstanceUID") == study_uid:
        problems.append("the result kept the source's StudyInstanceUID")
    counts = sorted(len(node.get_json(f"/series/{s}")["Instances"]) for s in study["Series"])
    if counts != expected:
        problems.append(f"series of {counts} instances, the source's were {expected}")
    frames = node.get_json(f"/studies/{studies[0]}/frames-of-reference")
    shape = sorted(len(frame["Series"]) for frame in frames)
    if shape != [2, 2]:
        problems.append(f"frames of reference holding {shape} series, the source's held [2, 2]")
    return problems


#: The arrival sides: native's instance anonymization in the Lua script, the plugin in the same
#: script, and the plugin's gateway (OnArrival, no script), each deleting the sources it anonymized.
ARRIVAL_SIDES = (("native", "arrival", False, True, None), ("plugin", "arrival", True, True, None),
                 ("plugin", "arrival gateway", True, False, {"ConsistentAnonymization": {"OnArrival": {}}}))


#: The large arrival row (--arrival-large): native's script and the gateway only (the plugin's
#: script takes as long again and is measured at the default size).
LARGE_ARRIVAL_SIDES = tuple(side for side in ARRIVAL_SIDES if side[0] == "native" or side[1] == "arrival gateway")


def arrival_runs(files: list[bytes], repetitions: int, results: Results, log, large: bool = False) -> None:
    """The Lua script anonymize-on-arrival.lua on a plain Orthanc (native's instance-level
    anonymization) and on one with the plugin, and the plugin's gateway, the same files sent to
    each in turn; an empty Orthanc for every repetition. TCP_NODELAY=1 is in the environment of
    every side. `large`: the large row's sides, metrics and record (`results.arrival_large`)."""
    folder = write_files(files, Path(tempfile.mkdtemp(prefix="bench-arrival-")))
    atexit.register(shutil.rmtree, str(folder), True)
    study_uid = dcmread(io.BytesIO(files[0]), stop_before_pixels=True).StudyInstanceUID
    sides, record = (LARGE_ARRIVAL_SIDES, results.arrival_large) if large else (ARRIVAL_SIDES, results.arrival)
    tag = " large" if large else ""
    nodes: list[Node] = []
    try:
        for side, metric, plugin, lua, config in sides:
            nodes.append(Node(side, plugin=plugin, lua=[lua_on_arrival()] if lua else None, config=config).start())
        for repetition in range(repetitions):
            for node, (side, metric, *_) in zip(nodes, sides):
                if repetition:
                    wipe(node)
                sent, done = send_and_wait(node, folder, study_uid, len(files))
                results.add(metric + tag, side, len(files) / done)
                results.add(metric + tag + " sender only", side, len(files) / sent)
                log(f"  {metric}, {side}: {len(files)} instances, all anonymized after {done:.1f} s "
                    f"({len(files) / done:.0f}/s; storescu done after {sent:.1f} s)")
                if side == "plugin":
                    problems = [f"{metric}: {problem}" for problem in arrival_problems(node, files, study_uid)]
                    record.setdefault("problems", []).extend(problems)
                    for problem in problems:
                        log(f"  {metric}, plugin: NOT CONSISTENT: {problem}")
        record.update({"instances": len(files), "repetitions": repetitions,
                       "consistent": not record.get("problems")})
    finally:
        for node in nodes:
            node.stop()


# --- scale: a study of tens of thousands of small instances ----------------------------------
# --- burned-in text: the gate and Clean Pixel Data's blanking ----------------------------------
PIXEL_ROUNDS = 7
GATE_CALLS = 2000
#: A frame as ultrasounds have them, and deid's rectangle for the name and date at its top.
ULTRASOUND_FRAME, ULTRASOUND_BANNER = (1024, 768), (0, 0, 1024, 49)


def synthetic_ultrasound() -> bytes:
    """One RGB frame of an ultrasound's size, made from the study's own generator (no patient data)."""
    ds = dcmread(io.BytesIO(make_study(1, "US", 16)[0]))
    columns, rows = ULTRASOUND_FRAME
    ds.Modality, ds.SOPClassUID = "US", "1.2.840.10008.5.1.4.1.1.6.1"
    ds.file_meta.MediaStorageSOPClassUID = ds.SOPClassUID
    ds.Rows, ds.Columns, ds.SamplesPerPixel, ds.PlanarConfiguration = rows, columns, 3, 0
    ds.PhotometricInterpretation, ds.BitsAllocated, ds.BitsStored, ds.HighBit = "RGB", 8, 8, 7
    ds.PixelRepresentation, ds.BurnedInAnnotation = 0, "YES"
    ds.PixelData = bytes(range(256)) * (columns * rows * 3 // 256)
    return to_bytes(ds)


def pixel_costs(results: Results, log) -> None:
    """What burned-in text costs, timed in this process on the code the plugin runs: the gate on
    a header that is not at risk (every instance of a study pays it: compared below with the
    plugin's time per instance in the study runs), and the blanking of one ultrasound frame
    (what Clean Pixel Data adds to an instance a rule cleans)."""
    from consistent_anon.dicom.filereader import read_header
    from consistent_anon.pixels import gate
    from consistent_anon.pixels.blanking import blank
    mr = make_study(1, "G", 256)[0]
    header, ultrasound = read_header(mr), synthetic_ultrasound()
    assert gate.classify(header).level == gate.NOT_AT_RISK
    for _ in range(PIXEL_ROUNDS):
        started = time.perf_counter()
        for _ in range(GATE_CALLS):
            gate.classify(header)
        results.add("pixel gate", "plugin", (time.perf_counter() - started) / GATE_CALLS)
        started = time.perf_counter()
        blank(ultrasound, read_header(ultrasound), (ULTRASOUND_BANNER,))
        results.add("pixel blanking", "plugin", time.perf_counter() - started)
    log(f"  gate {results.median('pixel gate', 'plugin') * 1e6:.1f} us per instance, blanking one "
        f"{ULTRASOUND_FRAME[0]}x{ULTRASOUND_FRAME[1]} RGB frame {results.median('pixel blanking', 'plugin') * 1e3:.1f} ms")


def text_reading_cost(results: Results, log) -> None:
    """The optional text reader of verify (ocr/text_service.py), where its environment is installed
    (`make ocr-venv`): one ultrasound-sized frame holding a banner of text, as verify sends it."""
    import text_service
    from PIL import Image, ImageDraw, ImageFont
    from consistent_anon.verification.text_reader import read_text
    if not text_service.PYTHON.is_file():
        log("  text reader: not installed (make ocr-venv), not measured")
        return
    frame = Image.new("RGB", ULTRASOUND_FRAME, (20, 20, 20))
    ImageDraw.Draw(frame).text((8, 8), "DOE, JOHN  MRN 7734125  DOB 03/14/1961  GENERAL HOSPITAL",
                               fill=(230, 230, 230), font=ImageFont.load_default(size=22))
    png = io.BytesIO()
    frame.save(png, "PNG")
    service = text_service.TextService()
    try:
        read_text(service.url, 60, png.getvalue())  # warm-up
        for _ in range(PIXEL_ROUNDS):
            started = time.perf_counter()
            read_text(service.url, 60, png.getvalue())
            results.add("text reading", "plugin", time.perf_counter() - started)
    finally:
        service.stop()
    log(f"  text reader: {results.median('text reading', 'plugin') * 1e3:.0f} ms per frame")


def pixel_rows(results: Results, size: int) -> list[dict]:
    """The gate against the plugin's time per instance in the study's first run (target ≤ 2 %),
    and blanking one frame (no target: an instance a rule cleans)."""
    gate_cost, blanking = results.median("pixel gate", "plugin"), results.median("pixel blanking", "plugin")
    study = results.median(f"study {size} first run", "plugin")
    if gate_cost is None or blanking is None or study is None:
        return []
    share = gate_cost / (study / size)
    return [{"metric": f"Burned-in gate, one instance not at risk (plugin ÷ its time per instance, study of {size})",
             "unit": "µs", "native": None, "plugin": gate_cost * 1e6, "ratio": share,
             "ratio_text": f"{share:.1%}", "target": "≤ 2 %", "met": share <= 0.02},
            {"metric": f"Clean Pixel Data, blanking one {ULTRASOUND_FRAME[0]}×{ULTRASOUND_FRAME[1]} RGB frame",
             "unit": "ms", "native": None, "plugin": blanking * 1e3, "ratio": None, "ratio_text": "—",
             "target": "—", "met": None}] + text_reading_row(results)


def text_reading_row(results: Results) -> list[dict]:
    reading = results.median("text reading", "plugin")
    if reading is None:
        return []
    return [{"metric": f"Text reader (optional, verify only): one {ULTRASOUND_FRAME[0]}×{ULTRASOUND_FRAME[1]} "
                       f"frame with a line of text", "unit": "ms", "native": None, "plugin": reading * 1e3,
             "ratio": None, "ratio_text": "—", "target": "—", "met": None}]


def job_records_kb(node: Node) -> float:
    """The size of the job list as Orthanc answers it (GET /jobs?expand), in kB: what a job record
    shows over REST, not the UID maps native's jobs keep for SaveJobs."""
    answer = node.session.get(node.url + "/jobs?expand", timeout=TIMEOUT)
    answer.raise_for_status()
    return len(answer.content) / 1024


def scale_runs(large: int, base: int, threads: int, results: Results, log) -> None:
    """A study of `base` then one of `large` instances of 64x64 pixels, on a fresh pair of
    servers (native at its default): the study-level first run of each (time per instance, peak
    memory), the size of the job list each side answers, and the verification route over the large study
    and its anonymized copy (instances per second of the source)."""
    pair: list[Node] = []
    try:
        for name, plugin in (("native", False), ("plugin", True)):
            pair.append(Node(name, plugin=plugin).start())
        for size in (base, large):
            files = make_study(size, f"S{size}-{os.getpid()}", size=64)
            memory = {}
            for node in pair:
                start = time.perf_counter()
                study = upload(node, files, threads)
                log(f"  scale: uploaded {size} instances to {node.name} in {time.perf_counter() - start:.0f} s")
                if size == base:  # the same warm-up as the main servers
                    node.post(f"/instances/{node.get_json(f'/studies/{study}/instances')[0]['ID']}/anonymize", {})
                memory[node.name] = {}
                answer = anonymize_run(node, "studies", study, results, f"scale {size}", node.name,
                                       keep=node.name == "plugin", memory=memory[node.name])
                memory[node.name]["job_records_kb"] = job_records_kb(node)
                log(f"  scale: {node.name}, {size} instances: {memory[node.name]['seconds']:.1f} s, "
                    f"peak RSS {memory[node.name]['peak_mb']:.0f} MB, job records {memory[node.name]['job_records_kb']:.0f} kB")
                if node.name == "plugin":
                    verification = verify_rate(node, study, answer["ID"], size)
                    results.scale.setdefault("verification", {})[str(size)] = verification
                    log(f"  scale: verification route over {size} instances: {verification['seconds']:.1f} s "
                        f"({verification['rate']:.0f} instances/s), clean {verification['clean']}")
                    node.delete(f"/patients/{answer['PatientID']}")
                node.delete(f"/studies/{study}")
            results.scale.setdefault("memory", {})[str(size)] = memory
        results.scale.update({"sizes": [base, large], "image": "MR 64x64 16-bit, 4 series, 2 FoRs"})
    finally:
        for node in pair:
            node.stop()


def verify_rate(node: Node, source: str, anonymized: str, size: int) -> dict:
    """POST /tools/verify-anonymization over a source study and its copy, timed."""
    elapsed, answer = node.post("/tools/verify-anonymization", {"Source": source, "Anonymized": anonymized})
    report = answer.json()
    return {"seconds": elapsed, "rate": size / elapsed, "clean": report.get("Clean"),
            "paired": report.get("PairedInstancesCount")}


def hosts_problem() -> str | None:
    """What makes Orthanc's timings unrepresentative here, if anything.

    Orthanc generates UIDs with DCMTK, which calls glibc's gethostid(): without /etc/hostid, that
    resolves the machine's hostname, for every UID. If the hostname is not in the runtime's
    /etc/hosts (a chroot made by debootstrap has a bare one), every UID costs a DNS query, and
    a lost query waits 5 s: native runs and the plugin's native calls become slow and noisy.
    """
    root = RUNTIME.root or Path("/")
    hostname = platform.node()
    try:
        names = (root / "etc" / "hosts").read_text().split()
    except OSError:
        names = []
    if (root / "etc" / "hostid").exists() or hostname in names:
        return None
    return (f"{root / 'etc' / 'hosts'} does not name this machine ({hostname}): every UID Orthanc generates "
            f"makes a DNS query (DCMTK -> gethostid); add '127.0.0.1 {hostname}' there")


# --- the report ------------------------------------------------------------------------------
def versions(native: Node, plugin: Node) -> dict[str, str]:
    found = {"orthanc": native.get_json("/system")["Version"]}
    try:
        found["orthanc-python"] = str(plugin.get_json("/plugins/python").get("Version"))
    except Exception:
        found["orthanc-python"] = "unknown"
    return found


def shifted_dates_row(results: Results, size: int) -> list[dict]:
    """The cost of keyed date shifting: the plugin's first run of the study under a project
    with `"ShiftDates": true` against the same call with `"ShiftDates": false`."""
    shifted, plain = (results.median(SHIFTED[shift].format(size), "plugin") for shift in (True, False))
    if shifted is None or plain is None:
        return []
    return [{"metric": f"Study, {size} instances, first run with ShiftDates (plugin ÷ plugin without)",
             "unit": "s", "native": None, "plugin": shifted, "ratio": shifted / plain,
             "ratio_text": f"{shifted / plain:.2f}×", "target": "≤ 1.1×", "met": shifted / plain <= 1.1}]


def sealed_row(results: Results, size: int) -> list[dict]:
    sealed, plain = (results.median(SEALED[flag].format(size), "plugin") for flag in (True, False))
    if sealed is None or plain is None:
        return []
    return [{"metric": f"Study, {size} instances, first run with one re-identification certificate (plugin ÷ "
                       f"plugin without)", "unit": "s", "native": None, "plugin": sealed, "ratio": sealed / plain,
             "ratio_text": f"{sealed / plain:.2f}×", "target": "≤ 1.2×", "met": sealed / plain <= 1.2}]


def build_rows(results: Results, sizes: tuple[int, int], version: str) -> list[dict]:
    """The table: each metric for native at its default, native at its best setting (where
    the ResourceModification threads exist), the plugin, and the plugin's ratio to both."""
    threads = has_threads_setting(version)
    first_target = 1.0 if threads else 0.8
    first_text = f"≤ {first_target:.1f}× native best" if threads else f"≤ {first_target:.1f}× native"
    rows = []

    def ratio_row(metric, label, unit, scale, target_text, ok, native_metric=None, rate=False,
                  judge_best=False):
        native_metric = native_metric or metric
        native, plugin = results.median(native_metric, "native"), results.median(metric, "plugin")
        if native is None or plugin is None:
            return
        row = {"metric": label, "unit": unit, "native": native * scale, "plugin": plugin * scale,
               "ratio": plugin / native, "ratio_text": f"{plugin / native:.2f}×", "target": target_text}
        judged = row["ratio"]
        if judge_best:  # a metric native was measured for at every ResourceModification setting
            side, value = results.native_best(native_metric, max if rate else min)
            judged = plugin / value
            row.update({"native_best": value * scale, "native_best_setting": side,
                        "ratio_best": judged, "ratio_best_text": f"{judged:.2f}×"})
        row["met"] = None if ok is None else bool(ok(judged))
        rows.append(row)

    small, large = sizes
    for size in sizes:
        ratio_row(f"study {size} first run", f"Study, {size} instances, first run", "s", 1,
                  first_text, lambda r: r <= first_target, judge_best=True)
    for size in sizes:
        ratio_row(f"study {size} re-run", f"Study, {size} instances, re-run (vs native run)", "s", 1,
                  "≤ 0.1× native best", lambda r: r <= 0.1, native_metric=f"study {size} first run",
                  judge_best=True)
    ratio_row("series first run", f"Series, {small // 4} instances, first run", "s", 1,
              first_text, lambda r: r <= first_target, judge_best=True)
    rows.extend(shifted_dates_row(results, small))
    rows.extend(sealed_row(results, small))
    rows.extend(pixel_rows(results, small))
    ratio_row("instance call", "Instance call (POST /instances/{id}/anonymize)", "ms", 1000,
              "≤ 1.2×", lambda r: r <= 1.2)
    ratio_row("instance calls at once", f"Instance calls, {INSTANCE_CLIENTS} clients at once (calls/s)", "calls/s", 1,
              "—", None, rate=True)
    for arrival, tag in ((results.arrival, ""), (results.arrival_large, " large")):
        if not arrival:
            continue
        for metric, how in (("arrival", "the Lua script"), ("arrival gateway", "the plugin's gateway, OnArrival")):
            count = len(rows)
            ratio_row(metric + tag, f"Anonymize on arrival ({how}; native: its Lua script), C-STORE by storescu, "
                                    f"{arrival['instances']} instances until all stored", "inst/s", 1,
                      "≥ 1.05×, one consistent study", lambda r, arrival=arrival: r >= 1.05 and arrival["consistent"],
                      native_metric="arrival" + tag, rate=True)
            if len(rows) > count and not arrival["consistent"]:
                rows[-1]["ratio_text"] += " (not consistent)"
    ratio_row("generate-uid", "generate-uid req/s (native level=instance, plugin level=frame-of-reference)",
              "req/s", 1, "≥ 0.8×", lambda r: r >= 0.8, rate=True)
    ratio_row("generate-uid instance (plugin pass-through)",
              "generate-uid req/s, level=instance on both", "req/s", 1, "—", None, rate=True)
    rows.extend(memory_rows(results.memory, sizes))
    rows.extend(per_instance_rows(results, "study {} first run", sizes, "MR 256×256"))
    if results.scale:
        rows.extend(scale_rows(results))
    return rows


def memory_rows(memory: dict, sizes: tuple[int, ...], what: str = "fresh servers") -> list[dict]:
    """Peak memory during the larger run (plugin ≤ native + 64 MB) and its growth with the size."""
    rows = []
    small, large = sizes
    if large in memory:
        native, plugin = memory[large]["native"]["peak_mb"], memory[large]["plugin"]["peak_mb"]
        rows.append({"metric": f"Peak RSS during the {large}-instance run ({what})",
                     "unit": "MB", "native": native, "plugin": plugin, "ratio": plugin - native,
                     "ratio_text": f"{plugin - native:+.0f} MB", "target": "≤ native + 64 MB",
                     "met": plugin - native <= 64})
    if small in memory and large in memory:
        growth = {side: [memory[size][side]["growth_mb"] for size in sizes] for side in ("native", "plugin")}
        excess = [growth["plugin"][i] - growth["native"][i] for i in (0, 1)]
        rows.append({"metric": f"RSS growth during the run (peak − before), {small} → {large} instances, "
                               f"{what}", "unit": "MB", "native": None, "plugin": None, "ratio": None,
                     "native_text": f"{growth['native'][0]:.0f} → {growth['native'][1]:.0f} MB",
                     "plugin_text": f"{growth['plugin'][0]:.0f} → {growth['plugin'][1]:.0f} MB",
                     "ratio_text": f"{excess[0]:+.0f} → {excess[1]:+.0f} MB",
                     "target": "flat: plugin − native grows ≤ 32 MB", "met": excess[1] - excess[0] <= 32})
    return rows


def per_instance_rows(results: Results, metric: str, sizes: tuple[int, int], image: str) -> list[dict]:
    """Time per instance at each size (native at its default), and its growth: linear means
    the plugin adds nothing that grows with the study; what Orthanc's own calls lose as the
    study grows (native shows it) is not the plugin's."""
    per_instance = {}
    for side in ("native", "plugin"):
        values = [results.median(metric.format(size), side) for size in sizes]
        if None not in values:
            per_instance[side] = [value / size for value, size in zip(values, sizes)]
    if len(per_instance) != 2:
        return []
    rows = []
    for index, size in enumerate(sizes):
        native, plugin = per_instance["native"][index], per_instance["plugin"][index]
        rows.append({"metric": f"Time per instance, {size} instances, {image} (first run)", "unit": "ms",
                     "native": native * 1000, "plugin": plugin * 1000, "ratio": plugin / native,
                     "ratio_text": f"{plugin / native:.2f}×", "target": "—", "met": None})
    growth_native = per_instance["native"][1] / per_instance["native"][0]
    growth_plugin = per_instance["plugin"][1] / per_instance["plugin"][0]
    rows.append({"metric": f"Per-instance time, {sizes[1]} vs {sizes[0]} instances, {image} (linear = 1.00)",
                 "unit": "×", "native": growth_native, "plugin": growth_plugin, "ratio": None, "ratio_text": "",
                 "target": "plugin ≤ native's growth, or ≤ 1.20", "met": growth_plugin <= max(1.2, growth_native)})
    return rows


def scale_rows(results: Results) -> list[dict]:
    """The --scale rows: time per instance, memory, job records, the verification route's rate."""
    base, large = results.scale["sizes"]
    memory = {int(size): sides for size, sides in results.scale["memory"].items()}
    rows = per_instance_rows(results, "scale {}", (base, large), "MR 64×64")
    rows.extend(memory_rows(memory, (base, large), "same servers, one study after the other"))
    native, plugin = (memory[large][side]["job_records_kb"] for side in ("native", "plugin"))
    rows.append({"metric": f"Job list after the {large}-instance run (GET /jobs?expand)", "unit": "kB",
                 "native": native, "plugin": plugin, "ratio": None, "ratio_text": f"{plugin - native:+.0f} kB",
                 "target": "≤ native's", "met": plugin <= native + 1})
    verification = results.scale["verification"][str(large)]
    rows.append({"metric": f"Verification route over the {large}-instance study and its copy", "unit": "inst/s",
                 "native": None, "plugin": verification["rate"], "ratio": None,
                 "ratio_text": f"{verification['seconds']:.1f} s, clean: {verification['clean']}",
                 "target": "completes, clean", "met": bool(verification["clean"])})
    return rows


def markdown(rows: list[dict]) -> str:
    def number(value, unit):
        if value is None:
            return ""
        if unit == "s":
            return f"{value:.2f} s"
        if unit == "ms":
            return f"{value:.1f} ms"
        if unit == "µs":
            return f"{value:.1f} µs"
        if unit in ("req/s", "inst/s"):
            return f"{value:.0f}/s"
        if unit in ("MB", "kB"):
            return f"{value:.0f} {unit}"
        return f"{value:.2f}"
    lines = ["| metric | native default | native best | plugin | plugin ÷ default | plugin ÷ best | target | met? |",
             "|---|---|---|---|---|---|---|---|"]
    for row in rows:
        met = {True: "yes", False: "**no**", None: "—"}[row["met"]]
        native = row.get("native_text") or number(row["native"], row["unit"])
        plugin = row.get("plugin_text") or number(row["plugin"], row["unit"])
        best = ""
        if "native_best" in row:
            setting = row["native_best_setting"].replace("native ", "").replace("native", "default")
            best = f"{number(row['native_best'], row['unit'])} ({setting})"
        lines.append(f"| {row['metric']} | {native} | {best} | {plugin} | {row['ratio_text']} | "
                     f"{row.get('ratio_best_text', '')} | {row['target']} | {met} |")
    return "\n".join(lines)


def plugin_tree_hash(folder: Path) -> str:
    """A digest of the plugin's files, to tell which code a result file measured."""
    digest = hashlib.sha256()
    for path in sorted(folder.rglob("*")):
        if path.is_file() and "__pycache__" not in path.parts:
            digest.update(str(path.relative_to(folder)).encode() + b"\0" + path.read_bytes())
    return digest.hexdigest()[:16]


def export_plugin(revision: str) -> str:
    """The plugin/ folder of a git revision, written to a temporary folder."""
    target = Path(tempfile.mkdtemp(prefix="bench-plugin-"))
    atexit.register(shutil.rmtree, str(target), True)
    archive = subprocess.run(["git", "archive", revision, "plugin"], cwd=REPO, capture_output=True, check=True)
    subprocess.run(["tar", "-x", "-C", str(target)], input=archive.stdout, check=True)
    return str(target / "plugin")


def git(*args: str) -> str:
    try:
        return subprocess.run(["git", *args], cwd=REPO, capture_output=True, text=True, timeout=30).stdout.strip()
    except Exception:
        return ""


# --- main ------------------------------------------------------------------------------------
def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--quick", action="store_true", help="fewer repetitions: a smoke run")
    parser.add_argument("--sizes", default="400,2000", help="instances of the small and the large study")
    parser.add_argument("--repetitions", default=None, help="repetitions for the small,large study (default 5,3; quick 2,1)")
    parser.add_argument("--instance-calls", type=int, default=None, help="instance-level calls per side (default 200; quick 20)")
    parser.add_argument("--uid-requests", type=int, default=None, help="generate-uid requests per side (default 2000; quick 400)")
    parser.add_argument("--threads", type=int, default=4, help="upload threads")
    parser.add_argument("--plugin-dir", default=None,
                        help="the plugin to measure (default: this working tree's plugin/)")
    parser.add_argument("--plugin-rev", default=None,
                        help="measure the plugin of a git revision (git archive REV plugin) instead")
    parser.add_argument("--arrival", type=int, default=None,
                        help="instances sent over DICOM for the on-arrival row (default 1000; quick 200; 0: none)")
    parser.add_argument("--arrival-repetitions", type=int, default=None, help="arrival runs per side (default 3; quick 1)")
    parser.add_argument("--arrival-large", type=int, default=None,
                        help="instances of the large arrival row, one run per side, native's script and the "
                             "gateway (default 10000; quick: none; 0: none)")
    parser.add_argument("--scale", type=int, nargs="?", const=20000, default=0,
                        help="also a study of this many 64x64 instances (20000 if no number), against one "
                             "of a tenth of it")
    parser.add_argument("--reidentification", action="store_true",
                        help="also the small study's first runs with one re-identification certificate")
    parser.add_argument("--output", default=None, help="the JSON file (default bench/results/<version>.json)")
    args = parser.parse_args()

    signal.signal(signal.SIGTERM, lambda *_: sys.exit(143))  # stop the servers on the way out
    if args.plugin_rev:
        args.plugin_dir = export_plugin(args.plugin_rev)
    if args.plugin_dir:
        orthanc_server.PLUGIN_DIR = Path(args.plugin_dir).resolve()
    sizes = tuple(int(v) for v in args.sizes.split(","))
    repetitions = tuple(int(v) for v in (args.repetitions or ("2,1" if args.quick else "5,3")).split(","))
    instance_calls = args.instance_calls or (20 if args.quick else 200)
    uid_requests = args.uid_requests or (400 if args.quick else 2000)
    arrival = args.arrival if args.arrival is not None else (200 if args.quick else 1000)
    arrival_repetitions = args.arrival_repetitions or (1 if args.quick else 3)
    arrival_large = args.arrival_large if args.arrival_large is not None else (0 if args.quick else 10000)
    # DCMTK (storescu, Orthanc's DICOM server) waits on delayed ACKs over loopback without it.
    os.environ["TCP_NODELAY"] = "1"
    began = time.monotonic()

    def log(message: str) -> None:
        print(f"[{time.monotonic() - began:6.0f} s] {message}", flush=True)

    log(f"Orthanc runtime: {RUNTIME.kind}; load average {os.getloadavg()[0]:.2f}; generating the studies")
    problem = hosts_problem()
    warnings = [problem + " (timings of this run are not representative)"] if problem else []
    for warning in warnings:
        log("WARNING: " + warning)
    files = {size: make_study(size, f"{size}-{os.getpid()}") for size in sizes}
    log(f"studies: {', '.join(f'{n} files ({sum(map(len, f)) / MB:.0f} MB)' for n, f in files.items())}")

    results = Results()
    load_before = os.getloadavg()
    nodes: list[Node] = []
    try:
        native = Node("native", plugin=False).start()
        nodes.append(native)
        plugin = Node("plugin", plugin=True)
        nodes.append(plugin)
        section = plugin.server.settings["ConsistentAnonymization"]
        plugin.server.configure({"ConsistentAnonymization": {
            **section, "Projects": {**section.get("Projects", {}), SHIFTED_PROJECT: {"ShiftDates": True}}}})
        if args.reidentification:
            certificate = recipient_certificate(plugin.server.workdir)
            section = plugin.server.settings["ConsistentAnonymization"]
            plugin.server.configure({"ConsistentAnonymization": {**section, "Projects": {
                **section["Projects"], SEALED_PROJECT: {"ReidentificationCertificates": [certificate]}}}})
        plugin_hash = plugin_tree_hash(plugin.server.workdir / "plugin")  # the copy this run measures
        plugin.start()
        found = versions(native, plugin)
        settings = native_settings(found["orthanc"])
        log(f"Orthanc {found['orthanc']}, orthanc-python {found['orthanc-python']}; "
            f"Orthanc pids: native {native.pid}, plugin {plugin.pid}; native settings: "
            f"{', '.join(native_side(threads) for threads in settings)}")

        # Fresh servers holding only the large study: the memory of its first run, then its timings.
        small, large = sizes
        studies = {}
        for node in (native, plugin):
            start = time.perf_counter()
            studies.setdefault(large, {})[node.name] = upload(node, files[large], args.threads)
            log(f"uploaded {large} instances to {node.name} in {time.perf_counter() - start:.0f} s")
        for node in (native, plugin):  # warm-up: one instance-level call (also creates the plugin's key)
            some = node.get_json(f"/studies/{studies[large][node.name]}/instances")[0]["ID"]
            node.post(f"/instances/{some}/anonymize", {})
        log(f"study-level first run, {large} instances, on fresh servers, with memory")
        memory = {"native": {}, "plugin": {}}
        anonymize_run(native, "studies", studies[large]["native"], results, f"study {large} first run",
                      "native", memory=memory["native"])
        plugin_study_run(plugin, studies[large]["plugin"], large, results, memory=memory["plugin"])
        results.memory[large] = memory
        log(f"  native {last(results, f'study {large} first run', 'native')}, plugin "
            f"{last(results, f'study {large} first run', 'plugin')}")

        for node in (native, plugin):
            start = time.perf_counter()
            studies.setdefault(small, {})[node.name] = upload(node, files[small], args.threads)
            log(f"uploaded {small} instances to {node.name} in {time.perf_counter() - start:.0f} s")
        log(f"memory of a {small}-instance run on fresh servers")
        fresh_memory_run(files[small], small, args.threads, results, log)

        series = {side: series_of(node, studies[small][side])[0] for side, node in
                  (("native", native), ("plugin", plugin))}
        warm_up = native.get_json(f"/series/{series['native']}/instances")[0]["ID"]
        log(f"study-level runs ({small}, {large} instances) and series-level runs ({small // 4} instances), "
            f"native at each setting, alternating")
        measurement_rounds(native, plugin, studies, series, {small: repetitions[0], large: repetitions[1]},
                           settings, warm_up, results, {(0, "native", large), (0, "plugin", large)}, log)
        use_native_setting(native, None, warm_up)
        if args.reidentification:
            log(f"study-level runs ({small} instances) with and without a re-identification certificate")
            sealed_runs(plugin, studies[small]["plugin"], small, repetitions[0], results, log)
        for metric in [f"study {size} first run" for size in sizes] + ["series first run"]:
            side, best = results.native_best(metric)
            log(f"  {metric}: native default {results.median(metric, 'native'):.2f} s, best {best:.2f} s "
                f"({side}), plugin {results.median(metric, 'plugin'):.2f} s")

        instances = {side: [i["ID"] for i in node.get_json(f"/series/{series[side]}/instances")]
                     for side, node in (("native", native), ("plugin", plugin))}
        log(f"instance-level calls ({instance_calls} per side)")
        instance_runs(native, plugin, instances, instance_calls, results, log)
        concurrent_instance_runs(native, plugin, instances, instance_calls, results, log)

        log(f"generate-uid ({uid_requests} requests per side)")
        generate_uid_runs(native, plugin, uid_requests, 4, results, log)
    finally:
        for node in nodes:
            node.stop()
    log("burned-in text: the gate and the blanking of one frame, in this process")
    pixel_costs(results, log)
    text_reading_cost(results, log)
    if arrival:
        log(f"anonymize on arrival: {arrival} instances over DICOM, {arrival_repetitions} run(s) per side")
        arrival_runs(make_study(arrival, f"A-{os.getpid()}"), arrival_repetitions, results, log)
    if arrival_large:
        log(f"anonymize on arrival, large: {arrival_large} instances over DICOM, one run per side")
        arrival_runs(make_study(arrival_large, f"L-{os.getpid()}"), 1, results, log, large=True)
    if args.scale:
        log(f"scale: {args.scale // 10} then {args.scale} instances of 64x64")
        scale_runs(args.scale, args.scale // 10, args.threads, results, log)

    version = found["orthanc"]
    rows = build_rows(results, sizes, version)
    table = markdown(rows)
    report = {
        "orthanc": version,
        "orthanc_python": found["orthanc-python"],
        "runtime": RUNTIME.kind,
        "chroot": RUNTIME.root.name if RUNTIME.root else None,  # the cached chroot's name (release-key)
        "quick": args.quick,
        "date": datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="seconds"),
        "machine": {"cpus": os.cpu_count(), "kernel": platform.release(), "python": platform.python_version(),
                    "load_average_before": load_before, "load_average_after": os.getloadavg()},
        "plugin": {"source": os.path.relpath(orthanc_server.PLUGIN_DIR, orthanc_server.REPO), "tree_sha256": plugin_hash,
                   "git_revision": git("rev-parse", args.plugin_rev) if args.plugin_rev else None,
                   "git_head": git("rev-parse", "HEAD"),
                   "git_uncommitted_plugin_files": git("status", "--porcelain", "plugin").splitlines()},
        "parameters": {"sizes": sizes, "repetitions": repetitions, "instance_calls": instance_calls,
                       "generate_uid_requests": uid_requests, "image": "MR 256x256 16-bit, 4 series, 2 FoRs",
                       "body": "{}", "native_resource_modification_threads": settings,
                       "arrival_instances": arrival, "arrival_repetitions": arrival_repetitions,
                       "arrival_large_instances": arrival_large,
                       "scale": args.scale, "reidentification": args.reidentification},
        "duration_s": round(time.monotonic() - began, 1),
        "warnings": warnings,
        "medians": {metric: {side: statistics.median(v) for side, v in sides.items()}
                    for metric, sides in results.samples.items()},
        "samples": results.samples,
        "memory_fresh_servers": {str(size): memory for size, memory in results.memory.items()},
        "native_best": {metric: results.native_best(metric) for metric in results.samples
                        if any(side.startswith("native ") for side in results.samples[metric])},
        "arrival": results.arrival,
        "arrival_large": results.arrival_large,
        "scale": results.scale,
        "rows": rows,
        "table_markdown": table,
    }
    name = version + ("-quick" if args.quick or sizes != (400, 2000) else "")
    output = Path(args.output).resolve() if args.output else BENCH / "results" / f"{name}.json"
    output.parent.mkdir(parents=True, exist_ok=True)
    text = json.dumps(report, indent=1, ensure_ascii=False) + "\n"
    output.write_text(text)
    written = [output]
    if not args.quick and sizes == (400, 2000) and not args.output:
        latest = BENCH / f"latest-{version}.json"
        latest.write_text(text)
        written.append(latest)
    log(f"done in {report['duration_s']:.0f} s; wrote {', '.join(os.path.relpath(p, REPO) for p in written)}")
    print()
    print(f"Orthanc {version}, orthanc-python {found['orthanc-python']} ({RUNTIME.kind}), "
          f"{os.cpu_count()} CPUs, load average before {load_before[0]:.2f}; plugin tree {plugin_hash} "
          f"(git {report['plugin']['git_head'][:7]}, {len(report['plugin']['git_uncommitted_plugin_files'])} "
          f"uncommitted plugin files):")
    print()
    print(table)
    for warning in warnings:
        print(f"\nWARNING: {warning}")


if __name__ == "__main__":
    main()
