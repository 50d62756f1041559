"""What dose weighting does to the spectrum ``mwr-dask inspect`` measures (model and check).

The folder's spectrum is the (kz, kx) power summed over y, i.e. the mean over ky of the 3-D
power (:func:`~.spectrum.slice_power`). Dose weighting multiplies the power of view v's
central plane by ``W_v(|k|)^2`` (:mod:`mwr_dask.noise.dose`), so the spectrum of a weighted
folder is the unweighted one times

    ``A(kz, kx) = sum_v s_v M_v(r) / sum_v s_v``, ``M_v(r) = mean_ky W_v(sqrt(r^2 + ky^2))^2``

where ``s_v`` is view v's share of the pixel. Mode 1: ``s_v = sinc^2(d_v)``, ``d_v`` the
pixel's distance to v's plane in Fourier pixels (the cube crops each back-projected view to
about n voxels along its beam, which blurs its plane by about a pixel: neighbouring views
overlap where they are less than a pixel apart, at low |k|). Mode 2: the nearest view only,
as the generator does.
"""

from __future__ import annotations

import numpy as np

from mwr_dask.noise.dose import DoseWeights, exp_array, nearest_views
from mwr_dask.noise.source import NoiseSource, tilts_of

#: Radii of the check, fraction of the cube side: high enough that views are apart.
CHECK_BAND = (0.25, 0.45)
#: Directions this close to the first or last tilt are left out (the wedge's edge blurs).
EDGE_DEG = 4.0
#: A slope of log(measured) on log(expected) outside this range is a problem (expected 1).
SLOPE_RANGE = (0.5, 1.5)
#: Below this spread (standard deviation of log A over the checked pixels) nothing is checked.
MIN_SPREAD = 0.1


def dose_weights(params: NoiseSource) -> DoseWeights | None:
    """Return the weighting the labels record, on their tilts (None without, or no doses)."""
    if params.dose_weighting == "none" or params.doses is None:
        return None
    angles = tuple(tilts_of(params).tolist())
    if len(angles) != len(params.doses):  # a mixture's union of ranges: no doses of its own
        return None
    return DoseWeights(
        params.dose_weighting, params.voltage, params.voxel_size, angles, params.doses
    )


def attenuation(n: int, params: NoiseSource) -> np.ndarray | None:
    """``A(kz, kx)`` on the half plane (n, n // 2 + 1), numpy FFT order; None if not weighted."""
    dw = dose_weights(params)
    if dw is None:
        return None
    k = np.round(np.fft.fftfreq(n) * n)
    kz, kx = np.meshgrid(k, np.arange(n // 2 + 1, dtype=np.float64), indexing="ij")
    r2 = (kz**2 + kx**2).astype(np.int64)
    ky2 = (k**2).astype(np.int64)
    levels = np.arange(int(r2.max() + ky2.max()) + 1)
    g = dw.exponent(levels / float(n * n))
    table = exp_array(-2.0 * np.asarray(dw.doses)[:, None] * g[None, :])  # W_v^2 at n^2 k^2
    radii, where = np.unique(r2, return_inverse=True)
    mean = np.stack([t[radii[:, None] + ky2].mean(axis=1) for t in table])  # M_v per radius
    mean = mean[:, where.reshape(r2.shape)]  # (views, kz, kx)
    if params.mode == 2:
        out = np.take_along_axis(mean, nearest_views(dw, kz, kx)[None], 0)[0]
    else:
        cos, sin = np.cos(np.radians(dw.angles)), np.sin(np.radians(dw.angles))
        share = np.sinc(kx[None] * sin[:, None, None] + kz[None] * cos[:, None, None]) ** 2
        out = (share * mean).sum(axis=0) / share.sum(axis=0)
    out[0, 0] = mean[:, 0, 0].mean()  # the ky axis: every view
    return out


def without_dose(half_sum: np.ndarray, n: int, params: NoiseSource) -> np.ndarray:
    """Divide the summed spectrum by :func:`attenuation` (as it would be without weighting).

    ``inspect`` analyses this, so that a weighted folder's wedge edges and radial fall-off are
    judged as those of its unweighted mode.
    """
    a = attenuation(n, params)
    return half_sum if a is None else np.asarray(half_sum) / a


def dose_check(
    half_sum: np.ndarray, n: int, volumes: int, params: NoiseSource
) -> tuple[list[str], list[str], dict]:
    """Compare the folder's attenuation per direction with the labels' dose weighting.

    Returns problems, warnings and ``{"dose_weighting": {...}}`` for the JSON report.
    In the radii :data:`CHECK_BAND` and the directions of the labels' tilts (away from the
    edges), the measured power and :func:`attenuation` are each divided by their mean over
    every shell; the slope of the first's logarithm on the second's is 1 for volumes weighted
    as labelled and 0 for unweighted ones (the unweighted power of a shell does not depend on
    the direction, up to the filters' per-view factors, which are divided out).
    """
    from mwr_dask.inspection.filtered import direction_power
    from mwr_dask.noise.geometry import fold_direction

    info: dict = {"model": params.dose_weighting, "voltage": params.voltage, "slope": None}
    a = attenuation(n, params)
    if a is None:
        return [], ["the labels record dose weighting but no doses of these tilts: the"
                    " attenuation per view is not checked."], {"dose_weighting": info}  # fmt: skip
    f = np.fft.fftfreq(n)
    kz, kx = np.meshgrid(f, f[: n // 2 + 1], indexing="ij")
    tilt = -fold_direction(kz, kx)
    angles = tilts_of(params)
    p = np.asarray(half_sum) / volumes / direction_power(params.filter_spec, angles, tilt)
    r = np.hypot(kz, kx) * n
    lo, hi = angles.min() + EDGE_DEG, angles.max() - EDGE_DEG
    use = (r >= CHECK_BAND[0] * n) & (r <= CHECK_BAND[1] * n) & (tilt >= lo) & (tilt <= hi)
    shells = np.round(r).astype(int)
    x, y = np.log(a), np.log(np.maximum(p, 1e-300))
    for s in np.unique(shells[use]):  # each shell to its mean: the radial fall-off goes
        sel = use & (shells == s)
        x[sel] -= x[sel].mean()
        y[sel] -= y[sel].mean()
    spread = float(x[use].std()) if use.any() else 0.0
    info["log_spread"] = round(spread, 4)
    if spread < MIN_SPREAD:
        warning = (
            f"the labels' dose weighting changes the power by less than {MIN_SPREAD:.0%} from"
            f" one direction to another at radii {CHECK_BAND[0]}..{CHECK_BAND[1]} of {n}^3"
            " (low doses or large voxels): the attenuation per view is not checked."
        )
        return [], [warning], {"dose_weighting": info}
    slope = float(np.polyfit(x[use], y[use], 1)[0])
    info["slope"] = round(slope, 3)
    info["agrees"] = bool(SLOPE_RANGE[0] <= slope <= SLOPE_RANGE[1])
    problems = []
    if not info["agrees"]:
        problems.append(
            f"the power per direction does not follow the labels' dose weighting"
            f" ({params.dose_label}): log-log slope {slope:.2f} against the expected"
            f" attenuation of each view (1 when weighted as labelled, 0 when not weighted)."
        )
    return problems, [], {"dose_weighting": info}
