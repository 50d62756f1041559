"""Dask workers as batch jobs on SLURM, PBS, SGE, LSF, HTCondor, OAR or Moab (dask-jobqueue).

What differs between batch systems is one entry of :data:`mwr_dask.parallel.clusters.systems.SYSTEMS`.

dask-jobqueue does the work: it writes the job scripts, submits and cancels the jobs, and runs
the scheduler in this process. This module chooses its options, in this order of precedence:
command-line flags, the ``--cluster-config`` YAML file (dask-jobqueue's ``jobqueue.<system>``
schema, applied to the dask configuration for the run only), the user's dask configuration.
On top of that it

- runs the workers with this client's Python, one thread per worker process, and one thread
  per process for FFT/BLAS libraries;
- runs every connection over TLS with keys made for the run; the workers' copies are
  written to a folder only the user can read (0700, beside the output folder, which the
  workers see anyway), never into the job script, and removed when the run ends;
- waits for the first worker up to a timeout, saying which jobs sit in the queue and why;
- cancels every job the run submitted when it ends, fails or is interrupted, and checks that
  none is left in the queue.

``dask_jobqueue`` is imported on first use only, without letting it copy its configuration
template to ``~/.config/dask/jobqueue.yaml``.
"""

from __future__ import annotations

import _thread
import contextlib
import inspect
import logging
import os
import re
import shlex
import shutil
import signal
import subprocess
import sys
import tempfile
import threading
import time
import warnings
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from functools import cached_property
from pathlib import Path
from types import ModuleType
from typing import TYPE_CHECKING, Any

from mwr_dask.parallel.clusters.checks import (
    SINGLE_THREAD_ENV,
    ClusterError,
    UsageError,
    check_workers,
    install_worker_check,
    memory_fraction,
    memory_problems,
)
from mwr_dask.parallel.clusters.dashboard import dashboard_address, dashboard_link, tunnel_hint
from mwr_dask.parallel.clusters.local import private_scratch, temporary_security
from mwr_dask.parallel.clusters.systems import SYSTEMS, job_states

if TYPE_CHECKING:
    from distributed import Client

    from mwr_dask.noise.source import NoiseSource
#: Memory per worker process when neither a flag nor a configuration gives the job's memory.
DEFAULT_MEMORY_PER_PROCESS = 2 * 2**30
#: Seconds between two queries of the batch system while waiting for workers.
POLL_SECONDS = 5.0
#: Seconds between two "still waiting" reports.
REPORT_SECONDS = 30.0
#: Seconds between two checks, during a run, for jobs that ended (walltime, node failure).
KEEPER_SECONDS = 10.0
#: Seconds to wait, after cancelling, for the jobs to leave the queue.
CANCEL_WAIT_SECONDS = 20.0
#: Placeholder for the scheduler address in a job script shown by ``--dry-run``.
SCHEDULER_PLACEHOLDER = "tls://SCHEDULER-ADDRESS:PORT"
#: Name of the folder, beside the job logs, that holds the run's TLS credentials (0700).
CREDENTIALS_FOLDER = "tls"
#: Shell variable of a job script that holds the job's private Dask scratch folder.
SCRATCH_VARIABLE = "MWR_DASK_SCRATCH"

Say = Callable[[str], None]


def _warn(line: str) -> None:
    print(f"mwr-dask: warning: {line}", file=sys.stderr, flush=True)


def import_dask_jobqueue() -> ModuleType:
    """Import ``dask_jobqueue`` without the side effects of its import.

    On import, dask-jobqueue

    - calls ``dask.config.ensure_file`` to copy its template to
      ``~/.config/dask/jobqueue.yaml`` (or ``$DASK_CONFIG``): skipped here (its defaults are
      loaded into the dask configuration in memory either way);
    - replaces the SIGINT handler with ``sys.exit()`` (``dask_jobqueue/runner.py``), which
      would turn Ctrl-C into a successful exit: the handler in place before is restored.
    """
    if "dask_jobqueue" in sys.modules:
        return sys.modules["dask_jobqueue"]
    import dask.config

    main_thread = threading.current_thread() is threading.main_thread()
    sigint = signal.getsignal(signal.SIGINT) if main_thread else None
    ensure_file = dask.config.ensure_file
    dask.config.ensure_file = _no_file
    try:
        import dask_jobqueue
    finally:
        dask.config.ensure_file = ensure_file
        if main_thread and sigint is not None:
            signal.signal(signal.SIGINT, sigint)
    return dask_jobqueue


def _no_file(*args: Any, **kwargs: Any) -> None:
    """Stand-in for ``dask.config.ensure_file`` that writes nothing."""


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
    """Read a ``--cluster-config`` YAML file and check its ``jobqueue.<system>`` section.

    Raises
    ------
    UsageError
        The file is missing or unreadable, is not a YAML mapping, has jobqueue sections but
        none for ``system``, or names keys that dask-jobqueue does not know.
    """
    import dask.config
    import yaml

    try:
        text = Path(path).read_text()
    except FileNotFoundError:
        raise UsageError(f"the --cluster-config file {path} does not exist.") from None
    except (OSError, UnicodeDecodeError) as err:
        raise UsageError(f"cannot read the --cluster-config file {path} ({err}).") from None
    try:
        data = yaml.safe_load(text)
    except yaml.YAMLError as err:
        where = getattr(err, "problem_mark", None)
        at = f" at line {where.line + 1}" if where is not None else ""
        raise UsageError(f"the --cluster-config file {path} is not valid YAML{at}.") from None
    if data is None:
        data = {}
    if not isinstance(data, dict):
        raise UsageError(f"the --cluster-config file {path} is not a YAML mapping of settings.")
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
    """Shell lines that make every worker single-threaded for FFT/BLAS and import this code."""
    lines = [f"export {name}={value}" for name, value in SINGLE_THREAD_ENV.items()]
    if os.environ.get("PYTHONPATH"):
        lines.append(f"export PYTHONPATH={shlex.quote(os.environ['PYTHONPATH'])}")
    return lines


def scratch_lines(base: str) -> list[str]:
    """Shell lines that make each job's private Dask scratch folder in ``base`` (on its node).

    ``mktemp -d`` makes a new 0700 folder that no other user can have made first (Dask's
    default, ``$TMPDIR/dask-scratch-space``, is shared, and it goes to the front of the
    workers' import path); it is removed when the job's shell exits (end, ``scancel``).
    ``base`` is written as given, so that ``$TMPDIR`` is expanded on the compute node.
    """
    return [
        f'{SCRATCH_VARIABLE}=$(mktemp -d "{base}/mwr-dask-scratch-XXXXXXXX") || exit 1',
        f"trap 'rm -rf \"${SCRATCH_VARIABLE}\"' EXIT",
    ]


@dataclass(frozen=True)
class BatchOptions:
    """How to run the workers as batch jobs. None means "not given on the command line".

    The dask-jobqueue options they lead to are resolved once (:attr:`resolved`), on top of
    the ``--cluster-config`` file and the dask configuration as they are then.

    Attributes
    ----------
    system : str
        One of :data:`SYSTEMS`.
    jobs : int or None
        Jobs to submit (default 1), each running ``processes`` worker processes.
    adapt : str or None
        ``MIN:MAX`` jobs for adaptive scaling, instead of ``jobs``.
    cores, memory, walltime, queue, account, interface, local_directory : optional
        Per-job resources and placement; ``account`` is dask-jobqueue's ``project`` on SGE,
        LSF and OAR.
    log_directory : str or None
        Folder of the jobs' output files.
    fallback_log_directory : str or None
        Folder of the jobs' output files when neither the flag nor a configuration gives one.
    job_extra : tuple of str or None
        Extra directives, without the ``#SBATCH``/``#PBS``/``#$`` prefix.
    prologue : tuple of str or None
        Shell lines run in the job before the worker starts (``module load ...``).
    config_file : pathlib.Path or None
        YAML file in dask-jobqueue's ``jobqueue.<system>`` schema.
    worker_timeout : float
        Seconds to wait for the first worker.
    credentials_directory : str or None
        Folder (created 0700, removed after the run) for the workers' copy of the run's TLS
        credentials; it must be on a filesystem the compute nodes see. Default: ``tls``
        beside ``fallback_log_directory`` (in the output folder's hidden sibling), else
        ``~/.cache/mwr-dask/tls-<pid>``.
    tls : bool
        Run every connection over TLS with keys made for the run (default).
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
        """One sentence per option that cannot work; empty if the options are usable.

        Nothing is submitted and nothing is written; the job script is built in memory.
        """
        if self.system not in SYSTEMS:
            return [f"--cluster must be one of {', '.join(SYSTEMS)}, not {self.system!r}."]
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
                from dask.utils import parse_bytes

                if parse_bytes(self.memory) <= 0:
                    raise ValueError
            except (ValueError, TypeError):
                out.append(f"--memory takes an amount such as 4GiB, not {self.memory!r}.")
        if self.interface is not None:
            import psutil

            names = sorted(psutil.net_if_addrs())
            if self.interface not in names:
                out.append(
                    f"--interface {self.interface} is not a network interface of this host"
                    f" ({', '.join(names)})."
                )
        try:
            accepted = job_parameters(self.system)
        except ImportError as err:  # pragma: no cover - dask-jobqueue is a dependency
            return [*out, f"--cluster needs dask-jobqueue ({err})."]
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
        """Job keyword arguments and scheduler options, flags over the configuration.

        Call within :func:`config_overlay` of :attr:`config_file`; :attr:`resolved` does,
        once.

        Returns
        -------
        job_kwargs : dict
            Keyword arguments of the job class (and of the cluster class).
        settings : dict
            ``cores``, ``processes``, ``memory`` (bytes) and ``walltime`` per job, for
            reports; ``log_directory``, and ``own_logs``: whether it is the fallback, which
            a successful run removes.
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
        memory = (
            self.memory
            or cfg.get("memory")
            or format_bytes(processes * DEFAULT_MEMORY_PER_PROCESS).replace(" ", "")
        )
        log_directory = self.log_directory or cfg.get("log-directory")
        own_logs = log_directory is None and self.fallback_log_directory is not None
        log_directory = log_directory or self.fallback_log_directory
        prologue = self.prologue
        if prologue is None:
            prologue = tuple(cfg.get("job-script-prologue") or cfg.get("env-extra") or ())
        scratch_base = self.local_directory or cfg.get("local-directory") or "${TMPDIR:-/tmp}"
        kwargs: dict[str, Any] = {
            "cores": cores,
            "processes": processes,
            "memory": memory,
            "python": cfg.get("python") or sys.executable,
            "job_script_prologue": [*thread_exports(), *prologue, *scratch_lines(scratch_base)],
            "local_directory": f"${SCRATCH_VARIABLE}",
        }
        accepted = job_parameters(self.system)
        account_key = "account" if "account" in accepted else "project"
        for key, value in (
            ("walltime", self.walltime),
            ("queue", self.queue),
            (account_key, self.account),
            ("interface", self.interface),
            ("log_directory", log_directory),
        ):
            if value is not None:
                kwargs[key] = value
        if self.job_extra is not None:
            kwargs["job_extra_directives"] = list(self.job_extra)
        settings = {
            "cores": cores,
            "processes": processes,
            "memory": parse_bytes(memory),
            "walltime": kwargs.get("walltime", cfg.get("walltime")),
            "log_directory": log_directory,
            "own_logs": own_logs,
        }
        return kwargs, settings

    def summary(self) -> str:
        """One line: jobs, worker processes, resources per job."""
        _, s = self.resolved
        lo, hi = self.jobs_range
        jobs = f"{lo} to {hi} jobs (adaptive)" if self.adapt else f"{lo} job{'s' * (lo > 1)}"
        threads = s["cores"] // s["processes"]
        walltime = s["walltime"] or "the queue's default"
        cores = f"{s['cores']} core{'s' * (s['cores'] > 1)}"
        return (
            f"{self.name}: {jobs}, each {cores}, {gib(s['memory'])} GiB,"
            f" walltime {walltime}, running {s['processes']} worker"
            f" process{'es' * (s['processes'] > 1)} of {threads} thread{'s' * (threads > 1)}"
        )

    def planned_workers(self) -> int:
        """Worker threads of the cluster at full size."""
        _, s = self.resolved
        return self.jobs_range[1] * s["processes"] * (s["cores"] // s["processes"])

    def memory_per_worker(self) -> int:
        """Memory limit of each worker process, bytes (the job's memory shared by them)."""
        _, s = self.resolved
        return int(s["memory"] // s["processes"])

    def placeholder_security(self):
        """Return the run's TLS settings with file names standing for the keys made at run time."""
        from distributed.security import Security

        folder = self.credentials_folder
        return Security(
            tls_ca_file=str(folder / ".dask-jobqueue.worker.ca_file.XXXXXXXX"),
            tls_worker_cert=str(folder / ".dask-jobqueue.worker.cert.XXXXXXXX"),
            tls_worker_key=str(folder / ".dask-jobqueue.worker.key.XXXXXXXX"),
            require_encryption=True,
        )

    def job_script(self) -> str:
        """Return the script each job runs, as dask-jobqueue writes it; nothing is submitted.

        The scheduler address, the worker name and the names of the credential files are
        placeholders: the scheduler does not run yet and the keys are made at run time.
        """
        with config_overlay(self.config_file, self.system):
            kwargs = dict(self.resolved[0])
            job_cls = cluster_class(self.system).job_cls
            log_directory = kwargs.get("log_directory")
            if self.tls:
                kwargs["security"] = self.placeholder_security()
            # dask-jobqueue creates the log folder when it builds a job; build it on an empty
            # stand-in and put the real path back into the text.
            with tempfile.TemporaryDirectory(prefix="mwr-dask-dry-run-") as stand_in:
                if log_directory is not None:
                    kwargs["log_directory"] = stand_in
                try:
                    with warnings.catch_warnings():
                        warnings.simplefilter("ignore", FutureWarning)
                        job = job_cls(
                            SCHEDULER_PLACEHOLDER if self.tls else "tcp://SCHEDULER-ADDRESS:PORT",
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


#: The name the options had before the cluster layer was one package.
JobqueueOptions = BatchOptions


def gib(n: float) -> str:
    """Bytes as GiB, without trailing zeros: 1, 1.5, 10000."""
    return f"{n / 2**30:.2f}".rstrip("0").rstrip(".")


def _submit_error(err: BaseException) -> str:
    """Return the batch system's words on a failed submission (its stderr), else the error."""
    text = str(err)
    if "stderr:" in text:
        text = text.split("stderr:", 1)[1]
    lines = [line.strip() for line in text.strip().splitlines() if line.strip()]
    return "; ".join(lines[:3]) or type(err).__name__


class JobTracker:
    """Every job a run submits, the submissions that failed, and the jobs' states.

    Attributes
    ----------
    system : str
        One of :data:`SYSTEMS`.
    cancel_command : str
        Command that cancels jobs given their ids (``scancel``, ``qdel``, ...).
    submitted : list of str
        Job ids in order of submission; jobs are never removed from it.
    errors : list of str
        What the batch system said when a submission failed.
    """

    def __init__(self, system: str, cancel_command: str) -> None:
        self.system = system
        self.cancel_command = cancel_command
        self.submitted: list[str] = []
        self.errors: list[str] = []
        self._lock = threading.Lock()

    def record(self, job_id: str) -> None:
        """Remember a submitted job."""
        with self._lock:
            self.submitted.append(str(job_id))

    def record_error(self, err: BaseException) -> None:
        """Remember a failed submission."""
        with self._lock:
            self.errors.append(_submit_error(err))

    def job_class(self, base: type) -> type:
        """Subclass of the job class ``base`` that reports its job id and failures here.

        A failed submission is recorded instead of raised, so that distributed does not log a
        traceback for it; the job then stands for no batch job and cancels nothing.
        """
        tracker = self
        from distributed.deploy.spec import ProcessInterface

        class TrackedJob(base):  # type: ignore[misc, valid-type]
            def _job_id_from_submit_output(self, out: str) -> str:
                job_id = super()._job_id_from_submit_output(out)
                tracker.record(job_id)
                return job_id

            async def start(self) -> None:
                try:
                    await super().start()
                except Exception as err:
                    tracker.record_error(err)
                    await ProcessInterface.start(self)

        TrackedJob.__name__ = TrackedJob.__qualname__ = base.__name__
        return TrackedJob

    def states(self, ids: list[str] | None = None) -> dict[str, str] | None:
        """State of each job still known to the batch system, by id; None if it cannot tell.

        Jobs that have ended (and jobs the batch system has forgotten) are absent.
        """
        ids = list(self.submitted if ids is None else ids)
        if not ids:
            return {}
        return job_states(self.system, ids)

    def describe(self, states: dict[str, str] | None, ids: list[str] | None = None) -> str:
        """``101 RUNNING, 102 PENDING (Resources)`` for the jobs in ``ids``."""
        ids = list(self.submitted if ids is None else ids)
        if states is None:
            return ", ".join(f"{i} (state unknown)" for i in ids)
        return ", ".join(f"{i} {states.get(i, 'ended')}" for i in ids)

    def cancel_leftovers(self, timeout: float = CANCEL_WAIT_SECONDS) -> dict[str, str]:
        """Cancel the run's jobs that are still queued or running; return those that stay.

        dask-jobqueue cancels the jobs it holds when the cluster closes; this is the check
        (and the second attempt) for every job the run ever submitted.
        """
        left = self.states()
        if not left:
            return {}
        with contextlib.suppress(OSError, subprocess.SubprocessError):
            subprocess.run(
                [*shlex.split(self.cancel_command), *sorted(left)],
                capture_output=True,
                timeout=30,
                check=False,
            )
        deadline = time.monotonic() + timeout
        while left and time.monotonic() < deadline:
            time.sleep(0.5)
            left = self.states(list(left)) or {}
        return left


@contextlib.contextmanager
def sigint_deferred() -> Iterator[None]:
    """Ignore Ctrl-C inside the block (the clean-up of jobs must not be cut short)."""
    if threading.current_thread() is not threading.main_thread():
        yield
        return
    previous = signal.signal(signal.SIGINT, signal.SIG_IGN)
    try:
        yield
    finally:
        signal.signal(signal.SIGINT, previous)


def _worker_count(client: Client) -> int:
    try:
        return len(client.nthreads())
    except (OSError, TimeoutError):
        return 0


def wait_for_first_worker(
    client: Client, tracker: JobTracker, options: JobqueueOptions, log_directory: str | None,
    say: Say,
) -> None:  # fmt: skip
    """Wait until a worker has joined, reporting jobs that sit in the queue.

    Raises
    ------
    ClusterError
        A submission failed, every job ended without a worker, or no worker joined within
        ``options.worker_timeout`` seconds (the message lists the jobs and their states).
    """
    name = options.name
    logs = f"; see their output in {log_directory}" if log_directory else ""
    t0 = time.monotonic()
    deadline = t0 + options.worker_timeout
    next_poll, next_report = t0 + 2.0, t0 + REPORT_SECONDS
    while True:
        if _worker_count(client):
            return
        if tracker.errors:
            raise ClusterError(f"{name} refused the job: {tracker.errors[0]}.")
        now = time.monotonic()
        if now >= deadline:
            states = tracker.states()
            if not tracker.submitted:
                raise ClusterError(
                    f"no {name} job was submitted within {options.worker_timeout:g} s."
                )
            raise ClusterError(
                f"no worker joined within {options.worker_timeout:g} s; {name} jobs "
                f"{tracker.describe(states)}{logs}. The jobs are cancelled; ask for fewer"
                " resources, another --queue, or a longer --worker-timeout."
            )
        if now >= next_poll and tracker.submitted:
            next_poll = now + POLL_SECONDS
            states = tracker.states()
            if states == {} and not _worker_count(client):
                raise ClusterError(
                    f"{name} jobs {', '.join(tracker.submitted)} ended before a worker joined"
                    f"{logs}."
                )
            if now >= next_report:
                next_report = now + REPORT_SECONDS
                say(f"Waiting for workers: {name} jobs {tracker.describe(states)}")
        time.sleep(0.2)


class JobKeeper:
    """Keep the batch cluster at its size while the run goes on; stop a run that cannot go on.

    dask-jobqueue does not replace a job that ends (its walltime, a node failure, an
    administrator's ``scancel``): with all jobs gone the run would wait forever. Every
    :data:`KEEPER_SECONDS` a background thread asks the batch system which of the cluster's
    jobs have ended, drops them from the cluster and lets it submit new ones (a fixed
    ``--jobs N`` is scaled back to N; ``--adapt`` scales up by itself). Jobs that keep ending
    before any of their workers joined (a broken environment) stop the run with a
    :class:`~mwr_dask.parallel.clusters.checks.ClusterError` instead of being resubmitted for ever; the main
    thread is interrupted for that, and :attr:`fatal` says why.
    """

    def __init__(
        self, cluster: Any, tracker: JobTracker, options: JobqueueOptions,
        log_directory: str | None, say: Say,
    ) -> None:  # fmt: skip
        self.cluster = cluster
        self.tracker = tracker
        self.options = options
        self.log_directory = log_directory
        self.say = say
        self.fatal: str | None = None
        self.limit = max(3, options.jobs_range[1])
        self.early_ends = 0
        self.seen: set[str] = set()
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, name="mwr-dask-jobs", daemon=True)
        self._next_report = time.monotonic() + REPORT_SECONDS

    def start(self) -> None:
        """Start watching."""
        self._thread.start()

    def stop(self) -> None:
        """Stop watching (before the cluster closes), waiting for a check in progress."""
        self._stop.set()
        if self._thread.is_alive():
            self._thread.join(timeout=70)

    def _run(self) -> None:
        while not self._stop.wait(KEEPER_SECONDS):
            try:
                self.check()
            except Exception:  # a failed check is retried at the next tick
                logging.getLogger(__name__).debug("job check failed", exc_info=True)

    def check(self) -> list[str]:
        """One round: replace ended jobs, report a cluster without workers; the names dropped."""
        planned = set(self.cluster.worker_spec)  # not the jobs adaptive scaling closes
        jobs = {
            name: job.job_id
            for name, job in list(self.cluster.workers.items())
            if getattr(job, "job_id", None) and name in planned
        }
        workers = [w.get("name") for w in list(self.cluster.scheduler_info["workers"].values())]
        observed = {str(w) for w in workers}
        for name in jobs:
            if name in observed or any(w.startswith(f"{name}-") for w in observed):
                self.seen.add(name)
        if not jobs or self._stop.is_set():
            return []
        states = self.tracker.states(list(jobs.values()))
        if states is None or self._stop.is_set():
            return []
        ended = [name for name, job_id in jobs.items() if job_id not in states]
        batch = self.options.name
        if ended:
            ids = ", ".join(jobs[name] for name in ended)
            if all(name not in self.seen for name in ended):
                self.early_ends += len(ended)
            else:
                self.early_ends = 0
            if self.early_ends >= self.limit:
                logs = f"; see their output in {self.log_directory}" if self.log_directory else ""
                self.fatal = (
                    f"{batch} jobs keep ending before their workers join ({self.early_ends} in"
                    f" a row, the last {ids}){logs}."
                )
                _thread.interrupt_main()
                return []
            self.say(f"{batch} jobs {ids} ended; submitting new ones")
            self.cluster.loop.add_callback(self._replace, ended)
        elif not observed and time.monotonic() >= self._next_report:
            self._next_report = time.monotonic() + REPORT_SECONDS
            ids = list(jobs.values())
            self.say(f"No workers at the moment: {batch} jobs {self.tracker.describe(states, ids)}")
        return ended

    def _replace(self, names: list[str]) -> None:
        """On the cluster's event loop: forget ended jobs, then let the cluster resubmit."""
        if self._stop.is_set():
            return
        for name in names:
            self.cluster.workers.pop(name, None)
            self.cluster.worker_spec.pop(name, None)
        if not self.options.adapt:
            self.cluster.scale(jobs=self.options.jobs_range[0])


@contextlib.contextmanager
def quiet_close_logs() -> Iterator[None]:
    """Silence distributed's connection-closed noise while the cluster shuts down."""
    loggers = [logging.getLogger(n) for n in ("distributed", "tornado", "asyncio")]
    levels = [lg.level for lg in loggers]
    for lg in loggers:
        lg.setLevel(logging.CRITICAL)
    try:
        yield
    finally:
        for lg, level in zip(loggers, levels, strict=True):
            lg.setLevel(level)


def private_folder(path: Path) -> Path:
    """Create ``path`` (and its parents) for this user only: 0700, owned, not a link.

    Raises
    ------
    ClusterError
        ``path`` exists but is a link, not a folder, another user's, or open to others.
    """
    path.parent.mkdir(parents=True, exist_ok=True)
    with contextlib.suppress(FileExistsError):
        os.mkdir(path, 0o700)
    info = os.lstat(path)
    import stat

    if not stat.S_ISDIR(info.st_mode) or info.st_uid != os.geteuid():
        raise ClusterError(
            f"{path} is not a folder of yours; remove it (it holds the run's TLS keys)."
        )
    if info.st_mode & 0o077:
        os.chmod(path, 0o700)
    return path


@dataclass(frozen=True)
class BatchCluster:
    """Workers as batch jobs, the scheduler in this process (dask-jobqueue).

    Attributes
    ----------
    options : BatchOptions
        Batch system, jobs and resources.
    dashboard_address : str or None
        ``host:port`` of the scheduler's dashboard (127.0.0.1 unless a host is given);
        None disables it.
    """

    options: BatchOptions
    dashboard_address: str | None = "127.0.0.1:8787"

    remote = True

    @property
    def label(self) -> str:
        """Name for messages: "SLURM cluster", "PBS cluster", ..."""
        return f"{self.options.name} cluster"

    def planned_workers(self) -> int:
        """Worker threads of the cluster at full size."""
        return self.options.planned_workers()

    def describe(self) -> str:
        """One line for ``--dry-run``; nothing is submitted."""
        return self.options.summary()

    def script(self) -> str:
        """Return the job script (placeholders for the scheduler and the credential files)."""
        return self.options.job_script()

    def memory_problems(self, params: NoiseSource) -> list[str]:
        """One sentence if a volume does not fit in a worker process of a job."""
        return memory_problems(
            params, self.options.memory_per_worker(), memory_fraction(),
            hint="give the jobs more --memory (or fewer processes) or use a smaller CUBESIZE",
        )  # fmt: skip

    def check(
        self, client: Client, params: NoiseSource | None = None, folder: Path | None = None,
        tmp_dir: Path | None = None, warn: Say | None = None,
    ) -> dict[str, float]:  # fmt: skip
        """Check the first workers like a remote cluster's, and every job's as it joins."""
        check_workers(client, params, folder, tmp_dir, hint="give the jobs more --memory")
        return install_worker_check(client, folder, tmp_dir, warn)

    def report(self, client: Client, threads: int, dashboard: bool = True) -> list[str]:
        """Where the scheduler listens; the dashboard's real link and an SSH tunnel to it."""
        lines = [f"{self.label}: {client.scheduler.address}, {threads} worker threads"]
        address = dashboard_address(self.dashboard_address)
        port = getattr(client, "_mwr_dashboard_port", None)
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

        The scheduler runs in this process; the workers run as batch jobs with this Python.
        On exit (normal, error or Ctrl-C) every job the run submitted is cancelled, and the
        batch system is asked to confirm it; the credentials folder is removed.
        """
        import dask
        from distributed import Client

        options = self.options
        say = say or (lambda line: None)
        warn = warn or _warn
        name = options.name
        succeeded = False
        # the scheduler runs here: its scratch folder too is private (see private_scratch)
        with config_overlay(options.config_file, options.system), private_scratch():
            kwargs, settings = options.resolved
            kwargs = dict(kwargs)
            cls = cluster_class(options.system)
            entry = SYSTEMS[options.system]
            tracker = JobTracker(options.system, entry.cancel or cls.job_cls.cancel_command)
            scheduler_options = dict(
                dask.config.get(f"jobqueue.{options.system}.scheduler-options", None) or {}
            )
            address = dashboard_address(self.dashboard_address)
            if address:
                scheduler_options["dashboard_address"] = address
            else:
                # the scheduler still serves HTTP (health, metrics): on a free loopback port
                scheduler_options.update(dashboard=False, dashboard_address="127.0.0.1:0")
            credentials = None
            security = None
            cluster = None
            if options.tls:
                credentials = private_folder(options.credentials_folder)
                security = temporary_security()
                kwargs.update(
                    security=security, protocol="tls://", shared_temp_directory=str(credentials)
                )
            elif not options.interface and "interface" not in scheduler_options:
                # without TLS, never listen on every interface
                scheduler_options.setdefault("host", "127.0.0.1")
            try:
                try:
                    with warnings.catch_warnings():
                        warnings.filterwarnings("ignore", message="Port .* is already in use")
                        warnings.simplefilter("ignore", FutureWarning)
                        cluster = cls(
                            job_cls=tracker.job_class(cls.job_cls),
                            scheduler_options=scheduler_options,
                            silence_logs=logging.ERROR,
                            **kwargs,
                        )
                except (ValueError, TypeError, OSError) as err:
                    first = (str(err).strip().splitlines() or [type(err).__name__])[0]
                    raise ClusterError(
                        f"cannot start the {name} cluster: {first.rstrip('.')}."
                    ) from None
                try:
                    lo, hi = options.jobs_range
                    if options.adapt:
                        cluster.adapt(minimum_jobs=lo, maximum_jobs=hi)
                    else:
                        cluster.scale(jobs=lo)
                    client = Client(cluster, security=security)
                    with contextlib.suppress(AttributeError):
                        client._mwr_dashboard_port = cluster.scheduler.http_server.port
                    try:
                        wait_for_first_worker(
                            client, tracker, options, settings["log_directory"], say
                        )
                        states = tracker.states()
                        logs = settings["log_directory"]
                        if logs and settings["own_logs"]:
                            logs = f"{logs} (kept if the run fails)"
                        say(
                            f"{name} jobs: {tracker.describe(states)}"
                            + (f"; output in {logs}" if logs else "")
                        )
                        keeper = JobKeeper(
                            cluster, tracker, options, settings["log_directory"], say
                        )
                        keeper.start()
                        try:
                            yield client
                        except BaseException:
                            if keeper.fatal:  # the keeper interrupted the run
                                raise ClusterError(keeper.fatal) from None
                            raise
                        finally:
                            keeper.stop()
                        succeeded = True
                    finally:
                        with sigint_deferred(), quiet_close_logs():
                            client.close()
                finally:
                    with sigint_deferred(), quiet_close_logs():
                        if tracker.submitted:
                            say(f"Cancelling {name} jobs {', '.join(tracker.submitted)}")
                        with contextlib.suppress(Exception):
                            cluster.close(timeout=30)
                        left = tracker.cancel_leftovers()
                        if left:
                            warn(
                                f"{name} jobs {tracker.describe(left, list(left))} are still"
                                f" listed after cancellation; check them with the {name} tools."
                            )
                        if settings["own_logs"]:
                            # the default log folder lies beside the output folder, which a
                            # run leaves clean: its job output goes once the run has
                            # succeeded, and an empty one goes anyway
                            if succeeded and not left:
                                shutil.rmtree(settings["log_directory"], ignore_errors=True)
                            with contextlib.suppress(OSError):
                                os.rmdir(settings["log_directory"])
            finally:
                if credentials is not None:
                    # dask-jobqueue keeps the key files open (deleted on close): close them
                    # first, then remove the folder
                    for attribute, value in list(vars(cluster).items() if cluster else ()):
                        if attribute.startswith("_job_") and hasattr(value, "close"):
                            with contextlib.suppress(OSError):
                                value.close()
                    shutil.rmtree(credentials, ignore_errors=True)
