"""``mwr-dask generate-noise``: parse, validate, run, report."""

from __future__ import annotations

import contextlib
import os
import shutil
import time
from pathlib import Path
from typing import Annotated

import numpy as np
import typer

from mwr_dask.cli.common import (
    CLUSTER,
    GEOMETRY,
    HPC,
    VOLUMES,
    ConnectTimeoutOption,
    NcpusOption,
    SchedulerFileOption,
    WorkerTimeoutOption,
    cluster_option_problems,
    fail,
)
from mwr_dask.cluster import (
    ClusterError,
    ClusterOptions,
    check_versions,
    check_workers_can_write,
    default_ncpus,
    open_client,
    tunnel_hint,
    wait_for_workers,
    worker_memory,
)
from mwr_dask.folder import FolderError, folder_lock, missing_count, resolve_params, scan
from mwr_dask.generators import peak_bytes
from mwr_dask.jobqueue import SYSTEMS, JobqueueOptions
from mwr_dask.mrcio import state_dir
from mwr_dask.params import NoiseParams, tilt_count, validate
from mwr_dask.pipeline import RunResult, run
from mwr_dask.plan import describe_plan
from mwr_dask.progress import Progress
from mwr_dask.signals import Interrupted, signals_raise


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
    verify: Annotated[
        bool,
        typer.Option(
            help="Re-read existing volumes fully (labels and data) before skipping them"
            " (default: check header and size only).",
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
    ncpus: NcpusOption = None,
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
    scheduler_file: SchedulerFileOption = None,
    connect_timeout: ConnectTimeoutOption = 10.0,
    worker_timeout: WorkerTimeoutOption = 60.0,
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
    cluster: Annotated[
        str | None,
        typer.Option(
            help="Run the workers as batch jobs with dask-jobqueue on this system: "
            + ", ".join(SYSTEMS)
            + ". The scheduler runs in this process; the jobs are cancelled when it ends.",
            show_default=False,
            rich_help_panel=HPC,
        ),
    ] = None,
    jobs: Annotated[
        int | None,
        typer.Option(
            help="Jobs to submit, each running --cores single-threaded workers (default 1).",
            show_default=False,
            rich_help_panel=HPC,
        ),
    ] = None,
    adapt: Annotated[
        str | None,
        typer.Option(
            metavar="MIN:MAX",
            help="Scale between MIN and MAX jobs with the work, instead of --jobs.",
            show_default=False,
            rich_help_panel=HPC,
        ),
    ] = None,
    cores: Annotated[
        int | None,
        typer.Option(
            help="Cores per job, one worker process each (default: from --cluster-config or"
            " your dask config, else 1).",
            show_default=False,
            rich_help_panel=HPC,
        ),
    ] = None,
    memory: Annotated[
        str | None,
        typer.Option(
            help="Memory per job, e.g. 4GiB (GiB: 2^30 bytes; 4GB is 3.7 GiB). Default: from"
            " --cluster-config or your dask config, else 2GiB per core.",
            show_default=False,
            rich_help_panel=HPC,
        ),
    ] = None,
    walltime: Annotated[
        str | None,
        typer.Option(
            help="Time limit per job, e.g. 02:00:00 (dask-jobqueue's default: 00:30:00).",
            show_default=False,
            rich_help_panel=HPC,
        ),
    ] = None,
    queue: Annotated[
        str | None,
        typer.Option(
            help="Queue (partition) of the jobs.", show_default=False, rich_help_panel=HPC
        ),
    ] = None,
    account: Annotated[
        str | None,
        typer.Option(
            help="Account (project) charged for the jobs.", show_default=False, rich_help_panel=HPC
        ),
    ] = None,
    interface: Annotated[
        str | None,
        typer.Option(
            help="Network interface of the scheduler and workers, e.g. ib0 (lo on one node).",
            show_default=False,
            rich_help_panel=HPC,
        ),
    ] = None,
    local_directory: Annotated[
        str | None,
        typer.Option(
            help="Workers' scratch folder on the compute node, e.g. '$TMPDIR' (not NFS).",
            show_default=False,
            rich_help_panel=HPC,
        ),
    ] = None,
    log_directory: Annotated[
        str | None,
        typer.Option(
            help="Folder for the jobs' output (default: .<OUTPUT_FOLDER>.mwr-dask/jobs beside"
            " the output folder, removed after a successful run).",
            show_default=False,
            rich_help_panel=HPC,
        ),
    ] = None,
    job_extra: Annotated[
        list[str] | None,
        typer.Option(
            help="Extra job directive without its #SBATCH/#PBS/#$ prefix, e.g."
            " --job-extra=--exclusive (repeatable).",
            show_default=False,
            rich_help_panel=HPC,
        ),
    ] = None,
    prologue: Annotated[
        list[str] | None,
        typer.Option(
            help="Shell line to run in the job before the worker starts, e.g."
            " 'module load fftw' (repeatable).",
            show_default=False,
            rich_help_panel=HPC,
        ),
    ] = None,
    cluster_config: Annotated[
        Path | None,
        typer.Option(
            help="YAML file of dask-jobqueue settings (jobqueue.<system>: ...); flags override"
            " it, it overrides your dask config. Examples in configs/.",
            show_default=False,
            rich_help_panel=HPC,
        ),
    ] = None,
    dry_run: Annotated[
        bool,
        typer.Option(
            "--dry-run",
            help="Print the plan (volumes, bytes, tasks) and the job script; write and submit"
            " nothing.",
        ),
    ] = False,
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
    errors += cluster_option_problems(
        ncpus, scheduler, scheduler_file, connect_timeout, worker_timeout
    )
    if retries < 0:
        errors.append(f"--retries must be 0 or more, not {retries}.")
    hpc_flags = {
        "--jobs": jobs, "--adapt": adapt, "--cores": cores, "--memory": memory,
        "--walltime": walltime, "--queue": queue, "--account": account,
        "--interface": interface, "--local-directory": local_directory,
        "--log-directory": log_directory, "--job-extra": job_extra, "--prologue": prologue,
        "--cluster-config": cluster_config,
    }  # fmt: skip
    hpc = None
    if cluster is not None:
        if scheduler or scheduler_file:
            errors.append("give --cluster or --scheduler/--scheduler-file, not both.")
        if ncpus is not None:
            errors.append("--ncpus sets the local cluster; with --cluster give --jobs, --cores.")
        hpc = JobqueueOptions(
            system=cluster.lower(),
            jobs=jobs,
            adapt=adapt,
            cores=cores,
            memory=memory,
            walltime=walltime,
            queue=queue,
            account=account,
            interface=interface,
            local_directory=local_directory,
            log_directory=log_directory,
            fallback_log_directory=str(state_dir(output_folder) / "jobs"),
            job_extra=tuple(job_extra) if job_extra else None,
            prologue=tuple(prologue) if prologue else None,
            config_file=cluster_config,
            worker_timeout=worker_timeout,
        )
        errors.extend(hpc.problems())
    elif any(value is not None for value in hpc_flags.values()):
        given = [flag for flag, value in hpc_flags.items() if value is not None]
        errors.append(f"{', '.join(given)} need{'s' * (len(given) == 1)} --cluster.")
    options = ClusterOptions(
        scheduler=scheduler,
        scheduler_file=scheduler_file,
        ncpus=ncpus,
        dashboard_address=dashboard_address if dashboard else None,
        connect_timeout=connect_timeout,
        jobqueue=hpc,
    )
    if not errors and not options.remote:
        errors += memory_problems(wanted, worker_memory(options.ncpus or default_ncpus()))
    folder = output_folder.absolute()
    if folder.exists() and not folder.is_dir():
        errors.append(f"{output_folder} exists and is not a folder.")
    if errors:
        raise fail(" ".join(errors))
    if dry_run:
        try:
            params, existing = resolve_params(
                folder,
                wanted,
                seed_given=seed is not None,
                force=force,
                fresh_seed=int(np.random.SeedSequence().entropy),
            )
        except FolderError as err:
            raise fail(str(err)) from None
        typer.echo(describe_plan(params, start, number_volume, folder, existing.indices, options))
        raise typer.Exit(0)

    say = (lambda *a, **k: None) if quiet else typer.echo
    created = not folder.exists()
    try:
        with folder_lock(folder, sibling=hpc is not None) as tmp_dir:
            params, existing = resolve_params(
                folder,
                wanted,
                seed_given=seed is not None,
                force=force,
                fresh_seed=int(np.random.SeedSequence().entropy),
            )
            prepare_output(folder, output_folder, params, existing, start, number_volume, quiet)
            last = start + number_volume - 1
            say(
                f"Writing n_{start:05d}.mrc .. n_{last:05d}.mrc ({number_volume} volumes,"
                f" {size_text(number_volume * params.volume_bytes)}) to {folder}"
            )
            say(f"Parameters: {params.describe()}")
            if hpc is not None:
                say(f"Cluster: {hpc.summary()}")
            result = RunResult(requested=number_volume)
            t0 = time.perf_counter()
            try:
                with signals_raise(), open_client(options, say=say) as client:
                    threads = wait_for_workers(client, worker_timeout)
                    report_cluster(client, options, threads, dashboard, say)
                    if options.remote:
                        check_remote(client, params, folder, tmp_dir)
                    progress = Progress(number_volume, quiet=quiet)
                    run(
                        client,
                        params,
                        start,
                        number_volume,
                        folder,
                        tmp_dir,
                        overwrite=overwrite,
                        fsync=fsync,
                        verify=verify,
                        retries=retries,
                        workers=options.planned_workers(),
                        on_progress=lambda r: progress.update(r.done, r.failed),
                        result=result,
                    )
            except Interrupted as stop:
                # partitions report when they end: count the files to say what is complete
                done = number_volume - missing_count(scan(folder, headers=0), start, number_volume)
                raise fail(
                    f"stopped by {stop} after {time.perf_counter() - t0:.1f} s: {done} of"
                    f" {number_volume} volumes are complete; rerun the same command to finish.",
                    stop.exit_code,
                ) from None
    except (FolderError, ClusterError) as err:
        if created:  # a folder this run made and could not use goes again
            with contextlib.suppress(OSError):
                folder.rmdir()
        raise fail(str(err), 2 if isinstance(err, FolderError) else 1) from None
    summarize(result, params, time.perf_counter() - t0, say)
    if result.failed or result.stopped:
        raise typer.Exit(1)


def prepare_output(
    folder: Path,
    shown: Path,
    params: NoiseParams,
    existing,
    start: int,
    count: int,
    quiet: bool,
) -> None:
    """Create the output folder, warn about foreign entries, check it is writable and has room."""
    if existing.others and not quiet:
        typer.echo(
            f"mwr-dask: warning: {shown} also holds {len(existing.others)} entries that"
            f" are not n_*.mrc volumes (e.g. {existing.others[0]}); IsoNet opens every entry.",
            err=True,
        )
    need = missing_count(existing, start, count) * params.volume_bytes
    free = shutil.disk_usage(folder).free  # folder_lock made it: its own filesystem
    if need > free:
        raise FolderError(
            f"the volumes still to write need {size_text(need)} but only {size_text(free)}"
            f" are free for {shown}."
        )
    try:
        folder.mkdir(parents=True, exist_ok=True)
    except OSError as err:
        raise FolderError(f"cannot create {err.filename}: {err.strerror}.") from None
    if not os.access(folder, os.W_OK | os.X_OK):
        raise FolderError(f"{shown} is not writable.")


def size_text(nbytes: float) -> str:
    """Bytes for people, in decimal units: ``13.2 MB``, ``1.05 GB``."""
    for unit, scale in (("TB", 1e12), ("GB", 1e9), ("MB", 1e6), ("kB", 1e3)):
        if nbytes >= scale:
            return f"{nbytes / scale:.3g} {unit}"
    return f"{nbytes:.0f} bytes"


def report_cluster(client, options: ClusterOptions, threads: int, dashboard: bool, say) -> None:
    """Print where the work runs and the dashboard link (with an SSH hint if remote)."""
    where = options.label[:1].upper() + options.label[1:]
    say(f"{where}: {client.scheduler.address}, {threads} worker threads")
    if client.dashboard_link and (dashboard or options.remote):
        say(f"Dashboard: {client.dashboard_link}")
        hint = tunnel_hint(client.dashboard_link, served_here=options.jobqueue is not None)
        if hint:
            say(f"  (from your workstation: {hint})")


def check_remote(client, params: NoiseParams, folder: Path, tmp_dir: Path) -> None:
    """Refuse workers with other package versions, too little memory, or no view of the folder."""
    problems = check_versions(client)
    if problems:
        raise ClusterError(
            "package versions differ between this client and the workers: "
            + "; ".join(problems[:4])
            + ". Install the same versions on both."
        )
    limits = [w.get("memory_limit") or 0 for w in client.scheduler_info()["workers"].values()]
    smallest = min((m for m in limits if m), default=0)
    problems = memory_problems(params, smallest) if smallest else []
    if problems:
        raise ClusterError(problems[0])
    problems = check_workers_can_write(client, folder, tmp_dir)
    if problems:
        raise ClusterError(
            "; ".join(problems[:4])
            + ". The output folder must be on a filesystem that every worker shares."
        )


def memory_problems(params: NoiseParams, per_worker: int) -> list[str]:
    """One sentence if a volume of ``params`` cannot fit in ``per_worker`` bytes of memory."""
    need = peak_bytes(params.mode, params.cubesize, tilt_count(params))
    if need <= per_worker:
        return []
    return [
        f"a {params.cubesize}^3 volume needs about {need / 2**30:.1f} GiB per worker in mode"
        f" {params.mode}, more than the {per_worker / 2**30:.1f} GiB each worker has;"
        " use fewer workers (--ncpus) or a smaller CUBESIZE."
    ]


def summarize(result: RunResult, params: NoiseParams, wall: float, say) -> None:
    """Print the closing summary and every error."""
    written_bytes = result.written * params.volume_bytes
    wall = max(wall, 1e-9)
    say(
        f"Done: {result.written} written, {result.skipped} skipped (already complete),"
        f" {result.failed} failed; {written_bytes / 1e6:.1f} MB in {wall:.1f} s"
        f" ({result.written / wall:.1f} vol/s, {written_bytes / 1e6 / wall:.1f} MB/s)"
    )
    for index, error in result.errors:
        typer.echo(f"mwr-dask: error: volume {index}: {error}", err=True)
    for lo, hi, error in result.crashed:
        typer.echo(f"mwr-dask: error: volumes {lo}..{hi}: {error}", err=True)
    if result.stopped:
        typer.echo(
            "mwr-dask: error: stopped early: the output filesystem cannot take more volumes"
            " (see the error above); no partial file was left.",
            err=True,
        )
