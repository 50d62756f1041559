"""What a run would do, for ``--dry-run``: volumes, bytes, tasks, cluster and job script."""

from __future__ import annotations

import shutil
from pathlib import Path
from typing import TYPE_CHECKING

from mwr_dask.noise.source import MODES, NoiseSource
from mwr_dask.parallel.pipeline import partition_plan

if TYPE_CHECKING:
    from mwr_dask.parallel.clusters import Cluster


#: How ``--dry-run`` names the seed of a run that will draw a fresh one.
FRESH_SEED = (
    "fresh (128 bits from the OS, drawn when the run starts, printed and recorded in every"
    " label; give --seed N to choose one)"
)


def free_bytes(folder: Path) -> int | None:
    """Free bytes on the filesystem that holds (or would hold) ``folder``."""
    for path in (folder, *folder.parents):
        if path.exists():
            try:
                return shutil.disk_usage(path).free
            except OSError:
                return None
    return None


def describe_plan(
    params: NoiseSource,
    start: int,
    count: int,
    folder: Path,
    existing: list[int],
    cluster: Cluster,
    *,
    fresh_seed: bool = False,
) -> str:
    """Describe what a run would do, with the job script for a batch cluster.

    ``folder`` may not exist; ``existing``: indices of the ``n_*.mrc`` files already there.
    ``fresh_seed``: the run would draw a fresh seed (no ``--seed``, none recorded in the
    folder): the plan says so instead of showing ``params.seed``, which the run would not use.
    """
    last = start + count - 1
    total = count * params.volume_bytes
    there = sum(1 for i in existing if start <= i <= last)
    n = params.cubesize
    lines = [
        "Dry run: nothing is written or submitted.",
        f"Volumes: n_{start:05d}.mrc .. n_{last:05d}.mrc, {count} of {n}x{n}x{n}"
        f" ({MODES[params.mode]}) in {folder}",
        f"Bytes: {params.volume_bytes:,} per volume, {total:,} in all ({total / 2**30:.3f} GiB)",
    ]
    free = free_bytes(folder)
    if free is not None:
        lines[-1] += f"; {free / 2**30:.1f} GiB free there"
    if there:
        lines.append(f"Already there: {there} of these files (complete ones are skipped)")
    lines.append(f"Parameters: {params.describe(seed=FRESH_SEED if fresh_seed else None)}")
    lines.append(f"Cluster: {cluster.describe()}")
    workers = cluster.planned_workers()
    if workers is None:
        lines.append("Tasks: planned at run time for the workers the cluster has then")
    else:
        parts, base, extra = partition_plan(start, count, workers, params.volume_bytes)
        each = f"{base}" if extra == 0 else f"{base}-{base + 1}"
        lines.append(
            f"Tasks: {parts:,} (one per partition of {each} volumes)"
            f" for {workers} worker thread{'s' * (workers != 1)}"
        )
    script = cluster.script()
    if script is not None:
        lines.append(f"Job script (one per {cluster.label.removesuffix(' cluster')} job):")
        lines.append(script.rstrip("\n"))
    return "\n".join(lines)
