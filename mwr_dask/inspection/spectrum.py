"""The averaged kx-kz power spectrum of a noise folder and what it says (pure numpy).

The wedge does not depend on ky, so every y-slice is a sample of the same (kz, kx) spectrum;
:func:`analyse` turns the folder's average into a tilt range (a two-level arc fit), a wedge
ratio and a radial fall-off, as docs/inspect.md describes. A tilt theta measures the direction
(cos theta, -sin theta), so measured directions ``[lo, hi]`` are tilts ``[-hi, -lo]``.
Arrays are (z, y, x); directions are degrees folded into (-90, 90].
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
#: Beyond this gap (Fourier pixels, band's inner radius) between neighbouring tilts' lines, mode
#: 1's tilts are resolved, not one arc: measured failures from 1.57 pixels (16^3 every 30 deg,
#: 32^3 every 30, 48^3 every 22.5, 64^3 every 20), successes up to 1.40 (32^3 every 25) and at
#: 1.68 (64^3 every 15).
MAX_TILT_GAP_PIXELS = 1.5
#: Below this width (Fourier pixels, at the band's outer radius) the missing wedge is narrower
#: than the grid resolves: mode 1 at 32^3 with -88:88:1 (0.7 pixel) shows none, -87:87:1
#: (1.2 pixels) shows it.
MIN_WEDGE_PIXELS = 1.0
#: Slack (degrees) on top of an edge's resolution when comparing with the expected range.
TILT_SLACK_DEG = 1.5


def slice_power(volume: np.ndarray) -> np.ndarray:
    """Sum over y of the (kz, kx) periodograms of a (z, y, x) volume, normalised by its variance.

    Shape (nz, nx // 2 + 1), ``numpy.fft`` order; white noise has a mean of 1 per Fourier pixel
    whatever its scale; DC is 0; a constant volume gives zeros.
    """
    v = np.asarray(volume, dtype=np.float32)
    v = v - np.float32(v.mean(dtype=np.float64))
    f = scipy.fft.rfftn(v, axes=(0, 2), workers=1)
    p = (f.real**2 + f.imag**2).sum(axis=1, dtype=np.float64)
    total = float(np.dot(v.ravel(), v.ravel()))
    return p / total if total > 0 else p * 0.0


def full_plane(half: np.ndarray, n: int) -> np.ndarray:
    """Expand a half-plane (kz, kx >= 0) spectrum to the full fftshifted (n, n) plane."""
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
    """Degrees by which directions ``phi`` (mod 180) lie inside ``[lo, hi]`` (negative: outside)."""
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
    """A two-level fit against direction: the high arc ``[lo, hi]``, degrees, and the levels.

    ``hi`` exceeds 90 when the arc contains kz. ``lo_unc``, ``hi_unc``: half the gap between the
    nearest samples either side of each edge, degrees.
    """

    lo: float
    hi: float
    high: float
    low: float
    lo_unc: float
    hi_unc: float


def fit_arc(phi: np.ndarray, values: np.ndarray, bin_deg: float = FIT_BIN_DEG) -> ArcFit:
    """Least-squares two-level fit of ``values`` against direction ``phi`` (degrees, binned).

    Each edge lies halfway between the nearest non-empty bins on either side, so a soft step is
    cut where it crosses the middle of the two levels. 180 must be a multiple of ``bin_deg``.
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
    """Divide each shell of ``p`` by the mean of its pixels in ``select`` (else ``fallback``)."""
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
    """What the averaged (kz, kx) power spectrum says (docs/inspect.md).

    ``band``: radii, Fourier pixels; ``power``: (kz, kx) fftshifted; angles in degrees;
    ``contrast``: low over high level (0: a perfect wedge, 1: none); ``limit``: why the
    spectrum could not be analysed at all, or None.
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
    """Estimate tilt range, wedge ratio and radial fall-off from summed :func:`slice_power`."""
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
    """Fit the arc to the power normalised per shell (by all, then by the measured arc's core)."""
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
    """Mean power per shell in the measured region and the wedge, and the log-log slope.

    The slope uses the pixels' mean radius: a shell's pixels in a narrow arc do not centre on
    its nominal radius.
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
    """Gap, Fourier pixels, between the lines of neighbouring tilts at the band's inner radius."""
    return band_radii(n)[0] * math.radians(anglestep)


def wedge_width_pixels(
    n: int, mode: int, minangle: float, maxangle: float, anglestep: float
) -> float:
    """Width, Fourier pixels, of the expected missing wedge at the band's outer radius."""
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
    """Intervals ``((lo, hi), (lo, hi))``, tilt degrees, where the two estimated edges should lie.

    Mode 1's edges lie between the outermost tilt and half a step beyond it: each tilt stands
    for the directions up to half a step away when neighbouring planes blur into each other.
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
    """(agrees, off_lo, off_hi): each edge within resolution + TILT_SLACK_DEG; degrees outside."""
    (lo, hi), ((a0, a1), (b0, b1)) = estimate, edges
    off_lo, off_hi = max(a0 - lo, lo - a1, 0.0), max(b0 - hi, hi - b1, 0.0)
    agrees = off_lo <= resolution[0] + TILT_SLACK_DEG and off_hi <= resolution[1] + TILT_SLACK_DEG
    return agrees, off_lo, off_hi
