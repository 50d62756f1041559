"""The Dask pipeline: a bag of volume indices -> generate -> write, one file per volume.

Only top-level functions of this module and small arguments travel to the workers: the graph
holds one ``range`` per partition, so its size does not grow with the number of volumes beyond
the partition count. Each task returns a small summary of its partition, never an array.
"""

from __future__ import annotations

import errno
import itertools
import os
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

import dask.bag as db
from distributed import Client, as_completed

from mwr_dask.files.mrc import FOLDER_REPLACED, is_complete, is_intact, opened_folder, write_volume
from mwr_dask.noise.source import NoiseSource, volume_name
from mwr_dask.parallel.clusters.limits import OUT_OF_FILES

#: Largest output of one partition: bounds the work lost and redone when a worker dies.
PARTITION_BYTES = 64 * 2**20
#: Write errors after which no further volume can succeed: the run stops at the first one
#: (``FOLDER_REPLACED``: the output folder is no longer the one the run opened).
FATAL_ERRNOS = {errno.ENOSPC, errno.EDQUOT, errno.EROFS, FOLDER_REPLACED}
#: Writes that find no file descriptor free (EMFILE, ENFILE) are tried ``OPEN_FILE_TRIES``
#: times in all, ``RETRY_PAUSE`` s apart at first, doubling.
OPEN_FILE_TRIES = 5
RETRY_PAUSE = 0.2
#: Errors kept for the report of a run; the others are counted.
KEPT_ERRORS = 10
#: Partitions per worker at least, so that workers stay busy to the end of the run.
PARTITIONS_PER_WORKER = 4


def partition_plan(start: int, count: int, workers: int, volume_bytes: int) -> tuple[int, int, int]:
    """How :func:`partition_ranges` splits the indices, as numbers: (parts, base, extra).

    The first ``extra`` partitions hold ``base + 1`` volumes, the others ``base``. Computed
    in integers without building anything, so that any count can be planned (``--dry-run``
    of 10^21 volumes).
    """
    need = -(-count * volume_bytes // PARTITION_BYTES)  # ceil, exact for any integer
    parts = max(PARTITIONS_PER_WORKER * max(workers, 1), need)
    parts = max(1, min(count, parts))
    base, extra = divmod(count, parts)
    return parts, base, extra


def partition_ranges(start: int, count: int, workers: int, volume_bytes: int) -> list[range]:
    """Split the indices ``start .. start + count - 1`` into contiguous partitions.

    The rule: at least ``PARTITIONS_PER_WORKER`` partitions per worker (load balance at the
    end of the run), and no partition writing more than ``PARTITION_BYTES`` (cheap retries,
    steady progress), but never more partitions than volumes. Sizes differ by at most one.
    See :func:`partition_plan` for the same plan without the list.
    """
    parts, base, extra = partition_plan(start, count, workers, volume_bytes)
    bounds = [start + k * base + min(k, extra) for k in range(parts + 1)]
    return [range(lo, hi) for lo, hi in itertools.pairwise(bounds)]


def write_one(
    index: int,
    params: NoiseSource,
    folder: str,
    tmp_dir: str,
    overwrite: bool,
    fsync: bool,
    verify: bool = False,
    inodes: tuple[int | None, int | None] = (None, None),
) -> dict:
    """Generate volume ``index`` and write it atomically, unless a complete file is there.

    "Complete" is the cheap check of :func:`~mwr_dask.files.mrc.is_complete` (a regular file that
    mrcfile opens in strict mode, with the right header and size), or with ``verify`` the full
    check of :func:`~mwr_dask.files.mrc.is_intact` (labels and data). ``tmp_dir`` equal to
    ``folder`` means anonymous ``O_TMPFILE`` temporaries in the folder itself (see
    :func:`~mwr_dask.files.mrc.write_volume`). Both folders are reached through descriptors
    opened once per worker process and checked before each volume (``inodes``: their inode
    numbers as the client recorded them; see :func:`~mwr_dask.files.mrc.opened_folder`).

    Returns
    -------
    dict
        ``index``, ``status`` ("written", "skipped" or "failed") and, on failure, ``error``
        (one sentence) and ``errno``. A write that finds no file descriptor free (EMFILE,
        ENFILE) is tried again, up to ``OPEN_FILE_TRIES`` times in all.
    """
    path = Path(folder) / volume_name(index)
    labels = params.labels(index)
    check = is_intact if verify else is_complete
    args = (path.name, params.cubesize, labels)[: 3 if verify else 2]
    volume = None
    for tries in range(1, OPEN_FILE_TRIES + 1):
        try:  # OSError: the folder was replaced, the disk is full, no descriptor is free, ...
            if not overwrite and check(*args, dir_fd=opened_folder(str(path.parent), inodes[0])):
                return {"index": index, "status": "skipped"}
            volume = params.volume(index) if volume is None else volume
            write_volume(path, volume, params.voxel_size, labels, Path(tmp_dir), fsync=fsync,
                         inodes=inodes)  # fmt: skip
            break
        except OSError as err:
            if err.errno in OUT_OF_FILES and tries < OPEN_FILE_TRIES:
                time.sleep(RETRY_PAUSE * 2 ** (tries - 1))  # descriptors may be freed
                continue
            if err.errno in OUT_OF_FILES:
                err.strerror = f"{err.strerror} ({tries} tries)"
            return _failed(index, path, err)
    return {"index": index, "status": "written"}


def _failed(index: int, path: Path, err: OSError) -> dict:
    reason = err.strerror or str(err)
    return {"index": index, "status": "failed", "error": f"{path}: {reason}", "errno": err.errno}


def summarize(records) -> dict:
    """Reduce the records of one partition to counts (the only thing sent back)."""
    out = {"written": 0, "skipped": 0, "failed": 0, "errors": [], "fatal": False}
    for rec in records:
        out[rec["status"]] += 1
        if rec["status"] == "failed":
            out["fatal"] |= rec.get("errno") in FATAL_ERRNOS
            if len(out["errors"]) < 3:
                out["errors"].append((rec["index"], rec["error"]))
    return out


def build_bag(
    params: NoiseSource,
    ranges: list[range],
    folder: Path,
    tmp_dir: Path,
    *,
    overwrite: bool = False,
    fsync: bool = False,
    verify: bool = False,
    inodes: tuple[int | None, int | None] = (None, None),
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
        verify=verify,
        inodes=inodes,
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
    errors: list = field(default_factory=list)
    crashed: list = field(default_factory=list)
    stopped: bool = False

    @property
    def done(self) -> int:
        """Volumes accounted for (written, skipped or failed)."""
        return self.written + self.skipped + self.failed


def run(
    client: Client,
    params: NoiseSource,
    start: int,
    count: int,
    folder: Path,
    tmp_dir: Path,
    *,
    overwrite: bool = False,
    fsync: bool = False,
    verify: bool = False,
    inodes: tuple[int, int] | None = None,
    retries: int = 3,
    workers: int | None = None,
    on_progress: Callable[[RunResult], None] | None = None,
    result: RunResult | None = None,
) -> RunResult:
    """Generate and write volumes ``start .. start + count - 1`` on ``client``'s cluster.

    The cluster is neither started nor stopped here. ``tmp_dir``: temporaries (same filesystem,
    outside ``folder``); ``inodes``: those of ``folder`` and ``tmp_dir`` (real paths) when the
    client locked them, by default those the paths name now: a worker stops at a folder that is
    no longer that one. ``retries`` of a failed partition come on top of Dask's recovery of lost
    workers; ``workers``: threads to plan partitions for (default: the cluster's current
    total); ``on_progress`` gets the running :class:`RunResult` after each partition;
    ``result`` is filled in as partitions finish (kept by an interrupted caller).

    The run stops early (``result.stopped``) at a write error that no retry can cure:
    disk full, quota exceeded, read-only filesystem, an output folder replaced during the run.
    """
    if inodes is None:  # a caller that locked nothing: the folders as they are now
        folder, tmp_dir = Path(os.path.realpath(folder)), Path(os.path.realpath(tmp_dir))
        inodes = (os.stat(folder).st_ino, os.stat(tmp_dir).st_ino)
    if workers is None:
        workers = sum(client.nthreads().values()) or 1
    ranges = partition_ranges(start, count, workers, params.volume_bytes)
    bag = build_bag(params, ranges, folder, tmp_dir, overwrite=overwrite, fsync=fsync,
                    verify=verify, inodes=inodes)  # fmt: skip
    futures = client.compute(bag.to_delayed(), retries=retries)
    result = RunResult(requested=count) if result is None else result
    part_of = {f.key: r for f, r in zip(futures, ranges, strict=True)}
    try:
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
                result.errors.extend(summary["errors"][: KEPT_ERRORS - len(result.errors)])
                result.stopped |= summary["fatal"]
            future.release()
            if on_progress is not None:
                on_progress(result)
            if result.stopped:  # disk full, quota, read-only: nothing more can be written
                break
    finally:
        # on a stop, an error or an interrupt: submit nothing more; running tasks finish
        # their current (atomic) write or are discarded with their worker
        client.cancel([f for f in futures if not f.done()])
    return result
