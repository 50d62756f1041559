"""Dask workers as batch jobs on SLURM, PBS, SGE, LSF, HTCondor, OAR or Moab (dask-jobqueue).

What differs between batch systems is one entry of :data:`~.systems.SYSTEMS`.

dask-jobqueue writes, submits and cancels the jobs and scales them (``adapt``, also for a fixed
``--jobs N``: between N and N). Options: flags over the ``--cluster-config`` YAML file over the
user's dask configuration. Workers leave before the walltime, connections use TLS keys made for
the run, and every job is cancelled at the end: docs/hpc.md.
"""

from __future__ import annotations

import contextlib
import inspect
import logging
import os
import re
import shlex
import shutil
import stat
import sys
import tempfile
import warnings
from collections.abc import Iterator
from dataclasses import dataclass
from functools import cached_property
from pathlib import Path
from typing import TYPE_CHECKING, Any

from mwr_dask.parallel.clusters.checks import (
    DASK_SETTINGS,
    SINGLE_THREAD_ENV,
    ClusterError,
    Say,
    UsageError,
    check_workers,
    memory_fraction,
    memory_problems,
    quiet_logs,
    silent,
)
from mwr_dask.parallel.clusters.dashboard import dashboard_address, dashboard_link, tunnel_hint
from mwr_dask.parallel.clusters.jobqueue_import import import_dask_jobqueue
from mwr_dask.parallel.clusters.jobs import (
    JobKeeper,
    JobTracker,
    sigint_deferred,
    wait_for_first_worker,
)
from mwr_dask.parallel.clusters.limits import RAISE_IN_SHELL, open_files_raised
from mwr_dask.parallel.clusters.local import private_scratch, run_keys, tls_security
from mwr_dask.parallel.clusters.systems import SYSTEMS

if TYPE_CHECKING:
    from distributed import Client

    from mwr_dask.noise.source import NoiseSource

#: Memory per worker process when neither a flag nor a configuration gives the job's memory.
DEFAULT_MEMORY_PER_PROCESS = 2 * 2**30
#: Name of the folder, beside the job logs, that holds the run's TLS credentials (0700).
CREDENTIALS_FOLDER = "tls"
#: The credential files in that folder: the run's certificate and its key.
CERT_FILE, KEY_FILE = "cert.pem", "key.pem"
#: Shell variable of a job script that holds the job's private Dask scratch folder.
SCRATCH_VARIABLE = "MWR_DASK_SCRATCH"
#: Loggers silenced while a batch cluster runs (those distributed gives a level of their own
#: too): a refused submission or a closing connection is told in one sentence, not in
#: distributed's, tornado's or asyncio's tracebacks.
NOISY_LOGGERS = ("distributed", "distributed.client", "tornado", "tornado.application", "asyncio")


def cluster_class(system: str) -> type:
    """dask-jobqueue's cluster class for ``system`` (e.g. ``SLURMCluster`` for "slurm")."""
    return getattr(import_dask_jobqueue(), SYSTEMS[system].class_name)


def job_parameters(system: str) -> set[str]:
    """Keyword arguments the job class of ``system`` accepts (its own and its bases')."""
    names: set[str] = set()
    for klass in cluster_class(system).job_cls.__mro__:
        if "__init__" in klass.__dict__:
            names |= set(inspect.signature(klass.__init__).parameters)
    return names - {"self", "args", "kwargs", "base_class_kwargs"}


def parse_adapt(text: str) -> tuple[int, int]:
    """Parse ``--adapt MIN:MAX`` (jobs); raise :class:`UsageError` unless 1 <= MIN <= MAX."""
    match = re.fullmatch(r"\s*(\d+)\s*:\s*(\d+)\s*", text)
    if not match:
        raise UsageError(f"--adapt takes MIN:MAX, a number of jobs each (e.g. 1:10), not {text!r}.")
    lo, hi = int(match.group(1)), int(match.group(2))
    if not 1 <= lo <= hi:
        raise UsageError(
            f"--adapt MIN:MAX needs 1 <= MIN <= MAX (the run waits for a first worker),"
            f" not {text!r}."
        )
    return lo, hi


def read_config_file(path: Path, system: str) -> dict:
    """Read a ``--cluster-config`` YAML file (``dask.config.collect_yaml``) and check it."""
    import dask.config

    if not Path(path).is_file():
        raise UsageError(f"the --cluster-config file {path} does not exist.")
    try:
        data = next(iter(dask.config.collect_yaml([str(path)])), None)
    except ValueError as err:  # dask's words: "malformed", with the YAML error
        if "top level" in str(err):
            raise UsageError(f"the --cluster-config file {path} is not a YAML mapping.") from None
        lines = re.findall(r"line (\d+)", str(err))
        at = f" at line {lines[-1]}" if lines else ""
        raise UsageError(f"the --cluster-config file {path} is not valid YAML{at}.") from None
    if data is None:
        raise UsageError(f"cannot read the --cluster-config file {path}.")
    sections = data.get("jobqueue")
    if sections is None:
        return data
    if not isinstance(sections, dict) or not all(isinstance(v, dict) for v in sections.values()):
        raise UsageError(f"'jobqueue' in {path} must map system names to settings.")
    if system not in sections:
        raise UsageError(
            f"{path} has no jobqueue.{system} section (it has {', '.join(sorted(sections))})."
        )
    import_dask_jobqueue()  # its defaults list the known keys
    known = set(dask.config.get(f"jobqueue.{system}", {}))
    unknown = sorted(k for k in sections[system] if str(k).replace("_", "-") not in known)
    if unknown:
        raise UsageError(
            f"{path} sets {', '.join(unknown)} in jobqueue.{system}, which dask-jobqueue does"
            " not know (see configs/README.md)."
        )
    return data


@contextlib.contextmanager
def config_overlay(path: Path | None, system: str) -> Iterator[None]:
    """Apply a ``--cluster-config`` file on top of the dask configuration, for the block only."""
    if path is None:
        yield
        return
    import dask.config

    data = read_config_file(path, system)
    merged = dask.config.merge(dask.config.config, data)
    touched = {dask.config.canonical_name(key, merged) for key in data}
    with dask.config.set({key: merged[key] for key in touched}):
        yield


def thread_exports() -> list[str]:
    """Shell lines: single-threaded FFT/BLAS, :data:`DASK_SETTINGS`, this code on the path."""
    dask = {"DASK_" + k.upper().replace(".", "__").replace("-", "_"): v
            for k, v in DASK_SETTINGS.items()}  # fmt: skip
    lines = [f"export {name}={value}" for name, value in {**SINGLE_THREAD_ENV, **dask}.items()]
    if os.environ.get("PYTHONPATH"):
        lines.append(f"export PYTHONPATH={shlex.quote(os.environ['PYTHONPATH'])}")
    return lines


def scratch_lines(base: str) -> list[str]:
    """Shell lines that make each job's private Dask scratch folder in ``base`` (on its node).

    ``mktemp -d``: Dask's default, ``$TMPDIR/dask-scratch-space``, is shared, and it goes to the
    front of the workers' import path. ``$TMPDIR`` in ``base`` expands on the compute node.
    """
    return [
        f'{SCRATCH_VARIABLE}=$(mktemp -d "{base}/mwr-dask-scratch-XXXXXXXX") || exit 1',
        f"trap 'rm -rf \"${SCRATCH_VARIABLE}\"' EXIT",
    ]


def lifetime_args(walltime: str | None, system: str) -> list[str]:
    """Worker options to leave before the walltime (less a fifth, at most 5 min, staggered).

    Only a walltime ``[D-]HH:MM:SS`` (``HH:MM`` for LSF) is read; other forms are ambiguous.
    """
    fields = 2 if system == "lsf" else 3
    match = re.fullmatch(r"(?:(\d+)-)?" + r":".join([r"(\d+)"] * fields), str(walltime or ""))
    if not match:
        return []
    days, *parts = (int(g or 0) for g in match.groups())
    total = days * 86400 + sum(v * 60**k for k, v in enumerate(reversed(parts), start=3 - fields))
    if not total:
        return []
    margin = min(300, total // 5)
    return ["--lifetime", f"{total - margin}s", "--lifetime-stagger", f"{margin}s"]


@dataclass(frozen=True)
class BatchOptions:
    """How to run the workers as batch jobs. None means "not given on the command line".

    ``account`` is dask-jobqueue's ``project`` on SGE, LSF and OAR; ``job_extra`` directives
    come without their ``#SBATCH``/``#PBS``/``#$`` prefix; ``worker_timeout`` is seconds.
    ``credentials_directory`` (0700, removed after the run) must be seen by the compute nodes;
    default ``tls`` beside ``fallback_log_directory``, else ``~/.cache/mwr-dask/tls-<pid>``.
    """

    system: str
    jobs: int | None = None
    adapt: str | None = None
    cores: int | None = None
    memory: str | None = None
    walltime: str | None = None
    queue: str | None = None
    account: str | None = None
    interface: str | None = None
    local_directory: str | None = None
    log_directory: str | None = None
    fallback_log_directory: str | None = None
    job_extra: tuple[str, ...] | None = None
    prologue: tuple[str, ...] | None = None
    config_file: Path | None = None
    worker_timeout: float = 60.0
    credentials_directory: str | None = None
    tls: bool = True

    @property
    def name(self) -> str:
        """Display name of the batch system."""
        entry = SYSTEMS.get(self.system)
        return entry.display if entry else self.system

    @property
    def jobs_range(self) -> tuple[int, int]:
        """(initial, maximum) number of jobs."""
        if self.adapt is not None:
            return parse_adapt(self.adapt)
        n = self.jobs or 1
        return n, n

    def problems(self) -> list[str]:
        """One sentence per option that cannot work (nothing submitted or written)."""
        if self.system not in SYSTEMS:
            return [f"--cluster must be one of {', '.join(SYSTEMS)}, not {self.system!r}."]
        import psutil
        from dask.utils import parse_bytes

        out = []
        if self.jobs is not None and self.jobs < 1:
            out.append(f"--jobs must be at least 1, not {self.jobs}.")
        if self.jobs is not None and self.adapt is not None:
            out.append("give --jobs or --adapt, not both.")
        if self.adapt is not None:
            try:
                parse_adapt(self.adapt)
            except UsageError as err:
                out.append(str(err))
        if self.cores is not None and self.cores < 1:
            out.append(f"--cores must be at least 1, not {self.cores}.")
        if self.memory is not None:
            try:
                if parse_bytes(self.memory) <= 0:
                    raise ValueError
            except (ValueError, TypeError):
                out.append(f"--memory takes an amount such as 4GiB, not {self.memory!r}.")
        names = sorted(psutil.net_if_addrs())
        if self.interface is not None and self.interface not in names:
            out.append(
                f"--interface {self.interface} is not a network interface of this host"
                f" ({', '.join(names)})."
            )
        accepted = job_parameters(self.system)
        for flag, value in (("--queue", self.queue), ("--walltime", self.walltime)):
            if value is not None and flag[2:] not in accepted:
                out.append(f"{flag} does not apply to --cluster {self.system}.")
        if self.account is not None and not {"account", "project"} & accepted:
            out.append(f"--account does not apply to --cluster {self.system}.")
        if not out:
            try:
                self.job_script()
            except UsageError as err:
                out.append(str(err))
        return out

    @cached_property
    def resolved(self) -> tuple[dict, dict]:
        """:meth:`resolve` within the ``--cluster-config`` overlay, computed once."""
        with config_overlay(self.config_file, self.system):
            return self.resolve()

    @property
    def credentials_folder(self) -> Path:
        """Where the workers' copy of the TLS credentials goes during a run."""
        if self.credentials_directory:
            return Path(self.credentials_directory)
        if self.fallback_log_directory:
            return Path(self.fallback_log_directory).parent / CREDENTIALS_FOLDER
        return Path.home() / ".cache" / "mwr-dask" / f"{CREDENTIALS_FOLDER}-{os.getpid()}"

    def resolve(self) -> tuple[dict, dict]:
        """Job keyword arguments, and per-job settings for reports (``memory`` in bytes).

        Call within :func:`config_overlay` of :attr:`config_file`, as :attr:`resolved` does.
        """
        import dask.config
        from dask.utils import format_bytes, parse_bytes

        import_dask_jobqueue()
        cfg = dask.config.get(f"jobqueue.{self.system}", {})
        cores = int(self.cores or cfg.get("cores") or 1)
        processes = int(cfg.get("processes") or cores)
        if processes < 1 or processes > cores:
            raise UsageError(
                f"jobqueue.{self.system}.processes is {processes}; it must be between 1 and"
                f" the job's cores ({cores})."
            )
        default = format_bytes(processes * DEFAULT_MEMORY_PER_PROCESS).replace(" ", "")
        memory = self.memory or cfg.get("memory") or default
        log_directory = self.log_directory or cfg.get("log-directory")
        own_logs = log_directory is None and self.fallback_log_directory is not None
        log_directory = log_directory or self.fallback_log_directory
        prologue = self.prologue
        if prologue is None:
            prologue = tuple(cfg.get("job-script-prologue") or cfg.get("env-extra") or ())
        scratch_base = self.local_directory or cfg.get("local-directory") or "${TMPDIR:-/tmp}"
        walltime = self.walltime or cfg.get("walltime")
        extra = list(cfg.get("worker-extra-args") or [])
        if not any(str(arg).startswith("--lifetime") for arg in extra):
            extra += lifetime_args(walltime, self.system)
        kwargs: dict[str, Any] = {
            "cores": cores,
            "processes": processes,
            "memory": memory,
            "python": cfg.get("python") or sys.executable,
            "job_script_prologue": [
                *thread_exports(),
                RAISE_IN_SHELL,
                *prologue,
                *scratch_lines(scratch_base),
            ],
            "local_directory": f"${SCRATCH_VARIABLE}",
            "worker_extra_args": extra,
        }
        account_key = "account" if "account" in job_parameters(self.system) else "project"
        given = {"walltime": self.walltime, "queue": self.queue, account_key: self.account,
                 "interface": self.interface, "log_directory": log_directory}  # fmt: skip
        kwargs.update({key: value for key, value in given.items() if value is not None})
        if self.job_extra is not None:
            kwargs["job_extra_directives"] = list(self.job_extra)
        settings = {"cores": cores, "processes": processes, "memory": parse_bytes(memory),
                    "walltime": walltime, "log_directory": log_directory,
                    "own_logs": own_logs}  # fmt: skip
        return kwargs, settings

    def security(self):
        """Return the run's TLS settings: every role reads the key from the credentials folder."""
        folder = self.credentials_folder
        return tls_security(str(folder / CERT_FILE), str(folder / KEY_FILE))

    def job_script(self) -> str:
        """Return the script each job runs (scheduler address and worker name placeholders)."""
        with config_overlay(self.config_file, self.system):
            kwargs = dict(self.resolved[0])
            job_cls = cluster_class(self.system).job_cls
            log_directory = kwargs.get("log_directory")
            if self.tls:
                kwargs["security"] = self.security()
            # dask-jobqueue creates the log folder when it builds a job; build it on an empty
            # stand-in and put the real path back into the text.
            with tempfile.TemporaryDirectory(prefix="mwr-dask-dry-run-") as stand_in:
                if log_directory is not None:
                    kwargs["log_directory"] = stand_in
                try:
                    with warnings.catch_warnings():
                        warnings.simplefilter("ignore", FutureWarning)
                        job = job_cls(
                            f"{'tls' if self.tls else 'tcp'}://SCHEDULER-ADDRESS:PORT",
                            name="WORKER-NAME",
                            **kwargs,
                        )
                    script = job.job_script()
                except (ValueError, TypeError, KeyError) as err:
                    first = str(err).strip().splitlines()[0] if str(err).strip() else repr(err)
                    raise UsageError(
                        f"dask-jobqueue cannot build a {self.name} job from these options:"
                        f" {first.rstrip('.:')}."
                    ) from None
            if log_directory is not None:
                script = script.replace(stand_in, str(log_directory))
        return script


def private_folder(path: Path) -> Path:
    """Create ``path`` (and its parents) for this user only: 0700, owned, not a link."""
    path.parent.mkdir(parents=True, exist_ok=True)
    with contextlib.suppress(FileExistsError):
        os.mkdir(path, 0o700)
    info = os.lstat(path)
    if not stat.S_ISDIR(info.st_mode) or info.st_uid != os.geteuid():
        raise ClusterError(
            f"{path} is not a folder of yours; remove it (it holds the run's TLS keys)."
        )
    if info.st_mode & 0o077:
        os.chmod(path, 0o700)
    return path


@contextlib.contextmanager
def credentials(folder: Path) -> Iterator[None]:
    """Write keys made for the run into ``folder`` (0700, files 0600); remove it afterwards."""
    try:
        private_folder(folder)
        for name, text in zip((CERT_FILE, KEY_FILE), run_keys(), strict=True):
            path = folder / name
            with contextlib.suppress(FileNotFoundError):
                path.unlink()  # a killed run's
            flags = os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW | os.O_CLOEXEC
            with os.fdopen(os.open(path, flags, 0o600), "w") as f:
                f.write(text)
    except OSError as err:
        shutil.rmtree(folder, ignore_errors=True)
        raise ClusterError(
            f"cannot write the run's TLS keys to {folder} ({err.strerror})."
        ) from None
    try:
        yield
    finally:
        shutil.rmtree(folder, ignore_errors=True)


@dataclass(frozen=True)
class BatchCluster:
    """Workers as batch jobs, the scheduler in this process; dashboard ``host:port`` or None."""

    options: BatchOptions
    dashboard_address: str | None = "127.0.0.1:8787"

    remote = True
    sibling = True

    @property
    def label(self) -> str:
        """Name for messages: "SLURM cluster", "PBS cluster", ..."""
        return f"{self.options.name} cluster"

    def planned_workers(self) -> int:
        """Worker threads of the cluster at full size."""
        _, s = self.options.resolved
        return self.options.jobs_range[1] * s["processes"] * (s["cores"] // s["processes"])

    def describe(self) -> str:
        """One line for ``--dry-run``, nothing submitted: jobs, worker processes, resources."""
        options, (_, s) = self.options, self.options.resolved
        lo, hi = options.jobs_range
        jobs = f"{lo} to {hi} jobs (adaptive)" if options.adapt else f"{lo} job{'s' * (lo > 1)}"
        threads = s["cores"] // s["processes"]
        walltime = s["walltime"] or "the queue's default"
        cores = f"{s['cores']} core{'s' * (s['cores'] > 1)}"
        gib = f"{s['memory'] / 2**30:.2f}".rstrip("0").rstrip(".")  # 1, 1.5, 10000
        return (
            f"{options.name}: {jobs}, each {cores}, {gib} GiB,"
            f" walltime {walltime}, running {s['processes']} worker"
            f" process{'es' * (s['processes'] > 1)} of {threads} thread{'s' * (threads > 1)}"
        )

    def script(self) -> str:
        """Return the job script (placeholders for the scheduler address and worker name)."""
        return self.options.job_script()

    def memory_problems(self, params: NoiseSource) -> list[str]:
        """One sentence if a volume does not fit in a worker process of a job."""
        _, s = self.options.resolved
        return memory_problems(
            params, int(s["memory"] // s["processes"]), memory_fraction(),
            hint="give the jobs more --memory (or fewer processes) or use a smaller CUBESIZE",
        )  # fmt: skip

    def check(
        self, client: Client, params: NoiseSource | None = None, folder: Path | None = None,
        tmp_dir: Path | None = None,
    ) -> None:  # fmt: skip
        """Check the first workers like a remote cluster's (the jobs' nodes may differ)."""
        check_workers(client, params, folder, tmp_dir, hint="give the jobs more --memory")

    def report(self, client: Client, threads: int, dashboard: bool = True) -> list[str]:
        """Where the scheduler listens; the dashboard's real link and an SSH tunnel to it."""
        lines = [f"{self.label}: {client.scheduler.address}, {threads} worker threads"]
        address = dashboard_address(self.dashboard_address)
        port = client.scheduler_info()["services"].get("dashboard")
        if dashboard and address and port:
            link = dashboard_link(address, port)
            lines.append(f"Dashboard: {link}")
            hint = tunnel_hint(link, served_here=True)
            if hint:
                lines.append(f"  (from your workstation: {hint})")
        return lines

    @contextlib.contextmanager
    def client(self, say: Say | None = None, warn: Say | None = None) -> Iterator[Client]:
        """Start the cluster, wait for its first worker, yield a connected client.

        On exit (normal, error or Ctrl-C) every job is cancelled, confirmed with the batch
        system, and the credentials folder removed.
        """
        import dask.config
        from distributed import Client

        options, say, warn = self.options, say or silent, warn or silent
        say(f"Cluster: {self.describe()}")
        with contextlib.ExitStack() as stack:
            stack.enter_context(open_files_raised(warn))  # the scheduler runs here
            stack.enter_context(config_overlay(options.config_file, options.system))
            stack.enter_context(dask.config.set(DASK_SETTINGS))  # for the scheduler, here
            stack.enter_context(private_scratch())  # the scheduler runs here: its scratch too
            stack.enter_context(quiet_logs(*NOISY_LOGGERS))
            if options.tls:
                stack.enter_context(credentials(options.credentials_folder))
            security = options.security() if options.tls else None
            tracker = JobTracker(options.system, SYSTEMS[options.system].cancel)
            cluster = self.start(tracker, security)
            _, settings = options.resolved
            stack.enter_context(self.jobs_cancelled(cluster, tracker, settings, say, warn))
            cluster.adapt(minimum_jobs=options.jobs_range[0], maximum_jobs=options.jobs_range[1])
            client = stack.enter_context(Client(cluster, security=security))
            logs = settings["log_directory"]
            wait_for_first_worker(client, tracker, options.name, options.worker_timeout, logs, say)
            where = " (kept if the run fails)" if logs and settings["own_logs"] else ""
            say(
                f"{options.name} jobs: {tracker.describe(tracker.states())}"
                + (f"; output in {logs}{where}" if logs else "")
            )
            keeper = JobKeeper(cluster, tracker, options.name, options.jobs_range[1], logs, say)
            stack.enter_context(keeper.running())
            yield client

    def start(self, tracker: JobTracker, security: Any) -> Any:
        """Start dask-jobqueue's cluster (the scheduler, here); no job is submitted yet."""
        import dask

        options = self.options
        kwargs, _ = options.resolved
        scheduler = dict(dask.config.get(f"jobqueue.{options.system}.scheduler-options") or {})
        address = dashboard_address(self.dashboard_address)
        if address:
            scheduler["dashboard_address"] = address
        else:  # the scheduler still serves HTTP (health, metrics): on a free loopback port
            scheduler.update(dashboard=False, dashboard_address="127.0.0.1:0")
        if security is None and not options.interface and "interface" not in scheduler:
            scheduler.setdefault("host", "127.0.0.1")  # without TLS, never every interface
        cls = cluster_class(options.system)
        try:
            with warnings.catch_warnings():
                warnings.filterwarnings("ignore", message="Port .* is already in use")
                warnings.simplefilter("ignore", FutureWarning)
                return cls(
                    job_cls=tracker.job_class(cls.job_cls),
                    scheduler_options=scheduler,
                    silence_logs=logging.ERROR,
                    security=security,
                    protocol="tls://" if security else None,
                    **kwargs,
                )
        except (ValueError, TypeError, OSError) as err:
            first = (str(err).strip().splitlines() or [type(err).__name__])[0]
            name = options.name
            raise ClusterError(f"cannot start the {name} cluster: {first.rstrip('.')}.") from None

    @contextlib.contextmanager
    def jobs_cancelled(
        self, cluster: Any, tracker: JobTracker, settings: dict, say: Say, warn: Say
    ) -> Iterator[None]:
        """Close ``cluster`` at the end, check every job left the queue, tidy the default logs."""
        name, logs = self.options.name, settings["log_directory"]
        succeeded = False
        try:
            yield
            succeeded = True
        finally:
            with sigint_deferred():
                if tracker.submitted:
                    say(f"Cancelling {name} jobs {', '.join(tracker.submitted)}")
                with contextlib.suppress(Exception):
                    cluster.close(timeout=30)
                left = tracker.cancel_leftovers()
                if left:
                    warn(
                        f"{name} jobs {tracker.describe(left, list(left))} are still listed"
                        f" after cancellation; check them with the {name} tools."
                    )
                if settings["own_logs"]:
                    if succeeded and not left:
                        shutil.rmtree(logs, ignore_errors=True)
                    with contextlib.suppress(OSError):
                        os.rmdir(logs)
