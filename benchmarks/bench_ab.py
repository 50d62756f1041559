"""Time the real command of two or more source trees side by side (A/B), end to end.

Each tree is a checkout of mwr-dask (e.g. ``git worktree add /tmp/before <commit>``); the
command ``python -m mwr_dask generate-noise OUT N CUBE --mode M --seed 1 --ncpus C
--no-dashboard`` runs with ``PYTHONPATH=<tree>``, in an order that rotates between repeats so
that the load of the machine falls on every tree alike. Prints the median wall time of each
tree and mode, and each tree's ratio to the first, per repeat and overall.

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


def run_once(tree: Path, out: Path, n: int, cube: int, mode: int, ncpus: int) -> float:
    """Wall time of one run of the command of ``tree`` (a new folder each time)."""
    shutil.rmtree(out, ignore_errors=True)
    env = {**os.environ, "PYTHONPATH": str(tree)}
    command = [sys.executable, "-m", "mwr_dask", "generate-noise", str(out), str(n), str(cube),
               "--mode", str(mode), "--seed", "1", "--ncpus", str(ncpus), "--no-dashboard",
               "--quiet"]  # fmt: skip
    t0 = time.perf_counter()
    subprocess.run(command, env=env, check=True, cwd=tempfile.gettempdir())
    seconds = time.perf_counter() - t0
    assert len(os.listdir(out)) == n
    return seconds


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("trees", type=Path, nargs="+", help="source trees; the first is the base")
    ap.add_argument("--n", type=int, default=1000)
    ap.add_argument("--cube", type=int, default=64)
    ap.add_argument("--ncpus", type=int, default=2)
    ap.add_argument("--repeats", type=int, default=5)
    ap.add_argument("--modes", type=int, nargs="+", default=[2, 1])
    args = ap.parse_args()
    work = Path(tempfile.mkdtemp(prefix="mwr-ab-"))
    print(f"load before: {os.getloadavg()}")
    times = {(t, m): [] for t in args.trees for m in args.modes}
    for r in range(args.repeats):
        for mode in args.modes:
            order = args.trees[r % len(args.trees) :] + args.trees[: r % len(args.trees)]
            for tree in order:
                times[tree, mode].append(
                    run_once(tree, work / "out", args.n, args.cube, mode, args.ncpus)
                )
    print(f"load after: {os.getloadavg()}")
    base = args.trees[0]
    for mode in args.modes:
        print(f"mode {mode}, {args.n} x {args.cube}^3, --ncpus {args.ncpus}:")
        for tree in args.trees:
            ts = times[tree, mode]
            ratios = [t / b for t, b in zip(ts, times[base, mode], strict=True)]
            print(f"  {tree!s:40s} median {median(ts):6.2f} s  min {min(ts):6.2f} s"
                  f"  ratio to base: median {median(ratios):.3f}"
                  f" (per repeat {', '.join(f'{x:.2f}' for x in ratios)})")  # fmt: skip
    shutil.rmtree(work, ignore_errors=True)


if __name__ == "__main__":
    main()
