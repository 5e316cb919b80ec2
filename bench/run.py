#!/usr/bin/env python3
"""Benchmark of the consistent-anonymization plugin against native Orthanc (issue 6).

What it measures, on the Orthanc selected like the tests select it (ORTHANC_RUNTIME=host: this
machine's Orthanc; ORTHANC_RUNTIME=chroot with ORTHANC_CHROOT: the trixie chroot's):

- study-level `POST /studies/{id}/anonymize {}` of a synthetic MR study of 400 instances and of
  2,000 instances (256x256, 16 bits, 4 series, the first two on one frame of reference, the last
  two on another): the first run (the result is deleted between repetitions, so every plugin run
  computes everything; native's copies are deleted too so storage does not grow), and the same
  call again while the result is present (the idempotent re-run), against native's normal run;
- series-level calls (one 100-instance series) and instance-level calls
  (`POST /instances/{id}/anonymize`, which answers a file and stores nothing), per call;
- `GET /tools/generate-uid?level=frame-of-reference` (plugin) against native's
  `level=instance` (plain Orthanc), requests per second over sequential keep-alive requests;
- the peak resident memory (VmHWM of the Orthanc process itself, reset with
  /proc/<pid>/clear_refs before the run) during a 2,000-instance run and during a 400-instance
  run, each on freshly started servers holding only that study, and its growth over the resident
  size before the run (is the plugin's excess over native flat in the study size?);
- seconds per instance at 400 and at 2,000 instances (does time grow linearly?).

How: one plain Orthanc (`OrthancServer(plugin=False)`) and one with the plugin (`OrthancServer()`)
are started on loopback, the same generated files are uploaded to both (a few threads, one
requests.Session each), and native and plugin runs alternate, so that a drift of the machine
hits both alike. Medians are reported with the ratio plugin/native, against the targets of
issue 6, as a Markdown table; the numbers are written to bench/results/<version>.json and, for
a full run, to bench/latest-<version>.json (committed, cited by the README). Targets: first run
<= 1.3x native on 1.10 and <= 1.0x on 1.12 (applied to the series row as well; the single-instance
call is reported without one), re-run <= 0.25x native's run, peak memory <= native + 64 MB,
generate-uid >= 0.8x native's rate, and linear time: the plugin's per-instance time at 2,000
grows no more than native's does over that at 400 (Orthanc's own reads and stores slow down as
the study grows, on this machine by 1.5-1.9x), and by at most 1.2x where native's grows less.

Orthanc's UIDs come from DCMTK, which resolves the machine's hostname for each one (glibc
gethostid). Where the runtime's /etc/hosts does not name the machine (the debootstrap chroot),
every UID is a DNS query and a lost one waits 5 s, which swamps the timings: scripts/trixie-chroot.sh
adds the name to the chroot's hosts file, and the benchmark warns where it is missing.

    make bench                 # both versions, one after the other:
    make bench-bookworm        #   Orthanc 1.10.1 of this machine (Debian bookworm)
    make bench-trixie          #   Orthanc 1.12.7 in the trixie chroot
    make bench BENCH_ARGS=--quick                     # fewer repetitions: a smoke run
    make bench BENCH_ARGS="--plugin-rev HEAD"         # the committed plugin, not the working tree
    .venv/bin/python bench/run.py --sizes 40,200 --quick   # a tiny study, for development
"""
from __future__ import annotations

import argparse
import atexit
import datetime
import hashlib
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

import orthanc_server  # noqa: E402
from dicom_factory import Patient, Study, mr_series, to_bytes  # noqa: E402
from orthanc_server import RUNTIME, OrthancServer  # noqa: E402
from pydicom.uid import generate_uid  # noqa: E402

TIMEOUT = 3600
MB = 1024 * 1024


# --- the synthetic studies -------------------------------------------------------------------
def make_study(instances: int, tag: str, size: int = 256) -> list[bytes]:
    """`instances` MR files in 4 series; series 1-2 share a frame of reference, 3-4 another."""
    per_series, extra = divmod(instances, 4)
    study = Study(patient=Patient(patient_id=f"PID-BENCH-{tag}", name=f"Bench^Synthetic^{tag}"),
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

    def __init__(self, name: str, plugin: bool) -> None:
        self.name = name
        self.server = OrthancServer(plugin=plugin)
        self.session = requests.Session()
        self.pid = 0

    def start(self) -> "Node":
        self.server.start(timeout=120)
        self.pid = orthanc_pid(self.server.process.pid)
        return self

    def stop(self) -> None:
        self.session.close()
        self.server.cleanup()

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

    def add(self, metric: str, side: str, value: float) -> None:
        self.samples.setdefault(metric, {}).setdefault(side, []).append(value)

    def median(self, metric: str, side: str) -> float | None:
        values = self.samples.get(metric, {}).get(side)
        return statistics.median(values) if values else None


def anonymize_run(node: Node, level: str, resource: str, results: Results, metric: str,
                  side: str, keep: bool = False, memory: dict | None = None) -> dict:
    """One timed /anonymize call; its result is deleted unless `keep`. With `memory`, the peak
    resident size during the call is recorded in it."""
    status_before = proc_status(node.pid)
    reset = reset_peak(node.pid)
    before = proc_status(node.pid)
    with RssSampler(node.pid) as sampler:
        elapsed, answer = node.post(f"/{level}/{resource}/anonymize", {})
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


def study_runs(native: Node, plugin: Node, studies: dict[str, str], size: int, repetitions: int,
               results: Results, memory_first: bool, log) -> None:
    """Alternate: native run, plugin first run, plugin re-run (result present); delete between."""
    first, rerun = f"study {size} first run", f"study {size} re-run"
    for repetition in range(repetitions):
        memory = {} if (memory_first and repetition == 0) else None
        native_memory = {} if memory is not None else None
        anonymize_run(native, "studies", studies["native"], results, first, "native", memory=native_memory)
        answer = anonymize_run(plugin, "studies", studies["plugin"], results, first, "plugin",
                               keep=True, memory=memory)
        elapsed, again = plugin.post(f"/studies/{studies['plugin']}/anonymize", {})
        results.add(rerun, "plugin", elapsed)
        if again.json().get("ID") != answer.get("ID"):
            log(f"  warning: the re-run answered study {again.json().get('ID')}, the first run {answer.get('ID')}")
        plugin.delete(f"/patients/{answer['PatientID']}")
        if memory is not None:
            results.memory[size] = {"native": native_memory, "plugin": memory}
        log(f"  {size} instances, repetition {repetition + 1}/{repetitions}: native "
            f"{results.samples[first]['native'][-1]:.2f} s, plugin {results.samples[first]['plugin'][-1]:.2f} s, "
            f"plugin re-run {elapsed:.2f} s")


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


def series_runs(native: Node, plugin: Node, series: dict[str, str], repetitions: int,
                results: Results, log) -> None:
    for repetition in range(repetitions):
        anonymize_run(native, "series", series["native"], results, "series first run", "native")
        anonymize_run(plugin, "series", series["plugin"], results, "series first run", "plugin")
    log(f"  series: native {results.median('series first run', 'native'):.2f} s, "
        f"plugin {results.median('series first run', 'plugin'):.2f} s")


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


def first_run_target(version: str) -> float:
    parts = tuple(int(p) for p in version.split(".")[:2] if p.isdigit())
    return 1.0 if parts >= (1, 12) else 1.3


def build_rows(results: Results, sizes: tuple[int, int], version: str) -> list[dict]:
    target = first_run_target(version)
    rows = []

    def ratio_row(metric, label, unit, scale, target_text, ok, native_metric=None):
        native = results.median(native_metric or metric, "native")
        plugin = results.median(metric, "plugin")
        if native is None or plugin is None:
            return
        ratio = plugin / native
        rows.append({"metric": label, "unit": unit, "native": native * scale, "plugin": plugin * scale,
                     "ratio": ratio, "ratio_text": f"{ratio:.2f}×", "target": target_text,
                     "met": None if ok is None else bool(ok(ratio))})

    small, large = sizes
    for size in sizes:
        ratio_row(f"study {size} first run", f"Study, {size} instances, first run", "s", 1,
                  f"≤ {target:.1f}×", lambda r: r <= target)
    for size in sizes:
        ratio_row(f"study {size} re-run", f"Study, {size} instances, re-run (vs native run)", "s", 1,
                  "≤ 0.25×", lambda r: r <= 0.25, native_metric=f"study {size} first run")
    ratio_row("series first run", f"Series, {small // 4} instances, first run", "s", 1,
              f"≤ {target:.1f}× (first-run target)", lambda r: r <= target)
    # One instance has no cores to spread over and the plugin does native's work plus its own
    # (the source's header, the check): reported, with no target (the targets are for studies).
    ratio_row("instance call", "Instance call (POST /instances/{id}/anonymize)", "ms", 1000, "—", None)
    ratio_row("generate-uid", "generate-uid req/s (native level=instance, plugin level=frame-of-reference)",
              "req/s", 1, "≥ 0.8×", lambda r: r >= 0.8)
    ratio_row("generate-uid instance (plugin pass-through)",
              "generate-uid req/s, level=instance on both", "req/s", 1, "—", None)

    if large in results.memory:
        memory = results.memory[large]
        native, plugin = memory["native"]["peak_mb"], memory["plugin"]["peak_mb"]
        rows.append({"metric": f"Peak RSS during the {large}-instance run (fresh servers)",
                     "unit": "MB", "native": native, "plugin": plugin, "ratio": plugin - native,
                     "ratio_text": f"{plugin - native:+.0f} MB", "target": "≤ native + 64 MB",
                     "met": plugin - native <= 64})
    if small in results.memory and large in results.memory:
        growth = {side: [results.memory[size][side]["growth_mb"] for size in sizes] for side in ("native", "plugin")}
        excess = [growth["plugin"][i] - growth["native"][i] for i in (0, 1)]
        rows.append({"metric": f"RSS growth during the run (peak − before), {small} → {large} instances, "
                               f"fresh servers", "unit": "MB", "native": None, "plugin": None, "ratio": None,
                     "native_text": f"{growth['native'][0]:.0f} → {growth['native'][1]:.0f} MB",
                     "plugin_text": f"{growth['plugin'][0]:.0f} → {growth['plugin'][1]:.0f} MB",
                     "ratio_text": f"{excess[0]:+.0f} → {excess[1]:+.0f} MB",
                     "target": "flat: plugin − native grows ≤ 32 MB", "met": excess[1] - excess[0] <= 32})

    per_instance = {}
    for side in ("native", "plugin"):
        values = [results.median(f"study {size} first run", side) for size in sizes]
        if None not in values:
            per_instance[side] = [values[0] / small, values[1] / large]
    for index, size in enumerate(sizes):
        if len(per_instance) == 2:
            native, plugin = per_instance["native"][index], per_instance["plugin"][index]
            rows.append({"metric": f"Time per instance, {size} instances (first run)", "unit": "ms",
                         "native": native * 1000, "plugin": plugin * 1000, "ratio": plugin / native,
                         "ratio_text": f"{plugin / native:.2f}×", "target": "—", "met": None})
    if len(per_instance) == 2:
        growth_native = per_instance["native"][1] / per_instance["native"][0]
        growth_plugin = per_instance["plugin"][1] / per_instance["plugin"][0]
        # Linear: the plugin adds nothing that grows with the study; what Orthanc's own calls
        # lose as the study grows (native shows it) is not the plugin's.
        allowed = max(1.2, growth_native)
        rows.append({"metric": f"Per-instance time, {large} vs {small} instances (linear = 1.00)", "unit": "×",
                     "native": growth_native, "plugin": growth_plugin, "ratio": None, "ratio_text": "",
                     "target": "plugin ≤ native's growth, or ≤ 1.20", "met": growth_plugin <= allowed})
    return rows


def markdown(rows: list[dict]) -> str:
    def number(value, unit):
        if value is None:
            return ""
        if unit in ("s",):
            return f"{value:.2f} s"
        if unit == "ms":
            return f"{value:.1f} ms"
        if unit == "req/s":
            return f"{value:.0f}/s"
        if unit == "MB":
            return f"{value:.0f} MB"
        return f"{value:.2f}"
    lines = ["| metric | native | plugin | ratio | target | met? |", "|---|---|---|---|---|---|"]
    for row in rows:
        met = {True: "yes", False: "**no**", None: "—"}[row["met"]]
        native = row.get("native_text") or number(row["native"], row["unit"])
        plugin = row.get("plugin_text") or number(row["plugin"], row["unit"])
        lines.append(f"| {row['metric']} | {native} | {plugin} | {row['ratio_text']} | {row['target']} | {met} |")
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
        plugin_hash = plugin_tree_hash(plugin.server.workdir / "plugin")  # the copy this run measures
        plugin.start()
        found = versions(native, plugin)
        log(f"Orthanc {found['orthanc']}, orthanc-python {found['orthanc-python']}; "
            f"Orthanc pids: native {native.pid}, plugin {plugin.pid}")

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
        log(f"study-level runs, {large} instances (the first on fresh servers, with memory)")
        study_runs(native, plugin, studies[large], large, repetitions[1], results, True, log)

        for node in (native, plugin):
            start = time.perf_counter()
            studies.setdefault(small, {})[node.name] = upload(node, files[small], args.threads)
            log(f"uploaded {small} instances to {node.name} in {time.perf_counter() - start:.0f} s")
        log(f"memory of a {small}-instance run on fresh servers")
        fresh_memory_run(files[small], small, args.threads, results, log)
        log(f"study-level runs, {small} instances")
        study_runs(native, plugin, studies[small], small, repetitions[0], results, False, log)

        series = {side: series_of(node, studies[small][side])[0] for side, node in
                  (("native", native), ("plugin", plugin))}
        log(f"series-level runs ({small // 4} instances)")
        series_runs(native, plugin, series, repetitions[0], results, log)

        instances = {side: [i["ID"] for i in node.get_json(f"/series/{series[side]}/instances")]
                     for side, node in (("native", native), ("plugin", plugin))}
        log(f"instance-level calls ({instance_calls} per side)")
        instance_runs(native, plugin, instances, instance_calls, results, log)

        log(f"generate-uid ({uid_requests} requests per side)")
        generate_uid_runs(native, plugin, uid_requests, 4, results, log)
    finally:
        for node in nodes:
            node.stop()

    version = found["orthanc"]
    rows = build_rows(results, sizes, version)
    table = markdown(rows)
    report = {
        "orthanc": version,
        "orthanc_python": found["orthanc-python"],
        "runtime": RUNTIME.kind,
        "chroot": str(RUNTIME.root) if RUNTIME.root else None,
        "quick": args.quick,
        "date": datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="seconds"),
        "machine": {"cpus": os.cpu_count(), "kernel": platform.release(), "python": platform.python_version(),
                    "load_average_before": load_before, "load_average_after": os.getloadavg()},
        "plugin": {"source": str(orthanc_server.PLUGIN_DIR), "tree_sha256": plugin_hash,
                   "git_revision": git("rev-parse", args.plugin_rev) if args.plugin_rev else None,
                   "git_head": git("rev-parse", "HEAD"),
                   "git_uncommitted_plugin_files": git("status", "--porcelain", "plugin").splitlines()},
        "parameters": {"sizes": sizes, "repetitions": repetitions, "instance_calls": instance_calls,
                       "generate_uid_requests": uid_requests, "image": "MR 256x256 16-bit, 4 series, 2 FoRs",
                       "body": "{}"},
        "duration_s": round(time.monotonic() - began, 1),
        "warnings": warnings,
        "medians": {metric: {side: statistics.median(v) for side, v in sides.items()}
                    for metric, sides in results.samples.items()},
        "samples": results.samples,
        "memory_fresh_servers": {str(size): memory for size, memory in results.memory.items()},
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
