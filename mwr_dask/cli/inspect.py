"""``mwr-dask inspect``: check a noise folder."""

from __future__ import annotations

import os
import sys
import time
from pathlib import Path
from typing import Annotated

import typer

from mwr_dask.cli.common import (
    ConnectTimeoutOption,
    NcpusOption,
    SchedulerFileOption,
    SchedulerOption,
    WorkerTimeoutOption,
    cluster_option_problems,
    fail,
)


def inspect(
    folder: Annotated[
        Path,
        typer.Argument(help="Noise folder to check (IsoNet's --noise_dir).", show_default=False),
    ],
    plot: Annotated[
        Path | None,
        typer.Option(
            help="Write a PNG of the averaged spectrum: kx-kz section with the wedge, angular"
            " and radial profiles (needs matplotlib, the 'plot' extra of mwr-dask).",
            show_default=False,
            metavar="PNG",
        ),
    ] = None,
    json_output: Annotated[
        bool, typer.Option("--json", help="Print the report as JSON (for scripts).")
    ] = False,
    ncpus: NcpusOption = None,
    scheduler: SchedulerOption = None,
    scheduler_file: SchedulerFileOption = None,
    connect_timeout: ConnectTimeoutOption = 10.0,
    worker_timeout: WorkerTimeoutOption = 60.0,
) -> None:
    """Check a noise folder: every volume readable, one cube size, no duplicates, the wedge.

    Exit status: 0 all is well; 1 broken, duplicated or inconsistent files; 2 bad input.
    """
    errors = cluster_option_problems(
        ncpus, scheduler, scheduler_file, connect_timeout, worker_timeout
    )
    if not folder.exists():
        errors.append(f"{folder} does not exist.")
    elif not folder.is_dir():
        errors.append(f"{folder} is not a folder.")
    elif not os.access(folder, os.R_OK | os.X_OK):
        errors.append(f"{folder} is not readable.")
    if plot is not None:
        from mwr_dask.plot import PlotUnavailableError, inside, require_matplotlib

        try:
            require_matplotlib()
        except PlotUnavailableError as err:
            errors.append(f"{err}.")
        if not plot.absolute().parent.is_dir():
            errors.append(f"cannot write {plot}: {plot.absolute().parent} is not a folder.")
        elif folder.is_dir() and inside(plot, folder):
            errors.append(
                f"--plot {plot} lies inside the noise folder {folder}, where training would"
                " open it as a volume: write it elsewhere."
            )
    if errors:
        raise fail(" ".join(errors))
    # no dashboard: a short read-only run (a remote cluster keeps its own)
    from mwr_dask.cluster import (
        ClusterError,
        ClusterOptions,
        check_versions,
        open_client,
        wait_for_workers,
    )
    from mwr_dask.progress import Progress
    from mwr_dask.signals import Interrupted, signals_raise

    options = ClusterOptions(
        scheduler=scheduler,
        scheduler_file=scheduler_file,
        ncpus=ncpus,
        dashboard_address=None,
        connect_timeout=connect_timeout,
    )

    from mwr_dask.inspection import (
        inspect_folder,
        render_json,
        render_text,
        workers_missing_folder,
    )
    from mwr_dask.inspection.words import plural

    folder = folder.absolute()
    t0 = time.perf_counter()
    try:
        with signals_raise(), open_client(options) as client:
            threads = wait_for_workers(client, worker_timeout)
            if options.remote:
                problems = check_versions(client) + workers_missing_folder(client, folder)
                if problems:
                    raise ClusterError(
                        "; ".join(problems[:4])
                        + ". Workers need the same versions as this client and the folder at"
                        " the same path."
                    )
            count = len(list_volumes(folder))
            progress = Progress(count, quiet=json_output or not count, stream=sys.stderr)
            report = inspect_folder(
                folder, client, workers=threads, on_progress=lambda done, _: progress.update(done)
            )
    except Interrupted as stop:
        raise fail(f"stopped by {stop}.", stop.exit_code) from None
    except ClusterError as err:
        raise fail(str(err), 1) from None
    except OSError as err:
        raise fail(f"cannot read {err.filename or folder}: {err.strerror or err}.") from None
    wall = time.perf_counter() - t0
    from mwr_dask.plot import can_plot

    drawn = plot is not None and can_plot(report)
    if plot is not None:
        if not drawn:
            typer.echo("mwr-dask: warning: no spectrum analysed, no plot written.", err=True)
        else:
            from mwr_dask.plot import plot_report

            try:
                plot_report(report, plot)
            except OSError as err:
                raise fail(f"cannot write {plot}: {err.strerror or err}.") from None
    if json_output:
        extra = {"seconds": round(wall, 3), "worker_threads": threads}
        typer.echo(render_json(report, **extra, plot=str(plot) if drawn else None))
    else:
        where = "a remote cluster" if options.remote else "a local cluster"
        timing = (
            f"{plural(report.summary['count'], 'volume')} read in {wall:.1f} s by"
            f" {plural(threads, 'worker thread')} of {where} (its start included)"
        )
        if drawn:
            timing += f"; plot written to {plot}"
        typer.echo(render_text(report, timing))
    if not report.ok:
        raise typer.Exit(1)


def list_volumes(folder: Path) -> list[str]:
    """Names of the ``n_*.mrc`` files of ``folder`` (for the progress total)."""
    from mwr_dask.inspection import list_folder

    return list_folder(folder)[0]
