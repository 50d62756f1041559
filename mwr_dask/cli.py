"""Command-line interface: parse, validate, report. The work is done in the other modules."""

from __future__ import annotations

import os
import shutil
import time
from pathlib import Path
from typing import Annotated

import numpy as np
import typer

from mwr_dask import __version__
from mwr_dask.cluster import (
    ClusterError,
    ClusterOptions,
    check_versions,
    check_workers_can_write,
    open_client,
    tunnel_hint,
    wait_for_workers,
)
from mwr_dask.folder import conflicts, scan
from mwr_dask.mrcio import state_dir
from mwr_dask.params import NoiseParams, validate
from mwr_dask.pipeline import run
from mwr_dask.progress import Progress

app = typer.Typer(
    name="mwr-dask",
    help="Missing-wedge noise volumes for IsoNet/MWR training, generated in parallel with Dask.",
    add_completion=False,
    no_args_is_help=True,
    pretty_exceptions_enable=False,
)

GEOMETRY = "Noise geometry"
VOLUMES = "Volumes and files"
CLUSTER = "Cluster"


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
    scheduler: Annotated[
        str | None,
        typer.Option(
            help="Address of a running Dask scheduler (tcp://host:8786, tls://...) to use"
            " instead of a local cluster; also read from DASK_SCHEDULER_ADDRESS. The cluster is"
            " left running.",
            show_default=False,
            rich_help_panel=CLUSTER,
        ),
    ] = None,
    scheduler_file: Annotated[
        Path | None,
        typer.Option(
            help="Scheduler file written by 'dask scheduler --scheduler-file' (waited for up"
            " to --connect-timeout).",
            show_default=False,
            rich_help_panel=CLUSTER,
        ),
    ] = None,
    connect_timeout: Annotated[
        float,
        typer.Option(help="Seconds to wait for the scheduler.", rich_help_panel=CLUSTER),
    ] = 10.0,
    worker_timeout: Annotated[
        float,
        typer.Option(help="Seconds to wait for the first worker.", rich_help_panel=CLUSTER),
    ] = 60.0,
    retries: Annotated[
        int,
        typer.Option(
            help="Retries of a failed partition (lost workers are recovered by Dask anyway).",
            rich_help_panel=CLUSTER,
        ),
    ] = 3,
    dashboard_address: Annotated[
        str,
        typer.Option(
            help="host:port of the local cluster's dashboard (a free port if this one is taken).",
            rich_help_panel=CLUSTER,
        ),
    ] = "127.0.0.1:8787",
    dashboard: Annotated[
        bool, typer.Option(help="Serve the local cluster's dashboard.", rich_help_panel=CLUSTER)
    ] = True,
    quiet: Annotated[bool, typer.Option("--quiet", "-q", help="Print errors only.")] = False,
) -> None:
    """Write NUMBER_VOLUME missing-wedge noise volumes of CUBESIZE^3 voxels as MRC files."""
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
    if ncpus is not None and ncpus < 1:
        errors.append(f"--ncpus must be at least 1, not {ncpus}.")
    if retries < 0:
        errors.append(f"--retries must be 0 or more, not {retries}.")
    if scheduler and scheduler_file:
        errors.append("give --scheduler or --scheduler-file, not both.")
    if connect_timeout <= 0 or worker_timeout <= 0:
        errors.append("--connect-timeout and --worker-timeout must be positive.")
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
    options = ClusterOptions(
        scheduler=scheduler,
        scheduler_file=scheduler_file,
        ncpus=ncpus,
        dashboard_address=dashboard_address if dashboard else None,
        connect_timeout=connect_timeout,
    )
    t0 = time.perf_counter()
    try:
        with open_client(options) as client:
            threads = wait_for_workers(client, worker_timeout)
            where = "remote cluster" if options.remote else "local cluster"
            say(f"{where.capitalize()}: {client.scheduler.address}, {threads} worker threads")
            if client.dashboard_link and (dashboard or options.remote):
                say(f"Dashboard: {client.dashboard_link}")
                hint = tunnel_hint(client.dashboard_link)
                if hint:
                    say(f"  (from your workstation: {hint})")
            if options.remote:
                problems = check_versions(client)
                if problems:
                    raise ClusterError(
                        "package versions differ between this client and the workers: "
                        + "; ".join(problems[:4])
                        + ". Install the same versions on both."
                    )
                problems = check_workers_can_write(client, folder, tmp_dir)
                if problems:
                    raise ClusterError(
                        "; ".join(problems[:4])
                        + ". The output folder must be on a filesystem that every worker shares."
                    )
            progress = Progress(number_volume, quiet=quiet)
            result = run(
                client,
                params,
                start,
                number_volume,
                folder,
                tmp_dir,
                overwrite=overwrite,
                fsync=fsync,
                retries=retries,
                on_progress=lambda r: progress.update(r.done, r.failed),
            )
    except ClusterError as err:
        raise fail(str(err), 1) from None
    wall = time.perf_counter() - t0
    written_bytes = result.written * params.volume_bytes
    say(
        f"Done: {result.written} written, {result.skipped} skipped (already complete),"
        f" {result.failed} failed; {written_bytes / 1e6:.1f} MB in {wall:.1f} s"
        f" ({result.written / wall:.1f} vol/s, {written_bytes / 1e6 / wall:.1f} MB/s)"
    )
    for index, error in result.errors:
        typer.echo(f"mwr-dask: error: volume {index}: {error}", err=True)
    for lo, hi, error in result.crashed:
        typer.echo(f"mwr-dask: error: volumes {lo}..{hi}: {error}", err=True)
    if result.failed:
        raise typer.Exit(1)


app.command("generate-noise")(generate_noise)
app.command("generate_noise", hidden=True)(generate_noise)


def main() -> None:
    """Console-script entry point."""
    app()
