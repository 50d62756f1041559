"""Time a mode-1 volume with each reconstruction filter, side by side with the unfiltered one.

One core, one thread, in this process. For each repeat the generators run in an order that
rotates between repeats, each on ``--volumes`` consecutive indices, so that other load on the
machine falls on all alike; the median time per volume over repeats is reported with its
ratio to the unfiltered generator of the same run. The filtering step alone
(``BackProjection.filter_projections``) is timed the same way. ``uptime`` is printed before
and after.

    python3 benchmarks/bench_filters.py --cube 64 --repeats 7 --volumes 20
"""

from __future__ import annotations

import os

os.environ.setdefault("OMP_NUM_THREADS", "1")
os.environ.setdefault("OPENBLAS_NUM_THREADS", "1")
os.environ.setdefault("MKL_NUM_THREADS", "1")

import argparse
import subprocess
import time
from statistics import median

from mwr_dask.noise.filters import FILTERS, make_filter
from mwr_dask.noise.generators import BackProjection
from mwr_dask.noise.geometry import tilt_angles
from mwr_dask.noise.normals import volume_rng


def uptime() -> str:
    return subprocess.run(["uptime"], capture_output=True, text=True).stdout.strip()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--cube", type=int, default=64)
    parser.add_argument("--tilt", type=float, nargs=3, default=(-60.0, 60.0, 2.0))
    parser.add_argument("--repeats", type=int, default=7)
    parser.add_argument("--volumes", type=int, default=20, help="volumes per timing")
    parser.add_argument("--filters", nargs="*", default=list(FILTERS))
    args = parser.parse_args()

    angles = tuple(tilt_angles(*args.tilt).tolist())
    names = ["none", *[f for f in args.filters if f != "none"]]
    gens = {name: BackProjection(args.cube, angles, make_filter(name)) for name in names}
    for g in gens.values():  # warm the scratch buffers
        g(volume_rng(0, 0))
    filtered = [name for name in names if name != "none"]
    stacked = gens["none"].projections(volume_rng(0, 1))

    print(f"cube {args.cube}, tilts {args.tilt} ({len(angles)} views)")
    if filtered:
        print(f"padded length {gens[filtered[0]].padded_length}")
    print("before:", uptime())
    per_volume = {name: [] for name in names}
    filter_only = {name: [] for name in filtered}
    for rep in range(args.repeats):
        order = names[rep % len(names) :] + names[: rep % len(names)]
        for name in order:
            g = gens[name]
            t0 = time.perf_counter()
            for i in range(args.volumes):
                g(volume_rng(rep, i))
            per_volume[name].append((time.perf_counter() - t0) / args.volumes)
            if name != "none":
                work = stacked.copy()
                t0 = time.perf_counter()
                for _ in range(args.volumes):
                    g.filter_projections(work)
                filter_only[name].append((time.perf_counter() - t0) / args.volumes)
    print("after: ", uptime())

    base = median(per_volume["none"])
    print(f"{'filter':12s} {'ms/volume':>10s} {'ratio':>6s} {'filter step ms':>15s}")
    for name in names:
        t = median(per_volume[name])
        step = f"{median(filter_only[name]) * 1e3:15.2f}" if name in filter_only else " " * 15
        print(f"{name:12s} {t * 1e3:10.2f} {t / base:6.2f} {step}")
    plain = per_volume["none"]
    ratios = [t / b for name in filtered for t, b in zip(per_volume[name], plain, strict=True)]
    if ratios:
        print(f"ratio per repeat (all filters): min {min(ratios):.2f} max {max(ratios):.2f}")


if __name__ == "__main__":
    main()
