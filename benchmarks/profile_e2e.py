"""Where the end-to-end time of ``mwr-dask generate-noise`` goes, phase by phase.

Runs the command (a subprocess, as a user does) and, from its own output lines, times its
phases: the interpreter, imports and checks until the cluster is up (``Local cluster:``), the
worker check until the work starts (the first progress line), the work (to the last progress
line), and the shutdown and summary (to the exit). At each of these moments it reads the CPU
time (user + system) of the command's process and of its worker processes (psutil). The same
for the reference pool (benchmarks/reference_pool.py), which has only a start and an end.
Repeats alternate the two; medians are printed.

    python3 benchmarks/profile_e2e.py --n 1000 --cube 64 --mode 2 --repeats 5
"""

from __future__ import annotations

import argparse
import contextlib
import os
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from statistics import median

import psutil
from bench_ab import command

MARKS = (
    ("cluster up", "Local cluster:"),
    ("work starts", " 0/"),
    ("work ends", None),
    ("summary", "Done:"),
)


def cpu(proc: psutil.Process) -> tuple[float, float]:
    """CPU seconds of ``proc`` and of its descendants (those alive now)."""
    own = sum(proc.cpu_times()[:2])
    kids = 0.0
    for child in proc.children(recursive=True):
        with contextlib.suppress(psutil.Error):
            kids += sum(child.cpu_times()[:2])
    return own, kids


def profile(variant: str, out: Path, n: int, cube: int, mode: int) -> dict:
    """Run ``variant`` once; return {phase: (wall s, main CPU s, workers' CPU s)} at its marks."""
    shutil.rmtree(out, ignore_errors=True)
    argv = command(variant, out, n, cube, mode)
    env = {**os.environ, "PYTHONUNBUFFERED": "1"}
    if variant != "reference":
        env["PYTHONPATH"] = str(Path(variant).resolve())
    t0 = time.perf_counter()
    proc = subprocess.Popen(argv, env=env, stdout=subprocess.PIPE, text=True)
    ps = psutil.Process(proc.pid)
    marks = {}
    for line in proc.stdout:
        for name, prefix in MARKS:
            if name not in marks and prefix and prefix in line:
                marks[name] = (time.perf_counter() - t0, *cpu(ps))
        if f" {n}/{n} volumes" in line and "work ends" not in marks:
            marks["work ends"] = (time.perf_counter() - t0, *cpu(ps))
    # at the end: the CPU time of the command and of all its (waited-for) descendants
    _, status, usage = os.wait4(proc.pid, 0)
    wall = time.perf_counter() - t0
    marks["exit"] = (wall, usage.ru_utime + usage.ru_stime, 0.0)
    proc.returncode = os.waitstatus_to_exitcode(status)
    assert proc.returncode == 0 and len(os.listdir(out)) == n, proc.returncode
    shutil.rmtree(out, ignore_errors=True)
    return marks


def main() -> None:
    """Alternate the command and the reference; print the phases' medians."""
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--tree", default=str(Path(__file__).resolve().parents[1]))
    ap.add_argument("--n", type=int, default=1000)
    ap.add_argument("--cube", type=int, default=64)
    ap.add_argument("--mode", type=int, default=2)
    ap.add_argument("--repeats", type=int, default=5)
    args = ap.parse_args()
    work = Path(tempfile.mkdtemp(prefix="mwr-profile-"))
    runs: dict[str, list[dict]] = {args.tree: [], "reference": []}
    print(f"load before: {os.getloadavg()}")
    for r in range(args.repeats):
        for variant in list(runs)[r % 2 :] + list(runs)[: r % 2]:
            runs[variant].append(profile(variant, work / "out", args.n, args.cube, args.mode))
    print(f"load after: {os.getloadavg()}")
    for variant, results in runs.items():
        print(f"{variant}: mode {args.mode}, {args.n} x {args.cube}^3, medians of {args.repeats}")
        print("  mark          wall s   main CPU s   workers' CPU s")
        for name in [m for m, _ in MARKS] + ["exit"]:
            got = [r[name] for r in results if name in r]
            if got:
                w, c, k = (median(x[i] for x in got) for i in range(3))
                print(f"  {name:12s} {w:7.2f} {c:12.2f} {k:16.2f}")
        print("  (exit: wall, and the CPU of the command with all its waited-for children)")
    shutil.rmtree(work, ignore_errors=True)


if __name__ == "__main__":
    sys.exit(main())
