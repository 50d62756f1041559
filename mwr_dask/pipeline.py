"""The Dask pipeline: a bag of volume indices -> generate -> write, one file per volume.

Only top-level functions of this module and small arguments travel to the workers: the graph
holds one ``range`` per partition, so its size does not grow with the number of volumes beyond
the partition count. Each task returns a small summary of its partition, never an array.
"""

from __future__ import annotations

import math
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

import dask.bag as db
from distributed import Client, as_completed

from mwr_dask.generators import generator_for, volume_rng
from mwr_dask.mrcio import is_complete, write_volume
from mwr_dask.params import NoiseParams, volume_name

#: Largest output of one partition: bounds the work lost and redone when a worker dies.
PARTITION_BYTES = 128 * 2**20
#: Partitions per worker at least, so that workers stay busy to the end of the run.
PARTITIONS_PER_WORKER = 4


def partition_ranges(start: int, count: int, workers: int, volume_bytes: int) -> list[range]:
    """Split the indices ``start .. start + count - 1`` into contiguous partitions.

    The rule: at least ``PARTITIONS_PER_WORKER`` partitions per worker (load balance at the
    end of the run), and no partition writing more than ``PARTITION_BYTES`` (cheap retries,
    steady progress), but never more partitions than volumes. Sizes differ by at most one.
    """
    parts = max(
        PARTITIONS_PER_WORKER * max(workers, 1), math.ceil(count * volume_bytes / PARTITION_BYTES)
    )
    parts = max(1, min(count, parts))
    base, extra = divmod(count, parts)
    ranges, lo = [], start
    for k in range(parts):
        hi = lo + base + (1 if k < extra else 0)
        ranges.append(range(lo, hi))
        lo = hi
    return ranges


def write_one(
    index: int, params: NoiseParams, folder: str, tmp_dir: str, overwrite: bool, fsync: bool
) -> dict:
    """Generate volume ``index`` and write it atomically, unless a complete file is there.

    Returns
    -------
    dict
        ``index``, ``status`` ("written", "skipped" or "failed"), ``seconds`` and, on failure,
        ``error`` (one sentence).
    """
    path = Path(folder) / volume_name(index)
    if not overwrite and is_complete(path, params.cubesize):
        return {"index": index, "status": "skipped", "seconds": 0.0}
    t0 = time.perf_counter()
    generate = generator_for(
        params.mode, params.cubesize, params.minangle, params.maxangle, params.anglestep
    )
    volume = generate(volume_rng(params.seed, index))
    try:
        write_volume(
            path, volume, params.voxel_size, params.labels(index), Path(tmp_dir), fsync=fsync
        )
    except OSError as err:
        reason = err.strerror or str(err)
        return {"index": index, "status": "failed", "seconds": 0.0, "error": f"{path}: {reason}"}
    return {"index": index, "status": "written", "seconds": time.perf_counter() - t0}


def summarize(records) -> dict:
    """Reduce the records of one partition to counts (the only thing sent back)."""
    out = {"written": 0, "skipped": 0, "failed": 0, "seconds": 0.0, "errors": []}
    for rec in records:
        out[rec["status"]] += 1
        out["seconds"] += rec["seconds"]
        if rec["status"] == "failed" and len(out["errors"]) < 3:
            out["errors"].append((rec["index"], rec["error"]))
    return out


def build_bag(
    params: NoiseParams,
    ranges: list[range],
    folder: Path,
    tmp_dir: Path,
    *,
    overwrite: bool = False,
    fsync: bool = False,
) -> db.Bag:
    """Lazy bag: one summary per partition, each partition writing its volumes."""
    indices = db.from_sequence(ranges, npartitions=len(ranges)).flatten()
    written = indices.map(
        write_one,
        params=params,
        folder=str(folder),
        tmp_dir=str(tmp_dir),
        overwrite=overwrite,
        fsync=fsync,
    )
    return written.map_partitions(_summary_partition)


def _summary_partition(records) -> list[dict]:
    return [summarize(records)]


@dataclass
class RunResult:
    """What a run did."""

    requested: int
    written: int = 0
    skipped: int = 0
    failed: int = 0
    task_seconds: float = 0.0
    errors: list = field(default_factory=list)
    crashed: list = field(default_factory=list)

    @property
    def done(self) -> int:
        """Volumes accounted for (written, skipped or failed)."""
        return self.written + self.skipped + self.failed


def run(
    client: Client,
    params: NoiseParams,
    start: int,
    count: int,
    folder: Path,
    tmp_dir: Path,
    *,
    overwrite: bool = False,
    fsync: bool = False,
    retries: int = 3,
    workers: int | None = None,
    on_progress: Callable[[RunResult], None] | None = None,
) -> RunResult:
    """Generate and write volumes ``start .. start + count - 1`` on ``client``'s cluster.

    Parameters
    ----------
    client : distributed.Client
        Connected client; the cluster is neither started nor stopped here.
    params : NoiseParams
        Geometry, mode and seed.
    start, count : int
        First index and number of volumes.
    folder, tmp_dir : pathlib.Path
        Output folder and the folder for temporaries (same filesystem, outside ``folder``).
    overwrite : bool
        Regenerate volumes whose files are already complete.
    fsync : bool
        Force each file to disk before renaming it into place.
    retries : int
        Times a failed partition is retried (on top of Dask's own recovery of lost workers).
    workers : int, optional
        Worker threads to plan partitions for; default: the cluster's current total.
    on_progress : callable, optional
        Called with the running :class:`RunResult` after each finished partition.
    """
    if workers is None:
        workers = sum(client.nthreads().values()) or 1
    ranges = partition_ranges(start, count, workers, params.volume_bytes)
    bag = build_bag(params, ranges, folder, tmp_dir, overwrite=overwrite, fsync=fsync)
    futures = client.compute(bag.to_delayed(), retries=retries)
    result = RunResult(requested=count)
    part_of = {f.key: r for f, r in zip(futures, ranges, strict=True)}
    for future in as_completed(futures):
        try:
            (summary,) = future.result()
        except Exception as err:  # a partition that failed for good, after its retries
            part = part_of[future.key]
            result.failed += len(part)
            result.crashed.append((part.start, part.stop - 1, f"{type(err).__name__}: {err}"))
        else:
            result.written += summary["written"]
            result.skipped += summary["skipped"]
            result.failed += summary["failed"]
            result.task_seconds += summary["seconds"]
            result.errors.extend(summary["errors"])
        future.release()
        if on_progress is not None:
            on_progress(result)
    return result
