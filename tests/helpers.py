"""Small helpers shared by the tests."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import mrcfile
import numpy as np


def read_all(folder: Path) -> dict[str, np.ndarray]:
    """Data of every entry of ``folder`` by name."""
    out = {}
    for name in sorted(os.listdir(folder)):
        with mrcfile.open(folder / name, permissive=True) as m:
            out[name] = np.array(m.data)
    return out


def assert_only_volumes(folder: Path, indices) -> None:
    """The folder holds exactly ``n_<i>.mrc`` for i in ``indices``, each valid."""
    expected = sorted(f"n_{i:05d}.mrc" for i in indices)
    assert sorted(os.listdir(folder)) == expected
    with open(os.devnull, "w") as sink:
        for name in expected:
            assert mrcfile.validate(str(folder / name), print_file=sink)


def cli(*args: str, timeout: float = 240, **kwargs) -> subprocess.CompletedProcess:
    """Run the real console script ``mwr-dask`` (as ``python -m mwr_dask``) in a subprocess."""
    return subprocess.run(
        [sys.executable, "-m", "mwr_dask", *args],
        capture_output=True,
        text=True,
        timeout=timeout,
        **kwargs,
    )


def range_generator(mode: int, n: int, lo=-60.0, hi=60.0, step=2.0, **filtering):
    """The cached generator of a regular range: what ``NoiseSource.generator`` gives."""
    from mwr_dask.noise.source import NoiseSource

    source = NoiseSource(n, mode=mode, minangle=lo, maxangle=hi, anglestep=step, **filtering)
    return source.generator(0)


def scheme_generator(mode: int, n: int, scheme, **filtering):
    """The cached generator of a tilt scheme: what ``NoiseSource.generator`` gives."""
    from mwr_dask.noise.source import NoiseSource

    return NoiseSource(n, mode=mode, tilt_schemes=(scheme,), **filtering).generator(0)


def regular_scheme(lo: float, hi: float, step: float):
    """A tilt scheme whose used angles are those of the regular range ``lo:hi:step``."""
    from mwr_dask.noise.geometry import tilt_angles
    from mwr_dask.noise.schemes import TiltScheme, View

    views = tuple(View(i + 1, float(a)) for i, a in enumerate(tilt_angles(lo, hi, step)))
    return TiltScheme(views, source=f"range-{lo}-{hi}-{step}.tlt", format="imod", sign=1)
