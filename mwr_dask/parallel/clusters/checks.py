"""Checks of a cluster's workers: package versions, a view of the output folder, memory.

Every worker is checked, those there at the start and those that join later (adaptive
batch clusters, restarted workers): a worker plugin
(:class:`~mwr_dask.parallel.clusters.plugin.WorkerCheck`) checks a worker when it joins and only
then gives it the resource that every write task of the run requires. A worker that fails
the check (or that runs code too old to check itself) never holds the resource, so the
scheduler never gives it a volume to write.

Dask is imported inside the functions: importing this module is cheap.
"""

from __future__ import annotations

import contextlib
import importlib
import os
from collections.abc import Iterator
from pathlib import Path
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from distributed import Client

    from mwr_dask.noise.source import NoiseSource

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
#: Packages whose versions must agree between the client and every worker.
CHECKED_PACKAGES = ("mwr_dask", "numpy", "scipy", "mrcfile", "dask", "distributed")
#: Worker resource that the write tasks require; a worker gets it once it passed the check.
CHECKED_RESOURCE = "mwr-dask-checked"
#: Topic of the events a refused worker sends to the client.
REFUSED_TOPIC = "mwr-dask-refused"
#: Dask's memory thresholds (fractions of a worker's limit) that stop a worker's work.
MEMORY_THRESHOLDS = ("pause", "terminate")


class UsageError(ValueError):
    """Options that cannot work; the message is one sentence (the CLI exits with status 2)."""


class ClusterError(RuntimeError):
    """A cluster could not be started, reached or used; the message is one sentence."""


def default_ncpus() -> int:
    """Cores this process may use (the CPU affinity mask, as batch schedulers set it)."""
    try:
        return len(os.sched_getaffinity(0))
    except AttributeError:  # pragma: no cover - not Linux
        return os.cpu_count() or 1


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
        import dask.config
        import distributed  # noqa: F401 - its defaults enter dask's configuration on import

        config = dask.config.get("distributed.worker.memory", {})
    enabled = [
        (float(config[name]), name)
        for name in MEMORY_THRESHOLDS
        if isinstance(config.get(name), int | float) and not isinstance(config.get(name), bool)
        and 0 < float(config[name]) <= 1
    ]  # fmt: skip
    return min(enabled, default=(1.0, ""))


def memory_problems(
    params: NoiseSource, limit: int, fraction: tuple[float, str] | None = None, hint: str = ""
) -> list[str]:
    """One sentence if a volume of ``params`` does not fit in a worker of ``limit`` bytes.

    Parameters
    ----------
    params : NoiseSource
        Mode, cube size and tilts.
    limit : int
        Memory limit of the smallest worker, bytes (0: no limit, nothing to check).
    fraction : tuple of (float, str), optional
        The share of ``limit`` usable and the Dask threshold behind it (default:
        :func:`memory_fraction` of this process's configuration).
    hint : str
        What to do, appended to the sentence (e.g. "use fewer workers (--ncpus)").
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


def package_versions() -> dict[str, str | None]:
    """``__version__`` of each of :data:`CHECKED_PACKAGES` as imported here (None if absent)."""
    out = {}
    for package in CHECKED_PACKAGES:
        try:
            out[package] = getattr(importlib.import_module(package), "__version__", None)
        except ImportError:
            out[package] = None
    return out


def version_mismatches(mine: dict, theirs: dict) -> list[str]:
    """``numpy 1.0 (this client 2.0)`` for each package whose versions differ."""
    return [
        f"{p} {theirs.get(p)}, this client {mine.get(p)}"
        for p in CHECKED_PACKAGES
        if theirs.get(p) != mine.get(p)
    ]


def check_versions(client: Client) -> list[str]:
    """Mismatches of :data:`CHECKED_PACKAGES` between this client and the workers.

    The versions compared are those of the modules each process imports, so a worker that
    imports another copy of a package is caught even if the installed metadata agrees.
    """
    packages = CHECKED_PACKAGES

    def versions() -> dict[str, str | None]:
        # nested, so it travels by value: it runs on workers whose mwr_dask differs
        out = {}
        for package in packages:
            try:
                out[package] = getattr(importlib.import_module(package), "__version__", None)
            except ImportError:
                out[package] = None
        return out

    mine = package_versions()
    return [
        f"worker {worker} has {diff}"
        for worker, theirs in sorted(client.run(versions).items())
        for diff in version_mismatches(mine, theirs)
    ]


def probe_folder(folder: str, tmp_dir: str) -> str | None:
    """On a worker: None if it can write ``folder`` with temporaries in ``tmp_dir``, else why not.

    Nothing is written to ``folder`` (see :func:`mwr_dask.files.mrc.probe_temporaries`).
    """
    from mwr_dask.files.mrc import probe_temporaries

    return probe_temporaries(folder, tmp_dir)


def check_workers_can_write(client: Client, folder: Path, tmp_dir: Path) -> list[str]:
    """One sentence per worker that cannot write the output folder."""
    answers = client.run(probe_folder, str(folder), str(tmp_dir))
    return [f"worker {w} {why}" for w, why in sorted(answers.items()) if why]


def worker_memory_config() -> dict:
    """On a worker: its ``distributed.worker.memory`` configuration."""
    import dask.config

    return dict(dask.config.get("distributed.worker.memory", {}))


def check_workers(
    client: Client, params: NoiseSource | None, folder: Path | None, tmp_dir: Path | None,
    hint: str = "",
) -> None:  # fmt: skip
    """Refuse workers with other package versions, too little memory, or no view of the folder.

    Raises
    ------
    ClusterError
        The first kind of problem found, in one sentence naming the workers.
    """
    problems = check_versions(client)
    if problems:
        raise ClusterError(
            "package versions differ between this client and the workers: "
            + "; ".join(problems[:4])
            + ". Install the same versions on both."
        )
    if params is not None:
        info = client.scheduler_info(n_workers=-1)["workers"]
        configs = client.run(worker_memory_config)
        for address, worker in sorted(info.items()):
            limit = worker.get("memory_limit") or 0
            fraction = memory_fraction(configs.get(address))
            problems = memory_problems(params, limit, fraction, hint)
            if problems:
                raise ClusterError(f"worker {address}: {problems[0]}")
        spectrum = getattr(params, "spectrum", None)
        if spectrum is not None:  # mode 3: each worker reads the spectrum file itself
            seen = client.run(os.path.isfile, spectrum.path)
            missing = sorted(w for w, ok in seen.items() if not ok)
            if missing:
                raise ClusterError(
                    f"{len(missing)} worker(s) cannot read the spectrum {spectrum.path}"
                    f" (e.g. {missing[0]}): it must be at the same path on every node."
                )
    if folder is not None and tmp_dir is not None:
        problems = check_workers_can_write(client, folder, tmp_dir)
        if problems:
            raise ClusterError(
                "; ".join(problems[:4])
                + ". The output folder must be on a filesystem that every worker shares."
            )


@contextlib.contextmanager
def quiet_client_logs() -> Iterator[None]:
    """Silence distributed's client log (reconnect attempts): failures are told in one line."""
    import logging

    logger = logging.getLogger("distributed.client")
    level = logger.level
    logger.setLevel(logging.CRITICAL)
    try:
        yield
    finally:
        logger.setLevel(level)


def wait_for_workers(client: Client, timeout: float) -> int:
    """Wait until the cluster has at least one worker; return the number of worker threads."""
    try:
        client.wait_for_workers(1, timeout=timeout)
    except TimeoutError:
        raise ClusterError(
            f"the scheduler at {client.scheduler.address} has no workers after {timeout:g} s."
        ) from None
    return sum(client.nthreads().values())


def install_worker_check(
    client: Client, folder: Path | None = None, tmp_dir: Path | None = None, warn=None
) -> dict[str, float]:
    """Check every worker, now and as it joins; return the resources write tasks must ask for.

    Registers a :class:`~mwr_dask.parallel.clusters.plugin.WorkerCheck` under a name of this run:
    workers there now are checked at once, those that join later as they join, and only
    those that pass get the run's resource. ``warn`` receives one line per refused worker.
    """
    import uuid

    from mwr_dask.parallel.clusters.plugin import WorkerCheck

    token = uuid.uuid4().hex[:12]
    if warn is not None:
        client.subscribe_topic(
            REFUSED_TOPIC,
            lambda event: warn(f"worker {event[1]['worker']} is not used: it {event[1]['why']}."),
        )
    resource = f"{CHECKED_RESOURCE}-{token}"
    plugin = WorkerCheck(
        package_versions(),
        None if folder is None else str(folder),
        None if tmp_dir is None else str(tmp_dir),
        resource=resource,
    )
    name = WorkerCheck.name_for(token)
    client.register_plugin(plugin, name=name)
    client._mwr_dask_check = name
    return {resource: 1}


def uninstall_worker_check(client: Client) -> None:
    """Remove the check :func:`install_worker_check` registered, if any."""
    name = getattr(client, "_mwr_dask_check", None)
    if name:
        client.unregister_worker_plugin(name)
