"""Command-line interface: parse, validate, report. The work is done in the other modules."""

from __future__ import annotations

import json
import os
import shutil
import sys
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Annotated

import numpy as np
import typer
from distributed import Client

from mwr_dask import __version__
from mwr_dask.cluster import default_ncpus, local_client
from mwr_dask.folder import conflicts, scan
from mwr_dask.mrcio import state_dir
from mwr_dask.params import NoiseParams, validate
from mwr_dask.pipeline import RunResult, run

app = typer.Typer(
    name="mwr-dask",
    help="Missing-wedge noise volumes for IsoNet/MWR training, generated in parallel with Dask.",
    add_completion=False,
    no_args_is_help=True,
    pretty_exceptions_enable=False,
)

GEOMETRY = "Noise geometry"
VOLUMES = "Volumes and files"
CLUSTER = "Local cluster"


def fail(message: str, code: int = 2) -> typer.Exit:
    """Print one sentence to stderr and return the exit to raise."""
    typer.echo(f"mwr-dask: error: {message}", err=True)
    return typer.Exit(code)


def _version(value: bool) -> None:
    if value:
        typer.echo(f"mwr-dask {__version__}")
        raise typer.Exit()


@app.callback()
def _main(
    version: Annotated[
        bool,
        typer.Option("--version", callback=_version, is_eager=True, help="Print the version."),
    ] = False,
) -> None:
    """Missing-wedge noise volumes for IsoNet/MWR training, generated in parallel with Dask."""


class Progress:
    """Progress of a run: an updating line on a terminal, periodic log lines otherwise."""

    def __init__(self, total: int, *, quiet: bool = False, every: float = 10.0) -> None:
        self.total = total
        self.quiet = quiet
        self.tty = sys.stdout.isatty()
        self.every = every
        self.t0 = time.perf_counter()
        self.last = self.t0

    def __call__(self, result: RunResult) -> None:
        """Report ``result`` (called after each finished partition)."""
        if self.quiet:
            return
        now = time.perf_counter()
        finished = result.done >= self.total
        if not (self.tty or finished or now - self.last >= self.every):
            return
        self.last = now
        elapsed = now - self.t0
        rate = result.done / elapsed if elapsed > 0 else 0.0
        eta = (self.total - result.done) / rate if rate > 0 else float("inf")
        line = (
            f"{result.done}/{self.total} volumes ({100 * result.done / self.total:.0f}%),"
            f" {rate:.1f} vol/s, ETA {eta:.0f} s"
        )
        if self.tty:
            typer.echo(f"\r{line}   ", nl=finished)
        else:
            typer.echo(line)


def generate_noise(
    output_folder: Annotated[
        Path,
        typer.Argument(help="Folder for the volumes (IsoNet's --noise_dir).", show_default=False),
    ],
    number_volume: Annotated[
        int, typer.Argument(help="Number of volumes to write.", show_default=False)
    ],
    cubesize: Annotated[
        int,
        typer.Argument(
            help="Cube side in voxels; must equal the training --cube_size.", show_default=False
        ),
    ],
    start: Annotated[
        int,
        typer.Option(
            help="Index of the first volume: writes n_<start>.mrc .. n_<start+N-1>.mrc.",
            rich_help_panel=VOLUMES,
        ),
    ] = 0,
    mode: Annotated[
        int,
        typer.Option(
            help="1: back-projection of 2-D white-noise images over the tilts (SIRT-like);"
            " 2: 3-D white noise through the missing-wedge filter (WBP-like).",
            rich_help_panel=GEOMETRY,
        ),
    ] = 1,
    minangle: Annotated[
        float, typer.Option(help="Lowest tilt, degrees (modes 1 and 2).", rich_help_panel=GEOMETRY)
    ] = -60.0,
    maxangle: Annotated[
        float,
        typer.Option(help="Highest tilt, degrees (modes 1 and 2).", rich_help_panel=GEOMETRY),
    ] = 60.0,
    anglestep: Annotated[
        float,
        typer.Option(help="Tilt increment, degrees (mode 1 only).", rich_help_panel=GEOMETRY),
    ] = 2.0,
    seed: Annotated[
        int | None,
        typer.Option(
            help="Root seed; volume i is a pure function of (seed, i, geometry). Default: the"
            " seed recorded in the folder's volumes, or a fresh one (printed and recorded).",
            show_default=False,
            rich_help_panel=VOLUMES,
        ),
    ] = None,
    voxel_size: Annotated[
        float,
        typer.Option(help="Voxel size for the MRC header, angstroms.", rich_help_panel=VOLUMES),
    ] = 1.0,
    overwrite: Annotated[
        bool,
        typer.Option(
            help="Regenerate volumes that are already complete (default: skip them).",
            rich_help_panel=VOLUMES,
        ),
    ] = False,
    force: Annotated[
        bool,
        typer.Option(
            help="Write even if the folder's volumes record other parameters.",
            rich_help_panel=VOLUMES,
        ),
    ] = False,
    fsync: Annotated[
        bool,
        typer.Option(
            help="Force each file to disk before it appears (safer on power loss, slower).",
            rich_help_panel=VOLUMES,
        ),
    ] = False,
    ncpus: Annotated[
        int | None,
        typer.Option(
            help="Worker processes of the local cluster, one thread each. [default: all cores]",
            show_default=False,
            rich_help_panel=CLUSTER,
        ),
    ] = None,
    dashboard_address: Annotated[
        str,
        typer.Option(
            help="host:port of the local dashboard (a free port if this one is taken).",
            rich_help_panel=CLUSTER,
        ),
    ] = "127.0.0.1:8787",
    dashboard: Annotated[
        bool, typer.Option(help="Serve the Dask dashboard.", rich_help_panel=CLUSTER)
    ] = True,
    quiet: Annotated[bool, typer.Option("--quiet", "-q", help="Print errors only.")] = False,
) -> None:
    """Write NUMBER_VOLUME missing-wedge noise volumes of CUBESIZE^3 voxels as MRC files."""
    ncpus = default_ncpus() if ncpus is None else ncpus
    wanted = NoiseParams(
        cubesize=cubesize,
        mode=mode,
        minangle=minangle,
        maxangle=maxangle,
        anglestep=anglestep,
        seed=0 if seed is None else seed,
        voxel_size=voxel_size,
    )
    errors = validate(wanted, number_volume, start)
    if ncpus < 1:
        errors.append(f"--ncpus must be at least 1, not {ncpus}.")
    if errors:
        raise fail(" ".join(errors))

    folder = output_folder.absolute()
    if folder.exists() and not folder.is_dir():
        raise fail(f"{output_folder} exists and is not a folder.")
    existing = scan(folder)
    if seed is None:
        if existing.recorded is not None:
            seed = existing.recorded.seed
        else:
            seed = int(np.random.SeedSequence().entropy)
    params = NoiseParams(**{**wanted.as_dict(), "seed": seed})
    if existing.recorded is not None and not force:
        problems = conflicts(existing.recorded, params)
        if problems:
            raise fail(
                f"{output_folder} holds volumes made with other parameters: "
                + "; ".join(problems)
                + ". Use another folder, or --force to mix them."
            )
    if existing.others and not quiet:
        typer.echo(
            f"mwr-dask: warning: {output_folder} also holds {len(existing.others)} entries that"
            f" are not n_*.mrc volumes (e.g. {existing.others[0]}); IsoNet opens every entry.",
            err=True,
        )

    tmp_dir = state_dir(folder) / "tmp"
    try:
        folder.mkdir(parents=True, exist_ok=True)
        tmp_dir.mkdir(parents=True, exist_ok=True)
    except OSError as err:
        raise fail(f"cannot create {err.filename}: {err.strerror}.") from None
    if not os.access(folder, os.W_OK):
        raise fail(f"{output_folder} is not writable.")
    total_bytes = number_volume * params.volume_bytes
    free = shutil.disk_usage(folder).free
    if total_bytes > free:
        raise fail(
            f"{number_volume} volumes need {total_bytes / 2**30:.2f} GiB but only"
            f" {free / 2**30:.2f} GiB are free in {output_folder}."
        )

    say = (lambda *a, **k: None) if quiet else typer.echo
    last = start + number_volume - 1
    say(
        f"Writing n_{start:05d}.mrc .. n_{last:05d}.mrc ({number_volume} volumes,"
        f" {total_bytes / 2**20:.1f} MiB) to {folder}"
    )
    say(f"Parameters: {params.describe()}")
    t0 = time.perf_counter()
    with local_client(ncpus, dashboard_address=dashboard_address if dashboard else None) as client:
        if dashboard:
            say(f"Dashboard: {client.dashboard_link}")
        say(f"Local cluster: {ncpus} worker processes, one thread each")
        result = run(
            client,
            params,
            start,
            number_volume,
            folder,
            tmp_dir,
            overwrite=overwrite,
            fsync=fsync,
            on_progress=Progress(number_volume, quiet=quiet),
        )
    wall = time.perf_counter() - t0
    written_bytes = result.written * params.volume_bytes
    say(
        f"Done: {result.written} written, {result.skipped} skipped (already complete),"
        f" {result.failed} failed; {written_bytes / 2**20:.1f} MiB in {wall:.1f} s"
        f" ({result.written / wall:.1f} vol/s, {written_bytes / 2**20 / wall:.1f} MiB/s)"
    )
    for index, error in result.errors:
        typer.echo(f"mwr-dask: error: volume {index}: {error}", err=True)
    for lo, hi, error in result.crashed:
        typer.echo(f"mwr-dask: error: volumes {lo}..{hi}: {error}", err=True)
    if result.failed:
        raise typer.Exit(1)


app.command("generate-noise")(generate_noise)
app.command("generate_noise", hidden=True)(generate_noise)


@contextmanager
def inspect_client(ncpus: int) -> Iterator[Client]:
    """Start the cluster ``inspect`` reads on (the one place to add remote clusters)."""
    # dashboard_address=None would still bind the scheduler's HTTP server to *:8787
    with local_client(ncpus, dashboard_address="127.0.0.1:0") as client:
        yield client


@app.command("inspect")
def inspect(
    folder: Annotated[
        Path,
        typer.Argument(help="Noise folder to check (IsoNet's --noise_dir).", show_default=False),
    ],
    plot: Annotated[
        Path | None,
        typer.Option(
            help="Write a PNG of the averaged spectrum: kx-kz section with the wedge, angular"
            " and radial profiles (needs matplotlib: pip install 'mwr-dask[plot]').",
            show_default=False,
            metavar="PNG",
        ),
    ] = None,
    json_output: Annotated[
        bool, typer.Option("--json", help="Print the report as JSON (for scripts).")
    ] = False,
    ncpus: Annotated[
        int | None,
        typer.Option(
            help="Worker processes of the local cluster, one thread each. [default: all cores]",
            show_default=False,
            rich_help_panel=CLUSTER,
        ),
    ] = None,
) -> None:
    """Check a noise folder: every volume readable, one cube size, no duplicates, the wedge.

    Exit status 0 when all is well, 1 when a file is broken, duplicated or inconsistent (or the
    spectrum disagrees with the labels), 2 for bad input.
    """
    ncpus = default_ncpus() if ncpus is None else ncpus
    if ncpus < 1:
        raise fail(f"--ncpus must be at least 1, not {ncpus}.")
    if not folder.exists():
        raise fail(f"{folder} does not exist.")
    if not folder.is_dir():
        raise fail(f"{folder} is not a folder.")
    if not os.access(folder, os.R_OK | os.X_OK):
        raise fail(f"{folder} is not readable.")
    if plot is not None:
        from mwr_dask.plot import PlotUnavailableError, require_matplotlib

        try:
            require_matplotlib()
        except PlotUnavailableError as err:
            raise fail(str(err)) from None
        if not plot.absolute().parent.is_dir():
            raise fail(f"cannot write {plot}: {plot.absolute().parent} is not a folder.")

    from mwr_dask.check import inspect_folder, render_text

    t0 = time.perf_counter()
    show = sys.stderr.isatty() and not json_output

    def progress(done: int, total: int) -> None:
        if show:
            typer.echo(f"\rread {done}/{total} volumes", nl=done >= total, err=True)

    try:
        with inspect_client(ncpus) as client:
            report = inspect_folder(folder, client, workers=ncpus, on_progress=progress)
    except OSError as err:
        raise fail(f"cannot read {err.filename or folder}: {err.strerror or err}.") from None
    wall = time.perf_counter() - t0
    if plot is not None:
        if report.spectrum is None:
            typer.echo("mwr-dask: warning: no readable volume, no plot written.", err=True)
        else:
            from mwr_dask.plot import plot_report

            try:
                plot_report(report, plot)
            except OSError as err:
                raise fail(f"cannot write {plot}: {err.strerror or err}.") from None
    if json_output:
        out = report.to_dict()
        out["seconds"] = round(wall, 3)
        out["plot"] = None if plot is None or report.spectrum is None else str(plot)
        typer.echo(json.dumps(out, indent=2, default=_json_default))
    else:
        timing = (
            f"{report.summary['count']} volumes read in {wall:.1f} s on {ncpus} workers"
            " (cluster start included)"
        )
        if plot is not None and report.spectrum is not None:
            timing += f"; plot written to {plot}"
        typer.echo(render_text(report, timing))
    if not report.ok:
        raise typer.Exit(1)


def _json_default(value):
    """JSON for numpy scalars and arrays."""
    if isinstance(value, np.generic):
        return value.item()
    if isinstance(value, np.ndarray):
        return value.tolist()
    return str(value)


def main() -> None:
    """Console-script entry point."""
    app()
