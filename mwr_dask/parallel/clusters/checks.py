"""Checks of a cluster's workers: package versions, memory, a view of the output folder.

The workers there at the start are checked by :func:`check_workers` (a refusal stops the
run in one sentence); every worker, also those that join later, is checked by the worker
plugin of :func:`worker_check` before it reads a task (a refused one is closed and named in a
warning). Dask is imported inside the functions: importing this module is cheap.
"""

from __future__ import annotations

import contextlib
import logging
import os
import uuid
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from distributed import Client

    from mwr_dask.noise.source import NoiseSource

#: A function that tells the user one line (the CLI's ``say`` and ``warn``).
Say = Callable[[str], None]

#: Environment of every worker process: one thread for FFT/BLAS libraries.
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
#: Dask settings of the clusters started here (local and batch): what runs of a few processes
#: per node do not need at Dask's rates (docs/benchmarks.md): the workers' statistical
#: profiler (100 samples a second, for the dashboard's profile page), the event-loop health
#: check (50 a second in every process; a blocked loop is still reported after 3 s), the
#: system monitor of the dashboard's host charts (twice a second).
DASK_SETTINGS = {
    "distributed.worker.profile.enabled": False,
    "distributed.admin.tick.interval": "1s",
    "distributed.admin.system-monitor.interval": "2s",
}
#: Dask's memory thresholds (fractions of a worker's limit) that stop a worker's work.
MEMORY_THRESHOLDS = ("pause", "terminate")


def silent(line: str) -> None:
    """Drop ``line``: the :data:`Say` of a caller who gives none."""


class UsageError(ValueError):
    """Options that cannot work; the message is one sentence (the CLI exits with status 2)."""


class ClusterError(RuntimeError):
    """A cluster could not be started, reached or used; the message is one sentence."""


def worker_memory(ncpus: int) -> int:
    """Memory limit of each local worker, bytes: the machine's memory shared by ``ncpus``.

    This is what ``LocalCluster`` gives each worker by default (its ``memory_limit``).
    """
    import psutil  # a dependency of distributed

    return int(psutil.virtual_memory().total // max(ncpus, 1))


def memory_fraction(config: dict | None = None) -> tuple[float, str]:
    """Fraction of a worker's memory limit a volume may use, and the threshold that sets it.

    Dask pauses a worker (no new task) above ``distributed.worker.memory.pause`` (0.8 by
    default) and its nanny ends it above ``terminate`` (0.95) of its limit; the smallest
    enabled one is the budget. ``config`` is ``distributed.worker.memory`` as a worker sees
    it (default: this process's dask configuration).
    """
    if config is None:
        config = worker_memory_config()
    enabled = [
        (float(config[name]), name)
        for name in MEMORY_THRESHOLDS
        if isinstance(config.get(name), int | float) and not isinstance(config.get(name), bool)
        and 0 < float(config[name]) <= 1
    ]  # fmt: skip
    return min(enabled, default=(1.0, ""))


def worker_memory_config() -> dict:
    """``distributed.worker.memory`` of this process's dask configuration (run on workers)."""
    import dask.config
    import distributed  # noqa: F401 - its defaults enter dask's configuration on import

    return dict(dask.config.get("distributed.worker.memory", {}))


def memory_problems(
    params: NoiseSource, limit: int, fraction: tuple[float, str] | None = None, hint: str = ""
) -> list[str]:
    """One sentence if a volume of ``params`` does not fit in a worker of ``limit`` bytes.

    ``limit`` 0 means no limit. ``fraction``: the share of ``limit`` usable and the Dask
    threshold behind it (default: :func:`memory_fraction` of this process's configuration);
    ``hint``: what to do, appended to the sentence (e.g. "use fewer workers (--ncpus)").
    """
    if not limit:
        return []
    share, name = fraction or memory_fraction()
    need = params.peak_bytes()
    usable = int(limit * share)
    if need <= usable:
        return []
    where = (
        f"{usable / 2**30:.1f} GiB of the {limit / 2**30:.1f} GiB each worker has (Dask's"
        f" memory {name} threshold is {share:.0%} of it)"
        if name
        else f"the {limit / 2**30:.1f} GiB each worker has"
    )
    return [
        f"a {params.cubesize}^3 volume needs about {need / 2**30:.1f} GiB per worker in mode"
        f" {params.mode}, more than {where}; {hint or 'use a smaller CUBESIZE'}."
    ]


def version_problems(client: Client) -> list[str]:
    """``worker W has numpy 1.0, this client 2.0`` for each mismatch of a checked package.

    ``Client.get_versions`` compares the installed metadata and only warns, with a table: a
    worker importing another copy of mwr_dask would pass it (see
    :func:`~mwr_dask.parallel.clusters.plugin.imported_versions`).
    """
    from mwr_dask.parallel.clusters.plugin import imported_versions, version_mismatches

    mine = imported_versions()
    return [
        f"worker {worker} has {diff}"
        for worker, theirs in sorted(client.run(imported_versions).items())
        for diff in version_mismatches(mine, theirs)
    ]


def memory_and_spectrum_problems(client: Client, params: NoiseSource, hint: str) -> list[str]:
    """One sentence if a worker has too little memory, or cannot read the source's spectrum."""
    info = client.scheduler_info(n_workers=-1)["workers"]
    configs = client.run(worker_memory_config)
    for address, worker in sorted(info.items()):
        fraction = memory_fraction(configs.get(address))
        problems = memory_problems(params, worker.get("memory_limit") or 0, fraction, hint)
        if problems:
            return [f"worker {address}: {problems[0]}"]
    if params.spectrum is None:
        return []
    seen = client.run(os.path.isfile, params.spectrum.path)  # each worker reads it itself
    missing = sorted(w for w, ok in seen.items() if not ok)
    return [
        f"{len(missing)} worker(s) cannot read the spectrum {params.spectrum.path} (e.g."
        f" {missing[0]}): it must be at the same path on every node."
    ] if missing else []  # fmt: skip


def check_workers(
    client: Client, params: NoiseSource | None = None, folder: Path | None = None,
    tmp_dir: Path | None = None, hint: str = "",
) -> None:  # fmt: skip
    """Refuse workers with other package versions, too little memory, or no view of the folder.

    :class:`ClusterError`: the first kind of problem found, in one sentence naming the workers.
    """
    from mwr_dask.files.mrc import probe_temporaries

    problems = version_problems(client)
    if problems:
        raise ClusterError(
            "package versions differ between this client and the workers: "
            + "; ".join(problems[:4])
            + ". Install the same versions on both."
        )
    if params is not None:
        problems = memory_and_spectrum_problems(client, params, hint)
        if problems:
            raise ClusterError(problems[0])
    if folder is not None and tmp_dir is not None:
        answers = client.run(probe_temporaries, str(folder), str(tmp_dir))
        problems = [f"worker {w} {why}" for w, why in sorted(answers.items()) if why]
        if problems:
            raise ClusterError(
                "; ".join(problems[:4])
                + ". The output folder must be on a filesystem that every worker shares."
            )


@contextlib.contextmanager
def worker_check(
    client: Client, folder: Path | None, tmp_dir: Path | None, warn: Callable[[str], None]
) -> Iterator[None]:
    """Check every worker, those there now and those that join, for the block's duration.

    Registers a :class:`~mwr_dask.parallel.clusters.plugin.WorkerCheck` under a name of
    this run: a worker that fails it never writes, is closed, and ``warn`` gets one line
    naming it. The plugin is removed when the block ends (a remote cluster outlives the run).
    """
    from mwr_dask.parallel.clusters.plugin import REFUSED_TOPIC, WorkerCheck, imported_versions

    token = uuid.uuid4().hex[:12]
    topic, name = f"{REFUSED_TOPIC}-{token}", f"mwr-dask-check-{token}"

    def refused(event: tuple) -> None:
        warn(f"worker {event[1]['worker']} is not used: it {event[1]['why']}.")

    client.subscribe_topic(topic, refused)
    where = [None if path is None else str(path) for path in (folder, tmp_dir)]
    client.register_plugin(WorkerCheck(imported_versions(), *where, topic), name=name)
    try:
        yield
    finally:
        with contextlib.suppress(Exception):  # a lost scheduler: nothing to remove
            client.unregister_worker_plugin(name)
            client.unsubscribe_topic(topic)


@contextlib.contextmanager
def quiet_logs(*names: str) -> Iterator[None]:
    """Silence these loggers (default: distributed's client) in the block.

    Failures are told in one sentence; reconnect attempts and connection-closed noise are not.
    """
    loggers = [logging.getLogger(n) for n in names or ("distributed.client",)]
    levels = [lg.level for lg in loggers]
    for lg in loggers:
        lg.setLevel(logging.CRITICAL)
    try:
        yield
    finally:
        for lg, level in zip(loggers, levels, strict=True):
            lg.setLevel(level)


def wait_for_workers(client: Client, timeout: float) -> int:
    """Wait until the cluster has at least one worker; return the number of worker threads."""
    try:
        client.wait_for_workers(1, timeout=timeout)
    except TimeoutError:
        raise ClusterError(
            f"the scheduler at {client.scheduler.address} has no workers after {timeout:g} s."
        ) from None
    return sum(client.nthreads().values())
