"""Options and helpers shared by the commands: panels, cluster options, one-line errors."""

from __future__ import annotations

import math
import os
from pathlib import Path
from typing import Annotated, Any

import typer

from mwr_dask.parallel.clusters.systems import SYSTEMS  # no Dask import

#: ``--cluster`` names: the batch systems of dask-jobqueue, one entry each in SYSTEMS.
BATCH_SYSTEMS = tuple(SYSTEMS)

GEOMETRY = "Noise geometry"
VOLUMES = "Volumes and files"
CLUSTER = "Cluster"


def opt(help: str, panel: str | None = None, show_default: bool = False, **kw) -> Any:
    """Make a typer option, by default showing no default (its help gives it, if any)."""
    return typer.Option(help=help, show_default=show_default, rich_help_panel=panel, **kw)


def arg(help: str) -> Any:
    """Make a typer argument that shows no default."""
    return typer.Argument(help=help, show_default=False)


# Options shared by generate-noise and inspect.
NcpusOption = Annotated[
    int | None,
    opt(
        "Worker processes of the local cluster, one thread each. [default: the cores this"
        " process may use]",
        CLUSTER,
    ),
]
SchedulerOption = Annotated[
    str | None,
    opt(
        "Address of a running Dask scheduler (tcp://host:8786, tls://...) to use instead of"
        " a local cluster; also read from DASK_SCHEDULER_ADDRESS. Its workers must see the"
        " folder at the same path. The cluster is left running.",
        CLUSTER,
    ),
]
SchedulerFileOption = Annotated[
    Path | None,
    opt(
        "Scheduler file written by 'dask scheduler --scheduler-file' (waited for up"
        " to --connect-timeout).",
        CLUSTER,
    ),
]
ConnectTimeoutOption = Annotated[
    float,
    typer.Option(help="Seconds to wait for the scheduler.", rich_help_panel=CLUSTER),
]
WorkerTimeoutOption = Annotated[
    float,
    typer.Option(help="Seconds to wait for the first worker.", rich_help_panel=CLUSTER),
]

HPC = "HPC batch cluster"


def fail(message: str, code: int = 2) -> typer.Exit:
    """Print one sentence to stderr and return the exit to raise."""
    typer.echo(f"mwr-dask: error: {message}", err=True)
    return typer.Exit(code)


def needs(flags: list[str], what: str, sep: str = ", ") -> list[str]:
    """Say that ``flags`` need ``what``, as a list of one sentence (none without flags)."""
    return [f"{sep.join(flags)} need{'s' * (len(flags) == 1)} {what}."] if flags else []


def cluster_option_problems(
    ncpus: int | None,
    scheduler: str | None,
    scheduler_file: Path | None,
    connect_timeout: float,
    worker_timeout: float,
) -> list[str]:
    """Problems with the cluster options that every command shares, one sentence each."""
    errors = []
    if ncpus is not None and ncpus < 1:
        errors.append(f"--ncpus must be at least 1, not {ncpus}.")
    if scheduler and scheduler_file:
        errors.append("give --scheduler or --scheduler-file, not both.")
    for name, value in (
        ("--connect-timeout", connect_timeout),
        ("--worker-timeout", worker_timeout),
    ):
        if not (math.isfinite(value) and value > 0):
            errors.append(f"{name} must be a positive number of seconds, not {value:g}.")
    return errors


def plot_problems(plot: Path | None, files: dict[str, Path | None] | None = None) -> list[str]:
    """Problems with a ``--plot PNG`` option, found before any work is done.

    Matplotlib missing, no folder to write to, a folder given, or one of the command's own
    input or output files: ``files`` maps each one's name on the command line (``EVEN``,
    ``--spectrum``) to its path (None when not given), compared through links and hard links.
    """
    if plot is None:
        return []
    from mwr_dask.inspection.plot import PlotUnavailableError, require_matplotlib

    errors = []
    try:
        require_matplotlib()
    except PlotUnavailableError as err:
        errors.append(f"{err}.")
    parent = plot.absolute().parent
    if plot.is_dir():
        errors.append(f"--plot {plot} is a folder.")
    elif not parent.is_dir():
        errors.append(f"cannot write {plot}: {parent} is not a folder.")
    elif not os.access(parent, os.W_OK | os.X_OK):
        errors.append(f"cannot write {plot}: {parent} is not writable.")
    for what, path in (files or {}).items():
        if path is not None and _same_file(plot, path):
            errors.append(f"--plot {plot} is {what}: the picture would replace it.")
    return errors


def _same_file(a: Path, b: Path) -> bool:
    """Whether ``a`` and ``b`` name one file (links resolved; by path where one is missing)."""
    try:
        return os.path.samefile(a, b)
    except OSError:
        return os.path.realpath(a) == os.path.realpath(b)
