#!/usr/bin/env python3
"""What a large subject table costs: load time and memory of a 1,000,000-row table, the cost
of a change check, and what a request pays when the file changes.

A table of --rows rows (PatientID, IssuerOfPatientID on every other row, SubjectID, SubjectName
on every other row) is written in a temporary folder, then:
- load: `SubjectTable(path)` as Orthanc's start does it (read, UTF-8 check, parse, check every
  row): seconds (wall and CPU: on a busy machine the CPU time is the one to compare), the
  resident memory it adds (RSS after minus before, the table kept), and the peak's growth
  during the load;
- check: one background check of an unchanged file (read and hash: no parse);
- change: the file rewritten with one more row; the lookup after it (which starts the
  background reload and answers from the table in use), then the reload itself until the new
  row is found;
- lookups per second in the table as one call sees it (`pinned`).
Run it under the Python the plugin runs under (on the host, /usr/bin/python3):

    /usr/bin/python3 bench/subjects_table.py [--rows 1000000]
"""
from __future__ import annotations

import argparse
import gc
import json
import os
import resource
import sys
import tempfile
import threading
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent / "plugin"))

from consistent_anon.identity.subjects import SubjectTable  # noqa: E402


def rss_bytes() -> int:
    """The process's resident memory now."""
    with open("/proc/self/statm") as statm:
        return int(statm.read().split()[1]) * os.sysconf("SC_PAGE_SIZE")


def peak_bytes() -> int:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024


def write_table(path: Path, rows: int, extra: int = 0) -> None:
    with open(path, "w", encoding="utf-8", newline="") as file:
        file.write("PatientID,IssuerOfPatientID,SubjectID,SubjectName\r\n")
        for n in range(rows + extra):
            issuer = "HOSPITAL-A" if n % 2 else ""
            name = f"Subject^{n:07d}" if n % 2 == 0 else ""
            file.write(f"MRN-{n:010d},{issuer},TRIAL7-{n:07d},{name}\r\n")


class Background:
    """The table's background runner, counted: the reload runs in a thread as in the plugin."""

    def __init__(self) -> None:
        self.threads: list[threading.Thread] = []

    def __call__(self, task) -> None:
        thread = threading.Thread(target=task, daemon=True)
        self.threads.append(thread)
        thread.start()

    def join(self) -> None:
        for thread in self.threads:
            thread.join()
        self.threads.clear()


def measure(rows: int) -> dict:
    with tempfile.TemporaryDirectory() as folder:
        path = Path(folder) / "subjects.csv"
        write_table(path, rows)
        gc.collect()
        rss, peak = rss_bytes(), peak_bytes()
        background = Background()
        start, cpu = time.perf_counter(), time.process_time()
        table = SubjectTable(path, interval=0, run=background)
        load, load_cpu = time.perf_counter() - start, time.process_time() - cpu
        gc.collect()
        report = {"rows": rows, "file_mb": round(path.stat().st_size / 1e6, 1), "python": sys.version.split()[0],
                  "load_s": round(load, 2), "load_cpu_s": round(load_cpu, 2),
                  "rss_added_mb": round((rss_bytes() - rss) / 1e6, 1),
                  "peak_added_mb": round(max(0, peak_bytes() - peak) / 1e6, 1)}
        start = time.perf_counter()
        table.lookup("MRN-0000000000")
        background.join()  # an unchanged file: read and hashed, not parsed
        report["unchanged_check_s"] = round(time.perf_counter() - start, 3)
        write_table(path, rows, extra=1)
        last = f"MRN-{rows:010d}"
        start = time.perf_counter()
        found = table.lookup(last, "HOSPITAL-A" if rows % 2 else "")
        report["lookup_after_change_ms"] = round((time.perf_counter() - start) * 1000, 3)
        report["lookup_after_change_served_old_table"] = found is None
        background.join()
        report["background_reload_s"] = round(time.perf_counter() - start, 2)
        pinned = table.pinned()  # as one call sees it
        background.join()
        patients = [f"MRN-{n:010d}" for n in range(0, rows, max(1, rows // 100_000))]
        start = time.perf_counter()
        for patient in patients:
            pinned.lookup(patient)
        report["lookups_per_s"] = round(len(patients) / (time.perf_counter() - start))
        return report


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rows", type=int, default=1_000_000)
    print(json.dumps(measure(parser.parse_args().rows), indent=1))


if __name__ == "__main__":
    main()
