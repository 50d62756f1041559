"""A noise folder against a measured spectrum, and the views of a spectrum (inspection side).

The spectrum itself (estimated from even/odd halves, its file, the noise made from it) is
:mod:`mwr_dask.noise.measured`; here it is compared with what a folder holds, and profiled
for the picture of ``measure-noise --plot`` (:func:`~.plot.plot_spectrum`).
"""

from __future__ import annotations

import math

import numpy as np

from mwr_dask.inspection.spectrum import full_plane, polar, shell_index

#: A folder's spectrum agrees with a file's when no bin is further than this many standard
#: deviations (of the folder's average) plus ``COMPARE_SLACK`` from it.
COMPARE_SIGMAS = 5.0
COMPARE_SLACK = 0.05


def compare_slice_spectra(total: np.ndarray, count: int, spectrum: np.ndarray) -> dict:
    """Compare a folder's summed slice spectra with a measured spectrum, bin by bin.

    Bins of the (kz, kx) plane: pairs of radial shells (:func:`~.spectrum.shell_index`) from
    shell 2 to radius 0.45 n, by 15 degrees of direction. In each, the ratio of the folder's
    mean power to the spectrum's, and its standard deviation if the folder's volumes are
    noise with that spectrum: each pixel of the average of ``count`` volumes sums n y-slices,
    so a bin of B pixels (B / 2 independent, Hermitian pairs) has a relative error of
    ``1 / sqrt(count * n * B / 2)``. ``total``: sum of :func:`~.spectrum.slice_power` over
    ``count`` volumes; ``spectrum``: (n, n, n) fftshifted.

    Returns ``agrees``, ``worst_sigmas`` (largest |ratio - 1| over its standard deviation),
    ``worst_bin`` ([radius, direction degrees, ratio]), ``log_rms`` (of the natural log of the
    ratios) and ``bins`` (number compared).
    """
    n = spectrum.shape[0]
    got = full_plane(np.asarray(total, dtype=np.float64) / max(count, 1), n)
    # what slice_power of noise with this spectrum averages to: the mean over ky of the 3-D
    # spectrum (Parseval along y)
    want = full_plane(kxkz_half_sum(spectrum.astype(np.float64)) / n, n)
    r, phi = polar(n)
    ring = shell_index(r) // 2
    sector = np.minimum(np.floor((phi + 90.0) / 15.0).astype(int), 11)
    use = (ring >= 1) & (2 * ring < 0.45 * n - 1.0)
    key = (ring * 12 + sector)[use]
    pixels = np.bincount(key)
    sums_got, sums_want = np.bincount(key, got[use]), np.bincount(key, want[use])
    with np.errstate(divide="ignore", invalid="ignore"):
        level = sums_want / pixels
    bins = np.flatnonzero((pixels >= 2) & (level > 1e-6 * want.mean()))
    ratio = sums_got[bins] / sums_want[bins]
    sigma = 1.0 / np.sqrt(max(count, 1) * n * pixels[bins] / 2)
    off = np.abs(ratio - 1.0) / sigma
    logs = np.log(np.maximum(ratio, 1e-3))  # an empty bin counts as 1e-3
    worst = None
    if bins.size:  # radius and direction at the bin's centre
        j = int(np.argmax(off))
        worst = [2.0 * (bins[j] // 12) + 0.5, 15.0 * (bins[j] % 12) - 82.5, float(ratio[j])]
    return {
        "agrees": bool(np.all(np.abs(ratio - 1.0) <= COMPARE_SIGMAS * sigma + COMPARE_SLACK)),
        "worst_sigmas": float(off.max()) if bins.size else 0.0,
        "worst_bin": worst,
        "log_rms": float(np.sqrt(np.mean(np.square(logs)))) if bins.size else None,
        "bins": int(bins.size),
    }


def axis_profiles(spectrum: np.ndarray, cone_deg: float = 20.0) -> dict[str, np.ndarray]:
    """Return the mean power per radial shell, radii 1..N/2, overall and near each axis.

    Shells of :func:`~.spectrum.shell_index`; keys ``all``, and ``kz``, ``ky``, ``kx`` for the
    directions within ``cone_deg`` of each axis.
    """
    n = spectrum.shape[0]
    k = (np.arange(n) - n // 2).astype(np.float64)
    kz, ky, kx = np.meshgrid(k, k, k, indexing="ij")
    r = np.sqrt(kz**2 + ky**2 + kx**2)
    shell = shell_index(r)
    cos_cone = math.cos(math.radians(cone_deg))
    radii = np.arange(1, n // 2 + 1)
    out = {}
    for name, comp in (("all", r), ("kz", kz), ("ky", ky), ("kx", kx)):
        sel = np.abs(comp) >= cos_cone * np.maximum(r, 1e-9) if name != "all" else r >= 0
        s = np.bincount(shell[sel], weights=spectrum[sel].astype(np.float64), minlength=n)
        c = np.bincount(shell[sel], minlength=n)
        with np.errstate(invalid="ignore", divide="ignore"):
            out[name] = np.where(c[radii] > 0, s[radii] / np.maximum(c[radii], 1), np.nan)
    return out


def kxkz_half_sum(spectrum: np.ndarray) -> np.ndarray:
    """Sum the power over ky: (kz, kx) half plane, shape (n, n // 2 + 1).

    The layout of :func:`mwr_dask.inspection.spectrum.analyse` (``rfft`` order, unshifted).
    """
    n = spectrum.shape[0]
    return np.fft.ifftshift(spectrum.sum(axis=1, dtype=np.float64))[:, : n // 2 + 1]
