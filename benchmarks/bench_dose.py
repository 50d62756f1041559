"""Time a dose-weighted volume side by side with the unweighted one (modes 1 and 2).

One core, one thread, in this process. The generators run in an order that rotates between
repeats, each on ``--volumes`` consecutive indices; the median CPU time of the thread per
volume (``time.thread_time``: other jobs on a shared machine change it less than wall time) is
reported with its ratio to the unweighted generator of its mode, and mode 1's filtering step
alone (``BackProjection.filter_projections``) and each generator's build are timed too. ``uptime``
is printed before and after. Tilts: the regular range, dose-symmetric, ``--dose`` e/A^2 per
view, 10 A voxels.

    python3 benchmarks/bench_dose.py --cube 64 --repeats 9 --volumes 10
"""

from __future__ import annotations

import os

os.environ.setdefault("OMP_NUM_THREADS", "1")
os.environ.setdefault("OPENBLAS_NUM_THREADS", "1")

import argparse
import subprocess
import time
from statistics import median

from mwr_dask.noise.dose import DoseWeights, range_doses
from mwr_dask.noise.filters import make_filter
from mwr_dask.noise.generators import BackProjection, WedgeFilter
from mwr_dask.noise.geometry import tilt_angles
from mwr_dask.noise.normals import volume_rng


def uptime() -> str:
    return subprocess.run(["uptime"], capture_output=True, text=True).stdout.strip()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--cube", type=int, default=64)
    parser.add_argument("--tilt", type=float, nargs=3, default=(-60.0, 60.0, 2.0))
    parser.add_argument("--dose", type=float, default=2.0, help="e/A^2 per view")
    parser.add_argument("--repeats", type=int, default=9)
    parser.add_argument("--volumes", type=int, default=10, help="volumes per timing")
    args = parser.parse_args()

    n, angles = args.cube, tuple(tilt_angles(*args.tilt).tolist())
    doses, _ = range_doses(angles, args.dose, "dose-symmetric")
    dw = DoseWeights("grant-grigorieff", 300.0, 10.0, angles, doses)
    ramp = make_filter("ramp")
    makers = {
        "mode 1": lambda: BackProjection(n, angles),
        "mode 1 + dose": lambda: BackProjection(n, angles, dose=dw),
        "mode 1 ramp": lambda: BackProjection(n, angles, ramp),
        "mode 1 ramp + dose": lambda: BackProjection(n, angles, ramp, dw),
        "mode 2": lambda: WedgeFilter(n, angles[0], angles[-1]),
        "mode 2 + dose": lambda: WedgeFilter(n, angles[0], angles[-1], dw),
    }
    gens, build = {}, {}
    for name, make in makers.items():
        t0 = time.thread_time()
        gens[name] = make()
        build[name] = time.thread_time() - t0
        gens[name](volume_rng(0, 0))  # warm the scratch buffers
    stacked = gens["mode 1"].projections(volume_rng(0, 1))
    print(f"cube {n}, tilts {args.tilt} ({len(angles)} views), {args.dose} e/A^2 per view")
    print("before:", uptime())
    names = list(gens)
    per_volume: dict[str, list[float]] = {name: [] for name in names}
    step: dict[str, list[float]] = {name: [] for name in names if "ramp" in name or "dose" in name}
    for rep in range(args.repeats):
        for name in names[rep % len(names) :] + names[: rep % len(names)]:
            g = gens[name]
            t0 = time.thread_time()
            for i in range(args.volumes):
                g(volume_rng(rep + 1, i))
            per_volume[name].append((time.thread_time() - t0) / args.volumes)
            if name in step and name.startswith("mode 1"):
                work = stacked.copy()
                t0 = time.thread_time()
                for _ in range(args.volumes):
                    g.filter_projections(work)
                step[name].append((time.thread_time() - t0) / args.volumes)
    print("after: ", uptime())
    print(f"{'generator':20s} {'ms/volume':>10s} {'ratio':>6s} {'step ms':>8s} {'build ms':>9s}")
    for name in names:
        base = median(per_volume[name.split(" ")[0] + " " + name.split(" ")[1]])
        t = median(per_volume[name])
        s = f"{median(step[name]) * 1e3:8.2f}" if step.get(name) else " " * 8
        print(f"{name:20s} {t * 1e3:10.2f} {t / base:6.2f} {s} {build[name] * 1e3:9.1f}")


if __name__ == "__main__":
    main()
