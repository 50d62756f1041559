"""Time mwr-dask end to end and per volume, side by side with a plain pool and the classic tools.

For each mode and each repeat, in an order that rotates between repeats (so that the load of
the machine falls on every variant alike):

- ``cli``: the real command, ``mwr-dask generate-noise`` in a subprocess: wall time including
  interpreter start, cluster start and shutdown;
- ``pipeline``: in this process, ``LocalCluster.client`` + ``pipeline.run`` (no dashboard): cluster
  start, run, and the total with shutdown;
- ``pool``: a plain ``ProcessPoolExecutor`` (fork) of ``--ncpus`` processes calling the same
  ``pipeline.write_one`` over the same partitions, pool start included;
- ``classic``: the approach of today's tools on the same kind of pool: mode 1 extrudes a 2-D
  white-noise image along the beam (z) for each tilt, rotates it with
  ``scipy.ndimage.rotate(order=1, reshape=False, axes=(0, 2))`` and averages; mode 2 filters
  real white noise with ``numpy.fft`` in complex128. Files written with ``mrcfile.new``. Timed
  on ``--classic-sample`` volumes and extrapolated linearly to ``--n``.

Then the single-core time per volume (median) of each generator, of the write, of
``write_one`` (both), and of the classic generators. See benchmarks/README.md.
"""

from __future__ import annotations

import os

# One thread for BLAS/FFT in this process and its forked pools, as in the Dask workers; set
# before numpy is imported.
os.environ.setdefault("OMP_NUM_THREADS", "1")
os.environ.setdefault("OPENBLAS_NUM_THREADS", "1")
os.environ.setdefault("MKL_NUM_THREADS", "1")

import argparse
import functools
import json
import multiprocessing
import platform
import re
import shutil
import subprocess
import sys
import tempfile
import time
from concurrent.futures import ProcessPoolExecutor
from pathlib import Path
from statistics import median

import mrcfile
import numpy as np
import scipy.ndimage

from mwr_dask.files.mrc import state_dir, write_volume
from mwr_dask.noise.generators import backprojection, wedge_filter
from mwr_dask.noise.geometry import measured_2d, tilt_angles
from mwr_dask.noise.normals import volume_rng
from mwr_dask.noise.source import NoiseSource, volume_name
from mwr_dask.parallel.clusters.local import LocalCluster
from mwr_dask.parallel.pipeline import partition_ranges, run, write_one

#: Targets of issue 2 (2 cores, 1000 volumes of 64^3): end to end (s) and per volume (ms).
TARGET_E2E = {1: 8.0, 2: 5.0}
TARGET_VOLUME = {1: 12.0, 2: 6.0}
TARGET_POOL_RATIO = 1.3


# --- the classic approach -------------------------------------------------------------------


def classic_backprojection(n: int, angles, rng: np.random.Generator) -> np.ndarray:
    """Mode 1 as IsoNet does it: rotate an extruded 2-D noise image per tilt, then average."""
    acc = np.zeros((n, n, n))
    for theta in angles:
        cube = np.repeat(rng.standard_normal((1, n, n)), n, axis=0)  # (z, y, x), constant in z
        acc += scipy.ndimage.rotate(cube, theta, axes=(0, 2), reshape=False, order=1)
    return (acc / len(angles)).astype(np.float32)


@functools.lru_cache(maxsize=4)
def _full_mask(n: int, lo: float, hi: float) -> np.ndarray:
    return np.broadcast_to(measured_2d(n, lo, hi)[:, None, :], (n, n, n))


def classic_wedge(n: int, lo: float, hi: float, rng: np.random.Generator) -> np.ndarray:
    """Mode 2 as IsoNet does it: real white noise through the wedge with numpy.fft (complex128)."""
    noise = rng.standard_normal((n, n, n))
    return np.real(np.fft.ifftn(np.fft.fftn(noise) * _full_mask(n, lo, hi))).astype(np.float32)


def classic_volume(params: NoiseSource, index: int) -> np.ndarray:
    """One classic volume of ``params``' geometry."""
    rng = np.random.default_rng((params.seed, index))
    p = params
    if p.mode == 1:
        return classic_backprojection(
            p.cubesize, tilt_angles(p.minangle, p.maxangle, p.anglestep), rng
        )
    return classic_wedge(p.cubesize, p.minangle, p.maxangle, rng)


def _classic_chunk(args) -> int:
    indices, params, folder = args
    for i in indices:
        with mrcfile.new(os.path.join(folder, volume_name(i)), overwrite=True) as mrc:
            mrc.set_data(classic_volume(params, i))
    return len(indices)


def _pool_chunk(args) -> tuple[int, float]:
    indices, params, folder, tmp = args
    seconds = [write_one(i, params, folder, tmp, True, False)["seconds"] for i in indices]
    return len(seconds), sum(seconds)


# --- end to end -----------------------------------------------------------------------------


def fresh(folder: Path) -> Path:
    """Empty ``folder`` and its state folder; return the temporaries folder."""
    for path in (folder, state_dir(folder)):
        shutil.rmtree(path, ignore_errors=True)
    tmp = state_dir(folder) / "tmp"
    tmp.mkdir(parents=True)
    folder.mkdir(parents=True)
    return tmp


def check(folder: Path, count: int) -> None:
    """Fail unless ``folder`` holds ``count`` volumes, the last one valid."""
    names = sorted(os.listdir(folder))
    if len(names) != count:
        raise SystemExit(f"expected {count} files in {folder}, found {len(names)}")
    with open(os.devnull, "w") as sink:
        if not mrcfile.validate(str(folder / names[-1]), print_file=sink):
            raise SystemExit(f"{names[-1]} is not a valid MRC file")


def cli_command() -> list[str]:
    """The console script of this interpreter, else ``python -m mwr_dask``."""
    script = Path(sys.executable).parent / "mwr-dask"
    return [str(script)] if script.exists() else [sys.executable, "-m", "mwr_dask"]


def time_cli(params: NoiseSource, n: int, ncpus: int, folder: Path, extra: list[str]) -> dict:
    fresh(folder)
    cmd = [
        *cli_command(),
        "generate-noise",
        str(folder),
        str(n),
        str(params.cubesize),
        f"--mode={params.mode}",
        f"--ncpus={ncpus}",
        f"--seed={params.seed}",
        *extra,
    ]
    t0 = time.perf_counter()
    proc = subprocess.run(cmd, capture_output=True, text=True)
    wall = time.perf_counter() - t0
    if proc.returncode != 0:
        raise SystemExit(f"{' '.join(cmd)} failed:\n{proc.stdout}\n{proc.stderr}")
    check(folder, n)
    done = re.search(r"in ([0-9.]+) s \(", proc.stdout)
    return {"total": wall, "reported": float(done.group(1)) if done else float("nan")}


def time_pipeline(params: NoiseSource, n: int, ncpus: int, folder: Path) -> dict:
    tmp = fresh(folder)
    backprojection.cache_clear()
    wedge_filter.cache_clear()
    t0 = time.perf_counter()
    with LocalCluster(ncpus, dashboard_address=None).client() as client:
        t1 = time.perf_counter()
        result = run(client, params, 0, n, folder, tmp, workers=ncpus)
        t2 = time.perf_counter()
    t3 = time.perf_counter()
    if result.written != n:
        raise SystemExit(f"pipeline wrote {result.written} of {n}: {result.errors}")
    check(folder, n)
    return {
        "start": t1 - t0,
        "run": t2 - t1,
        "total": t3 - t0,
    }


def time_pool(params: NoiseSource, n: int, ncpus: int, folder: Path) -> dict:
    tmp = fresh(folder)
    backprojection.cache_clear()  # each process builds its operator, as a Dask worker does
    wedge_filter.cache_clear()
    ranges = partition_ranges(0, n, ncpus, params.volume_bytes)
    jobs = [(r, params, str(folder), str(tmp)) for r in ranges]
    t0 = time.perf_counter()
    with ProcessPoolExecutor(ncpus, mp_context=multiprocessing.get_context("fork")) as pool:
        done = list(pool.map(_pool_chunk, jobs))
    wall = time.perf_counter() - t0
    check(folder, n)
    return {"total": wall, "ms_per_volume_in_worker": 1e3 * sum(s for _, s in done) / n}


def time_classic(params: NoiseSource, n: int, sample: int, ncpus: int, folder: Path) -> dict:
    fresh(folder)
    chunks = [list(range(k, sample, ncpus)) for k in range(ncpus)]
    t0 = time.perf_counter()
    with ProcessPoolExecutor(ncpus, mp_context=multiprocessing.get_context("fork")) as pool:
        list(pool.map(_classic_chunk, [(c, params, str(folder)) for c in chunks]))
    wall = time.perf_counter() - t0
    check(folder, sample)
    return {"sample": wall, "total": wall * n / sample}


# --- per volume, one core -------------------------------------------------------------------


def per_volume(params: dict[int, NoiseSource], count: int, classic_count: int, tmp: Path) -> dict:
    """Single-core (median, minimum) times in ms of each step, interleaved volume by volume."""
    steps = {}
    for mode, p in params.items():
        g = p.generator(0)
        g(volume_rng(p.seed, 0))  # build the operator, warm the scratch
        steps[f"generate mode {mode}"] = lambda i, g=g, p=p: g(volume_rng(p.seed, i))
    any_p = next(iter(params.values()))
    volume = NoiseSource(any_p.cubesize, mode=2, seed=0)[0]
    labels = any_p.labels(0)
    # every file is new, as in a run: renaming over an existing file costs ~1 ms more on ext4
    steps["write"] = lambda i: write_volume(
        tmp / "w" / volume_name(i), volume, 1.0, labels, tmp / "t", fsync=False
    )
    for mode, p in params.items():
        folder = tmp / f"m{mode}"
        steps[f"write_one mode {mode}"] = lambda i, p=p, f=folder: write_one(
            i, p, str(f), str(tmp / "t"), False, False
        )
    for sub in ("t", "w", *(f"m{mode}" for mode in params)):
        (tmp / sub).mkdir(parents=True, exist_ok=True)
    times = {k: [] for k in steps}
    for i in range(count):
        for name, step in steps.items():
            t0 = time.perf_counter()
            step(i)
            times[name].append(time.perf_counter() - t0)
    out = {name: (1e3 * median(ts), 1e3 * min(ts)) for name, ts in times.items()}
    for mode, p in params.items():
        k = classic_count if mode == 1 else max(classic_count, 20)
        ts = []
        for i in range(k):
            t0 = time.perf_counter()
            classic_volume(p, i)
            ts.append(time.perf_counter() - t0)
        out[f"classic mode {mode}"] = (1e3 * median(ts), 1e3 * min(ts))
    return out


# --- report ---------------------------------------------------------------------------------


def load() -> str:
    try:
        return subprocess.run(["uptime"], capture_output=True, text=True).stdout.strip()
    except OSError:
        return "load average: " + ", ".join(f"{x:.2f}" for x in os.getloadavg())


def machine() -> str:
    model = platform.processor()
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                model = line.split(":", 1)[1].strip()
                break
    except OSError:
        pass
    import dask
    import distributed
    import scipy

    return (
        f"{len(os.sched_getaffinity(0))} cores ({model}); Python {platform.python_version()},"
        f" numpy {np.__version__}, scipy {scipy.__version__}, dask {dask.__version__},"
        f" distributed {distributed.__version__}, mrcfile {mrcfile.__version__}"
    )


def fmt(x: float, digits: int | None = None) -> str:
    """``x`` with ``digits`` decimals; by default 2 below 10, 1 below 100, else none."""
    if x != x:
        return "n/a"
    if digits is None:
        digits = 2 if abs(x) < 10 else 1 if abs(x) < 100 else 0
    return f"{x:.{digits}f}"


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--n", type=int, default=1000, help="volumes per run")
    ap.add_argument("--cube", type=int, default=64, help="cube side, voxels")
    ap.add_argument("--ncpus", type=int, default=2, help="worker processes")
    ap.add_argument("--repeats", type=int, default=3, help="end-to-end repeats")
    ap.add_argument("--classic-sample", type=int, default=20, help="classic volumes timed")
    ap.add_argument("--per-volume", type=int, default=200, help="volumes per single-core median")
    ap.add_argument("--classic-single", type=int, default=5, help="classic mode-1 volumes, 1 core")
    ap.add_argument("--modes", type=int, nargs="+", default=[2, 1], choices=[1, 2])
    ap.add_argument("--cli-extra", default="", help="extra options for the CLI, one string")
    ap.add_argument("--workdir", type=Path, help="scratch folder (default: a new one in /tmp)")
    ap.add_argument("--json", type=Path, help="also write the raw results here")
    args = ap.parse_args()

    work = Path(tempfile.mkdtemp(prefix="mwr-bench-", dir=args.workdir)).absolute()
    params = {m: NoiseSource(cubesize=args.cube, mode=m, seed=1) for m in args.modes}
    print(f"# mwr-dask benchmark: {args.n} x {args.cube}^3, {args.ncpus} processes")
    print(f"machine: {machine()}")
    print(f"command: {' '.join([Path(sys.executable).name, *sys.argv])}")
    print(f"CLI: {' '.join(cli_command())} generate-noise DIR N CUBE --mode M --ncpus C --seed 1")
    print(f"load before: {load()}")
    variants = ["cli", "pipeline", "pool", "classic"]
    e2e = {m: {v: [] for v in variants} for m in args.modes}
    extra = args.cli_extra.split()
    try:
        for r in range(args.repeats):
            for mode in args.modes:
                p, folder = params[mode], work / f"m{mode}"
                order = variants[r % len(variants) :] + variants[: r % len(variants)]
                for v in order:
                    if v == "cli":
                        res = time_cli(p, args.n, args.ncpus, folder, extra)
                    elif v == "pipeline":
                        res = time_pipeline(p, args.n, args.ncpus, folder)
                    elif v == "pool":
                        res = time_pool(p, args.n, args.ncpus, folder)
                    else:
                        res = time_classic(p, args.n, args.classic_sample, args.ncpus, folder)
                    e2e[mode][v].append(res)
                    print(f"  repeat {r} mode {mode} {v:8s} " + json.dumps(res), flush=True)
            print(f"  load after repeat {r}: {load()}", flush=True)
        shutil.rmtree(work / "m1", ignore_errors=True)
        single = per_volume(params, args.per_volume, args.classic_single, work / "single")
    finally:
        shutil.rmtree(work, ignore_errors=True)
        for m in args.modes:
            shutil.rmtree(state_dir(work / f"m{m}"), ignore_errors=True)
    print(f"load after: {load()}\n")

    def med(mode, v, key="total"):
        return median(x[key] for x in e2e[mode][v])

    def ratio(mode, a, b, ka="total", kb="total"):  # median of the per-repeat ratios
        return median(x[ka] / y[kb] for x, y in zip(e2e[mode][a], e2e[mode][b], strict=True))

    print(
        f"## End to end, {args.n} x {args.cube}^3, {args.ncpus} processes: median of"
        f" {args.repeats} (seconds)\n"
    )
    print(
        "| mode | CLI (subprocess) | pipeline: cluster start | pipeline: run |"
        " pipeline: total | plain pool | pipeline / pool | CLI / pool |"
        f" classic (from {args.classic_sample}, extrapolated) | classic / CLI |"
    )
    print("|---|---|---|---|---|---|---|---|---|---|")
    for m in args.modes:
        print(
            f"| {m} | {fmt(med(m, 'cli'))} | {fmt(med(m, 'pipeline', 'start'))} |"
            f" {fmt(med(m, 'pipeline', 'run'))} | {fmt(med(m, 'pipeline'))} |"
            f" {fmt(med(m, 'pool'))} | {fmt(ratio(m, 'pipeline', 'pool'))} |"
            f" {fmt(ratio(m, 'cli', 'pool'))} | {fmt(med(m, 'classic'))} |"
            f" {fmt(ratio(m, 'classic', 'cli'))} |"
        )
    print("\nper volume inside the workers (generate + write, ms):")
    for m in args.modes:
        print(
            f"  mode {m}: pipeline {fmt(med(m, 'pipeline', 'ms_per_volume_in_worker'))},"
            f" pool {fmt(med(m, 'pool', 'ms_per_volume_in_worker'))}"
        )
    print(f"\n## Per volume, one core, {args.cube}^3 (ms)\n")
    print("| step | median | min |")
    print("|---|---|---|")
    for name, (mid, low) in single.items():
        print(f"| {name} | {fmt(mid)} | {fmt(low)} |")
    for m in args.modes:
        ours, classic = single[f"generate mode {m}"], single[f"classic mode {m}"]
        print(
            f"| classic / ours, mode {m} generator | {fmt(classic[0] / ours[0])}"
            f" | {fmt(classic[1] / ours[1])} |"
        )

    if (args.n, args.cube, args.ncpus) == (1000, 64, 2):
        print("\n## Targets of issue 2 (2 cores, 1000 x 64^3)\n")
        for m in args.modes:
            checks = [
                (f"mode {m} CLI end to end <= {TARGET_E2E[m]:g} s", med(m, "cli") <= TARGET_E2E[m]),
                (
                    f"mode {m} pipeline within {TARGET_POOL_RATIO}x of the pool",
                    ratio(m, "pipeline", "pool") <= TARGET_POOL_RATIO,
                ),
                (
                    f"mode {m} generator <= {TARGET_VOLUME[m]:g} ms per volume",
                    single[f"generate mode {m}"][0] <= TARGET_VOLUME[m],
                ),
            ]
            for text, ok in checks:
                print(f"- {text}: {'met' if ok else 'NOT met'}")
    if args.json:
        raw = {"args": {k: str(v) for k, v in vars(args).items()}, "e2e": e2e, "single": single}
        args.json.write_text(json.dumps(raw, indent=1))


if __name__ == "__main__":
    main()
