"""The batch jobs of a run: which were submitted, waiting for the first worker, replacing jobs.

dask-jobqueue submits and cancels the jobs; this module keeps the record a run needs on top,
through public interfaces only: a job class whose ``start`` notes each ``job_id`` (and the
batch system's words when a submission is refused), the batch system's own status command
(:mod:`~mwr_dask.parallel.clusters.systems`), and the cluster's ``workers``, ``worker_spec``,
``scheduler_info`` (read) and ``scale_down`` (to give up a job that ended; adaptive scaling
then submits its replacement).
"""

from __future__ import annotations

import contextlib
import logging
import re
import shlex
import signal
import subprocess
import threading
import time
from collections.abc import Iterator
from typing import TYPE_CHECKING, Any

from mwr_dask.parallel.clusters.checks import ClusterError, Say
from mwr_dask.parallel.clusters.systems import job_states

if TYPE_CHECKING:
    from distributed import Client


#: Seconds between two queries of the batch system while waiting for workers.
POLL_SECONDS = 5.0
#: Seconds between two "still waiting" reports.
REPORT_SECONDS = 30.0
#: Seconds between two checks, during a run, for jobs that ended (walltime, node failure).
KEEPER_SECONDS = 10.0
#: Seconds to wait, after cancelling, for the jobs to leave the queue.
CANCEL_WAIT_SECONDS = 20.0


def id_order(job_id: str) -> list:
    """Sort key of job ids in submission order: ``9`` before ``10``, ``7.0`` before ``7.1``."""
    return [(0, int(t), "") if t.isdigit() else (1, 0, t) for t in re.split(r"(\d+)", job_id) if t]


def submit_error(err: BaseException) -> str:
    """Return the batch system's words on a failed submission (its stderr), else the error."""
    text = str(err)
    if "stderr:" in text:
        text = text.split("stderr:", 1)[1]
    lines = [line.strip() for line in text.strip().splitlines() if line.strip()]
    return "; ".join(lines[:3]) or type(err).__name__


class JobTracker:
    """Every job a run submits, the submissions that failed, and the jobs' states.

    ``submitted``: job ids in submission order, never removed; ``errors``: what the batch
    system said of each failed submission; ``cancel_command``: ``scancel``, ``qdel``, ...
    """

    def __init__(self, system: str, cancel_command: str) -> None:
        self.system = system
        self.cancel_command = cancel_command
        self.submitted: list[str] = []
        self.errors: list[str] = []
        self.lock = threading.Lock()

    def job_class(self, base: type) -> type:
        """Subclass of dask-jobqueue's job class ``base`` that reports here what it submits."""
        tracker = self

        class TrackedJob(base):  # type: ignore[misc, valid-type]
            async def start(self) -> None:
                try:
                    await super().start()
                except Exception as err:
                    with tracker.lock:
                        tracker.errors.append(submit_error(err))
                    raise
                finally:
                    with tracker.lock:
                        if self.job_id and str(self.job_id) not in tracker.submitted:
                            tracker.submitted.append(str(self.job_id))
                            tracker.submitted.sort(key=id_order)

        return TrackedJob

    def states(self, ids: list[str] | None = None) -> dict[str, str] | None:
        """State of each job still known to the batch system, by id; None if it cannot tell.

        Jobs that have ended (and jobs the batch system has forgotten) are absent.
        """
        ids = list(self.submitted if ids is None else ids)
        return job_states(self.system, ids) if ids else {}

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
    client: Client, tracker: JobTracker, name: str, timeout: float, logs: str | None, say: Say
) -> None:
    """Wait until a worker has joined, reporting jobs that sit in the queue.

    :class:`ClusterError` if a submission failed, every job ended without a worker, or no
    worker joined within ``timeout`` seconds (the message lists the jobs and their states).
    """
    see = f"; see their output in {logs}" if logs else ""
    t0 = time.monotonic()
    next_poll, next_report = t0 + 2.0, t0 + REPORT_SECONDS
    while not _worker_count(client):
        if tracker.errors:
            raise ClusterError(f"{name} refused the job: {tracker.errors[0]}.")
        now = time.monotonic()
        if now >= t0 + timeout:
            if not tracker.submitted:
                raise ClusterError(f"no {name} job was submitted within {timeout:g} s.")
            raise ClusterError(
                f"no worker joined within {timeout:g} s; {name} jobs"
                f" {tracker.describe(tracker.states())}{see}. The jobs are cancelled; ask for"
                " fewer resources, another --queue, or a longer --worker-timeout."
            )
        if now >= next_poll and tracker.submitted:
            next_poll = now + POLL_SECONDS
            states = tracker.states()
            if states == {} and not _worker_count(client):
                raise ClusterError(
                    f"{name} jobs {', '.join(tracker.submitted)} ended before a worker joined{see}."
                )
            if now >= next_report:
                next_report = now + REPORT_SECONDS
                say(f"Waiting for workers: {name} jobs {tracker.describe(states)}")
        time.sleep(0.2)


class JobKeeper:
    """Replace the jobs that end during a run; stop a run whose jobs cannot start.

    Workers leave before their job's walltime (``--lifetime``, see
    :meth:`~mwr_dask.parallel.clusters.batch.BatchOptions.resolve`), and adaptive scaling
    keeps the cluster at its minimum. A job can still end unannounced (a node failure, an
    administrator's ``scancel``), or before its worker joined, which dask-jobqueue does not
    notice. Every :data:`KEEPER_SECONDS` a thread asks the batch system which of the
    cluster's jobs have ended, says so, and gives them up (``cluster.scale_down``) so that
    adaptive scaling submits new ones. Jobs that keep ending before any of their workers
    joined (a broken environment) stop the run: the main thread is interrupted and
    :attr:`fatal` says why.
    """

    def __init__(
        self, cluster: Any, tracker: JobTracker, name: str, limit: int, logs: str | None,
        say: Say,
    ) -> None:  # fmt: skip
        self.cluster = cluster
        self.tracker = tracker
        self.name = name
        self.limit = max(3, limit)
        self.logs = logs
        self.say = say
        self.fatal: str | None = None
        self.early_ends = 0
        self.known: dict[str, str] = {}  # job id -> the name of its job in the cluster
        self.seen: set[str] = set()  # job ids that had a worker join
        self.ended: set[str] = set()
        self.stopping = threading.Event()
        self.thread = threading.Thread(target=self.watch, name="mwr-dask-jobs", daemon=True)
        self.next_report = time.monotonic() + REPORT_SECONDS

    def watch(self) -> None:
        """Check the jobs every :data:`KEEPER_SECONDS` until stopped (the thread)."""
        while not self.stopping.wait(KEEPER_SECONDS):
            try:
                self.check()
            except Exception:  # a failed check is retried at the next tick
                logging.getLogger(__name__).debug("job check failed", exc_info=True)

    def observe(self) -> tuple[dict[str, str], list[str]]:
        """Note the cluster's jobs and which have workers; return the current jobs, watched ids."""
        planned = set(self.cluster.worker_spec)  # not the jobs adaptive scaling closes
        current = {
            str(job.job_id): name
            for name, job in list(self.cluster.workers.items())
            if getattr(job, "job_id", None) and name in planned
        }
        for job_id, name in current.items():
            self.known.setdefault(job_id, name)
        info = list(self.cluster.scheduler_info["workers"].values())
        workers = {str(w.get("name")) for w in info}
        for job_id, name in current.items():
            if name in workers or any(w.startswith(f"{name}-") for w in workers):
                self.seen.add(job_id)
        watched = [j for j, name in self.known.items() if name in planned and j not in self.ended]
        return current, watched

    def check(self) -> list[str]:
        """One round: give up ended jobs, report a cluster without workers; the ids ended."""
        current, watched = self.observe()
        states = self.tracker.states(watched) if watched else None
        if states is None or self.stopping.is_set():
            return []
        ended = [j for j in watched if j not in states]
        if not ended:
            if not self.cluster.scheduler_info["workers"] and time.monotonic() >= self.next_report:
                self.next_report = time.monotonic() + REPORT_SECONDS
                say = self.tracker.describe(states, watched)
                self.say(f"No workers at the moment: {self.name} jobs {say}")
            return []
        self.ended.update(ended)
        ids = ", ".join(ended)
        self.early_ends = self.early_ends + len(ended) if not self.seen & set(ended) else 0
        if self.early_ends >= self.limit:
            see = f"; see their output in {self.logs}" if self.logs else ""
            self.fatal = (
                f"{self.name} jobs keep ending before their workers join ({self.early_ends} in"
                f" a row, the last {ids}){see}."
            )
            # as Ctrl-C would, so that the main thread stops the run wherever it waits
            signal.pthread_kill(threading.main_thread().ident, signal.SIGINT)
            return ended
        self.say(f"{self.name} jobs {ids} ended; submitting new ones")
        gone = [current[j] for j in ended if j in current]  # still held by the cluster
        if gone:
            self.cluster.loop.add_callback(self.cluster.scale_down, gone)
        return ended

    @contextlib.contextmanager
    def running(self) -> Iterator[None]:
        """Watch the jobs in the block; a stop it caused becomes its :class:`ClusterError`."""
        self.thread.start()
        try:
            yield
        except BaseException:
            if self.fatal:
                raise ClusterError(self.fatal) from None
            raise
        finally:
            self.stopping.set()
            self.thread.join(timeout=70)
