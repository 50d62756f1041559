"""Cluster set-up: a local cluster, a running cluster by address, or batch jobs.

The CLI hands a :class:`ClusterOptions` to :func:`open_client` and gets a connected client;
everything about starting, reaching and checking clusters lives here (batch jobs on SLURM,
PBS, ... in :mod:`mwr_dask.jobqueue`).
"""

from __future__ import annotations

import importlib
import json
import logging
import os
import socket
import time
import warnings
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING
from urllib.parse import urlparse

import dask
from distributed import Client, LocalCluster
from distributed.comm.addressing import parse_address, parse_host_port

from mwr_dask.mrcio import probe_temporaries

if TYPE_CHECKING:
    from mwr_dask.jobqueue import JobqueueOptions

#: Environment of every local worker process: one thread for FFT/BLAS libraries.
SINGLE_THREAD_ENV = {
    "OMP_NUM_THREADS": 1,
    "MKL_NUM_THREADS": 1,
    "OPENBLAS_NUM_THREADS": 1,
    # glibc keeps freed arrays of up to 32 MiB for reuse, as a plain process does once its
    # mmap threshold has adapted; Dask's MALLOC_TRIM_THRESHOLD_=65536 freezes that threshold
    # at 128 KiB, so every temporary array of every volume is a fresh mmap (page faults,
    # zeroing): mode-2 volumes of 64^3 took 20% longer in the workers (docs/benchmarks.md).
    "MALLOC_TRIM_THRESHOLD_": 64 * 2**20,
    "MALLOC_MMAP_THRESHOLD_": 32 * 2**20,
}
#: Packages whose versions must agree between the client and every worker.
CHECKED_PACKAGES = ("mwr_dask", "numpy", "scipy", "mrcfile", "dask", "distributed")


class ClusterError(RuntimeError):
    """A cluster could not be started, reached or used; the message is one sentence."""


@dataclass(frozen=True)
class ClusterOptions:
    """Where the work runs.

    Attributes
    ----------
    scheduler : str or None
        Address of a running scheduler (``tcp://host:port``, ``tls://...``).
    scheduler_file : pathlib.Path or None
        JSON file written by ``dask scheduler --scheduler-file``; waited for.
    ncpus : int or None
        Worker processes of the local cluster (default: the usable cores).
    dashboard_address : str or None
        ``host:port`` of the local cluster's dashboard; None disables it.
    connect_timeout : float
        Seconds to wait for a scheduler (or its scheduler file).
    jobqueue : JobqueueOptions or None
        Run the workers as batch jobs (SLURM, PBS, ...) with a scheduler in this process.
    """

    scheduler: str | None = None
    scheduler_file: Path | None = None
    ncpus: int | None = None
    dashboard_address: str | None = "127.0.0.1:8787"
    connect_timeout: float = 10.0
    jobqueue: JobqueueOptions | None = None

    @property
    def remote(self) -> bool:
        """True when the workers are not started here: an existing cluster, or batch jobs.

        Their package versions and their view of the output folder are checked.
        """
        return bool(
            self.jobqueue or self.scheduler or self.scheduler_file or configured_scheduler()
        )

    @property
    def label(self) -> str:
        """What kind of cluster, for messages: "local cluster", "SLURM cluster", ..."""
        if self.jobqueue is not None:
            return f"{self.jobqueue.name} cluster"
        return "remote cluster" if self.remote else "local cluster"

    def planned_workers(self) -> int | None:
        """Worker threads to plan the work for: the local or batch cluster at full size.

        None for an existing cluster: the work is planned for its current workers.
        """
        if self.jobqueue is not None:
            return self.jobqueue.planned_workers()
        if self.remote:
            return None
        return self.ncpus or default_ncpus()


def configured_scheduler() -> str | None:
    """Scheduler address from dask config ``scheduler-address`` / ``DASK_SCHEDULER_ADDRESS``."""
    return dask.config.get("scheduler-address", None) or None


def default_ncpus() -> int:
    """Cores this process may use (the CPU affinity mask, as batch schedulers set it)."""
    try:
        return len(os.sched_getaffinity(0))
    except AttributeError:  # pragma: no cover - not Linux
        return os.cpu_count() or 1


def worker_memory(ncpus: int) -> int:
    """Memory of each local worker, bytes: the machine's memory shared by ``ncpus`` workers.

    This is what ``LocalCluster`` gives each worker by default (its ``memory_limit``).
    """
    import psutil  # a dependency of distributed

    return int(psutil.virtual_memory().total // max(ncpus, 1))


@contextmanager
def local_client(
    ncpus: int, *, dashboard_address: str | None = "127.0.0.1:8787"
) -> Iterator[Client]:
    """Start a local cluster of ``ncpus`` single-threaded worker processes on 127.0.0.1.

    Parameters
    ----------
    ncpus : int
        Worker processes, one thread each.
    dashboard_address : str or None
        ``host:port`` of the dashboard; if the port is taken, a free one is used.
        None disables the dashboard.

    Yields
    ------
    distributed.Client
        Client of the cluster; cluster and client are closed on exit.
    """
    environ = {**dask.config.get("distributed.nanny.pre-spawn-environ", {}), **SINGLE_THREAD_ENV}
    with (
        dask.config.set({"distributed.nanny.pre-spawn-environ": environ}),
        warnings.catch_warnings(),
    ):
        warnings.filterwarnings("ignore", message="Port .* is already in use")
        cluster = LocalCluster(
            n_workers=ncpus,
            threads_per_worker=1,
            processes=True,
            host="127.0.0.1",
            # without a dashboard the scheduler still serves HTTP (health, metrics): keep it
            # on a free loopback port rather than taking 8787
            dashboard_address=dashboard_address or "127.0.0.1:0",
            scheduler_kwargs={"dashboard": False} if dashboard_address is None else None,
            silence_logs=logging.CRITICAL,
        )
    try:
        client = Client(cluster)
        try:
            yield client
        finally:
            client.close()
    finally:
        cluster.close()


def read_scheduler_file(path: Path, timeout: float) -> str:
    """Wait up to ``timeout`` seconds for a scheduler file and return its address."""
    deadline = time.monotonic() + timeout
    while True:
        try:
            with open(path) as f:
                return str(json.load(f)["address"])
        except FileNotFoundError:
            pass
        except (OSError, ValueError, KeyError, TypeError):
            # a file being written is retried until the deadline, then reported
            if time.monotonic() >= deadline:
                raise ClusterError(f"{path} is not a Dask scheduler file.") from None
        if time.monotonic() >= deadline:
            raise ClusterError(f"no scheduler file appeared at {path} within {timeout:g} s.")
        time.sleep(0.2)


@contextmanager
def remote_client(address: str, timeout: float) -> Iterator[Client]:
    """Connect to a running scheduler; on exit close the client only, never the cluster.

    TLS and other security settings come from dask's configuration
    (``distributed.comm.tls.*``).
    """
    try:
        scheme, location = parse_address(address)
        if scheme in ("tcp", "tls"):
            parse_host_port(location)
    except (ValueError, TypeError) as err:
        raise ClusterError(f"{address!r} is not a scheduler address ({err}).") from None
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            client = Client(address, timeout=f"{timeout}s")
    except (OSError, TimeoutError) as err:
        raise ClusterError(
            f"cannot reach the Dask scheduler at {address} within {timeout:g} s ({err})."
        ) from None
    try:
        yield client
    finally:
        client.close()


@contextmanager
def open_client(
    options: ClusterOptions, say: Callable[[str], None] | None = None
) -> Iterator[Client]:
    """Connect to the cluster ``options`` describe, starting a local one by default.

    ``say`` receives one-line reports of a batch cluster (jobs submitted, queued, cancelled).
    """
    if options.jobqueue is not None:
        from mwr_dask.jobqueue import jobqueue_client

        with jobqueue_client(
            options.jobqueue, dashboard_address=options.dashboard_address, say=say
        ) as client:
            yield client
    elif options.scheduler:
        with remote_client(options.scheduler, options.connect_timeout) as client:
            yield client
    elif options.scheduler_file:
        address = read_scheduler_file(options.scheduler_file, options.connect_timeout)
        with remote_client(address, options.connect_timeout) as client:
            yield client
    elif configured_scheduler():
        with remote_client(configured_scheduler(), options.connect_timeout) as client:
            yield client
    else:
        ncpus = options.ncpus or default_ncpus()
        with local_client(ncpus, dashboard_address=options.dashboard_address) as client:
            yield client


def wait_for_workers(client: Client, timeout: float) -> int:
    """Wait until the cluster has at least one worker; return the number of worker threads."""
    try:
        client.wait_for_workers(1, timeout=timeout)
    except TimeoutError:
        raise ClusterError(
            f"the scheduler at {client.scheduler.address} has no workers after {timeout:g} s."
        ) from None
    return sum(client.nthreads().values())


def package_versions() -> dict[str, str | None]:
    """``__version__`` of each of :data:`CHECKED_PACKAGES` as imported here (None if absent)."""
    out = {}
    for package in CHECKED_PACKAGES:
        try:
            out[package] = getattr(importlib.import_module(package), "__version__", None)
        except ImportError:
            out[package] = None
    return out


def check_versions(client: Client) -> list[str]:
    """Mismatches of :data:`CHECKED_PACKAGES` between this client and the workers.

    The versions compared are those of the modules each process imports, so a worker that
    imports another copy of a package is caught even if the installed metadata agrees.
    """
    mine = package_versions()
    problems = []
    for worker, theirs in sorted(client.run(package_versions).items()):
        for package in CHECKED_PACKAGES:
            if theirs.get(package) != mine.get(package):
                problems.append(
                    f"worker {worker} has {package} {theirs.get(package)},"
                    f" this client {mine.get(package)}"
                )
    return problems


def probe_folder(folder: str, tmp_dir: str) -> str | None:
    """On a worker: None if it can write ``folder`` with temporaries in ``tmp_dir``, else why not.

    Nothing is written to ``folder`` (see :func:`mwr_dask.mrcio.probe_temporaries`).
    """
    return probe_temporaries(folder, tmp_dir)


def check_workers_can_write(client: Client, folder: Path, tmp_dir: Path) -> list[str]:
    """One sentence per worker that cannot write the output folder."""
    answers = client.run(probe_folder, str(folder), str(tmp_dir))
    return [f"worker {w} {why}" for w, why in sorted(answers.items()) if why]


def tunnel_hint(dashboard_link: str, *, served_here: bool = False) -> str | None:
    """Return an SSH tunnel command for a dashboard on another host, or None if it is local.

    With ``served_here`` (a batch cluster's scheduler runs in this process, typically on a
    login node), a dashboard on this host's loopback gets a tunnel to this host.
    """
    url = urlparse(dashboard_link)
    host, port = url.hostname, url.port or 8787
    if host in (None, "localhost", "127.0.0.1", "::1"):
        if not served_here:
            return None
        return (
            f"ssh -N -L {port}:localhost:{port} {socket.gethostname()},"
            f" then open http://localhost:{port}{url.path}"
        )
    return (
        f"ssh -N -L {port}:{host}:{port} <login-node>, then open http://localhost:{port}{url.path}"
    )
