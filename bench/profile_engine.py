#!/usr/bin/env python3
"""Where the plugin's time goes: one study-level run of the engine, profiled outside Orthanc.

A profiler cannot easily be attached to the Python that Orthanc embeds, so this drives
`consistent_anon.pipeline.engine.Anonymizer` itself, in a separate Python process, with an `OrthancPort`
that forwards every built-in call to a real plain Orthanc over HTTP (GET /instances/{id}/file,
POST /instances/{id}/anonymize, POST /instances...). The engine does exactly what it does inside
Orthanc; only the transport differs (loopback HTTP instead of in-process `RestApi*` and
`GetDicomForInstance` calls, which adds a little to every built-in call).

Two study-level runs of the same synthetic study (default 400 MR instances of 256x256, 4 series,
2 frames of reference; the result is deleted after each):
1. timed, with every port call timed: wall time split into built-in calls (HTTP/native, per
   call type) and Python (everything else: header reading, planning, checking, pseudonyms);
2. under cProfile: the top cumulative entries, and the Python time split into header reading of
   the source and of the output, planning, the output check, pseudonym computation. cProfile
   slows Python code much more than waiting on a socket, so the split of run 1 is the one to
   quote for HTTP/native vs Python; run 2 tells how the Python part divides. cProfile sees only
   the calling thread: an engine that spreads work over threads needs run 1's numbers.
Native's own study-level /anonymize of the same study on the same Orthanc is timed for reference,
at its default and, where the setting exists (1.11.3+), with `JobsEngineThreadsCount.ResourceModification`
at 2, 4 and 2x cores (bench/run.py's settings): the report gives the plugin's runs against both
native's default and native's best.

The engine runs under the Python and pydicom Orthanc's plugin uses: /usr/bin/python3 with
Debian's pydicom on the host (ORTHANC_RUNTIME=host), the chroot's python3 with
ORTHANC_RUNTIME=chroot (the plugin and this script are copied into the chroot).

    .venv/bin/python bench/profile_engine.py [--instances 400] [--python /usr/bin/python3]
"""
from __future__ import annotations

import argparse
import cProfile
import http.client
import io
import json
import os
import pstats
import shutil
import statistics
import subprocess
import sys
import threading
import time
from collections import defaultdict
from pathlib import Path
from urllib.parse import urlsplit

BENCH = Path(__file__).resolve().parent
REPO = BENCH.parent
PROFILE_KEY = "profile-key-0123456789abcdef0123456789abcdef"
#: A user metadata standing for "AnonymizedFrom", which only a plugin may write on 1.12.
ORIGIN_STAND_IN = "ProfiledAnonymizedFrom"


# --- the child: the engine, driven over HTTP (stdlib and pydicom only) -----------------------
class HttpOrthanc:
    """Stands in for the `orthanc` module the plugin receives: its built-in REST calls
    (`RestApiGet`, `RestApiPost`...) and its file read (`GetDicomForInstance`) go to a plain
    Orthanc over HTTP, so the plugin's own `adapter.RestPort` serves the engine exactly as
    inside Orthanc. One keep-alive connection per thread."""

    class OrthancException(Exception):
        """As orthanc-python raises it: args (error code, message)."""

    def __init__(self, url: str, configuration: dict, python_plugin_version: str) -> None:
        parts = urlsplit(url)
        self._origin_stand_in: bool | None = None  # known at the first write
        self._host, self._port = parts.hostname, parts.port
        self._local = threading.local()
        self._configuration = configuration
        self._python_plugin = json.dumps({"ID": "python", "Version": python_plugin_version}).encode()

    def _request(self, method: str, uri: str, body=None) -> bytes:
        if isinstance(body, str):
            body = body.encode("utf-8")
        for attempt in (0, 1):
            connection = getattr(self._local, "connection", None)
            if connection is None:
                connection = self._local.connection = http.client.HTTPConnection(self._host, self._port, timeout=600)
            try:
                connection.request(method, uri, body=body)
                answer = connection.getresponse()
                data = answer.read()
                break
            except (http.client.HTTPException, ConnectionError):
                connection.close()
                self._local.connection = None
                if attempt:
                    raise
        if answer.status != 200:
            try:
                error = json.loads(data)
                code, message = int(error.get("OrthancStatus", -1)), str(error.get("Message", ""))
            except ValueError:  # no JSON body (a metadata that is not there): the code by the status
                code, message = {400: 8, 404: 7}.get(answer.status, -1), data.decode(errors="replace")
            raise self.OrthancException(code, message or f"HTTP {answer.status}")
        return data

    def RestApiGet(self, uri: str) -> bytes:
        if uri == "/plugins/python":  # the plain Orthanc has none: answer as the plugin's Orthanc would
            return self._python_plugin
        return self._request("GET", uri)

    def GetDicomForInstance(self, instance_id: str) -> bytes:
        """The SDK's file read, over the REST route that gives the same bytes and errors."""
        return self._request("GET", f"/instances/{instance_id}/file")

    def RestApiPost(self, uri: str, body) -> bytes:
        return self._request("POST", uri, body)

    def RestApiPut(self, uri: str, body) -> bytes:
        # Orthanc 1.12 lets a plugin, not an HTTP client, write the reserved "AnonymizedFrom": the
        # same write goes to a user metadata the profiled Orthanc declares, at the same cost.
        # Orthanc 1.10 refuses it to a plugin too, with a Bad Request.
        if uri.endswith("/metadata/AnonymizedFrom"):
            if self._origin_stand_in is None:
                version = json.loads(self._request("GET", "/system"))["Version"]
                self._origin_stand_in = tuple(map(int, version.split(".")[:2])) >= (1, 12)
            if not self._origin_stand_in:
                raise self.OrthancException(8, "Bad request")
            uri = uri[:-len("AnonymizedFrom")] + ORIGIN_STAND_IN
        return self._request("PUT", uri, body)

    def RestApiDelete(self, uri: str) -> None:
        self._request("DELETE", uri)

    def GetConfiguration(self) -> str:
        return json.dumps(self._configuration)

    def GetConfigurationPath(self) -> str:
        return ""  # the working folder: the paths in the configuration are absolute

    def LogInfo(self, message: str) -> None:
        pass

    LogWarning = LogError = LogInfo

    def GenerateRestApiAuthorizationToken(self) -> str:
        """Asked for only under "CheckRevisions", which the profiled Orthanc does not set."""
        return ""


class UnsharedChecks:
    """The project key's check value, kept in this process only: the profile's key is fixed."""

    def record(self, project: str, check: str, replace: bool = False) -> str:
        return check


class TimedPort:
    """Forwards to the engine's port and adds up the wall time of each kind of call (summed over
    threads, so with several workers the sum can exceed the wall time)."""

    def __init__(self, port) -> None:
        self._port = port
        self._lock = threading.Lock()
        self.reset()

    def reset(self) -> None:
        self.seconds: dict[str, float] = defaultdict(float)
        self.calls: dict[str, int] = defaultdict(int)
        self.bytes: dict[str, int] = defaultdict(int)

    def __getattr__(self, name: str):
        method = getattr(self._port, name)
        if not callable(method):
            return method

        def timed(*args, **kwargs):
            start = time.perf_counter()
            try:
                result = method(*args, **kwargs)
            finally:
                elapsed = time.perf_counter() - start
                with self._lock:
                    self.seconds[name] += elapsed
                    self.calls[name] += 1
            if isinstance(result, bytes):
                with self._lock:
                    self.bytes[name] += len(result)
            return result
        return timed


def _entries(stats: pstats.Stats, filename_end: str, function: str):
    return [(key, value) for key, value in stats.stats.items()
            if key[0].replace("\\", "/").endswith(filename_end) and key[2] == function]


def _cumulative(stats: pstats.Stats, filename_end: str, function: str) -> float:
    return sum(value[3] for _, value in _entries(stats, filename_end, function))


def _cumulative_from(stats: pstats.Stats, filename_end: str, function: str, caller_end: str,
                     caller: str) -> float:
    """Cumulative time of a function in the calls made by one caller."""
    total = 0.0
    for _, value in _entries(stats, filename_end, function):
        for (file, _, name), edge in value[4].items():
            if file.replace("\\", "/").endswith(caller_end) and name == caller:
                total += edge[3]
    return total


def _self_time_by_package(stats: pstats.Stats) -> dict[str, float]:
    groups: dict[str, float] = defaultdict(float)
    for (file, _, name), value in stats.stats.items():
        path = file.replace("\\", "/")
        if "/pydicom/" in path:
            group = "pydicom"
        elif "/consistent_anon/" in path:
            group = "consistent_anon (plugin)"
        elif path.endswith("profile_engine.py"):
            group = "HTTP port (this script)"
        elif path == "~":
            group = "C built-ins: " + ("socket/HTTP I/O" if any(
                s in name for s in ("recv", "send", "sendall", "readinto", "makefile", "connect")) else "other")
        elif "/http/" in path or "/socket" in path or "/email/" in path:
            group = "stdlib http.client/socket"
        elif "/json/" in path:
            group = "stdlib json"
        else:
            group = "other Python"
        groups[group] += value[2]
    return dict(sorted(groups.items(), key=lambda item: -item[1]))


def child(args: argparse.Namespace) -> None:
    sys.path.insert(0, args.plugin_dir)
    import pydicom
    from consistent_anon.orthanc.rest_port import RestPort
    from consistent_anon.identity.config import parse_config
    from consistent_anon.pipeline.engine import Anonymizer
    from consistent_anon.identity.keys import KeyStore
    from consistent_anon.pipeline.options import parse_request

    configuration = json.loads(Path(args.configuration).read_text())
    configuration["ConsistentAnonymization"] = {"Key": PROFILE_KEY}
    orthanc = HttpOrthanc(args.url, configuration, args.python_plugin_version)
    real_port = RestPort(orthanc, configuration)
    port = TimedPort(real_port)
    anonymizer = Anonymizer(port, KeyStore(parse_config(configuration), lambda: b"", lambda: UnsharedChecks()))
    request = parse_request(b"{}")
    workers = real_port.workers()
    instances = json.loads(orthanc.RestApiGet(f"/studies/{args.study}/instances"))
    anonymizer.anonymize_instance(instances[0]["ID"], request)  # warm-up: imports, native markers

    def run() -> tuple[float, dict]:
        start = time.perf_counter()
        answer = anonymizer.anonymize_resource("studies", args.study, request)
        elapsed = time.perf_counter() - start
        orthanc.RestApiDelete(f"/patients/{answer['PatientID']}")
        return elapsed, answer

    def set_workers(count: int) -> None:
        if hasattr(real_port, "workers"):
            real_port.workers = lambda: count

    # Run 1, one instance at a time: the clean split of wall time between built-in calls and
    # Python. With several workers (orthanc-python 4.3+ with AllowThreads), run 1b: the wall
    # time the plugin would really take.
    set_workers(1)
    port.reset()
    cpu = time.process_time()
    wall, answer = run()
    timed = {"wall_s": wall, "instances": answer["InstancesCount"], "workers": 1,
             "port_seconds": dict(port.seconds), "port_calls": dict(port.calls),
             "port_megabytes": {k: v / 1e6 for k, v in port.bytes.items()},
             "process_cpu_s": time.process_time() - cpu}
    timed["port_total_s"] = sum(port.seconds.values())
    timed["python_s"] = wall - timed["port_total_s"]
    parallel = None
    if workers > 1:
        set_workers(workers)
        port.reset()
        cpu = time.process_time()
        parallel_wall, _ = run()
        parallel = {"workers": workers, "wall_s": parallel_wall, "process_cpu_s": time.process_time() - cpu,
                    "port_seconds_summed_over_threads": dict(port.seconds)}
    set_workers(1)  # cProfile sees only its own thread: the profiled run does one instance at a time

    profiler = cProfile.Profile()
    port.reset()
    profiler.enable()
    start = time.perf_counter()
    answer = anonymizer.anonymize_resource("studies", args.study, request)
    profiled_wall = time.perf_counter() - start
    profiler.disable()
    orthanc.RestApiDelete(f"/patients/{answer['PatientID']}")

    stats = pstats.Stats(profiler)
    port_cumulative = {name: _cumulative(stats, "rest_port.py", name) for name in port.seconds}
    port_total = sum(port_cumulative.values())
    python_total = profiled_wall - port_total
    parse_source = _cumulative_from(stats, "filereader.py", "read_header", "rest_port.py", "header")
    parse_output = _cumulative_from(stats, "filereader.py", "read_header", "output_check.py", "inspect_output")
    parse_all = _cumulative(stats, "filereader.py", "read_header")
    plan = _cumulative(stats, "identities.py", "plan_instance")
    check = _cumulative(stats, "output_check.py", "inspect_output")
    pseudonym = sum(_cumulative(stats, "pseudonyms.py", name) for name in ("uid", "patient_id", "patient_name"))
    walk_in_plan = _cumulative_from(stats, "scanning.py", "instance_uids", "identities.py", "_plan_uids")
    python_parts = {
        "header read of the source file (filereader.read_header)": parse_source,
        "header read of the anonymized file (read_header in inspect_output)": parse_output,
        "other read_header (native markers...)": max(0.0, parse_all - parse_source - parse_output),
        "planning (plan_instance), excl. pseudonyms": max(0.0, plan - pseudonym),
        "  of which finding the UIDs (instance_uids)": walk_in_plan,
        "pseudonyms (HMAC-SHA256)": pseudonym,
        "output check (inspect_output), excl. its parse": max(0.0, check - parse_output),
    }
    python_parts["rest (engine loop, answers, bookkeeping)"] = max(
        0.0, python_total - sum(v for k, v in python_parts.items() if not k.startswith("  ")))

    text = io.StringIO()
    pstats.Stats(profiler, stream=text).sort_stats("cumulative").print_stats(30)
    top_cumulative = text.getvalue()
    text = io.StringIO()
    pstats.Stats(profiler, stream=text).sort_stats("tottime").print_stats(20)
    top_self = text.getvalue()

    report = {
        "python": sys.version.split()[0], "pydicom": pydicom.__version__,
        "orthanc": ".".join(map(str, real_port.version())), "plugin_dir": args.plugin_dir,
        "timed_run": timed, "parallel_run": parallel,
        "profiled_run": {"wall_s": profiled_wall, "port_cumulative_s": port_cumulative,
                         "port_total_s": port_total, "python_s": python_total,
                         "python_parts_s": python_parts,
                         "self_time_by_package_s": _self_time_by_package(stats)},
        "top_cumulative": top_cumulative, "top_self": top_self,
    }
    Path(args.out).write_text(json.dumps(report, indent=1))


# --- the parent: a plain Orthanc with the study, then the child ------------------------------
def python_plugin_version(root: Path | None) -> str:
    """orthanc-python's version where the plugin would run ("4.0" of Debian's "4.0-4")."""
    command = ["dpkg-query", "-W", "-f", "${Version}", "orthanc-python"]
    if root is not None:
        command = ["chroot", str(root), *command]
    try:
        text = subprocess.run(command, capture_output=True, text=True, timeout=30).stdout
    except OSError:
        return "0"
    return text.split(":")[-1].split("-")[0].split("+")[0] or "0"


def print_report(report: dict, native_runs: dict[str, list[float]]) -> None:
    timed, profiled = report["timed_run"], report["profiled_run"]
    n, wall = timed["instances"], timed["wall_s"]
    medians = {side: statistics.median(runs) for side, runs in native_runs.items()}
    native = medians["native"]
    best_side = min(medians, key=medians.get)
    best = medians[best_side]
    print(f"\nEngine under Python {report['python']}, pydicom {report['pydicom']}, "
          f"against Orthanc {report['orthanc']} over loopback HTTP; {n} instances, "
          f"plugin from {report.get('plugin_source', '?')}.")
    print("Native study-level /anonymize, same study and Orthanc: "
          + ", ".join(f"{side} {value:.2f} s" for side, value in medians.items())
          + f" (medians of {len(native_runs['native'])}); native best: {best_side}, "
          f"{1000 * best / n:.2f} ms per instance")
    print(f"\nRun 1 (timed, no profiler, one worker): {wall:.2f} s ({1000 * wall / n:.2f} ms per instance, "
          f"{wall / native:.2f}× native default, {wall / best:.2f}× native best)")
    print("| part | seconds | share | calls | ms per call | MB moved |")
    print("|---|---|---|---|---|---|")
    for name, seconds in sorted(timed["port_seconds"].items(), key=lambda item: -item[1]):
        calls = timed["port_calls"][name]
        moved = timed["port_megabytes"].get(name)
        print(f"| built-in: {name} | {seconds:.2f} | {seconds / wall:.0%} | {calls} | "
              f"{1000 * seconds / calls:.2f} | {'' if moved is None else f'{moved:.0f}'} |")
    print(f"| **all built-in calls (HTTP/native)** | {timed['port_total_s']:.2f} | "
          f"{timed['port_total_s'] / wall:.0%} | | | |")
    print(f"| **Python (engine: header reading, planning, checking)** | {timed['python_s']:.2f} | {timed['python_s'] / wall:.0%} | | | |")
    parallel = report.get("parallel_run")
    if parallel:
        print(f"\nRun 1b, {parallel['workers']} workers (as the plugin runs on this Orthanc): "
              f"{parallel['wall_s']:.2f} s ({parallel['wall_s'] / native:.2f}× native default, "
              f"{parallel['wall_s'] / best:.2f}× native best, "
              f"{wall / parallel['wall_s']:.2f}× faster than one worker); built-in calls summed over threads "
              f"{sum(parallel['port_seconds_summed_over_threads'].values()):.2f} s")

    python = profiled["python_s"]
    print(f"\nRun 2 (cProfile, {profiled['wall_s']:.2f} s wall; Python {python:.2f} s, "
          f"built-in calls {profiled['port_total_s']:.2f} s): how the Python time divides")
    print("| Python part | seconds (profiled) | share of Python |")
    print("|---|---|---|")
    for name, seconds in profiled["python_parts_s"].items():
        print(f"| {name} | {seconds:.2f} | {seconds / python:.0%} |")
    print("\nSelf time by package (profiled run, seconds):")
    for name, seconds in profiled["self_time_by_package_s"].items():
        print(f"  {name:40s} {seconds:7.2f}")
    print("\nTop cumulative entries (profiled run):")
    lines = report["top_cumulative"].splitlines()
    start = next((i for i, line in enumerate(lines) if "ncalls" in line), 0)
    print("\n".join(lines[start:start + 32]))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--instances", type=int, default=400)
    parser.add_argument("--python", default=None, help="the Python that runs the engine (default: Orthanc's)")
    parser.add_argument("--native-runs", type=int, default=3, help="native runs per ResourceModification setting")
    parser.add_argument("--json", default=None, help="also write the report here")
    parser.add_argument("--plugin-dir", default=str(REPO / "plugin"),
                        help="the plugin to profile (default: this working tree's plugin/)")
    parser.add_argument("--child", action="store_true", help=argparse.SUPPRESS)
    parser.add_argument("--url", help=argparse.SUPPRESS)
    parser.add_argument("--study", help=argparse.SUPPRESS)
    parser.add_argument("--configuration", help=argparse.SUPPRESS)
    parser.add_argument("--python-plugin-version", help=argparse.SUPPRESS)
    parser.add_argument("--out", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.child:
        child(args)
        return

    sys.path.insert(0, str(BENCH))
    sys.path.insert(0, str(REPO / "tests"))
    from orthanc_server import RUNTIME
    from run import Node, hosts_problem, make_study, native_settings, native_side, upload, use_native_setting

    problem = hosts_problem()  # as bench/run.py
    if problem:
        print("WARNING: " + problem)
    node = Node("native", plugin=False)
    node.server.configure({"UserMetadata": {ORIGIN_STAND_IN: 4242}})
    node.start()
    try:
        study = upload(node, make_study(args.instances, f"P-{os.getpid()}"))
        # Native at its default and at each ResourceModification setting (1.11.3+), as bench/run.py;
        # the engine's Orthanc then keeps the best one (instance-level calls use no job threads).
        warm_up = node.get_json(f"/studies/{study}/instances")[0]["ID"]
        native_runs: dict[str, list[float]] = {}
        for threads in native_settings(node.get_json("/system")["Version"]):
            use_native_setting(node, threads, warm_up)
            for _ in range(args.native_runs):
                elapsed, answer = node.post(f"/studies/{study}/anonymize", {})
                native_runs.setdefault(native_side(threads), []).append(elapsed)
                node.delete(f"/patients/{answer.json()['PatientID']}")

        workdir = node.server.workdir  # inside the chroot's /tmp with ORTHANC_RUNTIME=chroot
        shutil.copytree(args.plugin_dir, workdir / "plugin", ignore=shutil.ignore_patterns("__pycache__"))
        shutil.copy(Path(__file__), workdir / "profile_engine.py")
        (workdir / "plugin-configuration.json").write_text((REPO / "orthanc.json").read_text())
        out = workdir / "profile.json"
        child_args = ["--child", "--url", node.url, "--study", study,
                      "--plugin-dir", RUNTIME.inside(workdir / "plugin"), "--out", RUNTIME.inside(out),
                      "--configuration", RUNTIME.inside(workdir / "plugin-configuration.json"),
                      "--python-plugin-version", python_plugin_version(RUNTIME.root)]
        script = RUNTIME.inside(workdir / "profile_engine.py")
        if args.python:
            command = [args.python, str(workdir / "profile_engine.py"), *child_args]
        elif RUNTIME.root is not None:
            command = ["chroot", str(RUNTIME.root), "python3", script, *child_args]
        else:
            command = ["/usr/bin/python3", script, *child_args]
        subprocess.run(command, check=True, env={**os.environ, "PYTHONDONTWRITEBYTECODE": "1",
                                                 "PYTHONWARNINGS": "ignore"})
        report = json.loads(out.read_text())
        report["native_study_runs_s"] = native_runs
        report["plugin_source"] = args.plugin_dir
        print_report(report, native_runs)
        if args.json:
            Path(args.json).write_text(json.dumps(report, indent=1))
    finally:
        node.stop()


if __name__ == "__main__":
    main()
