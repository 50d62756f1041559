"""Time ``measure-noise`` on a pair of half tomograms, and one volume of measured vs mode-2 noise.

1. A synthetic pair of ``--shape`` (x y z, default 500 500 200) float32 MRC files is written to a
   scratch folder: a shared signal (smoothed random field, 10x the noise) plus independent
   anisotropic coloured noise in each half.
2. ``measure_noise`` is timed in this process (``--ncpus`` FFT threads), ``--repeats`` times,
   and the real command ``mwr-dask measure-noise`` once per repeat in a subprocess (interpreter
   start and imports included). The files were just written, so they are in the page cache: a
   cold read from disk adds about 400 MB / (disk speed).
3. Per volume, single-threaded, side by side and interleaved: ``SpectrumNoise`` (the measured
   spectrum) and ``WedgeFilter`` (mode 2) for each ``--cube``; medians over ``--volumes``.

``uptime`` is printed before and after. See docs/benchmarks.md.
"""

from __future__ import annotations

import os

os.environ.setdefault("OMP_NUM_THREADS", "1")

import argparse
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from statistics import median

import mrcfile
import numpy as np
import scipy.fft

from mwr_dask.files.mrc import write_spectrum
from mwr_dask.noise.generators import WedgeFilter
from mwr_dask.noise.measured import SpectrumNoise, measure_noise
from mwr_dask.noise.normals import volume_rng


def uptime() -> str:
    try:
        return subprocess.run(["uptime"], capture_output=True, text=True).stdout.strip()
    except OSError:
        return "uptime unavailable"


def coloured(shape, rng, sigmas, workers):
    """float32 Gaussian noise with a separable Gaussian spectrum (cycles/voxel) plus a floor."""
    white = rng.standard_normal(shape, dtype=np.float32)
    f = scipy.fft.rfftn(white, workers=workers)
    del white
    for axis, s in enumerate(sigmas):
        freq = (np.fft.rfftfreq if axis == 2 else np.fft.fftfreq)(shape[axis])
        g = np.sqrt(np.exp(-((freq / s) ** 2)) + 0.05).astype(np.float32)
        f *= g.reshape([-1 if a == axis else 1 for a in range(3)])
    out = scipy.fft.irfftn(f, s=shape, workers=workers)
    return out / out.std()


def write_pair(folder: Path, shape, workers: int) -> tuple[Path, Path]:
    rng = np.random.default_rng(0)
    signal = 10 * coloured(shape, rng, (0.02, 0.03, 0.03), workers)
    paths = []
    for name, seed in (("even", 1), ("odd", 2)):
        noise = coloured(shape, np.random.default_rng(seed), (0.12, 0.2, 0.3), workers)
        path = folder / f"{name}.mrc"
        with mrcfile.new(path, overwrite=True) as f:
            f.set_data((signal + noise).astype(np.float32))
            f.voxel_size = 5.4
        paths.append(path)
    return paths[0], paths[1]


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--shape", type=int, nargs=3, default=[500, 500, 200], metavar=("X", "Y", "Z"))
    p.add_argument("--cubesize", type=int, default=64)
    p.add_argument("--ncpus", type=int, default=2)
    p.add_argument("--repeats", type=int, default=3)
    p.add_argument("--cube", type=int, nargs="+", default=[64, 96])
    p.add_argument("--volumes", type=int, default=40)
    p.add_argument("--workdir", type=Path, default=None)
    args = p.parse_args()
    x, y, z = args.shape
    print(f"before: {uptime()}")
    work = Path(tempfile.mkdtemp(prefix="bench-measure-", dir=args.workdir))
    try:
        t0 = time.perf_counter()
        even, odd = write_pair(work, (z, y, x), args.ncpus)
        print(f"pair {x}x{y}x{z} written in {time.perf_counter() - t0:.1f} s")
        spectra = {}
        for r in range(args.repeats):
            t0 = time.perf_counter()
            result = measure_noise(even, odd, args.cubesize, workers=args.ncpus)
            t_lib = time.perf_counter() - t0
            out = work / "spec.mrc"
            t0 = time.perf_counter()
            proc = subprocess.run(
                [sys.executable, "-m", "mwr_dask", "measure-noise", str(even), str(odd),
                 str(out), "--cubesize", str(args.cubesize), "-q"],
                capture_output=True, text=True,
                env={**os.environ, "OMP_NUM_THREADS": str(args.ncpus)},
            )  # fmt: skip
            t_cli = time.perf_counter() - t0
            if proc.returncode:
                raise SystemExit(proc.stderr)
            print(
                f"repeat {r}: measure_noise {t_lib:.2f} s ({result.cubes} cubes of"
                f" {args.cubesize}^3 of {result.usable} usable); command {t_cli:.2f} s;"
                f" load {os.getloadavg()[0]:.2f}"
            )
        for n in args.cube:
            spec = np.fft.fftshift(
                np.exp(-(np.fft.fftfreq(n)[:, None, None] ** 2) / 0.01) + np.zeros((n, n, n)) + 0.1
            )
            path = work / f"s{n}.mrc"
            digest = write_spectrum(path, spec.astype(np.float32), ["bench"])
            spectra[n] = (SpectrumNoise(str(path), digest), WedgeFilter(n, -60.0, 60.0))
        for n, (measured, wedge) in spectra.items():
            times = {"measured": [], "mode 2": []}
            measured(volume_rng(0, 0))
            wedge(volume_rng(0, 0))  # warm: caches built
            for i in range(args.volumes):
                for name, gen in (("measured", measured), ("mode 2", wedge))[:: 1 - 2 * (i % 2)]:
                    t0 = time.perf_counter()
                    gen(volume_rng(1, i))
                    times[name].append(time.perf_counter() - t0)
            a, b = median(times["measured"]) * 1e3, median(times["mode 2"]) * 1e3
            print(
                f"{n}^3 per volume (median of {args.volumes}, one thread): measured {a:.1f} ms,"
                f" mode 2 {b:.1f} ms, ratio {a / b:.2f}"
            )
    finally:
        shutil.rmtree(work, ignore_errors=True)
    print(f"after: {uptime()}")


if __name__ == "__main__":
    main()
