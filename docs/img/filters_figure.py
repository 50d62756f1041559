"""Draw docs/img/filters.png: measured radial power profile of each filter beside its model.

For each filter, ``--volumes`` normalised mode-1 volumes are generated with the real generator
(seed 1, indices 0..), their (kz, kx) power is summed with
``mwr_dask.inspection.spectrum.slice_power`` (what ``mwr-dask inspect`` measures) and averaged
per radial shell over the measured region (tilts inside the range, 5 degrees from its edges).
Each panel draws the measured profile with the model |W|^2 / |k| (unfiltered back-projection
falls like 1 / |k|; the roll-off of linear interpolation left out) and the measured unfiltered
profile times |W|^2 (:func:`mwr_dask.inspection.filtered.expected_power_ratio`), both scaled to
the measured one (least squares in log over shells 3 .. 0.3 n). Also prints the log-log slope
of each measured profile between shells 4 and 0.4 n.

    python3 docs/img/filters_figure.py --cube 64 --volumes 8
"""

from __future__ import annotations

import argparse
from pathlib import Path

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt
import numpy as np

from mwr_dask.inspection.filtered import expected_power_ratio
from mwr_dask.inspection.spectrum import full_plane, polar, shell_index, slice_power
from mwr_dask.noise.filters import FILTERS, make_filter
from mwr_dask.noise.generators import BackProjection
from mwr_dask.noise.geometry import tilt_angles
from mwr_dask.noise.normals import volume_rng


def measured_profile(n: int, angles: np.ndarray, name: str, volumes: int) -> np.ndarray:
    """Mean power per integer shell 0 .. n // 2 of the measured region, (kz, kx) plane."""
    g = BackProjection(n, tuple(angles.tolist()), make_filter(name))
    half = sum(slice_power(g(volume_rng(1, i))) for i in range(volumes)) / volumes
    p = full_plane(half, n)
    r, phi = polar(n)
    tilt = -phi
    inside = (tilt >= angles[0] + 5) & (tilt <= angles[-1] - 5) & (r <= n // 2)
    shells = shell_index(r)
    s = np.bincount(shells[inside], weights=p[inside], minlength=n // 2 + 1)
    c = np.bincount(shells[inside], minlength=n // 2 + 1)
    with np.errstate(invalid="ignore", divide="ignore"):
        return (s / c)[: n // 2 + 1]


def fit_scale(model: np.ndarray, data: np.ndarray, use: np.ndarray) -> np.ndarray:
    """``model`` scaled to ``data`` by least squares in log over ``use``."""
    good = use & (model > 0) & (data > 0)
    return model * np.exp(np.mean(np.log(data[good]) - np.log(model[good])))


def main() -> None:
    """Generate, measure, draw, print the slopes."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--cube", type=int, default=64)
    parser.add_argument("--tilt", type=float, nargs=3, default=(-60.0, 60.0, 2.0))
    parser.add_argument("--volumes", type=int, default=8)
    parser.add_argument("--out", type=Path, default=Path(__file__).with_name("filters.png"))
    args = parser.parse_args()
    n = args.cube
    angles = tilt_angles(*args.tilt)
    k = np.arange(n // 2 + 1)
    kf = k / n
    use = (k >= 3) & (k <= 0.3 * n)  # below the imod cutoff, whose fall-off is blurred
    slope_use = (k >= 4) & (k <= 0.4 * n)

    profiles = {name: measured_profile(n, angles, name, args.volumes) for name in FILTERS}
    fig, axes = plt.subplots(3, 3, figsize=(11, 9), sharex=True)
    print(f"cube {n}, tilts {tuple(args.tilt)}, {args.volumes} volumes per filter")
    print(f"{'filter':12s} slope(shells 4..{int(0.4 * n)})")
    for ax, name in zip(axes.ravel(), FILTERS, strict=True):
        spec = make_filter(name)
        data = profiles[name]
        slope = np.polyfit(np.log(k[slope_use]), np.log(data[slope_use]), 1)[0]
        print(f"{name:12s} {slope:+.2f}")
        with np.errstate(divide="ignore", invalid="ignore"):  # |W|^2 / |k|, inf at k = 0
            model = expected_power_ratio(spec, kf, angles) / kf
        ideal = fit_scale(model, data, use)
        based = fit_scale(profiles["none"] * expected_power_ratio(spec, kf, angles), data, use)
        ax.loglog(k[1:], data[1:], "o", ms=3, color="k", label="measured")
        ax.loglog(k[1:], ideal[1:], "--", color="tab:blue", label="|W|² / |k|")
        ax.loglog(k[1:], based[1:], "-", lw=1, color="tab:orange", label="unfiltered x |W|²")
        ax.set_title(f"{spec.label()}, slope {slope:+.2f}", fontsize=9)
        ax.grid(True, which="both", alpha=0.3)
        lo = np.nanmin(data[1:][data[1:] > 0])
        ax.set_ylim(lo / 3, np.nanmax(data[1:]) * 3)
    for ax in axes[-1]:
        ax.set_xlabel("|k| in the kx-kz plane (Fourier pixels)")
    for ax in axes[:, 0]:
        ax.set_ylabel("power (normalised volumes)")
    axes[0, 0].legend(fontsize=8)
    fig.suptitle(
        f"mode 1, {n}³, tilts {args.tilt[0]:g}..{args.tilt[1]:g} step {args.tilt[2]:g}:"
        " radial power of the measured region",
        fontsize=11,
    )
    fig.tight_layout()
    fig.savefig(args.out, dpi=90)
    print(f"wrote {args.out}")


if __name__ == "__main__":
    main()
