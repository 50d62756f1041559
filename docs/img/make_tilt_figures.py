"""Make docs/img/tilt-scheme-gap.png: averaged kx-kz spectra of a scheme with and without a gap.

Run from the repository root: ``python docs/img/make_tilt_figures.py`` (needs matplotlib).
The scheme is the acquisition of tests/tiltfixtures.py (-54 .. 66 deg every 3 deg, IMOD .tlt),
once with all 41 views and once with views 20-24 (3 .. 15 deg) excluded.
"""

from __future__ import annotations

import tempfile
from pathlib import Path

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt
import numpy as np

from mwr_dask.noise.generators import BackProjection
from mwr_dask.noise.normals import volume_rng
from mwr_dask.noise.tiltfiles import read_tilt_file
from tests import tiltfixtures as tf
from tests.spectra import kxkz_power

N, VOLUMES, SEED = 96, 24, 2024


def spectrum(scheme) -> np.ndarray:
    """Averaged mode-1 kx-kz power of the scheme, fftshifted."""
    make = BackProjection(N, scheme.angle_tuple)
    return kxkz_power([make(volume_rng(SEED, i)) for i in range(VOLUMES)])


def main() -> None:
    """Write the figure next to this script."""
    out = Path(__file__).with_name("tilt-scheme-gap.png")
    with tempfile.TemporaryDirectory() as tmp:
        path = tf.write_tlt(Path(tmp) / "TS_01.tlt", [s.angle for s in tf.acquisition()])
        full = read_tilt_file(path)
        gapped = read_tilt_file(path, exclude="20-24")
    panels = [(full, "all 41 views"), (gapped, "--exclude 20-24 (5 views)")]
    powers = [spectrum(s) for s, _ in panels]
    vmax = max(np.log10(p).max() for p in powers)
    fig, axes = plt.subplots(1, 2, figsize=(9, 4.6), constrained_layout=True)
    k = (np.arange(N) - N // 2) / N
    for ax, (scheme, title), p in zip(axes, panels, powers, strict=True):
        im = ax.imshow(
            np.log10(p),
            origin="lower",
            extent=(k[0], k[-1], k[0], k[-1]),
            cmap="magma",
            vmin=vmax - 3,
            vmax=vmax,
        )
        ax.set_title(f"{title}\n{scheme.label}", fontsize=9)
        ax.set_xlabel("kx (cycles/voxel)")
        ax.set_ylabel("kz (cycles/voxel)")
    fig.colorbar(im, ax=axes, shrink=0.8, label="log10 power (mode 1, averaged)")
    fig.suptitle(
        f"TS_01.tlt (IMOD, -54..66 every 3 deg), {N}^3, {VOLUMES} volumes, y-slices averaged",
        fontsize=10,
    )
    fig.savefig(out, dpi=110)
    print(out)


if __name__ == "__main__":
    main()
