"""The worker plugin that checks every worker as it joins (imports distributed)."""

from __future__ import annotations

import contextlib
from typing import Any

from distributed import WorkerPlugin
from distributed.protocol.pickle import dumps

from mwr_dask.parallel.clusters.checks import (
    CHECKED_RESOURCE,
    REFUSED_TOPIC,
    package_versions,
    probe_folder,
    version_mismatches,
)


class WorkerCheck(WorkerPlugin):
    """Check each worker as it joins; give it the run's resource only if it passes.

    The check is the one made of the workers at the start: the client's package versions,
    and (when given) a view of the output folder. A worker that fails it sends one event on
    :data:`REFUSED_TOPIC` and never gets the resource, so no write task runs there.

    Parameters
    ----------
    versions : dict
        The client's :func:`~mwr_dask.parallel.clusters.checks.package_versions`.
    folder, tmp_dir : str or None
        Output folder and temporaries, probed with
        :func:`~mwr_dask.parallel.clusters.checks.probe_folder`; None skips the probe.
    """

    name = "mwr-dask-check"
    idempotent = False

    def __init__(
        self, versions: dict, folder: str | None = None, tmp_dir: str | None = None,
        resource: str = CHECKED_RESOURCE,
    ) -> None:  # fmt: skip
        self.versions = versions
        self.folder = folder
        self.tmp_dir = tmp_dir
        self.resource = resource

    @classmethod
    def name_for(cls, token: str) -> str:
        """Return the plugin's name in the run ``token``."""
        return f"{cls.name}-{token}"

    def problem(self) -> str | None:
        """On a worker: why it may not write, or None."""
        diffs = version_mismatches(self.versions, package_versions())
        if diffs:
            return "has " + "; ".join(diffs)
        if self.folder is not None and self.tmp_dir is not None:
            return probe_folder(self.folder, self.tmp_dir)
        return None

    async def setup(self, worker: Any) -> None:
        """Check ``worker``; grant it the resource, or report it refused."""
        why = self.problem()
        if why is None:
            await worker.set_resources(**{self.resource: worker.state.nthreads})
            await schedule_waiting_tasks(worker)
        else:
            worker.log_event(REFUSED_TOPIC, {"worker": worker.address, "why": why})


async def schedule_waiting_tasks(worker: Any) -> None:
    """Have the scheduler place on ``worker`` the tasks that wait for a checked worker.

    A worker that joins mid-run has no resource when it registers, so the scheduler leaves the
    waiting tasks unplaced; it does not look again when the resource comes. This asks it to,
    as it does for a worker that joins. The function travels by value: the scheduler need not
    import mwr_dask.
    """

    def place(address: str, dask_scheduler: Any = None) -> None:
        ws = dask_scheduler.workers.get(address)
        if ws is None:
            return
        stimulus = f"mwr-dask-checked-{address}"
        recommendations = dask_scheduler.bulk_schedule_unrunnable_after_adding_worker(ws)
        dask_scheduler.transitions(recommendations, stimulus)
        dask_scheduler.stimulus_queue_slots_maybe_opened(stimulus_id=stimulus)

    with contextlib.suppress(Exception):  # an old scheduler: the tasks wait for the next join
        await worker.scheduler.run_function(
            function=dumps(place), args=dumps((worker.contact_address,)), kwargs=dumps({})
        )
