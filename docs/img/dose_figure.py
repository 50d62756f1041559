"""Draw docs/img/dose-weighting.png: the measured attenuation of each view beside the model.

The real tilt series of tests/data/dose (EMPIAR-10164 TS_01, RELION 5 star: 40 views,
dose-symmetric, 0 .. 120 e/A^2), 10 A voxels, Grant & Grigorieff at 300 kV. Mode-1 volumes
are made with and without the weighting from the same projections (``--volumes`` of
``--cube``^3, seed 1) and their 3-D power compared:

- left: on the planes of five views (lowest to highest dose), the voxels within half a pixel
  of the plane and within 45 degrees of the x-z plane (away from the tilt axis, where
  neighbouring views overlap), weighted over unweighted power per |k| band (dots) beside the
  model exp(-N_v / Ne(k)) (lines);
- right: what ``mwr-dask inspect`` sees, the (kz, kx) spectrum summed over y at radii 0.3-0.45
  of the cube, weighted over unweighted power per direction (dots) beside the expected
  attenuation of :func:`mwr_dask.inspection.dose.attenuation` (line), with each view's tilt
  and pre-exposure.

    python3 docs/img/dose_figure.py --cube 64 --volumes 4
"""

from __future__ import annotations

import argparse
import itertools
from pathlib import Path

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt
import numpy as np

from mwr_dask.inspection.dose import attenuation
from mwr_dask.inspection.spectrum import slice_power
from mwr_dask.noise.dose import file_doses
from mwr_dask.noise.generators import BackProjection
from mwr_dask.noise.normals import volume_rng
from mwr_dask.noise.source import NoiseSource
from mwr_dask.noise.tiltfiles import read_tilt_file

ROOT = Path(__file__).resolve().parents[2]
VOXEL = 10.0


def main() -> None:
    """Make the volumes, measure, draw."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--cube", type=int, default=64)
    parser.add_argument("--volumes", type=int, default=4)
    args = parser.parse_args()
    n = args.cube
    scheme = read_tilt_file(ROOT / "tests/data/dose/relion5_TS_01.star")
    source = NoiseSource(n, seed=1, voxel_size=VOXEL, tilt_schemes=(scheme,),
                         dose_weighting="grant-grigorieff")  # fmt: skip
    weighted, plain = source.generator(0), BackProjection(n, scheme.angle_tuple)
    angles, doses = np.array(weighted.angles), np.array(weighted.dose.doses)
    p3w = p3u = p2w = p2u = 0.0
    for i in range(args.volumes):
        stacked = plain.projections(volume_rng(1, i))
        vu = plain.backproject(stacked)
        vw = weighted.backproject(weighted.filter_projections(stacked.copy()))
        p3u = p3u + np.abs(np.fft.rfftn(vu.astype(np.float64))) ** 2
        p3w = p3w + np.abs(np.fft.rfftn(vw.astype(np.float64))) ** 2
        p2u, p2w = p2u + slice_power(vu) * vu.var(), p2w + slice_power(vw) * vw.var()

    fig, (left, right) = plt.subplots(1, 2, figsize=(12, 4.6))
    k = np.round(np.fft.fftfreq(n) * n)
    kz, ky, kx = np.meshgrid(k, k, np.arange(n // 2 + 1), indexing="ij")
    r3, rxz = np.sqrt(kz**2 + ky**2 + kx**2) / n, np.hypot(kz, kx) / n
    edges = np.linspace(0.05, 0.5, 10)
    order = np.argsort(doses, kind="stable")
    picks = order[np.linspace(0, len(order) - 1, 5).round().astype(int)]
    fine = np.linspace(0.0, 0.5, 200)
    for v, color in zip(picks, plt.cm.viridis(np.linspace(0, 0.9, len(picks))), strict=True):
        t = np.radians(angles[v])
        on = (np.abs(kx * np.sin(t) + kz * np.cos(t)) < 0.5) & (rxz >= 0.7 * r3)
        mid, ratio = [], []
        for lo, hi in itertools.pairwise(edges):
            sel = on & (r3 >= lo) & (r3 < hi)
            mid.append(r3[sel].mean())
            ratio.append(p3w[sel].sum() / p3u[sel].sum())
        model = weighted.dose.amplitudes(fine**2)[v] ** 2
        label = f"{angles[v]:+.0f} deg, N = {doses[v]:.0f} e/A$^2$"
        left.plot(fine / VOXEL, model, color=color, label=label)
        left.plot(np.array(mid) / VOXEL, ratio, "o", color=color, ms=5)
    left.set(xlabel="|k| (1/A)", ylabel="weighted / unweighted power on the view's plane",
             title=f"each view: measured (dots), exp(-N/Ne(k)) (lines); {n}$^3$, 10 A voxels",
             ylim=(0, 1.05))  # fmt: skip
    left.legend(fontsize=8)

    f = np.fft.fftfreq(n)
    fz, fx = np.meshgrid(f, f[: n // 2 + 1], indexing="ij")
    tilt = (np.degrees(np.arctan2(-fz, fx)) + 90.0) % 180.0 - 90.0
    band = (np.hypot(fz, fx) >= 0.3) & (np.hypot(fz, fx) <= 0.45)
    recorded = NoiseSource(n, seed=1, voxel_size=VOXEL, minangle=angles[0], maxangle=angles[-1],
                           anglestep=3.0, dose_weighting="grant-grigorieff",
                           doses=file_doses(scheme))  # fmt: skip
    expected = attenuation(n, recorded)
    bins = np.arange(-61.5, 61.6, 3.0)
    idx = np.digitize(tilt[band], bins)
    centres = (bins[:-1] + bins[1:]) / 2
    measured = [(p2w / p2u)[band][idx == b].mean() if (idx == b).any() else np.nan
                for b in range(1, len(bins))]  # fmt: skip
    model = [expected[band][idx == b].mean() if (idx == b).any() else np.nan
             for b in range(1, len(bins))]  # fmt: skip
    right.plot(centres, model, "-", color="k", label="expected (inspect's model)")
    right.plot(centres, measured, "o", color="tab:red", ms=4, label="measured")
    twin = right.twinx()
    twin.bar(angles, doses, width=1.2, color="tab:blue", alpha=0.25)
    twin.set_ylabel("pre-exposure of the view (e/A$^2$)", color="tab:blue")
    right.set(xlabel="tilt of the direction (deg)", ylabel="weighted / unweighted power",
              title="the (kz, kx) spectrum at radii 0.3-0.45 (what inspect checks)",
              ylim=(0, 1.05))  # fmt: skip
    right.legend(fontsize=8, loc="lower center")
    fig.tight_layout()
    out = ROOT / "docs/img/dose-weighting.png"
    fig.savefig(out, dpi=110)
    print(f"wrote {out}")


if __name__ == "__main__":
    main()
