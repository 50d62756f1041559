"""Reference for the end-to-end benchmark: a plain process pool of simple generators.

Writes volumes ``0 .. N-1`` of CUBE^3 voxels to OUT (which must not exist) with a
``ProcessPoolExecutor`` of NCPUS processes, each volume float32 noise of numpy's
``standard_normal`` (PCG64), normalised to mean 0 and standard deviation 1, written with
``mrcfile.new``:

- mode 2: white noise drawn directly in Fourier space where the missing-wedge mask is 1
  (tilts -60..60 degrees about y), one inverse real FFT (``scipy.fft``);
- mode 1: back-projection of 2-D white-noise projections (61 tilts, -60..60 every 2 degrees)
  as one ``scipy.sparse`` matrix times the stacked projections (linear interpolation).

What mwr-dask's command does with a Dask cluster, without Dask: the floor its end-to-end time
is compared with (benchmarks/bench_ab.py --reference). No step uses more than one thread
(``scipy.fft`` runs one worker by default; the sparse product and numpy's reductions use no
BLAS).

    python3 benchmarks/reference_pool.py OUT 1000 64 --mode 2 --ncpus 2
"""

from __future__ import annotations

import argparse
import functools
import os
from concurrent.futures import ProcessPoolExecutor

import mrcfile
import numpy as np
import scipy.fft
import scipy.sparse

LO, HI, STEP = -60.0, 60.0, 2.0


@functools.cache
def wedge_mask(n: int) -> np.ndarray:
    """Measured half spectrum (kz, y, kx//2+1): directions within the tilt range."""
    kz = np.fft.fftfreq(n)[:, None]
    kx = np.fft.rfftfreq(n)[None, :]
    angle = np.degrees(np.arctan2(np.abs(kz), np.abs(kx)))  # 0 along kx, 90 along kz
    plane = angle <= HI
    return np.broadcast_to(plane[:, None, :], (n, n, n // 2 + 1)).copy()


@functools.cache
def operator(n: int) -> scipy.sparse.csr_array:
    """Back-projection (n*n, bins): row z*n+x, column offset_k + u (linear interpolation)."""
    c = (n - 1) / 2
    z, x = (a.ravel() for a in np.meshgrid(np.arange(n) - c, np.arange(n) - c, indexing="ij"))
    rows, cols, vals, offset = [], [], [], 0
    for angle in np.radians(np.arange(LO, HI + STEP / 2, STEP)):
        half = int(np.ceil(c * (abs(np.cos(angle)) + abs(np.sin(angle)))))
        t = x * np.cos(angle) - z * np.sin(angle) + half
        u0 = np.floor(t).astype(np.int64)
        rows += [np.arange(n * n)] * 2
        cols += [offset + u0, offset + u0 + 1]
        vals += [1 - (t - u0), t - u0]
        offset += 2 * half + 2
    data = (np.concatenate(vals).astype(np.float32), (np.concatenate(rows), np.concatenate(cols)))
    return scipy.sparse.coo_array(data, shape=(n * n, offset)).tocsr()


def volume(mode: int, n: int, rng: np.random.Generator) -> np.ndarray:
    """One normalised noise volume, float32 (z, y, x)."""
    if mode == 2:
        mask = wedge_mask(n)
        spec = np.zeros(mask.shape, dtype=np.complex64)
        spec[mask] = rng.standard_normal((int(mask.sum()), 2), dtype=np.float32).view(np.complex64)[
            :, 0
        ]
        out = scipy.fft.irfftn(spec, s=(n, n), axes=(0, 2))
    else:
        op = operator(n)
        projections = rng.standard_normal((op.shape[1], n), dtype=np.float32)
        out = np.ascontiguousarray((op @ projections).reshape(n, n, n).transpose(0, 2, 1))
    out -= out.mean()
    out /= out.std()
    return out


def write_chunk(args: tuple) -> int:
    """Generate and write volumes ``indices`` (a worker's task)."""
    folder, mode, n, indices = args
    for i in indices:
        data = volume(mode, n, np.random.default_rng((1, i)))
        with mrcfile.new(os.path.join(folder, f"n_{i:05d}.mrc")) as mrc:
            mrc.set_data(data)
            mrc.voxel_size = 1.0
    return len(indices)


def main() -> None:
    """Parse the arguments, write the volumes, check the count."""
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("out")
    ap.add_argument("n", type=int)
    ap.add_argument("cube", type=int)
    ap.add_argument("--mode", type=int, choices=(1, 2), default=1)
    ap.add_argument("--ncpus", type=int, default=2)
    args = ap.parse_args()
    os.makedirs(args.out)
    chunks = np.array_split(np.arange(args.n), 8 * args.ncpus)
    tasks = [(args.out, args.mode, args.cube, c.tolist()) for c in chunks if len(c)]
    with ProcessPoolExecutor(args.ncpus) as pool:
        written = sum(pool.map(write_chunk, tasks))
    assert written == args.n == len(os.listdir(args.out))


if __name__ == "__main__":
    main()
