"""What a reconstruction filter does to the spectrum ``mwr-dask inspect`` measures (model).

The filters themselves are :mod:`mwr_dask.noise.filters`; here their expected effect on the
radial and angular profiles of a folder's averaged (kz, kx) spectrum, and the analysis of a
filtered mode-1 folder with the filter divided out.
"""

from __future__ import annotations

import numpy as np

from mwr_dask.noise.filters import FilterSpec, response, view_weights


def expected_power_ratio(spec: FilterSpec, k: np.ndarray, angles: np.ndarray) -> np.ndarray:
    """Power of filtered over unfiltered back-projected noise at kx-kz radius ``k`` (model).

    The mean over views of ``|W_v(k)|^2`` (every view gives the measured region the same
    power), up to a constant; ``k`` in cycles/pixel, ``angles`` in degrees.
    """
    k = np.asarray(k, dtype=np.float64)
    w = response(spec, k.ravel(), angles)
    return np.mean(w**2, axis=0).reshape(k.shape)


def unfiltered_profile(
    profile: np.ndarray, k: np.ndarray, spec: FilterSpec, angles: np.ndarray, *, floor: float = 0.1
) -> np.ndarray:
    """Divide the filter out of a measured radial profile (NaN where W is close to 0).

    ``k``: cycles/pixel; NaN where the expected ratio is below ``floor`` times its maximum.
    """
    ratio = expected_power_ratio(spec, np.asarray(k, dtype=np.float64), angles)
    keep = ratio >= floor * np.max(ratio)
    with np.errstate(divide="ignore", invalid="ignore"):
        return np.where(keep, np.asarray(profile, dtype=np.float64) / ratio, np.nan)


def direction_power(spec: FilterSpec, angles: np.ndarray, tilt: np.ndarray) -> np.ndarray:
    """Relative power a filter's per-view factors give each direction of the (kz, kx) plane.

    The squared per-view factor (IMOD's a_v, AreTomo's cos(theta)) interpolated at each
    direction's ``tilt`` (degrees). Without it the tilt fit finds AreTomo's down-weighted high
    tilts (cos^2 60 deg = 1/4) outside the range.
    """
    a = np.asarray(angles, dtype=np.float64)
    w2 = view_weights(spec, a) ** 2
    t = np.asarray(tilt, dtype=np.float64)
    return np.interp(t.ravel(), a, w2).reshape(t.shape)


def analyse_filtered(
    half_sum: np.ndarray, n: int, volumes: int, spec: FilterSpec, angles: np.ndarray
):
    """:func:`~.spectrum.analyse` of a filtered mode-1 folder, the filter divided out.

    The spectrum is divided by :func:`direction_power` first; ``radial_slope`` is refitted on
    :func:`unfiltered_profile`, so a filtered folder falls like an unfiltered back-projection
    (about -1.5) and passes as mode 1.
    """
    import dataclasses

    from mwr_dask.inspection.spectrum import analyse
    from mwr_dask.noise.geometry import fold_direction

    f = np.fft.fftfreq(n)
    kz, kx = np.meshgrid(f, f[: n // 2 + 1], indexing="ij")
    weights = direction_power(spec, angles, -fold_direction(kz, kx))
    s = analyse(np.asarray(half_sum) / weights, n, volumes)
    if s.radial_slope is None:
        return s
    k0, k1 = s.slope_radii
    ks = np.arange(k0, k1 + 1)
    profile = unfiltered_profile(s.radial_measured[ks - 1], ks / n, spec, angles)
    good = np.isfinite(profile) & (profile > 0)
    slope = None
    if good.sum() >= 2:
        slope = float(np.polyfit(np.log(ks[good]), np.log(profile[good]), 1)[0])
    return dataclasses.replace(s, radial_slope=slope)
