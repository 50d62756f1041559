"""Cores this process may use, and how many local workers to start (pure functions).

A local worker is one single-threaded process; more of them than the cores the process may
run on (its CPU affinity, which batch schedulers and ``taskset`` set) only share those cores
and slow the run down (on 2 cores, ``--ncpus 20`` took 5.7 times as long as ``--ncpus 2``).
Remote schedulers and batch clusters place their workers elsewhere and are not limited here.
"""

from __future__ import annotations

import os


def usable_cores() -> int:
    """Return how many cores this process may run on: its CPU affinity (Linux), else all."""
    try:
        return len(os.sched_getaffinity(0))
    except AttributeError:  # pragma: no cover - not Linux
        return os.cpu_count() or 1


def local_workers(requested: int | None, usable: int | None = None) -> tuple[int, str | None]:
    """Worker processes for a local cluster, and a one-line warning when ``requested`` is cut.

    ``min(requested, usable)``, or ``usable`` for ``requested`` None (``--ncpus`` not given);
    values below 1 come back unchanged (the caller reports them). ``usable`` defaults to
    :func:`usable_cores`; the warning is None unless ``requested`` was more than ``usable``.
    """
    usable = usable_cores() if usable is None else usable
    if requested is None:
        return usable, None
    if requested < 1 or requested <= usable:
        return requested, None
    return usable, (
        f"Warning: --ncpus {requested} is more than the {usable} cores this process may use"
        f" (its CPU affinity); starting {usable} workers, since more would only slow the run."
    )
