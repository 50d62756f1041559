"""The averaged kx-kz power spectrum of a noise folder and what it says (pure numpy).

The wedge does not depend on ky, so every y-slice of every volume is a sample of the same 2-D
spectrum over (kz, kx). :func:`slice_power` returns the sum over y of one volume's slice
periodograms (half plane, as ``rfft`` returns it); summing those over volumes and dividing by
their number gives the folder's average, which :func:`analyse` turns into numbers:

- the tilt range: each radial shell is divided by its level in the measured region, the
  normalised power is profiled over the direction of (kx, kz), and the measured arc is the
  arc whose edges best separate a high level from a low one (a two-level least-squares fit,
  which puts each edge where the profile crosses halfway between the two levels). The arc of
  measured directions ``[lo, hi]`` is turned into tilts ``[-hi, -lo]`` (a tilt theta measures
  the direction (cos theta, -sin theta)); see :mod:`mwr_dask.noise.geometry`;
- the wedge ratio: the mean normalised power in the missing wedge over that in the measured
  region, both taken a few degrees away from the edges;
- the radial fall-off: the log-log slope of the measured region's power against |k|.

Conventions: arrays are (z, y, x); directions are degrees folded into (-90, 90]; tilt ranges
are in tilt angles ``[minangle, maxangle]``, not directions.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field

import numpy as np
import scipy.fft

from mwr_dask.noise.geometry import fold_direction

#: Width of the direction bins of the arc fit, degrees.
FIT_BIN_DEG = 0.25
#: Edges are kept this far (degrees) from the measured and missing regions' averages.
EDGE_MARGIN_DEG = 5.0
#: Below this ratio of the low to the high level there is a wedge; above it, none was found.
NO_WEDGE_CONTRAST = 0.5
#: Fewest Fourier pixels (one of each pair k, -k) in the band for an analysis at all.
MIN_BAND_PIXELS = 4
#: Beyond this gap (Fourier pixels, at the band's inner radius) between the lines of
#: neighbouring tilts, mode 1's tilts are resolved as separate lines, not one arc: measured
#: failures from 1.57 pixels (16^3 every 30 deg, 32^3 every 30, 48^3 every 22.5, 64^3 every
#: 20), successes up to 1.40 (32^3 every 25), and at 1.68 at 64^3 every 15 degrees.
MAX_TILT_GAP_PIXELS = 1.5
#: Below this width (Fourier pixels, at the band's outer radius) the missing wedge is narrower
#: than the grid resolves: mode 1 at 32^3 with -88:88:1 (0.7 pixel) shows none, -87:87:1
#: (1.2 pixels) shows it.
MIN_WEDGE_PIXELS = 1.0
#: Slack (degrees) on top of an edge's resolution when comparing a tilt range with the one
#: expected.
TILT_SLACK_DEG = 1.5


def slice_power(volume: np.ndarray) -> np.ndarray:
    """Sum over y of the (kz, kx) periodograms of a volume, normalised by its variance.

    Parameters
    ----------
    volume : numpy.ndarray
        Real cube, axes (z, y, x).

    Returns
    -------
    numpy.ndarray
        float64 array of shape (nz, nx // 2 + 1): ``sum_y |FFT_{z,x} v(z, y, x)|^2`` over the
        half plane kx >= 0 in ``numpy.fft`` order, divided by ``nz * ny * nx * var(v)`` so that
        white noise has a mean of 1 per Fourier pixel whatever the scale of the volume.
        The mean is removed first (DC is 0). A constant volume gives zeros.
    """
    v = np.asarray(volume, dtype=np.float32)
    v = v - np.float32(v.mean(dtype=np.float64))
    f = scipy.fft.rfftn(v, axes=(0, 2), workers=1)
    p = (f.real**2 + f.imag**2).sum(axis=1, dtype=np.float64)
    total = float(np.dot(v.ravel(), v.ravel()))
    return p / total if total > 0 else p * 0.0


def full_plane(half: np.ndarray, n: int) -> np.ndarray:
    """Expand a half-plane spectrum (kx >= 0) of an n x n grid to the full, fftshifted plane.

    The power of a real volume is symmetric under k -> -k: P(kz, -kx) = P(-kz, kx).

    Parameters
    ----------
    half : numpy.ndarray
        Shape (n, n // 2 + 1), axes (kz, kx) in ``numpy.fft`` order.
    n : int
        Side of the grid.

    Returns
    -------
    numpy.ndarray
        Shape (n, n), axes (kz, kx), origin at index n // 2 (``numpy.fft.fftshift`` order).
    """
    full = np.empty((n, n), dtype=np.float64)
    full[:, : n // 2 + 1] = half
    cols = np.arange(n // 2 + 1, n)
    rows = (-np.arange(n)) % n
    full[:, cols] = half[rows][:, n - cols]
    return np.fft.fftshift(full)


def polar(n: int) -> tuple[np.ndarray, np.ndarray]:
    """Radius (Fourier pixels) and folded direction (degrees) of the fftshifted (kz, kx) grid."""
    k = np.arange(n) - n // 2
    kz, kx = np.meshgrid(k, k, indexing="ij")
    return np.hypot(kz, kx), fold_direction(kz.astype(float), kx.astype(float))


def band_radii(n: int) -> tuple[float, float]:
    """Radii (Fourier pixels) used to find the wedge: away from DC and from Nyquist."""
    return max(3.0, n / 10), 0.42 * n


def circular_gap(phi: np.ndarray, lo: float, hi: float) -> np.ndarray:
    """Degrees by which directions ``phi`` lie inside the arc ``[lo, hi]`` (negative: outside).

    Directions are taken modulo 180 degrees; ``hi - lo`` must lie in (0, 180).
    """
    rel = np.mod(np.asarray(phi, dtype=np.float64) - lo, 180.0)  # in [0, 180)
    width = hi - lo
    inside = np.minimum(rel, width - rel)
    outside = -np.minimum(rel - width, 180.0 - rel)
    return np.where(rel <= width, inside, outside)


def fold(angle: float) -> float:
    """Fold an angle (degrees) into (-90, 90]."""
    a = math.fmod(angle, 180.0)
    if a > 90.0:
        a -= 180.0
    elif a <= -90.0:
        a += 180.0
    return a


@dataclass(frozen=True)
class ArcFit:
    """A two-level fit of a profile against direction.

    Attributes
    ----------
    lo, hi : float
        The high arc, degrees, ``lo`` in (-90, 90] and ``lo < hi < lo + 180`` (``hi`` exceeds
        90 when the arc contains the direction kz).
    high, low : float
        Mean of the values on the arc and off it.
    lo_unc, hi_unc : float
        Half the gap between the nearest samples on either side of each edge, degrees: how
        far the edge could move without changing which samples lie on the arc.
    """

    lo: float
    hi: float
    high: float
    low: float
    lo_unc: float
    hi_unc: float


def fit_arc(phi: np.ndarray, values: np.ndarray, bin_deg: float = FIT_BIN_DEG) -> ArcFit:
    """Best two-level fit of ``values`` against direction: high on one arc, low elsewhere.

    The directions are binned (``bin_deg``), every arc of whole bins is tried (circularly, so
    an arc may contain +-90 degrees), and the one minimising the squared error of a two-level
    model is kept. Each edge is then put halfway between the nearest non-empty bins on either
    side, so a sharp step is cut halfway between its last high and first low sample and a soft
    one where it crosses the middle of the two levels.

    Parameters
    ----------
    phi : numpy.ndarray
        Directions, degrees in (-90, 90].
    values : numpy.ndarray
        Samples at those directions (same shape).
    bin_deg : float
        Bin width, degrees; 180 must be a multiple of it.

    Returns
    -------
    ArcFit
        The high arc, its two levels and the uncertainty of each edge.
    """
    m = round(180.0 / bin_deg)
    idx = np.floor((np.asarray(phi, dtype=np.float64).ravel() + 90.0) / bin_deg).astype(int) % m
    vals = np.asarray(values, dtype=np.float64).ravel()
    sums = np.bincount(idx, weights=vals, minlength=m)
    counts = np.bincount(idx, minlength=m).astype(np.float64)
    total_s, total_c = sums.sum(), counts.sum()
    cs = np.concatenate([[0.0], np.cumsum(np.concatenate([sums, sums]))])
    cc = np.concatenate([[0.0], np.cumsum(np.concatenate([counts, counts]))])
    start = np.arange(m)[:, None]
    length = np.arange(1, m)[None, :]
    s_in = cs[start + length] - cs[start]
    c_in = cc[start + length] - cc[start]
    s_out, c_out = total_s - s_in, total_c - c_in
    with np.errstate(divide="ignore", invalid="ignore"):
        mean_in, mean_out = s_in / c_in, s_out / c_out
        score = s_in * mean_in + s_out * mean_out
    score[(c_in == 0) | (c_out == 0) | ~(mean_in > mean_out)] = -np.inf
    i, j = np.unravel_index(int(np.argmax(score)), score.shape)
    first, last = int(i), int(i) + int(j) + 1  # arc = bins first .. last - 1 (mod m)
    nonempty = np.flatnonzero(counts > 0)

    def edge(boundary: int) -> tuple[float, float]:
        """Angle halfway between the non-empty bins on either side of a bin boundary."""
        after = nonempty[np.searchsorted(nonempty, boundary % m) % nonempty.size]
        before = nonempty[np.searchsorted(nonempty, boundary % m) - 1]
        a = (before + 0.5) * bin_deg - 90.0
        b = (after + 0.5) * bin_deg - 90.0
        if b < a:
            b += 180.0
        return (a + b) / 2.0, max((b - a) / 2.0, bin_deg)

    lo, lo_unc = edge(first)
    hi, hi_unc = edge(last)
    lo = fold(lo)
    hi = lo + np.mod(hi - lo, 180.0)
    return ArcFit(lo, hi, float(mean_in[i, j]), float(mean_out[i, j]), lo_unc, hi_unc)


def shell_index(r: np.ndarray) -> np.ndarray:
    """Integer shell of each radius: shell k holds ``k - 0.5 <= r < k + 0.5``."""
    return np.floor(r + 0.5).astype(int)


def normalise_shells(
    p: np.ndarray, shells: np.ndarray, select: np.ndarray, fallback: np.ndarray | None = None
) -> np.ndarray:
    """Divide each shell of ``p`` by the mean of its pixels in ``select``.

    Shells with no pixel in ``select`` use their pixels in ``fallback`` instead; shells with
    none in either are NaN.
    """
    kmax = int(shells.max()) + 1
    level = np.full(kmax, np.nan)
    for chosen in (fallback, select):  # the second wins where it has pixels
        if chosen is None:
            continue
        s = np.bincount(shells[chosen], weights=p[chosen], minlength=kmax)
        c = np.bincount(shells[chosen], minlength=kmax)
        level = np.where(c > 0, s / np.maximum(c, 1), level)
    with np.errstate(divide="ignore", invalid="ignore"):
        out = p / level[shells]
    out[~np.isfinite(out)] = np.nan
    return out


@dataclass
class SpectrumAnalysis:
    """What the averaged (kz, kx) power spectrum says.

    Attributes
    ----------
    n : int
        Cube side.
    volumes : int
        Volumes averaged.
    band : tuple of float
        Radii (Fourier pixels) used for the tilt range and the wedge ratio.
    power : numpy.ndarray
        The averaged power, (kz, kx) fftshifted, shape (n, n).
    wedge_found : bool
        Whether a clear two-level structure (a wedge) was found.
    tilt_range : tuple of float or None
        Estimated tilts ``(minangle, maxangle)``, degrees; None without a wedge.
    tilt_uncertainty : tuple of float or None
        Resolution of each estimated edge, degrees (see :class:`ArcFit`).
    measured_arc : tuple of float or None
        Estimated measured directions ``(lo, hi)``, degrees, ``hi`` may exceed 90.
    contrast : float
        Low level over high level of the fit (0 for a perfect wedge, 1 for none).
    wedge_ratio : float or None
        Mean normalised power in the missing wedge over that in the measured region.
    radial_slope : float or None
        Log-log slope of the measured region's power against |k|.
    slope_radii : tuple of int
        Shells used for the slope.
    profile_angle, profile : numpy.ndarray
        Angular profile of normalised power against tilt angle (``-direction``), degrees.
    radial_k, radial_measured, radial_missing : numpy.ndarray
        Mean power per shell in the measured region and in the wedge (NaN where empty).
    limit : str or None
        Why the spectrum could not be analysed at all (a cube too small, no finite or
        non-zero power), or None.
    """

    n: int
    volumes: int
    band: tuple[float, float]
    power: np.ndarray = field(repr=False)
    wedge_found: bool = False
    tilt_range: tuple[float, float] | None = None
    tilt_uncertainty: tuple[float, float] | None = None
    measured_arc: tuple[float, float] | None = None
    contrast: float = 1.0
    wedge_ratio: float | None = None
    radial_slope: float | None = None
    slope_radii: tuple[int, int] = (0, 0)
    profile_angle: np.ndarray = field(default_factory=lambda: np.zeros(0), repr=False)
    profile: np.ndarray = field(default_factory=lambda: np.zeros(0), repr=False)
    radial_k: np.ndarray = field(default_factory=lambda: np.zeros(0), repr=False)
    radial_measured: np.ndarray = field(default_factory=lambda: np.zeros(0), repr=False)
    radial_missing: np.ndarray = field(default_factory=lambda: np.zeros(0), repr=False)
    limit: str | None = None

    def summary(self) -> dict:
        """JSON-ready numbers (no arrays)."""
        return {
            "cubesize": self.n,
            "volumes": self.volumes,
            "band_radii": [round(self.band[0], 2), round(self.band[1], 2)],
            "wedge_found": self.wedge_found,
            "tilt_range": _rounded(self.tilt_range),
            "tilt_resolution": _rounded(self.tilt_uncertainty),
            "contrast": round(self.contrast, 5),
            "wedge_ratio": None if self.wedge_ratio is None else float(f"{self.wedge_ratio:.4g}"),
            "radial_slope": None if self.radial_slope is None else round(self.radial_slope, 3),
            "slope_radii": list(self.slope_radii),
            "limit": self.limit,
        }


def analyse(half_sum: np.ndarray, n: int, volumes: int) -> SpectrumAnalysis:
    """Estimate tilt range, wedge ratio and radial fall-off from summed slice spectra.

    Parameters
    ----------
    half_sum : numpy.ndarray
        Sum of :func:`slice_power` over ``volumes`` cubes of side ``n``, shape (n, n // 2 + 1).
    n : int
        Cube side.
    volumes : int
        Number of volumes summed (at least 1).

    Returns
    -------
    SpectrumAnalysis
    """
    p = full_plane(half_sum / max(volumes, 1), n)
    r, phi = polar(n)
    shells = shell_index(r)
    band = band_radii(n)
    upper = (r >= band[0]) & (r <= band[1]) & (np.arange(n)[:, None] >= n // 2)  # k or -k
    out = SpectrumAnalysis(n, volumes, (float(band[0]), float(band[1])), p)
    if upper.sum() < MIN_BAND_PIXELS:
        out.limit = (
            f"{n}^3 is too small for the spectral checks: {int(upper.sum())} Fourier pixels"
            f" between radii {band[0]:.1f} and {band[1]:.1f} (at least {MIN_BAND_PIXELS}"
            " needed, from 8^3 on)"
        )
    elif not np.isfinite(p).all():
        out.limit = "the averaged spectrum is not finite (values too large for float32?)"
    elif not p[upper].any():
        out.limit = "the averaged spectrum is zero (constant data)"
    if out.limit is not None:
        return out
    fit, norm = _fit_wedge(p, phi, shells, upper)
    out.contrast = fit.low / fit.high if fit.high > 0 else 1.0
    out.wedge_found = bool(out.contrast < NO_WEDGE_CONTRAST)
    gap = circular_gap(phi, fit.lo, fit.hi)
    measured = gap > _margin(fit.lo, fit.hi)
    missing = gap < -_margin(fit.lo, fit.hi)
    if out.wedge_found:
        out.tilt_range = (-fit.hi, -fit.lo)
        out.tilt_uncertainty = (fit.hi_unc, fit.lo_unc)
        out.measured_arc = (fit.lo, fit.hi)
        if (upper & measured).sum() >= 4 and (upper & missing).any():
            norm = normalise_shells(p, shells, upper & measured)
            out.wedge_ratio = float(
                np.nanmean(norm[upper & missing]) / np.nanmean(norm[upper & measured])
            )
    else:
        measured, missing = r >= 0, np.zeros_like(measured)
    _radial(out, p, r, shells, measured, missing)
    _angular_profile(out, phi, norm, upper)
    return out


def _fit_wedge(p, phi, shells, upper) -> tuple[ArcFit, np.ndarray]:
    """Fit the arc to the power normalised per shell; return the fit and that power.

    Pass 1 divides each shell by its mean (removing the radial fall-off whatever the wedge);
    passes 2 and 3 by its mean inside the measured arc, away from the edges (or anywhere
    inside the arc for the shells too small to have pixels there).
    """
    norm = normalise_shells(p, shells, upper)
    fit = _fit(phi, norm, upper)
    for _ in range(2):
        gap = circular_gap(phi, fit.lo, fit.hi)
        core = upper & (gap > _margin(fit.lo, fit.hi))
        if core.sum() < 4:
            break
        norm = normalise_shells(p, shells, core, upper & (gap > 0))
        fit = _fit(phi, norm, upper)
    return fit, norm


def _radial(out: SpectrumAnalysis, p, r, shells, measured, missing) -> None:
    """Mean power per shell in the measured region and in the wedge, and the log-log slope.

    The slope is fitted against the mean radius of the pixels averaged (a shell's pixels in a
    narrow arc do not centre on its nominal radius).
    """
    n = out.n
    out.radial_k = np.arange(1, n // 2)
    out.radial_measured = np.array([_mean(p[(shells == k) & measured]) for k in out.radial_k])
    out.radial_missing = np.array([_mean(p[(shells == k) & missing]) for k in out.radial_k])
    kmax = int(np.floor(out.band[1]))
    k0 = min(4, max(2, kmax - 2))
    ks = np.arange(k0, kmax + 1)
    xs = np.array([_mean(r[(shells == k) & measured]) for k in ks])
    ys = out.radial_measured[ks - 1] if ks.size else np.array([])
    good = np.isfinite(ys) & (ys > 0) & np.isfinite(xs)
    if good.sum() >= 2:
        out.radial_slope = float(np.polyfit(np.log(xs[good]), np.log(ys[good]), 1)[0])
    out.slope_radii = (int(k0), int(kmax))


def _angular_profile(out: SpectrumAnalysis, phi, norm, upper) -> None:
    """Normalised power against tilt angle theta = -direction, in bins of a few pixels each."""
    nbins = int(np.clip(upper.sum() / 4, 36, 180))
    width = 180.0 / nbins
    use = upper & np.isfinite(norm)
    theta = -phi[use]
    theta = np.where(theta <= -90.0, theta + 180.0, theta)
    idx = np.clip(((theta + 90.0) / width).astype(int), 0, nbins - 1)
    sums = np.bincount(idx, weights=norm[use], minlength=nbins)
    counts = np.bincount(idx, minlength=nbins)
    with np.errstate(divide="ignore", invalid="ignore"):
        out.profile = sums / counts
    out.profile_angle = -90.0 + width * (np.arange(nbins) + 0.5)


def tilt_gap_pixels(n: int, anglestep: float) -> float:
    """Gap, Fourier pixels, between the lines of neighbouring tilts at the band's inner radius.

    Mode 1 measures one line per tilt; beyond :data:`MAX_TILT_GAP_PIXELS` the lines are
    resolved and there is no arc of measured directions to estimate.
    """
    return band_radii(n)[0] * math.radians(anglestep)


def wedge_width_pixels(
    n: int, mode: int, minangle: float, maxangle: float, anglestep: float
) -> float:
    """Width, Fourier pixels, of the expected missing wedge at the band's outer radius.

    Mode 1's measured directions reach half a step beyond the outermost tilts; mode 2's
    exactly to ``minangle`` and ``maxangle``.
    """
    (_, lo), (hi, _) = expected_tilt_edges(mode, minangle, maxangle, anglestep)
    if mode == 1:
        lo, hi = lo - anglestep / 2, hi + anglestep / 2
    return band_radii(n)[1] * math.radians(max(180.0 - (hi - lo), 0.0))


def _fit(phi: np.ndarray, norm: np.ndarray, select: np.ndarray) -> ArcFit:
    """Arc fit of the normalised power on the selected pixels that have a level."""
    use = select & np.isfinite(norm)
    return fit_arc(phi[use], norm[use])


def _rounded(pair: tuple[float, float] | None) -> list[float] | None:
    return None if pair is None else [round(float(t), 2) for t in pair]


def _margin(lo: float, hi: float) -> float:
    """Distance (degrees) from the edges of the arc ``[lo, hi]`` for the regions' averages."""
    width = hi - lo
    return min(EDGE_MARGIN_DEG, width / 4, (180.0 - width) / 4)


def _mean(x: np.ndarray) -> float:
    return float(x.mean()) if x.size else float("nan")


def expected_tilt_edges(
    mode: int, minangle: float, maxangle: float, anglestep: float
) -> tuple[tuple[float, float], tuple[float, float]]:
    """Where the estimated edges of a folder with these labels should lie, tilt degrees.

    Mode 2 measures exactly ``[minangle, maxangle]``. In mode 1 each tilt stands for the
    directions around it, up to half a step away when the planes of neighbouring tilts blur
    into each other (small radii, small steps) and less when they are resolved, so each
    half-power edge lies between the outermost tilt and half a step beyond it (the last tilt
    is the last one on the grid, which may fall short of ``maxangle``).

    Returns
    -------
    tuple
        ``((lowest, highest), (lowest, highest))``: the interval of the minimum edge and that
        of the maximum edge.
    """
    if mode == 1:
        from mwr_dask.noise.geometry import tilt_angles

        tilts = tilt_angles(minangle, maxangle, anglestep)
        first, last = float(tilts[0]), float(tilts[-1])
        return (first - anglestep / 2, first), (last, last + anglestep / 2)
    return (float(minangle), float(minangle)), (float(maxangle), float(maxangle))


def edge_offsets(
    estimate: tuple[float, float],
    resolution: tuple[float, float],
    edges: tuple[tuple[float, float], tuple[float, float]],
) -> tuple[bool, float, float]:
    """Whether an estimated tilt range agrees with the edges expected, and how far off it is.

    Parameters
    ----------
    estimate, resolution : tuple of float
        The estimated ``(minangle, maxangle)`` and each edge's resolution, degrees.
    edges : tuple
        ``((lowest, highest), (lowest, highest))``: where each edge should lie (see
        :func:`expected_tilt_edges`).

    Returns
    -------
    agrees : bool
        Each edge within its resolution + :data:`TILT_SLACK_DEG` of its interval.
    off_lo, off_hi : float
        How far each edge lies outside its interval, degrees (0 inside).
    """
    (lo, hi), ((a0, a1), (b0, b1)) = estimate, edges
    off_lo, off_hi = max(a0 - lo, lo - a1, 0.0), max(b0 - hi, hi - b1, 0.0)
    agrees = off_lo <= resolution[0] + TILT_SLACK_DEG and off_hi <= resolution[1] + TILT_SLACK_DEG
    return agrees, off_lo, off_hi
