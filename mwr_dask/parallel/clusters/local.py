"""A local cluster: single-threaded worker processes on 127.0.0.1, over TLS with per-run keys."""

from __future__ import annotations

import contextlib
import gc
import logging
import os
import shutil
import stat
import sys
import tempfile
import warnings
from collections.abc import Iterator
from dataclasses import dataclass
from typing import TYPE_CHECKING

from mwr_dask.parallel.clusters.checks import (
    DASK_SETTINGS,
    SINGLE_THREAD_ENV,
    ClusterError,
    memory_problems,
    quiet_logs,
    worker_memory,
)
from mwr_dask.parallel.clusters.dashboard import LOOPBACK, dashboard_address
from mwr_dask.parallel.clusters.limits import open_files_raised
from mwr_dask.parallel.cores import usable_cores

if TYPE_CHECKING:
    from pathlib import Path

    from distributed import Client

    from mwr_dask.noise.source import NoiseSource
    from mwr_dask.parallel.clusters.checks import Say


def run_keys() -> tuple[str, str]:
    """Make a certificate and its key (PEM) for this run: what every role of the run uses.

    What ``Security.temporary()`` makes (a self-signed certificate, in memory only), with an
    elliptic-curve key (P-256) instead of a 2048-bit RSA one: made in well under a
    millisecond instead of about 0.1-0.3 s, and cheaper handshakes (docs/benchmarks.md).
    """
    import datetime

    from cryptography import x509
    from cryptography.hazmat.primitives import hashes, serialization
    from cryptography.hazmat.primitives.asymmetric import ec
    from cryptography.x509.oid import NameOID

    key = ec.generate_private_key(ec.SECP256R1())
    key_pem = key.private_bytes(
        encoding=serialization.Encoding.PEM,
        format=serialization.PrivateFormat.PKCS8,
        encryption_algorithm=serialization.NoEncryption(),
    ).decode()
    name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "dask-internal")])
    now = datetime.datetime.now(tz=datetime.timezone.utc)
    cert = (
        x509.CertificateBuilder()
        .subject_name(name)
        .issuer_name(name)
        .add_extension(x509.SubjectAlternativeName([x509.DNSName("dask-internal")]), False)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - datetime.timedelta(minutes=5))
        .not_valid_after(now + datetime.timedelta(days=365))
        .sign(key, hashes.SHA256())
    )
    return cert.public_bytes(serialization.Encoding.PEM).decode(), key_pem


def tls_security(cert: str, key: str):
    """Return a :class:`distributed.Security` requiring TLS, every role with ``cert``/``key``.

    ``cert`` and ``key`` are PEM text or the paths of files holding it. Only the processes
    that hold the key can connect to the scheduler or the workers, even on 127.0.0.1.
    """
    from distributed.security import Security

    return Security(
        require_encryption=True,
        tls_ca_file=cert,
        **{f"tls_{role}_{part}": value for role in ("client", "scheduler", "worker")
           for part, value in (("key", key), ("cert", cert))},
    )  # fmt: skip


@contextlib.contextmanager
def private_scratch() -> Iterator[str]:
    """Dask's scratch folder for this run only: a new 0700 folder, removed afterwards.

    Dask's default, ``$TMPDIR/dask-scratch-space``, is shared by every user of the machine
    and goes to the front of the import path of the scheduler, the nannies and the workers:
    whoever makes it first in a shared ``/tmp`` could plant modules there (``mrcfile.py``)
    that the run would import. Here the scratch folder is made by ``tempfile.mkdtemp`` (a
    name nobody else can take, mode 0700) in dask's ``temporary-directory`` or the system's
    temporary folder, which must be the user's or root's and not writable by others (unless
    sticky, as ``/tmp``). Dask's ``temporary-directory`` points to it inside the block, so
    that every process the block starts uses it. :class:`ClusterError` if the temporary folder
    is not safe or the scratch folder cannot be made.
    """
    import dask.config

    base = dask.config.get("temporary-directory", None) or tempfile.gettempdir()
    try:
        info = os.stat(base)
        if info.st_uid not in (0, os.geteuid()):
            raise ClusterError(
                f"the temporary folder {base} belongs to another user: Dask's scratch folder"
                " cannot be made safely there; set TMPDIR to a folder of yours."
            )
        if info.st_mode & (stat.S_IWGRP | stat.S_IWOTH) and not info.st_mode & stat.S_ISVTX:
            raise ClusterError(
                f"the temporary folder {base} can be written by other users and is not sticky:"
                " Dask's scratch folder cannot be made safely there; set TMPDIR to a folder"
                " of yours."
            )
        path = tempfile.mkdtemp(prefix="mwr-dask-scratch-", dir=base)
    except OSError as err:
        raise ClusterError(
            f"cannot make a scratch folder in {base} ({err.strerror or err}); set TMPDIR to a"
            " folder of yours."
        ) from None
    try:
        with dask.config.set({"temporary-directory": path}):
            yield path
    finally:
        shutil.rmtree(path, ignore_errors=True)


@contextlib.contextmanager
def frozen_heap(fork: bool) -> Iterator[None]:
    """Freeze the garbage collector's objects while workers are forked from this process.

    Python's recipe for ``fork()`` without ``exec()`` (``gc.freeze``): the collections of the
    workers then leave the objects they share with this process alone (no copy-on-write of
    their pages), and neither process traverses them again (docs/benchmarks.md). They are
    handed back to the collector when the block ends.
    """
    if not fork:
        yield
        return
    gc.freeze()
    try:
        yield
    finally:
        gc.unfreeze()


@contextlib.contextmanager
def children_stderr_silenced() -> Iterator[None]:
    """Worker processes started in the block write their standard error to /dev/null.

    A Ctrl-C at the terminal goes to every process of the foreground group: each worker
    process that a starting cluster is spawning would print a traceback (its bootstrap runs
    before Dask's signal handling). Spawned processes inherit file descriptor 2, so it points
    to /dev/null while the cluster starts; this process's own messages come after. Workers
    log nothing anyway (``silence_logs``), and Ctrl-C still stops the run at once.
    """
    try:
        sys.stderr.flush()
        saved = os.dup(2)
    except (OSError, ValueError):  # no real standard error: nothing to protect
        yield
        return
    devnull = os.open(os.devnull, os.O_WRONLY)
    try:
        os.dup2(devnull, 2)
        yield
    finally:
        os.close(devnull)
        with contextlib.suppress(OSError, ValueError):
            sys.stderr.flush()
        os.dup2(saved, 2)
        os.close(saved)


@dataclass(frozen=True)
class LocalCluster:
    """Worker processes on this machine, one thread each, TLS with keys made for the run.

    ``ncpus`` defaults to the cores this process may use; ``dashboard_address`` stays on
    127.0.0.1 unless a host is given (None: no dashboard). ``start_method``
    (``distributed.worker.multiprocessing-method``) is ``fork`` on Linux, so that the workers
    have this process's imports already (a spawned worker imports distributed, numpy, scipy and
    mrcfile again: seconds of a short run, docs/benchmarks.md); None keeps dask's (``spawn``).
    """

    ncpus: int | None = None
    dashboard_address: str | None = "127.0.0.1:8787"
    tls: bool = True
    start_method: str | None = "fork" if sys.platform == "linux" else None

    label = "local cluster"
    remote = False
    sibling = False

    def planned_workers(self) -> int:
        """Worker processes (of one thread each) to plan the work for."""
        return self.ncpus or usable_cores()

    def describe(self) -> str:
        """One line for ``--dry-run``; nothing is started."""
        n = self.planned_workers()
        return f"local, {n} worker process{'es' * (n != 1)} of 1 thread"

    def script(self) -> str | None:
        """No job script."""
        return None

    def memory_problems(self, params: NoiseSource) -> list[str]:
        """One sentence if a volume does not fit in a worker, before anything starts."""
        return memory_problems(
            params, worker_memory(self.planned_workers()), hint="use fewer workers (--ncpus) or a"
            " smaller CUBESIZE"
        )  # fmt: skip

    @contextlib.contextmanager
    def client(self, say: Say | None = None, warn: Say | None = None) -> Iterator[Client]:
        """Start the cluster (scratch in a private folder), yield its client; close both on exit.

        This process and the workers it starts may open as many files as the hard limit allows.
        """
        import dask
        from distributed import Client
        from distributed import LocalCluster as DaskLocalCluster

        address = dashboard_address(self.dashboard_address)
        security = tls_security(*run_keys()) if self.tls else None
        environ = {
            **dask.config.get("distributed.nanny.pre-spawn-environ", {}),
            **SINGLE_THREAD_ENV,
        }
        config = {"distributed.nanny.pre-spawn-environ": environ, **DASK_SETTINGS}
        if self.start_method:
            config["distributed.worker.multiprocessing-method"] = self.start_method
        with (
            open_files_raised(warn),
            private_scratch() as scratch,
            frozen_heap(self.start_method == "fork"),
        ):
            with dask.config.set(config), warnings.catch_warnings(), children_stderr_silenced():
                warnings.filterwarnings("ignore", message="Port .* is already in use")
                cluster = DaskLocalCluster(
                    n_workers=self.planned_workers(),
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
                    local_directory=scratch,
                )
            with contextlib.closing(cluster):
                client = Client(cluster, security=security)
                with quiet_logs(), contextlib.closing(client):
                    yield client

    def check(
        self, client: Client, params: NoiseSource | None = None, folder: Path | None = None,
        tmp_dir: Path | None = None,
    ) -> None:  # fmt: skip
        """Nothing to check at the start: the workers started here run this code."""

    def report(self, client: Client, threads: int, dashboard: bool = True) -> list[str]:
        """Lines on where the work runs and the dashboard."""
        lines = [f"Local cluster: {client.scheduler.address}, {threads} worker threads"]
        if dashboard and self.dashboard_address and client.dashboard_link:
            lines.append(f"Dashboard: {client.dashboard_link}")
        return lines
