"""The worker plugin that checks every worker as it joins (imports distributed)."""

from __future__ import annotations

from typing import Any

from distributed import WorkerPlugin

from mwr_dask.clusters.checks import (
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
        The client's :func:`~mwr_dask.clusters.checks.package_versions`.
    folder, tmp_dir : str or None
        Output folder and temporaries, probed with
        :func:`~mwr_dask.clusters.checks.probe_folder`; None skips the probe.
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
        else:
            worker.log_event(REFUSED_TOPIC, {"worker": worker.address, "why": why})
