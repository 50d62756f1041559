"""The run behind ``generate-noise``: :func:`generate` writes volumes of a source to a folder.

The sequence, in order: take the folder's lock; read what the folder holds and check it
against the source (the folder guard); check the room on its filesystem and create it; connect
to a cluster (the caller's client, or the :class:`~mwr_dask.parallel.clusters.Cluster` given,
started and stopped here: a local cluster by default); check the workers, now and as they
join; run the Dask pipeline (:mod:`mwr_dask.parallel.pipeline`), reporting progress; release
everything. The command line only parses, validates, calls :func:`generate` and reports.
"""

from __future__ import annotations

import contextlib
import os
import shutil
import time
import warnings
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

from mwr_dask.files.folder import (
    MAX_BLOCK,
    FolderError,
    FolderState,
    disk_bytes,
    folder_lock,
    missing_count,
    resolve_params,
    scan,
)
from mwr_dask.noise.source import NoiseSource
from mwr_dask.parallel.clusters import Cluster, ClusterError, ClusterOptions, make_cluster
from mwr_dask.parallel.clusters.checks import (
    Say,
    check_workers,
    silent,
    wait_for_workers,
    worker_check,
)
from mwr_dask.parallel.pipeline import RunResult, run

if TYPE_CHECKING:
    from distributed import Client

__all__ = ["ClusterError", "FolderError", "Generated", "MwrDaskWarning", "generate"]


class MwrDaskWarning(UserWarning):
    """Something a run noticed but went on with (e.g. foreign entries in the folder)."""


def _warn(line: str) -> None:
    warnings.warn(line, MwrDaskWarning, stacklevel=3)


@dataclass
class Generated:
    """What :func:`generate` did; ``seconds`` from the cluster's start to the last partition."""

    source: NoiseSource
    folder: Path
    start: int
    count: int
    result: RunResult
    seconds: float = 0.0

    @property
    def ok(self) -> bool:
        """True when every volume is complete and the run was not stopped."""
        return not (self.result.failed or self.result.stopped)

    @property
    def written_bytes(self) -> int:
        """Bytes of the files written by this run."""
        return self.result.written * self.source.volume_bytes


def generate(
    folder: str | os.PathLike,
    count: int,
    source: NoiseSource,
    start: int = 0,
    *,
    client: Client | None = None,
    cluster: Cluster | ClusterOptions | None = None,
    overwrite: bool = False,
    verify: bool = False,
    force: bool = False,
    fsync: bool = False,
    retries: int = 3,
    adopt_seed: bool = False,
    worker_timeout: float = 60.0,
    on_progress: Callable[[RunResult], None] | None = None,
    say: Say | None = None,
    warn: Say | None = None,
    result: RunResult | None = None,
) -> Generated:
    """Write volumes ``start .. start + count - 1`` of ``source`` to ``folder`` as MRC files.

    Complete files are skipped, so an interrupted call is finished by repeating it.
    ``client``: the caller's, left open; its workers, and those that join, are checked.
    ``cluster``: where to run without a client (:func:`~.clusters.make_cluster`); default a
    local cluster of one single-threaded worker process per usable core. ``verify`` re-reads
    existing volumes fully before skipping them; ``adopt_seed`` takes the seed the folder's
    volumes record (appending without ``--seed``); ``worker_timeout`` is seconds;
    ``on_progress``, ``say`` and ``warn`` get the running :class:`~.pipeline.RunResult`,
    one-line reports and warnings (:class:`MwrDaskWarning` by default); ``result`` is filled
    in as partitions finish, so an interrupted caller keeps what was done.
    ValueError (checked before anything is created), FolderError (nothing was written) and
    ClusterError say why, one sentence.
    """
    problems = source.run_problems(count, start)
    if problems:
        raise ValueError(problems[0])
    say, warn = say or silent, warn or _warn
    if isinstance(cluster, ClusterOptions):
        cluster = cluster.make()
    cluster = cluster or make_cluster(dashboard_address=None)
    folder = Path(folder).absolute()
    done = Generated(source, folder, start, count, result or RunResult(requested=count))
    created = not folder.exists()
    try:
        with folder_lock(folder, sibling=client is None and cluster.sibling) as locked:
            done.source = prepare_output(
                folder, source, start, count, adopt_seed=adopt_seed, force=force, say=say, warn=warn
            )
            t0 = time.perf_counter()
            connect = contextlib.nullcontext(client) if client else cluster.client(say, warn)
            with connect as connected:
                threads = wait_for_workers(connected, worker_timeout)
                if client is None:
                    for line in cluster.report(connected, threads):
                        say(line)
                (check_workers if client else cluster.check)(
                    connected, done.source, locked.folder, locked.tmp
                )
                with worker_check(connected, locked.folder, locked.tmp, warn):
                    if on_progress is not None:
                        on_progress(done.result)  # the run starts: nothing done yet
                    run(
                        connected, done.source, start, count, locked.folder, locked.tmp,
                        overwrite=overwrite, fsync=fsync, verify=verify, retries=retries,
                        inodes=locked.inodes,
                        workers=None if client is not None else cluster.planned_workers(),
                        on_progress=on_progress, result=done.result,
                    )  # fmt: skip
                if done.result.crashed and connected.status != "running":
                    # partitions report when they end: count the files on disk
                    raise ClusterError(
                        f"lost the Dask scheduler after {time.perf_counter() - t0:.1f} s:"
                        f" {complete_count(folder, start, count)} of {count} volumes are"
                        " complete; rerun the same command to finish."
                    )
            done.seconds = time.perf_counter() - t0
            return done
    except (FolderError, ClusterError):
        if created:  # a folder this run made and could not use goes again
            with contextlib.suppress(OSError):
                folder.rmdir()
        raise


def complete_count(folder: str | os.PathLike, start: int, count: int) -> int:
    """Volumes of ``start .. start + count - 1`` that have a file in ``folder``."""
    return count - missing_count(scan(Path(folder).absolute(), headers=0), start, count)


def plan_source(
    folder: str | os.PathLike, source: NoiseSource, *, adopt_seed: bool, force: bool
) -> tuple[NoiseSource, FolderState]:
    """Return the source a run would use and what the folder holds; lock and write nothing."""
    return resolve_params(
        Path(folder).absolute(),
        source,
        seed_given=not adopt_seed,
        force=force,
        fresh_seed=source.seed,
    )


def prepare_output(
    folder: Path, source: NoiseSource, start: int, count: int, *, adopt_seed: bool,
    force: bool, say: Say, warn: Say,
) -> NoiseSource:  # fmt: skip
    """Check the folder against the source, its room and that it is writable; return the source.

    Warns about foreign entries and says what will be written where.
    """
    source, existing = plan_source(folder, source, adopt_seed=adopt_seed, force=force)
    if existing.others:
        n = len(existing.others)
        warn(
            f"{folder} also holds {n} entr{'ies' if n != 1 else 'y'} that"
            f" are not n_*.mrc volumes (e.g. {existing.others[0]}); IsoNet opens every entry."
        )
    block = min(os.statvfs(folder).f_frsize, MAX_BLOCK)  # folder_lock made it: its filesystem
    need = disk_bytes(source.volume_bytes, missing_count(existing, start, count), block)
    free = shutil.disk_usage(folder).free
    if need > free:
        raise FolderError(
            f"the volumes still to write need {size_text(need)} but only {size_text(free)}"
            f" are free for {folder} (each file takes whole blocks of {block} bytes there)."
        )
    try:
        folder.mkdir(parents=True, exist_ok=True)
    except OSError as err:
        raise FolderError(f"cannot create {err.filename}: {err.strerror}.") from None
    if not os.access(folder, os.W_OK | os.X_OK):
        raise FolderError(f"{folder} is not writable.")
    say(
        f"Writing n_{start:05d}.mrc .. n_{start + count - 1:05d}.mrc ({count} volumes,"
        f" {size_text(count * source.volume_bytes)}) to {folder}"
    )
    say(f"Parameters: {source.describe()}")
    return source


def size_text(nbytes: float) -> str:
    """Bytes for people, in decimal units: ``13.2 MB``, ``1.05 GB``."""
    for unit, scale in (("TB", 1e12), ("GB", 1e9), ("MB", 1e6), ("kB", 1e3)):
        if nbytes >= scale:
            return f"{nbytes / scale:.3g} {unit}"
    return f"{nbytes:.0f} bytes"
