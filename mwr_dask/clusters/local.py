"""A local cluster: single-threaded worker processes on 127.0.0.1, over TLS with per-run keys."""

from __future__ import annotations

import contextlib
import logging
import signal
import threading
import warnings
from collections.abc import Iterator
from dataclasses import dataclass
from typing import TYPE_CHECKING

from mwr_dask.clusters.checks import (
    SINGLE_THREAD_ENV,
    default_ncpus,
    install_worker_check,
    memory_problems,
    worker_memory,
)
from mwr_dask.clusters.dashboard import LOOPBACK, dashboard_address

if TYPE_CHECKING:
    from pathlib import Path

    from distributed import Client

    from mwr_dask.clusters import Say
    from mwr_dask.params import NoiseParams


def temporary_security():
    """Return a :class:`distributed.Security` with keys made for this run, TLS required.

    Only this process and the workers it starts hold the key: nobody else can connect to
    the scheduler or the workers, even on 127.0.0.1.
    """
    from distributed.security import Security

    return Security.temporary()


@contextlib.contextmanager
def sigint_blocked_in_new_threads() -> Iterator[None]:
    """Threads started in the block (and the processes they start) never get SIGINT.

    A Ctrl-C at the terminal goes to every process of the foreground group: the worker
    processes a starting cluster spawns would each print a traceback. They inherit the
    signal mask of the thread that spawns them, which inherits the main thread's: SIGINT is
    blocked there while the cluster's threads start, then unblocked; a Ctrl-C received in
    between is delivered then.
    """
    if threading.current_thread() is not threading.main_thread():
        yield
        return
    signal.pthread_sigmask(signal.SIG_BLOCK, {signal.SIGINT})
    try:
        yield
    finally:
        signal.pthread_sigmask(signal.SIG_UNBLOCK, {signal.SIGINT})


@dataclass(frozen=True)
class LocalCluster:
    """Worker processes on this machine, one thread each, TLS with keys made for the run.

    Attributes
    ----------
    ncpus : int or None
        Worker processes (default: the cores this process may use).
    dashboard_address : str or None
        ``host:port`` of the dashboard (127.0.0.1 unless a host is given); None: none.
    tls : bool
        Encrypt and authenticate every connection with per-run keys (default).
    """

    ncpus: int | None = None
    dashboard_address: str | None = "127.0.0.1:8787"
    tls: bool = True

    label = "local cluster"
    remote = False

    @property
    def workers(self) -> int:
        """Worker processes."""
        return self.ncpus or default_ncpus()

    def planned_workers(self) -> int:
        """Worker threads to plan the work for."""
        return self.workers

    def describe(self) -> str:
        """One line for ``--dry-run``; nothing is started."""
        n = self.workers
        return f"local, {n} worker process{'es' * (n != 1)} of 1 thread"

    def script(self) -> str | None:
        """No job script."""
        return None

    def memory_problems(self, params: NoiseParams) -> list[str]:
        """One sentence if a volume does not fit in a worker, before anything starts."""
        return memory_problems(
            params, worker_memory(self.workers), hint="use fewer workers (--ncpus) or a"
            " smaller CUBESIZE"
        )  # fmt: skip

    @contextlib.contextmanager
    def client(self, say: Say | None = None, warn: Say | None = None) -> Iterator[Client]:
        """Start the cluster, yield its client; close both on exit."""
        import dask
        from distributed import Client
        from distributed import LocalCluster as DaskLocalCluster

        address = dashboard_address(self.dashboard_address)
        security = temporary_security() if self.tls else None
        environ = {
            **dask.config.get("distributed.nanny.pre-spawn-environ", {}),
            **SINGLE_THREAD_ENV,
        }
        with (
            dask.config.set({"distributed.nanny.pre-spawn-environ": environ}),
            warnings.catch_warnings(),
            sigint_blocked_in_new_threads(),
        ):
            warnings.filterwarnings("ignore", message="Port .* is already in use")
            cluster = DaskLocalCluster(
                n_workers=self.workers,
                threads_per_worker=1,
                processes=True,
                host=LOOPBACK,
                protocol="tls://" if security else None,
                security=security,
                # without a dashboard the scheduler still serves HTTP (health, metrics):
                # keep it on a free loopback port rather than taking 8787
                dashboard_address=address or f"{LOOPBACK}:0",
                scheduler_kwargs={"dashboard": False} if address is None else None,
                silence_logs=logging.CRITICAL,
            )
        try:
            client = Client(cluster, security=security)
            try:
                yield client
            finally:
                client.close()
        finally:
            cluster.close()

    def check(
        self, client: Client, params: NoiseParams | None = None, folder: Path | None = None,
        tmp_dir: Path | None = None, warn: Say | None = None,
    ) -> dict[str, float]:  # fmt: skip
        """Workers started here run this code: only the check of workers that join later.

        Returns the resources every write task must ask for.
        """
        return install_worker_check(client, folder, tmp_dir, warn)

    def report(self, client: Client, threads: int, dashboard: bool = True) -> list[str]:
        """Lines on where the work runs and the dashboard."""
        lines = [f"Local cluster: {client.scheduler.address}, {threads} worker threads"]
        if dashboard and self.dashboard_address and client.dashboard_link:
            lines.append(f"Dashboard: {client.dashboard_link}")
        return lines
