"""Power spectra of noise volumes, for the physics tests.

``kxkz_power`` is a plain float64 numpy reference, independent of ``mwr_dask.inspection.spectrum``.
"""

from __future__ import annotations

import numpy as np

from mwr_dask.inspection.spectrum import polar  # noqa: F401 - re-exported for the physics tests


def kxkz_power(volumes) -> np.ndarray:
    """Power in the (kz, kx) plane averaged over volumes and y-slices, fftshifted (origin n//2)."""
    acc = None
    for v in volumes:
        p = np.abs(np.fft.fft2(np.asarray(v, dtype=np.float64), axes=(0, 2))) ** 2
        p = p.mean(axis=1)
        acc = p if acc is None else acc + p
    return np.fft.fftshift(acc / len(volumes))


def angular_distance_inside(phi, lo, hi):
    """Degrees by which a folded direction lies inside [-hi, -lo] (negative: outside)."""
    return np.minimum(phi - (-hi), (-lo) - phi)
