"""The check a worker passes before it writes a volume: a worker plugin that travels by value.

Registered with ``cloudpickle.register_pickle_by_value``, this module's code is sent to the
workers with the plugin: a worker runs the client's check, not that of the mwr-dask it may
have installed (another version, or none). Its imports are the standard library and
distributed only; the folder probe imports :mod:`mwr_dask.files.mrc` on the worker once the
versions agree.
"""

from __future__ import annotations

import importlib
import sys
from typing import Any

import cloudpickle
from distributed import WorkerPlugin
from distributed.core import Status

#: Packages whose versions must agree between the client and every worker.
CHECKED_PACKAGES = ("mwr_dask", "numpy", "scipy", "mrcfile", "dask", "distributed")
#: Topic of the events a refused worker sends to the client (a run adds its token).
REFUSED_TOPIC = "mwr-dask-refused"


def imported_versions() -> dict[str, str | None]:
    """``__version__`` of each of :data:`CHECKED_PACKAGES` as this process imports it.

    The versions of the modules imported, not of the installed metadata
    (``Client.get_versions``): a worker that imports another copy of mwr_dask through its
    ``PYTHONPATH`` is caught.
    """
    out: dict[str, str | None] = {}
    for package in CHECKED_PACKAGES:
        try:
            out[package] = getattr(importlib.import_module(package), "__version__", None)
        except ImportError:
            out[package] = None
    return out


def version_mismatches(mine: dict, theirs: dict) -> list[str]:
    """``numpy 1.0, this client 2.0`` for each package whose versions differ."""
    return [
        f"{p} {theirs.get(p)}, this client {mine.get(p)}"
        for p in CHECKED_PACKAGES
        if theirs.get(p) != mine.get(p)
    ]


class WorkerCheck(WorkerPlugin):
    """Check each worker as it joins (and those there when registered); close those that fail.

    A worker runs :meth:`setup` after it registered and before it reads its first task.
    One that fails sends an event on its run's topic, stops taking tasks at once
    (``closing_gracefully``) and closes with its nanny: it never writes a volume, and the
    scheduler gives its tasks to others.

    Parameters
    ----------
    versions : dict
        The client's :func:`imported_versions`.
    folder, tmp_dir : str or None
        Output folder and temporaries, probed with
        :func:`mwr_dask.files.mrc.probe_temporaries`; None skips the probe.
    topic : str
        Where a refused worker reports.
    """

    idempotent = False

    def __init__(self, versions: dict, folder: str | None, tmp_dir: str | None, topic: str) -> None:
        self.versions = versions
        self.folder = folder
        self.tmp_dir = tmp_dir
        self.topic = topic

    def problem(self) -> str | None:
        """On a worker: why it may not write, or None."""
        diffs = version_mismatches(self.versions, imported_versions())
        if diffs:
            return "has " + "; ".join(diffs)
        if self.folder is None or self.tmp_dir is None:
            return None
        mrc = importlib.import_module("mwr_dask.files.mrc")
        return mrc.probe_temporaries(self.folder, self.tmp_dir)

    async def setup(self, worker: Any) -> None:
        """Check ``worker``; refuse it (event, no task, closed) if it fails."""
        try:
            why = self.problem()
        except Exception as err:  # a worker that cannot be checked is not used
            why = f"cannot be checked ({type(err).__name__}: {err})"
        if why is None:
            return
        worker.log_event(self.topic, {"worker": worker.address, "why": why})
        worker.status = Status.closing_gracefully  # runs none of the tasks it may be sent
        worker.loop.add_callback(worker.close, nanny=True, reason=f"mwr-dask check: {why}")


cloudpickle.register_pickle_by_value(sys.modules[__name__])
