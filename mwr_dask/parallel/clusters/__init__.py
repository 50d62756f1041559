"""Where the work runs: a local cluster, a running Dask cluster, or batch jobs.

One object per kind of cluster, all with the small interface of :class:`Cluster`, chosen in
one place, :func:`make_cluster`:

- :class:`~mwr_dask.parallel.clusters.local.LocalCluster`: worker processes on 127.0.0.1;
- :class:`~mwr_dask.parallel.clusters.remote.RemoteCluster`: a scheduler that runs already;
- :class:`~mwr_dask.parallel.clusters.batch.BatchCluster`: workers as SLURM, PBS, ... jobs
  (each batch system is one entry of :data:`mwr_dask.parallel.clusters.systems.SYSTEMS`).

Local and batch clusters run over TLS with keys made for the run. Modules import Dask only
when a cluster is described or started, so importing this package is cheap (the CLI's
``--help``). Module dependencies: ``systems``, ``dashboard``, ``plugin``, ``limits``
and ``jobqueue_import`` import nothing of this package; ``checks`` imports ``plugin``;
``local`` imports ``checks``, ``dashboard`` and ``limits``; ``remote`` imports ``checks`` and
``dashboard``; ``jobs`` imports ``checks`` and
``systems``; ``batch`` imports all of them; this module imports them inside
:func:`make_cluster`.
"""

from __future__ import annotations

from contextlib import AbstractContextManager
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Protocol

from mwr_dask.parallel.clusters.checks import ClusterError, Say, UsageError, wait_for_workers
from mwr_dask.parallel.clusters.systems import SYSTEMS

if TYPE_CHECKING:
    from distributed import Client

    from mwr_dask.noise.source import NoiseSource
    from mwr_dask.parallel.clusters.batch import BatchOptions


__all__ = [
    "SYSTEMS",
    "Cluster",
    "ClusterError",
    "ClusterOptions",
    "Say",
    "UsageError",
    "make_cluster",
    "wait_for_workers",
]


class Cluster(Protocol):
    """What the commands need of a cluster, whatever its kind."""

    #: "local cluster", "remote cluster", "SLURM cluster", ...: for messages.
    label: str
    #: True when the workers are not started here from this Python: they are checked.
    remote: bool
    #: True when the cluster keeps files (job output, TLS keys) in the output folder's hidden
    #: sibling during a run (:func:`mwr_dask.files.folder.folder_lock` makes it).
    sibling: bool

    def planned_workers(self) -> int | None:
        """Worker threads to plan the work for (None: those the cluster has at run time)."""
        ...

    def describe(self) -> str:
        """One line on where the work would run, for ``--dry-run``; nothing is contacted."""
        ...

    def script(self) -> str | None:
        """Return the job script of a batch cluster, for ``--dry-run``; None for the others."""
        ...

    def memory_problems(self, params: NoiseSource) -> list[str]:
        """One sentence if a volume cannot fit in a worker, known before anything starts."""
        ...

    def client(
        self, say: Say | None = None, warn: Say | None = None
    ) -> AbstractContextManager[Client]:
        """Start or connect to the cluster; yield a client; always clean up (jobs, processes)."""
        ...

    def check(
        self, client: Client, params: NoiseSource | None = None, folder: Path | None = None,
        tmp_dir: Path | None = None,
    ) -> None:  # fmt: skip
        """Check the workers there now (those that join later: ``checks.worker_check``).

        Raises :class:`ClusterError` (one sentence) if the workers cannot do the work.
        """
        ...

    def report(self, client: Client, threads: int, dashboard: bool = True) -> list[str]:
        """Lines on where the work runs and the dashboard (with an SSH hint if remote)."""
        ...


def make_cluster(
    *,
    scheduler: str | None = None,
    scheduler_file: Path | None = None,
    ncpus: int | None = None,
    dashboard_address: str | None = "127.0.0.1:8787",
    connect_timeout: float = 10.0,
    batch: BatchOptions | None = None,
) -> Cluster:
    """Return the cluster the options describe: the one place where its kind is chosen.

    Batch jobs if ``batch`` is given; else the running scheduler at ``scheduler``,
    ``scheduler_file`` or in dask's configuration (``DASK_SCHEDULER_ADDRESS``); else a local
    cluster of ``ncpus`` processes. Nothing is started or contacted.

    Raises
    ------
    UsageError
        Options that cannot work together, or a scheduler address that is not one.
    """
    if batch is not None:
        if scheduler or scheduler_file:
            raise UsageError("give --cluster or --scheduler/--scheduler-file, not both.")
        from mwr_dask.parallel.clusters.batch import BatchCluster

        return BatchCluster(batch, dashboard_address)
    from mwr_dask.parallel.clusters.remote import RemoteCluster, configured_scheduler

    if scheduler or scheduler_file or configured_scheduler():
        remote = RemoteCluster(scheduler, scheduler_file, connect_timeout)
        errors, _ = remote.problems()
        if errors:
            raise UsageError(errors[0])
        return remote
    from mwr_dask.parallel.clusters.local import LocalCluster

    return LocalCluster(ncpus, dashboard_address)


@dataclass(frozen=True)
class ClusterOptions:
    """Where the work runs, as the command line's options say it; :meth:`make` gives the cluster.

    Attributes
    ----------
    scheduler : str or None
        Address of a running scheduler (``tcp://host:port``, ``tls://...``).
    scheduler_file : pathlib.Path or None
        JSON file written by ``dask scheduler --scheduler-file``; waited for.
    ncpus : int or None
        Worker processes of the local cluster (default: the usable cores).
    dashboard_address : str or None
        ``host:port`` of the dashboard of a cluster started here (a bare port stays on
        127.0.0.1); None disables it.
    connect_timeout : float
        Seconds to wait for a scheduler (or its scheduler file).
    jobqueue : BatchOptions or None
        Run the workers as batch jobs (SLURM, PBS, ...) with a scheduler in this process.
    """

    scheduler: str | None = None
    scheduler_file: Path | None = None
    ncpus: int | None = None
    dashboard_address: str | None = "127.0.0.1:8787"
    connect_timeout: float = 10.0
    jobqueue: BatchOptions | None = None

    def make(self) -> Cluster:
        """Return the cluster these options describe (:func:`make_cluster`)."""
        return make_cluster(
            scheduler=self.scheduler,
            scheduler_file=self.scheduler_file,
            ncpus=self.ncpus,
            dashboard_address=self.dashboard_address,
            connect_timeout=self.connect_timeout,
            batch=self.jobqueue,
        )
