"""Time the real command of source trees side by side (A/B), end to end, against a plain pool.

Each tree is a checkout of mwr-dask (e.g. ``git worktree add /tmp/before <commit>``); its
command runs as a user runs it, ``python -m mwr_dask generate-noise OUT N CUBE --mode M``
(defaults: a fresh seed, the dashboard on, one worker per usable core), with
``PYTHONPATH=<tree>`` and its output discarded. With ``--reference`` the plain process pool of
reference generators (benchmarks/reference_pool.py, a subprocess too, one process per usable
core) runs beside them and is the base of the ratios; else the first tree is. The variants of
a repeat run one after another in an order that rotates between repeats, so that the load of
the machine falls on every variant alike. Prints the load, the median wall time of each
variant and mode, and its ratio to the base: the median of the per-repeat ratios, and each.

    python3 benchmarks/bench_ab.py . --reference --n 1000 --cube 64 --repeats 7
    python3 benchmarks/bench_ab.py /tmp/before /work/main --n 1000 --cube 64 --repeats 5
"""

from __future__ import annotations

import argparse
import os
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from statistics import median

REFERENCE = Path(__file__).with_name("reference_pool.py")


def command(variant: str, out: Path, n: int, cube: int, mode: int) -> list[str]:
    """The command line of ``variant``: a tree's mwr-dask, or the reference pool."""
    size = [str(out), str(n), str(cube), "--mode", str(mode)]
    if variant == "reference":
        return [sys.executable, str(REFERENCE), *size, "--ncpus", str(len(os.sched_getaffinity(0)))]
    return [sys.executable, "-m", "mwr_dask", "generate-noise", *size]


def run_once(variant: str, out: Path, n: int, cube: int, mode: int) -> float:
    """Wall time of one run of ``variant`` (a new folder each time, removed untimed)."""
    shutil.rmtree(out, ignore_errors=True)
    env = dict(os.environ)
    if variant != "reference":
        env["PYTHONPATH"] = str(Path(variant).resolve())
    t0 = time.perf_counter()
    subprocess.run(command(variant, out, n, cube, mode), env=env, check=True,
                   cwd=tempfile.gettempdir(), stdout=subprocess.DEVNULL)  # fmt: skip
    seconds = time.perf_counter() - t0
    assert len(os.listdir(out)) == n
    shutil.rmtree(out, ignore_errors=True)
    return seconds


def main() -> None:
    """Run the variants in rotating order and print the table."""
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument(
        "trees", nargs="+", help="source trees; the first is the base without --reference"
    )
    ap.add_argument("--reference", action="store_true", help="add the plain pool, as the base")
    ap.add_argument("--n", type=int, default=1000)
    ap.add_argument("--cube", type=int, default=64)
    ap.add_argument("--repeats", type=int, default=5)
    ap.add_argument("--modes", type=int, nargs="+", default=[2, 1])
    args = ap.parse_args()
    variants = (["reference"] if args.reference else []) + args.trees
    work = Path(tempfile.mkdtemp(prefix="mwr-ab-"))
    print(f"load before: {os.getloadavg()}")
    times: dict[tuple[str, int], list[float]] = {(v, m): [] for v in variants for m in args.modes}
    for r in range(args.repeats):
        for mode in args.modes:
            k = r % len(variants)
            for variant in variants[k:] + variants[:k]:
                times[variant, mode].append(
                    run_once(variant, work / "out", args.n, args.cube, mode)
                )
        print(f"repeat {r + 1}: load {os.getloadavg()[0]:.1f}", flush=True)
    print(f"load after: {os.getloadavg()}")
    base = variants[0]
    for mode in args.modes:
        print(f"mode {mode}, {args.n} x {args.cube}^3, {len(os.sched_getaffinity(0))} cores:")
        for variant in variants:
            ts = times[variant, mode]
            ratios = [t / b for t, b in zip(ts, times[base, mode], strict=True)]
            print(f"  {variant:40s} median {median(ts):6.2f} s  min {min(ts):6.2f} s"
                  f"  / {base}: median {median(ratios):.3f}"
                  f" (per repeat {', '.join(f'{x:.2f}' for x in ratios)})")  # fmt: skip
    shutil.rmtree(work, ignore_errors=True)


if __name__ == "__main__":
    main()
