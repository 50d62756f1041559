"""``mwr-dask generate-noise``: parse, validate, call :func:`mwr_dask.parallel.run.generate`, report.

Heavy modules (numpy, Dask) are imported inside the command, so that ``--help`` and usage
errors answer at once.
"""

from __future__ import annotations

import time
from pathlib import Path
from types import SimpleNamespace
from typing import Annotated

import typer

from mwr_dask.cli.common import (
    BATCH_SYSTEMS,
    CLUSTER,
    GEOMETRY,
    HPC,
    VOLUMES,
    ConnectTimeoutOption,
    NcpusOption,
    SchedulerFileOption,
    SchedulerOption,
    WorkerTimeoutOption,
    cluster_option_problems,
    fail,
)

#: Options of the batch cluster, by parameter name; each needs --cluster.
BATCH_FLAGS = (
    "jobs",
    "adapt",
    "cores",
    "memory",
    "walltime",
    "queue",
    "account",
    "interface",
    "local_directory",
    "log_directory",
    "job_extra",
    "prologue",
    "cluster_config",
)


def generate_noise(
    ctx: typer.Context,
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
            help="1: back-projection of 2-D white-noise images over the tilts, unfiltered (power"
            " falls like 1/|k|, close to IMOD's SIRT-like filter) or with --filter; 2: 3-D white"
            " noise through the missing-wedge filter (flat power: not the noise of a weighted"
            " back-projection, which rises with |k|).",
            rich_help_panel=GEOMETRY,
        ),
    ] = 1,
    minangle: Annotated[
        float | None,
        typer.Option(
            help="Lowest tilt, degrees (modes 1 and 2). [default: -60]",
            show_default=False,
            rich_help_panel=GEOMETRY,
        ),
    ] = None,
    maxangle: Annotated[
        float | None,
        typer.Option(
            help="Highest tilt, degrees (modes 1 and 2). [default: 60]",
            show_default=False,
            rich_help_panel=GEOMETRY,
        ),
    ] = None,
    anglestep: Annotated[
        float | None,
        typer.Option(
            help="Tilt increment, degrees (mode 1 only). [default: 2]",
            show_default=False,
            rich_help_panel=GEOMETRY,
        ),
    ] = None,
    tilt_file: Annotated[
        list[Path] | None,
        typer.Option(
            help="Tilt angles of the dataset instead of --minangle/--maxangle/--anglestep:"
            " IMOD .tlt/.rawtlt, AreTomo .aln, SerialEM .mdoc, RELION 5 tilt-series .star,"
            " Warp .tomostar or .xml (see docs/tilt-schemes.md). Repeatable: volume i uses"
            " file i mod k.",
            show_default=False,
            rich_help_panel=GEOMETRY,
        ),
    ] = None,
    exclude: Annotated[
        str | None,
        typer.Option(
            help="Views to leave out of the single --tilt-file, as IMOD's EXCLUDELIST: 1-based"
            " view numbers in the file's order, ranges allowed, e.g. 1-3,40.",
            show_default=False,
            rich_help_panel=GEOMETRY,
        ),
    ] = None,
    invert_tilts: Annotated[
        bool,
        typer.Option(
            "--invert-tilts",
            help="Negate the angles of the --tilt-file(s) against their format's convention,"
            " for tomograms whose wedge lies on the other side (check with mwr-dask inspect).",
            rich_help_panel=GEOMETRY,
        ),
    ] = False,
    filter: Annotated[
        str,
        typer.Option(
            "--filter",
            help="Mode 1: filter each projection as the reconstruction did: none, ramp,"
            " shepp-logan, cosine, hamming, hann (skimage iradon / IsoNet), imod (IMOD tilt's"
            " radial weighting), sirt-like (IMOD FakeSIRTiterations), aretomo (AreTomo WBP);"
            " see docs/filters.md.",
            rich_help_panel=GEOMETRY,
        ),
    ] = "none",
    radial: Annotated[
        tuple[float, float] | None,
        typer.Option(
            help="--filter imod or sirt-like: radial cutoff and Gaussian sigma of the fall-off,"
            " cycles/pixel, as IMOD's RADIAL with FalloffIsTrueSigma 1. [default: 0.35 0.035]",
            show_default=False,
            rich_help_panel=GEOMETRY,
        ),
    ] = None,
    sirt_iterations: Annotated[
        int | None,
        typer.Option(
            help="--filter sirt-like: IMOD's FakeSIRTiterations. [default: 10]",
            show_default=False,
            rich_help_panel=GEOMETRY,
        ),
    ] = None,
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
        typer.Option(
            help="Voxel size for the MRC header, angstroms. [default: the spectrum's, else 1]",
            show_default=False,
            rich_help_panel=VOLUMES,
        ),
    ] = 1.0,
    spectrum: Annotated[
        Path | None,
        typer.Option(
            help="Noise spectrum measured by 'mwr-dask measure-noise': Gaussian noise with"
            " exactly that spectrum (mode 3), instead of --mode and the tilts.",
            show_default=False,
            metavar="SPECTRUM",
            rich_help_panel=GEOMETRY,
        ),
    ] = None,
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
    scheduler: SchedulerOption = None,
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
            + ", ".join(BATCH_SYSTEMS)
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
    from mwr_dask.noise.source import NoiseSource, validate

    range_given = [
        f"--{name}"
        for name, value in (
            ("minangle", minangle),
            ("maxangle", maxangle),
            ("anglestep", anglestep),
        )
        if value is not None
    ]
    fields = {
        "cubesize": cubesize,
        "mode": mode,
        "minangle": -60.0 if minangle is None else minangle,
        "maxangle": 60.0 if maxangle is None else maxangle,
        "anglestep": 2.0 if anglestep is None else anglestep,
        "seed": seed,
        "voxel_size": voxel_size,
        "filter": filter,
        "radial": radial,
        "sirt_iterations": sirt_iterations,
    }
    if spectrum is not None:
        if tilt_file or exclude is not None or invert_tilts:
            raise fail("--spectrum defines the noise: --tilt-file, --exclude and --invert-tilts"
                       " cannot be given with it.")  # fmt: skip
        measured_fields(ctx, spectrum, fields)
    # checks that need no heavy module first: usage errors answer at once
    errors = tilt_file_problems(tilt_file or [], range_given, exclude, invert_tilts)
    # None draws a fresh seed in NoiseSource; any seed below 2^128 validates alike
    checked = {**fields, "seed": 0 if seed is None else seed}
    errors += validate(SimpleNamespace(**checked), number_volume, start)
    errors += cluster_option_problems(
        ncpus, scheduler, scheduler_file, connect_timeout, worker_timeout
    )
    if retries < 0:
        errors.append(f"--retries must be 0 or more, not {retries}.")
    errors += batch_flag_problems(ctx.params)
    if output_folder.exists() and not output_folder.is_dir():
        errors.append(f"{output_folder} exists and is not a folder.")
    if errors:
        raise fail(" ".join(errors))
    if tilt_file:
        fields["tilt_schemes"] = read_schemes(tilt_file, exclude, invert_tilts)
    source = NoiseSource(**fields)
    if mode == 2 and not quiet:
        for scheme in source.tilt_schemes:
            if scheme.gap_note is not None:
                typer.echo(f"mwr-dask: note: {scheme.gap_note}.", err=True)

    from mwr_dask.parallel.clusters import UsageError, make_cluster

    hpc = batch_cluster(ctx.params, output_folder, errors)
    if ncpus is not None and hpc is None and not (scheduler or scheduler_file):
        from mwr_dask.parallel.cores import local_workers

        ncpus, warning = local_workers(ncpus)  # no more workers than usable cores
        if warning and not quiet:
            typer.echo(warning, err=True)
    if not errors:
        try:
            options = make_cluster(
                scheduler=scheduler,
                scheduler_file=scheduler_file,
                ncpus=ncpus,
                dashboard_address=dashboard_address if dashboard else None,
                connect_timeout=connect_timeout,
                batch=hpc,
            )
        except UsageError as err:
            errors.append(str(err))
        else:
            errors += options.memory_problems(source)
    if errors:
        raise fail(" ".join(errors))
    folder = output_folder.absolute()
    if dry_run:
        show_plan(
            folder, source, start, number_volume, options, adopt_seed=seed is None, force=force
        )
    run_and_report(
        folder,
        source,
        start,
        number_volume,
        options,
        adopt_seed=seed is None,
        quiet=quiet,
        overwrite=overwrite,
        verify=verify,
        force=force,
        fsync=fsync,
        retries=retries,
        worker_timeout=worker_timeout,
    )


def _given(ctx: typer.Context, name: str) -> bool:
    """Whether option ``name`` was given (command line or environment), not defaulted."""
    source = ctx.get_parameter_source(name)
    return source is not None and source.name not in ("DEFAULT", "DEFAULT_MAP")


def measured_fields(ctx: typer.Context, spectrum: Path, fields: dict) -> None:
    """Check --spectrum against the geometry options and put its reference in ``fields``.

    The voxel size defaults to the spectrum's (the halves'). Exits 2 on a usage error or an
    unreadable spectrum.
    """
    geometry = [f"--{name}" for name in ("mode", "minangle", "maxangle", "anglestep")]
    given = [flag for flag in geometry if _given(ctx, flag[2:])]
    if given:
        raise fail(f"--spectrum defines the noise: {', '.join(given)} cannot be given with it.")
    from mwr_dask.files.mrc import read_header
    from mwr_dask.noise.measured import MeasureError, spectrum_noise

    try:
        fields["spectrum"] = spectrum_noise(spectrum)
        header_voxel = read_header(spectrum).voxel_size
    except (MeasureError, OSError, ValueError) as err:
        raise fail(str(err)) from None
    fields["mode"] = 3
    if not _given(ctx, "voxel_size") and header_voxel > 0:
        fields["voxel_size"] = float(f"{header_voxel:.6g}")  # float32 in the header


def tilt_file_problems(
    tilt_files: list[Path], range_given: list[str], exclude: str | None, invert: bool
) -> list[str]:
    """Usage problems of --tilt-file, --exclude and --invert-tilts, one sentence each."""
    if not tilt_files:
        alone = [flag for flag, on in (("--exclude", exclude), ("--invert-tilts", invert)) if on]
        return (
            [f"{' and '.join(alone)} need{'s' * (len(alone) == 1)} --tilt-file."] if alone else []
        )
    errors = []
    if range_given:
        errors.append(
            f"give --tilt-file or {'/'.join(range_given)}, not both: the tilt file replaces the"
            " regular range."
        )
    if exclude is not None and len(tilt_files) > 1:
        errors.append(
            f"--exclude applies to a single --tilt-file, not to {len(tilt_files)}: the view"
            " numbers of different files differ."
        )
    return errors


def read_schemes(tilt_files: list[Path], exclude: str | None, invert: bool) -> tuple:
    """Read every --tilt-file; a problem ends the command with its one sentence (exit 2)."""
    from mwr_dask.noise.schemes import TiltSchemeError, read_tilt_file

    try:
        return tuple(read_tilt_file(path, exclude=exclude, invert=invert) for path in tilt_files)
    except TiltSchemeError as err:
        raise fail(str(err)) from None


def batch_flag_problems(values: dict) -> list[str]:
    """Batch-cluster options given without --cluster, or with a local/remote cluster's."""
    given = [name for name in BATCH_FLAGS if values[name] not in (None, [], ())]
    if values["cluster"] is None:
        flags = [f"--{name.replace('_', '-')}" for name in given]
        return [f"{', '.join(flags)} need{'s' * (len(flags) == 1)} --cluster."] if flags else []
    errors = []
    if values["scheduler"] or values["scheduler_file"]:
        errors.append("give --cluster or --scheduler/--scheduler-file, not both.")
    if values["ncpus"] is not None:
        errors.append("--ncpus sets the local cluster; with --cluster give --jobs, --cores.")
    return errors


def batch_cluster(values: dict, output_folder: Path, errors: list[str]):
    """Return the batch cluster asked for (None without --cluster); problems go to ``errors``."""
    if values["cluster"] is None:
        return None
    from mwr_dask.files.mrc import state_dir
    from mwr_dask.parallel.clusters.batch import BatchOptions

    flags = {name: values[name] for name in BATCH_FLAGS}
    for name in ("job_extra", "prologue"):
        flags[name] = tuple(flags[name]) if flags[name] else None
    hpc = BatchOptions(
        system=values["cluster"].lower(),
        config_file=flags.pop("cluster_config"),
        fallback_log_directory=str(state_dir(output_folder) / "jobs"),
        worker_timeout=values["worker_timeout"],
        **flags,
    )
    errors.extend(hpc.problems())
    return hpc


def show_plan(folder: Path, source, start: int, count: int, options, *, adopt_seed, force):
    """Print what a run would do (``--dry-run``) and exit 0."""
    from mwr_dask.files.folder import FolderError
    from mwr_dask.parallel.plan import describe_plan
    from mwr_dask.parallel.run import plan_source

    try:
        source, existing = plan_source(folder, source, adopt_seed=adopt_seed, force=force)
    except FolderError as err:
        raise fail(str(err)) from None
    from mwr_dask.noise.generators import cost_note

    fresh = adopt_seed and existing.recorded is None
    typer.echo(
        describe_plan(source, start, count, folder, existing.indices, options, fresh_seed=fresh)
    )
    note = cost_note(source.cubesize, source.mode)
    if note:
        typer.echo(note)
    if source.tilt_schemes:
        for scheme in source.tilt_schemes:
            typer.echo(scheme.describe())
        unique = {s.angle_tuple: s for s in source.tilt_schemes}.values()  # shared operators
        cached = sum(s.cached_bytes(source.mode, source.cubesize) for s in unique)
        k = len(source.tilt_schemes)
        typer.echo(
            f"Cached per worker: {cached / 2**20:.1f} MiB for the {k} scheme{'s' * (k != 1)}"
            f" (mode {source.mode}: {'operators' if source.mode == 1 else 'masks'} and scratch,"
            " built once per scheme on first use)"
        )
    raise typer.Exit(0)


def run_and_report(folder: Path, source, start: int, count: int, options, *, quiet, **run):
    """Run :func:`mwr_dask.parallel.run.generate` with progress, and report; exit 1 if a volume failed."""
    from mwr_dask.cli.progress import Progress
    from mwr_dask.cli.signals import Interrupted, signals_raise
    from mwr_dask.files.folder import FolderError
    from mwr_dask.parallel.clusters import ClusterError
    from mwr_dask.parallel.pipeline import RunResult
    from mwr_dask.parallel.run import complete_count, generate

    say = (lambda line: None) if quiet else typer.echo

    def warn(line: str) -> None:
        if not quiet:
            typer.echo(f"mwr-dask: warning: {line}", err=True)

    bar: list[Progress] = []

    def progress(result: RunResult) -> None:
        if not bar:  # created when the run starts, after the cluster is up
            bar.append(Progress(count, quiet=quiet))
        bar[0].update(result.done, result.failed)

    result = RunResult(requested=count)
    t0 = time.perf_counter()
    try:
        with signals_raise():
            done = generate(
                folder,
                count,
                source,
                start,
                cluster=options,
                on_progress=progress,
                say=say,
                warn=warn,
                result=result,
                **run,
            )
    except Interrupted as stop:
        # partitions report when they end: count the files to say what is complete
        complete = complete_count(folder, start, count)
        raise fail(
            f"stopped by {stop} after {time.perf_counter() - t0:.1f} s: {complete} of"
            f" {count} volumes are complete; rerun the same command to finish.",
            stop.exit_code,
        ) from None
    except (FolderError, ClusterError) as err:
        raise fail(str(err), 2 if isinstance(err, FolderError) else 1) from None
    summarize(done, say, bar[0].elapsed if bar else None)
    if not done.ok:
        raise typer.Exit(1)


def summarize(done, say, work: float | None = None) -> None:
    """Print the closing summary and every error.

    ``done.seconds`` runs from the cluster's start to the last volume; ``work`` (the progress
    report's :attr:`~mwr_dask.cli.progress.Progress.elapsed`) the part after the cluster was up,
    over which the rate is given, as the progress line gives it.
    """
    result = done.result
    written_bytes = done.written_bytes
    wall = max(done.seconds, 1e-9)
    text = (
        f"Done: {result.written} written, {result.skipped} skipped (already complete),"
        f" {result.failed} failed; {written_bytes / 1e6:.1f} MB in {wall:.1f} s"
    )
    if work:
        text += (
            f", {work:.1f} s of it after the cluster was up ({result.done / work:.1f} vol/s,"
            f" {written_bytes / 1e6 / work:.1f} MB/s)"
        )
    else:
        text += f" ({result.written / wall:.1f} vol/s, {written_bytes / 1e6 / wall:.1f} MB/s)"
    say(text)
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
