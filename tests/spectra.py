"""Power spectra of noise volumes, for the physics tests."""

from __future__ import annotations

import numpy as np

from mwr_dask.geometry import fold_direction


def kxkz_power(volumes) -> np.ndarray:
    """Power in the (kz, kx) plane averaged over volumes and y-slices, fftshifted (origin n//2)."""
    acc = None
    for v in volumes:
        p = np.abs(np.fft.fft2(np.asarray(v, dtype=np.float64), axes=(0, 2))) ** 2
        p = p.mean(axis=1)
        acc = p if acc is None else acc + p
    return np.fft.fftshift(acc / len(volumes))


def polar(n: int):
    """Radius (in Fourier pixels) and folded direction (degrees) of the fftshifted (kz, kx) grid."""
    k = np.arange(n) - n // 2
    kz, kx = np.meshgrid(k, k, indexing="ij")
    return np.hypot(kz, kx), fold_direction(kz.astype(float), kx.astype(float))


def angular_distance_inside(phi, lo, hi):
    """Degrees by which a folded direction lies inside [-hi, -lo] (negative: outside)."""
    return np.minimum(phi - (-hi), (-lo) - phi)
