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
from collections.abc import Callable, Iterator
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
from mwr_dask.parallel.clusters.checks import check_workers, wait_for_workers, worker_check
from mwr_dask.parallel.pipeline import RunResult, run

if TYPE_CHECKING:
    from distributed import Client

Say = Callable[[str], None]

__all__ = ["ClusterError", "FolderError", "Generated", "MwrDaskWarning", "generate"]


class MwrDaskWarning(UserWarning):
    """Something a run noticed but went on with (e.g. foreign entries in the folder)."""


def _warn(line: str) -> None:
    warnings.warn(line, MwrDaskWarning, stacklevel=3)


def _silent(line: str) -> None:
    """Drop ``line`` (``say`` of a caller who wants no reports)."""


@dataclass
class Generated:
    """What :func:`generate` did.

    Attributes
    ----------
    source : NoiseSource
        The source the volumes were made from (its seed is the folder's when adopted).
    folder : pathlib.Path
        Absolute output folder.
    start, count : int
        First index and number of volumes asked for.
    result : RunResult
        Counts of written, skipped (already complete) and failed volumes, and the errors.
    seconds : float
        Wall time from the cluster's start to the end of the last partition.
    """

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

    Files are ``n_<index>.mrc`` (five digits at least), float32, written atomically; volumes
    whose files are already complete are skipped, so a call that was interrupted is finished
    by repeating it.

    Parameters
    ----------
    folder : path
        Output folder (created if needed). It only ever holds complete volume files.
    count, start : int
        Number of volumes and index of the first.
    source : NoiseSource
        What defines the volumes.
    client : distributed.Client, optional
        A client the caller already has (threads or processes, local or remote); it is left
        open. Its workers' package versions, memory and view of the folder are checked, and
        workers that join during the run are checked before they get work.
    cluster : Cluster or ClusterOptions, optional
        Where to run when no client is given (:func:`~.clusters.make_cluster`, or the options
        it takes): by default a local cluster of one single-threaded worker process per
        usable core, started and stopped here.
    overwrite : bool
        Regenerate volumes that are already complete.
    verify : bool
        Re-read existing volumes fully (labels and data) before skipping them.
    force : bool
        Write even if the folder's volumes record other parameters.
    fsync : bool
        Force each file to disk before it appears.
    retries : int
        Retries of a failed partition (lost workers are recovered by Dask anyway).
    adopt_seed : bool
        Use the seed recorded in the folder's volumes instead of ``source.seed`` when the
        folder has one (how the command line appends without ``--seed``).
    worker_timeout : float
        Seconds to wait for the first worker.
    on_progress : callable, optional
        Called with the running :class:`~.pipeline.RunResult` when the work starts (the
        cluster is up) and after each partition.
    say : callable, optional
        Receives one-line reports for people (what is written where, the cluster, the
        dashboard link); silent by default.
    warn : callable, optional
        Receives one-line warnings (entries of the folder that are not volumes); by default
        they are issued as :class:`MwrDaskWarning`.
    result : RunResult, optional
        Object filled in as partitions finish, so that a caller that is interrupted keeps what
        was done.

    Returns
    -------
    Generated
        The source used, the counts and the wall time.

    Raises
    ------
    ValueError
        ``count`` or ``start`` are not whole numbers of at least 1 and 0, or the labels of
        the last volume do not fit an MRC header (:meth:`NoiseSource.run_problems`); checked
        before anything is created or started.
    FolderError
        The folder cannot be used as asked (another run holds it, other parameters, no room,
        not writable); nothing was written.
    ClusterError
        The cluster could not be started, reached or used.
    """
    problems = source.run_problems(count, start)
    if problems:
        raise ValueError(problems[0])
    say, warn = say or _silent, warn or _warn
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
            with _connected(client, cluster, say, warn) as connected:
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


@contextlib.contextmanager
def _connected(client: Client | None, cluster: Cluster, say: Say, warn: Say) -> Iterator[Client]:
    """Yield the caller's client as it is, or a client of a cluster started (and stopped) here."""
    if client is not None:
        yield client
    else:
        with cluster.client(say=say, warn=warn) as started:
            yield started


def complete_count(folder: str | os.PathLike, start: int, count: int) -> int:
    """Volumes of ``start .. start + count - 1`` that have a file in ``folder``."""
    return count - missing_count(scan(Path(folder).absolute(), headers=0), start, count)


def plan_source(
    folder: str | os.PathLike, source: NoiseSource, *, adopt_seed: bool, force: bool
) -> tuple[NoiseSource, FolderState]:
    """Return the source a run would use and what the folder holds; lock and write nothing.

    Raises
    ------
    FolderError
        The folder's volumes record other parameters (unless ``force``).
    """
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
