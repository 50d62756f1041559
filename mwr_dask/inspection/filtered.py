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

    Each view's central plane carries its own ``|W_v(k)|^2`` and every view contributes the
    same power to the measured region, so a radial shell of the (kz, kx) spectrum averaged over
    the measured directions carries the mean over views of ``|W_v(k)|^2``. Up to a constant
    (volumes are normalised to standard deviation 1) it is what filtering does to the radial
    profile ``mwr-dask inspect`` measures.

    Parameters
    ----------
    spec : FilterSpec
        The filter.
    k : numpy.ndarray
        Radius in the (kz, kx) plane, cycles/pixel (0 .. 0.5).
    angles : numpy.ndarray
        Tilt angles, degrees.

    Returns
    -------
    numpy.ndarray
        float64, shape of ``k``.
    """
    k = np.asarray(k, dtype=np.float64)
    w = response(spec, k.ravel(), angles)
    return np.mean(w**2, axis=0).reshape(k.shape)


def unfiltered_profile(
    profile: np.ndarray,
    k: np.ndarray,
    spec: FilterSpec,
    angles: np.ndarray,
    *,
    floor: float = 0.1,
) -> np.ndarray:
    """Divide the filter out of a measured radial profile (NaN where W is close to 0).

    ``mwr-dask inspect`` judges mode 1 by the fall-off of the measured region's radial profile;
    a filtered folder's profile divided by :func:`expected_power_ratio` should fall as an
    unfiltered one does (up to a constant, volumes being normalised).

    Parameters
    ----------
    profile : numpy.ndarray
        Mean power per shell.
    k : numpy.ndarray
        Radius of each shell in the (kz, kx) plane, cycles/pixel (shell / cube size).
    spec : FilterSpec
        The filter the labels record.
    angles : numpy.ndarray
        Tilt angles, degrees.
    floor : float
        Shells where the expected ratio is below ``floor`` times its largest value are NaN.

    Returns
    -------
    numpy.ndarray
        float64, shape of ``profile``.
    """
    ratio = expected_power_ratio(spec, np.asarray(k, dtype=np.float64), angles)
    keep = ratio >= floor * np.max(ratio)
    with np.errstate(divide="ignore", invalid="ignore"):
        return np.where(keep, np.asarray(profile, dtype=np.float64) / ratio, np.nan)


def direction_power(spec: FilterSpec, angles: np.ndarray, tilt: np.ndarray) -> np.ndarray:
    """Relative power a filter's per-view factors give each direction of the (kz, kx) plane.

    The square of the per-view factor (:func:`view_weights`: IMOD's a_v, AreTomo's cos(theta))
    interpolated linearly at the tilt ``tilt`` of each direction (a tilt theta measures the
    direction (cos theta, -sin theta)); beyond the first and last tilt, that of the nearest one.
    ``mwr-dask inspect`` divides the spectrum by it before fitting the tilt range, which
    otherwise finds AreTomo's down-weighted high tilts (cos^2 60 deg = 1/4) outside the range.

    Parameters
    ----------
    spec : FilterSpec
        The filter.
    angles : numpy.ndarray
        Tilt angles, degrees, ascending.
    tilt : numpy.ndarray
        Tilt of each direction, degrees (minus the folded direction).

    Returns
    -------
    numpy.ndarray
        float64, shape of ``tilt``; all ones for filters without per-view factors.
    """
    a = np.asarray(angles, dtype=np.float64)
    w2 = view_weights(spec, a) ** 2
    t = np.asarray(tilt, dtype=np.float64)
    return np.interp(t.ravel(), a, w2).reshape(t.shape)


def analyse_filtered(
    half_sum: np.ndarray, n: int, volumes: int, spec: FilterSpec, angles: np.ndarray
):
    """:func:`~.spectrum.analyse` of a filtered mode-1 folder, the filter divided out.

    Before the analysis the summed (kz, kx) spectrum is divided by :func:`direction_power`
    (the per-view factors, which would otherwise move the estimated tilt range inwards); after
    it, ``radial_slope`` is refitted on :func:`unfiltered_profile` over the same shells, so
    that a filtered folder falls like an unfiltered back-projection (about -1.5) and passes as
    mode 1. The other fields are those of the direction-corrected spectrum.

    Parameters
    ----------
    half_sum : numpy.ndarray
        Sum of :func:`~.spectrum.slice_power` over the volumes, shape (n, n // 2 + 1).
    n : int
        Cube side.
    volumes : int
        Volumes summed.
    spec : FilterSpec
        The filter the labels record.
    angles : numpy.ndarray
        The labels' tilt angles, degrees.

    Returns
    -------
    mwr_dask.inspection.spectrum.SpectrumAnalysis
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
