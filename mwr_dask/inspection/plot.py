"""The picture of ``mwr-dask inspect --plot`` (matplotlib, an optional extra, imported lazily).

Three panels: the central kx-kz section of the log power spectrum with the wedge boundaries
the labels imply (dashed) and those estimated (dotted); the angular profile of normalised
power against tilt angle; the radial profile of the measured region and of the wedge.
"""

from __future__ import annotations

import math
import os
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np

from mwr_dask.inspection.spectrum import expected_tilt_edges

if TYPE_CHECKING:
    from mwr_dask.inspection.records import FolderReport

#: Size of the PNG: inches and dots per inch (1500 x 460 pixels).
FIGSIZE = (15.0, 4.6)
DPI = 100
MISSING = "--plot needs matplotlib: pip install 'mwr-dask[plot]'"


class PlotUnavailableError(RuntimeError):
    """Matplotlib is not installed."""


def require_matplotlib() -> None:
    """Raise :class:`PlotUnavailableError` (with the install hint) unless matplotlib imports."""
    try:
        import matplotlib  # noqa: F401
    except ImportError:
        raise PlotUnavailableError(MISSING) from None


def _direction(theta_deg: float, radius: float) -> tuple[list[float], list[float]]:
    """Line through the origin along the Fourier direction a tilt measures, (kx, kz)."""
    t = math.radians(theta_deg)
    kx, kz = radius * math.cos(t), -radius * math.sin(t)
    return [-kx, kx], [-kz, kz]


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
    """Write the spectrum picture of ``report`` as a PNG of ``FIGSIZE`` x ``DPI`` pixels.

    Parameters
    ----------
    report : FolderReport
        A report with an analysed spectrum (see :func:`can_plot`).
    path : pathlib.Path
        Where to write the PNG.
    """
    require_matplotlib()
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure

    sp = report.spectrum
    if not can_plot(report):
        raise ValueError("the folder has no analysed spectrum to plot")
    e = report.expected
    n = sp.n
    fig = Figure(figsize=FIGSIZE, dpi=DPI, layout="constrained")
    FigureCanvasAgg(fig)
    ax_img, ax_ang, ax_rad = fig.subplots(1, 3, width_ratios=[1.0, 1.35, 1.1])
    title = f"{Path(report.folder).name}: spectrum of {sp.volumes} volumes of {n}^3; "
    title += f"labels: {e.describe()}" if e is not None else "no mwr-dask labels"
    fig.suptitle(title, fontsize=11)
    if e is not None and e.mode == 3:
        e = None  # a measured spectrum: no tilts in the labels to draw

    # 1. the central kx-kz section, log power, DC masked
    p = sp.power.copy()
    p[n // 2, n // 2] = np.nan
    positive = p[np.isfinite(p) & (p > 0)]
    top = float(np.nanmax(p)) if positive.size else 1.0
    floor = max(float(np.median(positive)) * 1e-3, top * 1e-6) if positive.size else 1e-6
    logp = np.log10(np.clip(p, floor, None))
    k = np.arange(n) - n // 2
    extent = (k[0] - 0.5, k[-1] + 0.5, k[0] - 0.5, k[-1] + 0.5)
    im = ax_img.imshow(
        logp, origin="lower", extent=extent, cmap="magma", interpolation="nearest", aspect="equal"
    )
    fig.colorbar(im, ax=ax_img, shrink=0.8, label="log10 power")
    radius = n / 2
    if e is not None:
        for theta in (e.minangle, e.maxangle):
            ax_img.plot(*_direction(theta, radius), "--", color="cyan", lw=1.2)
    if sp.tilt_range is not None:
        for theta in sp.tilt_range:
            ax_img.plot(*_direction(theta, radius), ":", color="lime", lw=1.4)
    ax_img.set_xlim(extent[0], extent[1])
    ax_img.set_ylim(extent[2], extent[3])
    ax_img.set_xlabel("kx (Fourier pixels)")
    ax_img.set_ylabel("kz (beam)")
    ax_img.set_title("kx-kz section (mean over ky)", fontsize=10)

    # 2. angular profile against tilt angle
    filled = np.isfinite(sp.profile)
    ax_ang.plot(
        sp.profile_angle[filled],
        sp.profile[filled],
        "-",
        color="k",
        lw=1.2,
        label="normalised power",
    )
    ax_ang.axhline(0.5, color="grey", lw=0.8, ls=":")
    if e is not None:
        (lo0, lo1), (hi0, hi1) = expected_tilt_edges(e.mode, e.minangle, e.maxangle, e.anglestep)
        ax_ang.axvspan(
            lo1, hi0, color="cyan", alpha=0.15, label=f"labels {e.minangle:g}..{e.maxangle:g}"
        )
        for a, b in ((lo0, lo1), (hi0, hi1)):
            ax_ang.axvspan(a - 0.25, b + 0.25, color="cyan", alpha=0.45)
    if sp.tilt_range is not None:
        lo, hi = sp.tilt_range
        for theta in sp.tilt_range:
            ax_ang.axvline(theta, color="green", ls=":", lw=1.4)
        ax_ang.plot([], [], ":", color="green", label=f"estimated {lo:.1f}..{hi:.1f}")
    ax_ang.set_xlim(-90, 90)
    top = float(np.nanmax(sp.profile)) if filled.any() else 1.0
    ax_ang.set_ylim(0, max(1.3, top * 1.05))
    ax_ang.set_xticks(range(-90, 91, 30))
    ax_ang.set_xlabel("tilt angle (deg): direction (kx, kz) = (cos, -sin)")
    ax_ang.set_ylabel("power / measured level")
    ax_ang.set_title(f"angular profile, radii {sp.band[0]:.1f}..{sp.band[1]:.1f}", fontsize=10)
    ax_ang.legend(loc="lower center", fontsize=8)

    # 3. radial profile
    ks = sp.radial_k
    meas = sp.radial_measured
    ok = np.isfinite(meas) & (meas > 0)
    ax_rad.loglog(ks[ok], meas[ok], "o-", ms=3, color="k", label="measured region")
    if ok.any():
        low = float(meas[ok].min()) * 1e-3
        miss = sp.radial_missing
        shown = np.isfinite(miss) & (miss > low)
        if shown.any():
            ax_rad.loglog(
                ks[shown], miss[shown], "s-", ms=3, color="tab:red", label="missing wedge"
            )
        else:
            ax_rad.plot([], [], " ", label="missing wedge: below 1e-3 of measured")
        k0, k1 = sp.slope_radii
        if sp.radial_slope is not None:
            ref = meas[k0 - 1] if np.isfinite(meas[k0 - 1]) else float(np.nanmax(meas))
            fit_k = np.array([k0, k1], dtype=float)
            ax_rad.loglog(
                fit_k,
                ref * (fit_k / k0) ** sp.radial_slope,
                "--",
                color="tab:blue",
                label=f"fit |k|^{sp.radial_slope:.2f}",
            )
        ax_rad.loglog(
            ks[ok],
            np.full(ok.sum(), np.nanmedian(meas[ok])),
            ":",
            color="grey",
            label="flat (mode 2)",
        )
        ax_rad.loglog(
            ks[ok],
            meas[ok][0] * (ks[ok] / ks[ok][0]) ** -1.0,
            ":",
            color="tab:orange",
            label="1/|k| (mode 1 before interpolation)",
        )
        ax_rad.set_ylim(low, float(meas[ok].max()) * 3)
    ax_rad.set_xlabel("|k| (Fourier pixels)")
    ax_rad.set_ylabel("power")
    ax_rad.set_title("radial profile (mean per shell)", fontsize=10)
    ax_rad.legend(loc="lower left", fontsize=8)

    fig.savefig(path, dpi=DPI, format="png")
