"""The picture of ``mwr-dask inspect --plot`` (matplotlib, an optional extra, imported lazily).

Three panels: the central kx-kz section of the log power spectrum with the wedge boundaries
expected (dashed: the labels of a folder, the tilt file of a tomogram) and those estimated
(dotted); the angular profile of normalised power against tilt angle; the radial profile of
the measured region and of the wedge. And the picture of ``measure-noise --plot``
(:func:`plot_spectrum`).
"""

from __future__ import annotations

import math
import os
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np

from mwr_dask.inspection.spectrum import expected_tilt_edges

if TYPE_CHECKING:
    from mwr_dask.inspection.records import FolderReport
    from mwr_dask.inspection.spectrum import SpectrumAnalysis

#: Size of the PNG: inches and dots per inch (1500 x 460 pixels).
FIGSIZE = (15.0, 4.6)
DPI = 100
MISSING = "--plot needs matplotlib: pip install 'mwr-dask[plot]'"


class PlotUnavailableError(RuntimeError):
    """Matplotlib is not installed."""


@dataclass(frozen=True)
class Expected:
    """A tilt range as drawn: legend, and ((lowest, highest), (lowest, highest)) of each edge."""

    text: str
    edges: tuple[tuple[float, float], tuple[float, float]]


def require_matplotlib() -> None:
    """Raise :class:`PlotUnavailableError` (with the install hint) unless matplotlib imports."""
    try:
        import matplotlib  # noqa: F401
    except ImportError:
        raise PlotUnavailableError(MISSING) from None


def can_plot(report: FolderReport) -> bool:
    """Return True when the report has a spectrum analysed enough to draw (not a cube below 8^3)."""
    return report.spectrum is not None and report.spectrum.limit is None


def inside(path: Path, folder: Path) -> bool:
    """Return True when ``path`` is ``folder`` or lies in it, symlinks and mounts resolved.

    Compares the real path's ancestors with the folder by device and inode, so that a link,
    ``..`` or a second mount of the same folder is seen through.
    """
    try:
        target = os.stat(folder)
    except OSError:
        return False
    real = Path(os.path.realpath(Path(path).absolute()))
    for parent in (real, *real.parents):
        try:
            if os.path.samestat(os.stat(parent), target):
                return True
        except OSError:
            continue
    return False


def plot_report(report: FolderReport, path: Path) -> None:
    """Write the spectrum picture of a folder's ``report`` (see :func:`plot_analysis`)."""
    sp, e = report.spectrum, report.expected
    title = f"{Path(report.folder).name}: spectrum of {sp.volumes} volumes of {sp.n}^3; "
    title += f"labels: {report.describe_labels()}" if e is not None else "no mwr-dask labels"
    expected = None
    if e is not None and e.mode != 3:  # a measured spectrum has no tilts in its labels
        edges = expected_tilt_edges(e.mode, e.minangle, e.maxangle, e.anglestep)
        expected = Expected(f"labels {e.minangle:g}..{e.maxangle:g}", edges)
    plot_analysis(sp, path, title, expected)


def plot_analysis(
    sp: SpectrumAnalysis, path: Path, title: str, expected: Expected | None = None
) -> None:
    """Write the picture of an analysed spectrum (``sp.limit`` None) as a PNG."""
    require_matplotlib()
    if sp.limit is not None:
        raise ValueError("the spectrum was not analysed: nothing to plot")
    fig, (ax_img, ax_ang, ax_rad) = _figure(title, [1.0, 1.35, 1.1])
    _section(fig, ax_img, sp, expected)
    _angular(ax_ang, sp, expected)
    _radial(ax_rad, sp)
    fig.savefig(path, dpi=DPI, format="png")


def _figure(title: str, width_ratios: list[float]):
    """Return a figure of ``FIGSIZE`` x ``DPI`` pixels and its three panels."""
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure

    fig = Figure(figsize=FIGSIZE, dpi=DPI, layout="constrained")
    FigureCanvasAgg(fig)
    axes = fig.subplots(1, 3, width_ratios=width_ratios)
    fig.suptitle(title, fontsize=11)
    return fig, axes


def _direction(theta_deg: float, radius: float) -> tuple[list[float], list[float]]:
    """Line through the origin along the Fourier direction a tilt measures, (kx, kz)."""
    t = math.radians(theta_deg)
    kx, kz = radius * math.cos(t), -radius * math.sin(t)
    return [-kx, kx], [-kz, kz]


def _log_power(fig, ax, plane: np.ndarray, title: str, ylabel: str) -> None:
    """Draw a centred power plane (n, n) in log10, DC masked, down to 1e-3 of its median."""
    n = plane.shape[0]
    p = np.array(plane, dtype=np.float64)
    p[n // 2, n // 2] = np.nan
    positive = p[np.isfinite(p) & (p > 0)]
    floor = max(np.median(positive) * 1e-3, positive.max() * 1e-6) if positive.size else 1e-6
    k = np.arange(n) - n // 2
    extent = (k[0] - 0.5, k[-1] + 0.5, k[0] - 0.5, k[-1] + 0.5)
    im = ax.imshow(
        np.log10(np.clip(p, floor, None)),
        origin="lower",
        extent=extent,
        cmap="magma",
        interpolation="nearest",
    )
    fig.colorbar(im, ax=ax, shrink=0.8, label="log10 power")
    ax.set_xlim(extent[0], extent[1])
    ax.set_ylim(extent[2], extent[3])
    ax.set_xlabel("kx (Fourier pixels)")
    ax.set_ylabel(ylabel)
    ax.set_title(title, fontsize=10)


def _section(fig, ax, sp: SpectrumAnalysis, expected: Expected | None) -> None:
    """Draw the central kx-kz section (log power, DC masked) and the wedge's edges."""
    _log_power(fig, ax, sp.power, "kx-kz section (mean over ky)", "kz (beam)")
    lines = [] if expected is None else [(expected.edges[0][1], "--", "cyan", 1.2)]
    lines += [] if expected is None else [(expected.edges[1][0], "--", "cyan", 1.2)]
    lines += [(theta, ":", "lime", 1.4) for theta in sp.tilt_range or ()]
    for theta, style, colour, width in lines:
        ax.plot(*_direction(theta, sp.n / 2), style, color=colour, lw=width)


def _angular(ax, sp: SpectrumAnalysis, expected: Expected | None) -> None:
    """Normalised power against tilt angle, with the expected range and the estimated edges."""
    filled = np.isfinite(sp.profile)
    ax.plot(sp.profile_angle[filled], sp.profile[filled], "-", color="k", lw=1.2,
            label="normalised power")  # fmt: skip
    ax.axhline(0.5, color="grey", lw=0.8, ls=":")
    if expected is not None:
        (lo0, lo1), (hi0, hi1) = expected.edges
        ax.axvspan(lo1, hi0, color="cyan", alpha=0.15, label=expected.text)
        for a, b in ((lo0, lo1), (hi0, hi1)):
            ax.axvspan(a - 0.25, b + 0.25, color="cyan", alpha=0.45)
    if sp.tilt_range is not None:
        lo, hi = sp.tilt_range
        for theta in sp.tilt_range:
            ax.axvline(theta, color="green", ls=":", lw=1.4)
        ax.plot([], [], ":", color="green", label=f"estimated {lo:.1f}..{hi:.1f}")
    ax.set_xlim(-90, 90)
    top = float(np.nanmax(sp.profile)) if filled.any() else 1.0
    ax.set_ylim(0, max(1.3, top * 1.05))
    ax.set_xticks(range(-90, 91, 30))
    ax.set_xlabel("tilt angle (deg): direction (kx, kz) = (cos, -sin)")
    ax.set_ylabel("power / measured level")
    ax.set_title(f"angular profile, radii {sp.band[0]:.1f}..{sp.band[1]:.1f}", fontsize=10)
    ax.legend(loc="lower center", fontsize=8)


def _radial(ax, sp: SpectrumAnalysis) -> None:
    """Mean power per shell of the measured region and of the wedge, the fit, two references."""
    ks, meas = sp.radial_k, sp.radial_measured
    ok = np.isfinite(meas) & (meas > 0)
    ax.loglog(ks[ok], meas[ok], "o-", ms=3, color="k", label="measured region")
    if ok.any():
        low = float(meas[ok].min()) * 1e-3
        miss = sp.radial_missing
        shown = np.isfinite(miss) & (miss > low)
        if shown.any():
            ax.loglog(ks[shown], miss[shown], "s-", ms=3, color="tab:red", label="missing wedge")
        else:
            ax.plot([], [], " ", label="missing wedge: below 1e-3 of measured")
        k0, k1 = sp.slope_radii
        if sp.radial_slope is not None:
            ref = meas[k0 - 1] if np.isfinite(meas[k0 - 1]) else float(np.nanmax(meas))
            fit_k = np.array([k0, k1], dtype=float)
            ax.loglog(fit_k, ref * (fit_k / k0) ** sp.radial_slope, "--", color="tab:blue",
                      label=f"fit |k|^{sp.radial_slope:.2f}")  # fmt: skip
        ax.loglog(ks[ok], np.full(ok.sum(), np.nanmedian(meas[ok])), ":", color="grey",
                  label="flat (mode 2)")  # fmt: skip
        ax.loglog(ks[ok], meas[ok][0] * (ks[ok] / ks[ok][0]) ** -1.0, ":", color="tab:orange",
                  label="1/|k| (mode 1 before interpolation)")  # fmt: skip
        ax.set_ylim(low, float(meas[ok].max()) * 3)
    ax.set_xlabel("|k| (Fourier pixels)")
    ax.set_ylabel("power")
    ax.set_title("radial profile (mean per shell)", fontsize=10)
    ax.legend(loc="lower left", fontsize=8)


def plot_spectrum(spectrum: np.ndarray, path: Path, title: str) -> None:
    """Write a PNG of a measured spectrum (``measure-noise --plot``).

    Panels: the kx-kz and kx-ky views (log power, averaged over the third axis), and the
    radial profile overall and within 20 degrees of each axis
    (:func:`~.measured.axis_profiles`).
    """
    require_matplotlib()
    from mwr_dask.inspection.measured import axis_profiles

    n = spectrum.shape[0]
    fig, (ax_xz, ax_xy, ax_rad) = _figure(title, [1.0, 1.0, 1.2])
    _log_power(fig, ax_xz, spectrum.mean(axis=1), "log10 power, kx-kz (mean over ky)", "kz")
    _log_power(fig, ax_xy, spectrum.mean(axis=0), "log10 power, kx-ky (mean over kz)", "ky")
    profiles = axis_profiles(spectrum)
    radii = np.arange(1, n // 2 + 1)
    ax_rad.loglog(radii, profiles.pop("all"), "k-", lw=2, label="all directions")
    for (name, values), style in zip(profiles.items(), ("C0--", "C1-.", "C2:"), strict=True):
        ax_rad.loglog(radii, values, style, label=f"within 20 deg of {name}")
    ax_rad.set_xlabel("|k| (Fourier pixels)")
    ax_rad.set_ylabel("power (mean 1 over the cube)")
    ax_rad.set_title("radial profile", fontsize=10)
    ax_rad.legend(fontsize=8)
    fig.savefig(os.fspath(path), format="png")
