"""Cluster set-up: the embedded local Dask cluster (more kinds are added here, not in the CLI)."""

from __future__ import annotations

import logging
import os
from collections.abc import Iterator
from contextlib import contextmanager

import dask
from distributed import Client, LocalCluster

#: Environment of every worker process: one thread for FFT/BLAS libraries (no oversubscription).
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


def default_ncpus() -> int:
    """Cores this process may use (the CPU affinity mask, as batch schedulers set it)."""
    try:
        return len(os.sched_getaffinity(0))
    except AttributeError:  # pragma: no cover - not Linux
        return os.cpu_count() or 1


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
        ``host:port`` of the dashboard; if the port is taken, distributed picks a free one.
        None disables the dashboard.

    Yields
    ------
    distributed.Client
        Client of the cluster; cluster and client are closed on exit.
    """
    environ = {**dask.config.get("distributed.nanny.pre-spawn-environ", {}), **SINGLE_THREAD_ENV}
    with dask.config.set({"distributed.nanny.pre-spawn-environ": environ}):
        cluster = LocalCluster(
            n_workers=ncpus,
            threads_per_worker=1,
            processes=True,
            host="127.0.0.1",
            dashboard_address=dashboard_address,
            silence_logs=logging.ERROR,
        )
    try:
        client = Client(cluster)
        try:
            yield client
        finally:
            client.close()
    finally:
        cluster.close()
