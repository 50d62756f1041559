"""Resume cost: the completeness check of 1000 existing volumes, and mrcfile's own way.

Old (before issue 14): ``mrcfile.open(header_only=True, permissive=True)`` and the file size.
New (``mrc.is_complete``): ``lstat``, ``O_NOFOLLOW | O_NONBLOCK`` open, ``fstat``, one 1 KiB
``pread``, mrcfile's strict header checks on its public header dtype. mrcfile strict: the same
open, then mrcfile's public ``MrcInterpreter(header_only=True)`` (strict) on that file: what
replacing the hand-written parse by mrcfile's reader would cost. Also the folder scan at the
start of a run: 3 headers, and every header.

    PYTHONPATH=. python benchmarks/bench_resume.py [N] [REPEATS]
"""

from __future__ import annotations

import os
import sys
import tempfile
import time
import warnings
from pathlib import Path

import mrcfile
import numpy as np

from mwr_dask.files.folder import scan
from mwr_dask.files.mrc import (
    HEADER_BYTES,
    header_is_complete,
    is_complete,
    open_regular,
    write_volume,
)
from mwr_dask.noise.source import NoiseSource


def old_is_complete(path: Path, n: int) -> bool:
    """The check as it was (permissive, follows links, opens anything)."""
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            with mrcfile.open(path, header_only=True, permissive=True) as mrc:
                h = mrc.header
                shape = (int(h.nz), int(h.ny), int(h.nx))
                mode = int(h.mode)
        size = os.path.getsize(path)
    except (OSError, ValueError):
        return False
    return shape == (n, n, n) and mode == 2 and size - HEADER_BYTES - 4 * n**3 == 0


def mrcfile_is_complete(path: Path, n: int) -> bool:
    """``is_complete`` with mrcfile's strict reader in place of the hand-written parse."""
    from mrcfile.mrcinterpreter import MrcInterpreter

    from mwr_dask.files.mrc import VolumeHeader

    try:
        with os.fdopen(open_regular(path), "rb") as f:
            h = MrcInterpreter(iostream=f, permissive=False, header_only=True).header
            size = os.fstat(f.fileno()).st_size
    except (OSError, ValueError):
        return False
    shape, mode = (int(h.nz), int(h.ny), int(h.nx)), int(h.mode)
    return header_is_complete(VolumeHeader(shape, mode, 0.0, [], size, int(h.nsymbt)), n)


def main(count: int = 1000, repeats: int = 5) -> None:
    n = 16
    params = NoiseSource(n, seed=1)
    data = np.random.default_rng(0).standard_normal((n, n, n)).astype(np.float32)
    with tempfile.TemporaryDirectory() as tmp:
        folder = Path(tmp)
        paths = [folder / f"n_{i:05d}.mrc" for i in range(count)]
        for i, path in enumerate(paths):
            write_volume(path, data, 1.0, params.labels(i))
        keys = ("old check", "new check", "mrcfile strict", "scan (3 headers)", "scan (all)")
        timings: dict[str, list[float]] = {key: [] for key in keys}
        for _ in range(repeats):  # interleaved, so that load changes hit both alike
            t0 = time.perf_counter()
            assert all(old_is_complete(p, n) for p in paths)
            t1 = time.perf_counter()
            assert all(is_complete(p, n) for p in paths)
            t2 = time.perf_counter()
            assert all(mrcfile_is_complete(p, n) for p in paths)
            t3 = time.perf_counter()
            scan(folder, headers=3)
            t4 = time.perf_counter()
            scan(folder)
            t5 = time.perf_counter()
            steps = (t1 - t0, t2 - t1, t3 - t2, t4 - t3, t5 - t4)
            for key, dt in zip(timings, steps, strict=True):
                timings[key].append(dt)
    print(f"{count} files of {n}^3, {repeats} interleaved repeats, load {os.getloadavg()}")
    best = {key: min(v) for key, v in timings.items()}
    for key, dt in best.items():
        print(f"  {key:22s} best {dt * 1e3:8.1f} ms  ({dt / count * 1e6:6.1f} us per file)")
    print(f"  check new/old: {best['new check'] / best['old check']:.2f},"
          f" mrcfile strict/new: {best['mrcfile strict'] / best['new check']:.2f}")  # fmt: skip


if __name__ == "__main__":
    main(*(int(a) for a in sys.argv[1:3]))
