"""Options and helpers shared by the commands: panels, cluster options, one-line errors."""

from __future__ import annotations

import math
from pathlib import Path
from typing import Annotated

import typer

from mwr_dask.parallel.clusters.systems import SYSTEMS  # no Dask import

#: ``--cluster`` names: the batch systems of dask-jobqueue, one entry each in SYSTEMS.
BATCH_SYSTEMS = tuple(SYSTEMS)

GEOMETRY = "Noise geometry"
VOLUMES = "Volumes and files"
CLUSTER = "Cluster"

# Options shared by generate-noise and inspect.
NcpusOption = Annotated[
    int | None,
    typer.Option(
        help="Worker processes of the local cluster, one thread each. [default: the cores this"
        " process may use]",
        show_default=False,
        rich_help_panel=CLUSTER,
    ),
]
SchedulerOption = Annotated[
    str | None,
    typer.Option(
        help="Address of a running Dask scheduler (tcp://host:8786, tls://...) to use instead of"
        " a local cluster; also read from DASK_SCHEDULER_ADDRESS. Its workers must see the"
        " folder at the same path. The cluster is left running.",
        show_default=False,
        rich_help_panel=CLUSTER,
    ),
]
SchedulerFileOption = Annotated[
    Path | None,
    typer.Option(
        help="Scheduler file written by 'dask scheduler --scheduler-file' (waited for up"
        " to --connect-timeout).",
        show_default=False,
        rich_help_panel=CLUSTER,
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


def plot_problems(plot: Path | None) -> list[str]:
    """Problems with a ``--plot PNG`` option: matplotlib missing, or no folder to write to."""
    if plot is None:
        return []
    from mwr_dask.inspection.plot import PlotUnavailableError, require_matplotlib

    errors = []
    try:
        require_matplotlib()
    except PlotUnavailableError as err:
        errors.append(f"{err}.")
    if not plot.absolute().parent.is_dir():
        errors.append(f"cannot write {plot}: {plot.absolute().parent} is not a folder.")
    return errors
