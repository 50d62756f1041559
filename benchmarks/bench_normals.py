"""Per-volume cost of the CPU-independent Gaussian numbers, side by side with a baseline.

Loads ``mwr_dask/generators.py`` of a baseline git revision (``--baseline``, default
``9cb2944``: Box-Muller with numpy's float32 log, sin and cos and an OpenBLAS dot in the
normalisation) next to the working tree's, and times, in one process, interleaved volume
by volume (the order of the two alternates), for each (mode, cube):

- ``volume``: one whole volume, ``generator(volume_rng(seed, i))`` (draws, transform,
  normalisation);
- ``normals``: ``standard_normal`` alone, for as many numbers as that volume draws.

Times are CPU time of the thread (``time.thread_time``), so that other processes that take
the cores (a shared machine) lengthen them less than they would wall time. Prints medians and
the median of the per-pair ratios (new / baseline), and ``uptime`` before and after. One
thread for BLAS and FFT, as in the Dask workers. See docs/benchmarks.md.

    python3 benchmarks/bench_normals.py --volumes 200 --repeats 3

With ``--sizes 96,97,...`` it prints instead the mode-2 time per volume of each cube size
(interleaved), for the cost of sizes whose FFT length has a large prime factor.
"""

from __future__ import annotations

import os

os.environ.setdefault("OMP_NUM_THREADS", "1")
os.environ.setdefault("OPENBLAS_NUM_THREADS", "1")

import argparse
import importlib.util
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from statistics import median

import numpy as np

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

import scipy.fft  # noqa: E402

from mwr_dask.noise import normals as new  # noqa: E402
from mwr_dask.noise.source import NoiseSource  # noqa: E402


def load_baseline(revision: str):
    """The module ``mwr_dask/generators.py`` as it was at ``revision``."""
    source = subprocess.run(
        ["git", "-C", str(ROOT), "show", f"{revision}:mwr_dask/generators.py"],
        capture_output=True,
        text=True,
        check=True,
    ).stdout
    path = Path(tempfile.mkdtemp()) / "generators_baseline.py"
    path.write_text(source)
    spec = importlib.util.spec_from_file_location("generators_baseline", path)
    module = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = module  # dataclasses look their module up there
    spec.loader.exec_module(module)
    return module


def draws_of(gen) -> int:
    """How many normal numbers one volume of ``gen`` draws."""
    return gen._bins * gen.n if hasattr(gen, "_bins") else 2 * gen._measured


def sizes_table(sizes: list[int], volumes: int) -> None:
    """Print the mode-2 time per volume of each cube size, interleaved, against the first."""
    gens = {n: NoiseSource(n, mode=2, seed=0).generator(0) for n in sizes}
    times = {n: [] for n in sizes}
    for gen in gens.values():
        gen(new.volume_rng(0, 0))
    for i in range(volumes):
        for n in sizes[i % len(sizes) :] + sizes[: i % len(sizes)]:
            t0 = time.thread_time()
            gens[n](new.volume_rng(1, i))
            times[n].append(time.thread_time() - t0)
    print("| cube | fast FFT length | mode 2, ms per volume | per voxel, against the first |")
    print("|---|---|---|---|")
    base = median(times[sizes[0]]) / sizes[0] ** 3
    for n in sizes:
        per = median(times[n])
        print(
            f"| {n}³ | {scipy.fft.next_fast_len(n) == n} | {1e3 * per:.1f} |"
            f" {per / n**3 / base:.2f} |"
        )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--baseline", default="9cb2944", help="git revision to compare with")
    parser.add_argument("--volumes", type=int, default=200, help="volumes per case and repeat")
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument(
        "--cases", default="2:64,1:64,2:128,1:128", help="mode:cube, comma-separated"
    )
    parser.add_argument(
        "--sizes", default="", help="instead: mode-2 cost of these cube sizes (comma-separated)"
    )
    args = parser.parse_args()
    if args.sizes:
        print("uptime:", subprocess.run(["uptime"], capture_output=True, text=True).stdout)
        sizes_table([int(v) for v in args.sizes.split(",")], args.volumes)
        print("uptime:", subprocess.run(["uptime"], capture_output=True, text=True).stdout)
        return
    old = load_baseline(args.baseline)
    cases = [tuple(int(v) for v in c.split(":")) for c in args.cases.split(",")]
    print("uptime:", subprocess.run(["uptime"], capture_output=True, text=True).stdout.strip())
    print(f"numpy {np.__version__}; baseline {args.baseline}; repeats {args.repeats}")
    print()
    print("| mode | cube | numbers per volume | step | baseline (ms) | new (ms) | new / baseline |")
    print("|---|---|---|---|---|---|---|")
    for mode, n in cases:
        count = max(20, args.volumes // 4) if n >= 100 else args.volumes
        gens = {
            "old": old.generator_for(mode, n, -60.0, 60.0, 2.0),
            "new": NoiseSource(n, mode=mode, seed=0).generator(0),
        }
        normals = {"old": old.standard_normal, "new": new.standard_normal}
        size = draws_of(gens["new"])
        buf = np.empty(size, dtype=np.float32)
        times = {(k, s): [] for k in ("old", "new") for s in ("volume", "normals")}
        for name in ("old", "new"):  # warm up: caches, scratch arrays
            gens[name](new.volume_rng(0, 0))
            normals[name](new.volume_rng(0, 0), buf)
        for rep in range(args.repeats):
            for i in range(count):
                order = ("old", "new") if (i + rep) % 2 == 0 else ("new", "old")
                for name in order:
                    rng = new.volume_rng(rep, i)
                    t0 = time.thread_time()
                    gens[name](rng)
                    times[name, "volume"].append(time.thread_time() - t0)
                for name in order:
                    rng = new.volume_rng(rep, i)
                    t0 = time.thread_time()
                    normals[name](rng, buf)
                    times[name, "normals"].append(time.thread_time() - t0)
        for step in ("volume", "normals"):
            a, b = times["old", step], times["new", step]
            ratio = median(y / x for x, y in zip(a, b, strict=True))
            print(
                f"| {mode} | {n}³ | {size:,} | {step} | {1e3 * median(a):.2f} | "
                f"{1e3 * median(b):.2f} | {ratio:.3f} |"
            )
    print()
    print("uptime:", subprocess.run(["uptime"], capture_output=True, text=True).stdout.strip())


if __name__ == "__main__":
    main()
