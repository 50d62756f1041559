"""``mwr-dask generate-noise``: parse, build the NoiseSource, run, report.

Heavy modules (numpy, Dask) are imported inside the command, so that ``--help`` and usage
errors answer at once.
"""

from __future__ import annotations

import math
from pathlib import Path
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
    arg,
    cluster_option_problems,
    fail,
    needs,
    opt,
)
from mwr_dask.cli.running import batch_flag_problems, cluster_of, run_and_report, show_plan

DATASET = "Dataset (one folder per tomogram)"
#: Help panel of the dose-weighting options.
DOSE = "Dose weighting (docs/dose-weighting.md)"


def generate_noise(
    ctx: typer.Context,
    output_folder: Annotated[Path, arg("Folder for the volumes (IsoNet's --noise_dir).")],
    number_volume: Annotated[int, arg("Number of volumes to write.")],
    cubesize: Annotated[int, arg("Cube side in voxels; must equal the training --cube_size.")],
    start: Annotated[
        int,
        opt(
            "Index of the first volume: writes n_<start>.mrc .. n_<start+N-1>.mrc.",
            VOLUMES,
            show_default=True,
        ),
    ] = 0,
    mode: Annotated[
        int,
        opt(
            "1: back-projection of 2-D white-noise images over the tilts, unfiltered (power"
            " falls like 1/|k|, close to IMOD's SIRT-like filter) or with --filter; 2: 3-D white"
            " noise through the missing-wedge filter (flat power: not the noise of a weighted"
            " back-projection, which rises with |k|).",
            GEOMETRY,
            show_default=True,
        ),
    ] = 1,
    minangle: Annotated[
        float | None, opt("Lowest tilt, degrees (modes 1 and 2). [default: -60]", GEOMETRY)
    ] = None,
    maxangle: Annotated[
        float | None, opt("Highest tilt, degrees (modes 1 and 2). [default: 60]", GEOMETRY)
    ] = None,
    anglestep: Annotated[
        float | None, opt("Tilt increment, degrees (mode 1 only). [default: 2]", GEOMETRY)
    ] = None,
    tilt_file: Annotated[
        list[Path] | None,
        opt(
            "Tilt angles of one tilt series instead of --minangle/--maxangle/--anglestep:"
            " IMOD .tlt/.rawtlt, AreTomo .aln, SerialEM .mdoc, RELION 5 tilt-series .star,"
            " Warp .tomostar or .xml (see docs/tilt-schemes.md). Repeat the option for a"
            " mixture (--tilt-file A --tilt-file B: volume i uses file i mod k); for a whole"
            " dataset use --tomograms.",
            GEOMETRY,
        ),
    ] = None,
    tomograms: Annotated[
        Path | None,
        opt(
            "The dataset: a RELION 5 or IsoNet/IsoNet2 tomograms.star, or a folder of"
            " Warp .xml/.tomostar, AreTomo3 .aln or IMOD tilt-series folders. Writes one folder"
            " OUTPUT_FOLDER/<tomogram> per tomogram, each with its own tilt scheme and seed,"
            " and a manifest (see docs/datasets.md).",
            DATASET,
            metavar="DATASET",
        ),
    ] = None,
    mix: Annotated[
        bool,
        typer.Option(
            "--mix",
            help="--tomograms: one folder OUTPUT_FOLDER/mixed instead, volume i from tomogram"
            " i mod k (for one --noise_dir).",
            rich_help_panel=DATASET,
        ),
    ] = False,
    only: Annotated[
        list[str] | None,
        opt(
            "--tomograms: these tomograms only (NAME[,NAME], repeatable).",
            DATASET,
            metavar="NAME[,NAME]",
        ),
    ] = None,
    exclude_tomograms: Annotated[
        list[str] | None,
        opt(
            "--tomograms: leave these tomograms out (NAME[,NAME], repeatable).",
            DATASET,
            metavar="NAME[,NAME]",
        ),
    ] = None,
    measured: Annotated[
        bool,
        typer.Option(
            "--measured",
            help="--tomograms: measure each tomogram's noise spectrum from its half tomograms"
            " (on the cluster) and make its noise from it (mode 3); spectra are written to"
            " OUTPUT_FOLDER/<tomogram>.spectrum.mrc and kept for reruns.",
            rich_help_panel=DATASET,
        ),
    ] = False,
    all_views: Annotated[
        Path | None,
        opt(
            "Every view of the tilt series, for RELION and Warp .tomostar files, which drop"
            " excluded views: its .mdoc or RELION's Import tilt-series star (with --tomograms:"
            " the Import job's tilt_series.star, or a folder of <name>.mdoc). Views missing"
            " from the file are reported as excluded.",
            GEOMETRY,
            metavar="FILE",
        ),
    ] = None,
    exclude: Annotated[
        str | None,
        opt(
            "Views to leave out of the single --tilt-file, as IMOD's EXCLUDELIST: 1-based"
            " view numbers in the file's order, ranges allowed, e.g. 1-3,40.",
            GEOMETRY,
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
        opt(
            "Mode 1: filter each projection as the reconstruction did: none, ramp,"
            " shepp-logan, cosine, hamming, hann (skimage iradon / IsoNet), imod (IMOD tilt's"
            " radial weighting), sirt-like (IMOD FakeSIRTiterations), aretomo (AreTomo WBP);"
            " see docs/filters.md.",
            GEOMETRY,
            show_default=True,
        ),
    ] = "none",
    radial: Annotated[
        tuple[float, float] | None,
        opt(
            "--filter imod or sirt-like: radial cutoff and Gaussian sigma of the fall-off,"
            " cycles/pixel, as IMOD's RADIAL with FalloffIsTrueSigma 1. [default: 0.35 0.035]",
            GEOMETRY,
        ),
    ] = None,
    sirt_iterations: Annotated[
        int | None, opt("--filter sirt-like: IMOD's FakeSIRTiterations. [default: 10]", GEOMETRY)
    ] = None,
    dose_weighting: Annotated[
        str,
        opt(
            "Weight each view by its pre-exposure, for tomograms whose tilts were weighted"
            " so (Warp/WarpTools; not RELION 5's or AreTomo3's, see docs/dose-weighting.md):"
            " none, grant-grigorieff (Grant & Grigorieff's critical exposure) or bfactor (Warp:"
            " B = -4 x dose). Needs --voxel-size and each view's dose (from the tilt file, else"
            " --dose-per-tilt).",
            DOSE,
            show_default=True,
        ),
    ] = "none",
    voltage: Annotated[
        float | None,
        opt("--dose-weighting grant-grigorieff: kV, 300, 200 or 100. [default: 300]", DOSE),
    ] = None,
    dose_per_tilt: Annotated[
        float | None,
        opt(
            "e/A^2 per view, for tilt files without doses: view k of the acquisition had"
            " (k - 1) times it before its own exposure.",
            DOSE,
        ),
    ] = None,
    acquisition: Annotated[
        str | None,
        opt(
            "The order of acquisition of files without one (.tlt, .aln) or of the"
            " regular range: dose-symmetric[:G[:START]] (G views per side, negative side first"
            " when G < 0; default -2), bidirectional[:START] or unidirectional[:START]; START"
            " in the file's degrees.",
            DOSE,
            metavar="ORDER",
        ),
    ] = None,
    seed: Annotated[
        int | None,
        opt(
            "Root seed; volume i is a pure function of (seed, i, geometry). Default: the"
            " seed recorded in the folder's volumes, or a fresh one (printed and recorded).",
            VOLUMES,
        ),
    ] = None,
    voxel_size: Annotated[
        float,
        opt("Voxel size for the MRC header, angstroms. [default: the spectrum's, else 1]", VOLUMES),
    ] = 1.0,
    spectrum: Annotated[
        list[Path] | None,
        opt(
            "Noise spectrum measured by 'mwr-dask measure-noise': Gaussian noise with"
            " exactly that spectrum (mode 3), instead of --mode and the tilts.",
            GEOMETRY,
            metavar="SPECTRUM",
        ),
    ] = None,
    overwrite: Annotated[
        bool,
        opt(
            "Regenerate volumes that are already complete (default: skip them).",
            VOLUMES,
            show_default=True,
        ),
    ] = False,
    verify: Annotated[
        bool,
        opt(
            "Re-read existing volumes fully (labels and data) before skipping them"
            " (default: check header and size only).",
            VOLUMES,
            show_default=True,
        ),
    ] = False,
    force: Annotated[
        bool,
        opt(
            "Write even if the folder's volumes record other parameters.",
            VOLUMES,
            show_default=True,
        ),
    ] = False,
    fsync: Annotated[
        bool,
        opt(
            "Force each file to disk before it appears (safer on power loss, slower).",
            VOLUMES,
            show_default=True,
        ),
    ] = False,
    ncpus: NcpusOption = None,
    scheduler: SchedulerOption = None,
    scheduler_file: SchedulerFileOption = None,
    connect_timeout: ConnectTimeoutOption = 10.0,
    worker_timeout: WorkerTimeoutOption = 60.0,
    retries: Annotated[
        int,
        opt(
            "Retries of a failed partition (lost workers are recovered by Dask anyway).",
            CLUSTER,
            show_default=True,
        ),
    ] = 3,
    dashboard_address: Annotated[
        str,
        opt(
            "host:port of the local cluster's dashboard (a free port if this one is taken).",
            CLUSTER,
            show_default=True,
        ),
    ] = "127.0.0.1:8787",
    dashboard: Annotated[
        bool, opt("Serve the local cluster's dashboard.", CLUSTER, show_default=True)
    ] = True,
    cluster: Annotated[
        str | None,
        opt(
            "Run the workers as batch jobs with dask-jobqueue on this system: "
            + ", ".join(BATCH_SYSTEMS)
            + ". The scheduler runs in this process; the jobs are cancelled when it ends.",
            HPC,
        ),
    ] = None,
    jobs: Annotated[
        int | None,
        opt("Jobs to submit, each running --cores single-threaded workers (default 1).", HPC),
    ] = None,
    adapt: Annotated[
        str | None,
        opt(
            "Scale between MIN and MAX jobs with the work, instead of --jobs.",
            HPC,
            metavar="MIN:MAX",
        ),
    ] = None,
    cores: Annotated[
        int | None,
        opt(
            "Cores per job, one worker process each (default: from --cluster-config or"
            " your dask config, else 1).",
            HPC,
        ),
    ] = None,
    memory: Annotated[
        str | None,
        opt(
            "Memory per job, e.g. 4GiB (GiB: 2^30 bytes; 4GB is 3.7 GiB). Default: from"
            " --cluster-config or your dask config, else 2GiB per core.",
            HPC,
        ),
    ] = None,
    walltime: Annotated[
        str | None,
        opt("Time limit per job, e.g. 02:00:00 (dask-jobqueue's default: 00:30:00).", HPC),
    ] = None,
    queue: Annotated[str | None, opt("Queue (partition) of the jobs.", HPC)] = None,
    account: Annotated[str | None, opt("Account (project) charged for the jobs.", HPC)] = None,
    interface: Annotated[
        str | None,
        opt("Network interface of the scheduler and workers, e.g. ib0 (lo on one node).", HPC),
    ] = None,
    local_directory: Annotated[
        str | None,
        opt("Workers' scratch folder on the compute node, e.g. '$TMPDIR' (not NFS).", HPC),
    ] = None,
    log_directory: Annotated[
        str | None,
        opt(
            "Folder for the jobs' output (default: .<OUTPUT_FOLDER>.mwr-dask/jobs beside"
            " the output folder, removed after a successful run).",
            HPC,
        ),
    ] = None,
    job_extra: Annotated[
        list[str] | None,
        opt(
            "Extra job directive without its #SBATCH/#PBS/#$ prefix, e.g."
            " --job-extra=--exclusive (repeatable).",
            HPC,
        ),
    ] = None,
    prologue: Annotated[
        list[str] | None,
        opt(
            "Shell line to run in the job before the worker starts, e.g."
            " 'module load fftw' (repeatable).",
            HPC,
        ),
    ] = None,
    cluster_config: Annotated[
        Path | None,
        opt(
            "YAML file of dask-jobqueue settings (jobqueue.<system>: ...); flags override"
            " it, it overrides your dask config. Examples in configs/.",
            HPC,
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
    given = ctx.params
    errors = usage_problems(ctx)
    if tomograms is not None:
        from mwr_dask.cli.dataset import run_dataset

        run_dataset(given, {n for n in given if _given(ctx, n)}, errors)
    source, problems, notes = build_source(ctx)
    errors += problems
    if source is not None:
        errors += source.run_problems(number_volume, start)
    if errors:
        raise fail(" ".join(errors))
    if mode == 2:
        notes += [s.gap_note for s in source.tilt_schemes if s.gap_note is not None]
    for note in [] if quiet else notes:
        typer.echo(f"mwr-dask: note: {note}.", err=True)
    options = cluster_of(given, output_folder, source, quiet)
    folder = output_folder.absolute()
    if dry_run:
        show_plan(folder, source, start, number_volume, options, adopt_seed=seed is None,
                  force=force)  # fmt: skip
    run_and_report(
        folder, source, start, number_volume, options, adopt_seed=seed is None, quiet=quiet,
        overwrite=overwrite, verify=verify, force=force, fsync=fsync, retries=retries,
        worker_timeout=worker_timeout,
    )  # fmt: skip


def _given(ctx: typer.Context, name: str) -> bool:
    """Whether option ``name`` was given (command line or environment), not defaulted."""
    source = ctx.get_parameter_source(name)
    return source is not None and source.name not in ("DEFAULT", "DEFAULT_MAP")


def usage_problems(ctx: typer.Context) -> list[str]:
    """Options that cannot work together, found without reading any file, one sentence each."""
    p = ctx.params
    errors = []
    geometry = [f"--{n}" for n in ("mode", "minangle", "maxangle", "anglestep") if _given(ctx, n)]
    tilt_flags = (
        ("--tilt-file", p["tilt_file"]),
        ("--exclude", p["exclude"] is not None),
        ("--invert-tilts", p["invert_tilts"]),
    )
    tilt_given = [flag for flag, on in tilt_flags if on]
    errors += dataset_problems(p, geometry)
    if p["spectrum"] and len(p["spectrum"]) > 1:
        errors.append(
            f"--spectrum takes one file, not {len(p['spectrum'])}: a folder has one"
            " noise spectrum (for one per tomogram, see --tomograms --measured)."
        )
    elif p["tomograms"] is not None:
        pass
    elif p["spectrum"] and geometry + tilt_given:
        errors.append(
            f"--spectrum defines the noise: {', '.join(geometry + tilt_given)} cannot be given"
            " with it."
        )
    elif p["tilt_file"]:
        ranges = [flag for flag in geometry if flag != "--mode"]
        if ranges:
            errors.append(
                f"give --tilt-file or {'/'.join(ranges)}, not both: the tilt file replaces the"
                " regular range."
            )
        if p["exclude"] is not None and len(p["tilt_file"]) > 1:
            errors.append(
                f"--exclude applies to a single --tilt-file, not to {len(p['tilt_file'])}: the"
                " view numbers of different files differ."
            )
    elif tilt_given:
        errors += needs(tilt_given, "--tilt-file", " and ")
    if p["all_views"] is not None and p["tomograms"] is None and len(p["tilt_file"] or []) != 1:
        errors.append("--all-views applies to a single --tilt-file or to --tomograms.")
    errors += cluster_option_problems(
        p["ncpus"], p["scheduler"], p["scheduler_file"], p["connect_timeout"], p["worker_timeout"]
    )
    if p["retries"] < 0:
        errors.append(f"--retries must be 0 or more, not {p['retries']}.")
    errors += batch_flag_problems(p)
    errors += dose_usage_problems(ctx)
    if p["output_folder"].exists() and not p["output_folder"].is_dir():
        errors.append(f"{p['output_folder']} exists and is not a folder.")
    return errors


def dataset_problems(p: dict, geometry: list[str]) -> list[str]:
    """Options of ``--tomograms`` given without it, or with options it replaces."""
    flags = [
        f"--{n.replace('_', '-')}" for n in ("mix", "only", "exclude_tomograms", "measured") if p[n]
    ]
    if p["tomograms"] is None:
        return needs(flags, "--tomograms")
    replaced = [f"--{n.replace('_', '-')}" for n in ("tilt_file", "exclude", "spectrum") if p[n]]
    replaced += [g for g in geometry if g in ("--minangle", "--maxangle")]
    errors = []
    if replaced:
        errors.append(
            f"--tomograms reads each tomogram's tilts from the dataset: {', '.join(replaced)}"
            " cannot be given with it."
        )
    if p["measured"] and (p["mix"] or "--mode" in geometry or p["filter"] != "none"):
        errors.append(
            "--measured makes each tomogram's noise from its own spectrum: --mix,"
            " --mode and --filter cannot be given with it."
        )
    if p["measured"] and p["dose_weighting"] != "none":
        errors.append("--measured noise has each tomogram's dose in its spectrum already:"
                      " --dose-weighting cannot be given with it.")  # fmt: skip
    return errors


def build_source(ctx: typer.Context):
    """Read the tilt files or the spectrum and make the NoiseSource of the options.

    Returns the source (None if it cannot be made), the problems, one sentence each, and
    notes of what was assumed (the doses of files without). Without ``--seed`` the source
    draws a fresh seed (the run keeps a folder's own instead).
    """
    from mwr_dask.noise.source import NoiseSource

    p = ctx.params
    names = ("cubesize", "mode", "seed", "voxel_size", "filter", "radial", "sirt_iterations")
    fields = {name: p[name] for name in names}
    for name, default in (("minangle", -60.0), ("maxangle", 60.0), ("anglestep", 2.0)):
        fields[name] = default if p[name] is None else p[name]
    notes: list[str] = []
    try:
        if p["spectrum"]:
            from mwr_dask.files.mrc import read_header
            from mwr_dask.noise.measured import spectrum_noise

            path = p["spectrum"][0]
            fields.update(spectrum=spectrum_noise(path), mode=3)
            header_voxel = read_header(path).voxel_size
            if not _given(ctx, "voxel_size") and header_voxel > 0:
                fields["voxel_size"] = float(f"{header_voxel:.6g}")  # float32 in the header
        elif p["tilt_file"]:
            from mwr_dask.noise.tiltfiles import read_tilt_file

            fields["tilt_schemes"] = tuple(
                read_tilt_file(
                    path, exclude=p["exclude"], invert=p["invert_tilts"], all_views=p["all_views"]
                )
                for path in p["tilt_file"]
            )
        fields.update(dose_fields(p, fields, notes))
        return NoiseSource(**fields), [], notes
    except (ValueError, OSError) as err:  # TiltSchemeError and MeasureError are ValueErrors
        return None, [str(err) if str(err).endswith(".") else f"{err}."], notes


def dose_usage_problems(ctx: typer.Context) -> list[str]:
    """Dose-weighting options that cannot work, found without reading any file."""
    p = ctx.params
    names = ("voltage", "dose_per_tilt", "acquisition")
    given = [f"--{name.replace('_', '-')}" for name in names if p[name] is not None]
    if p["dose_weighting"] == "none":
        return needs(given, "--dose-weighting grant-grigorieff or bfactor")
    errors = []
    if p["voltage"] is not None and p["dose_weighting"] == "bfactor":
        errors.append("--voltage applies to --dose-weighting grant-grigorieff, not to bfactor.")
    if not p["spectrum"] and p["tomograms"] is None and not _given(ctx, "voxel_size"):
        errors.append(
            "--dose-weighting needs --voxel-size: the angstroms per voxel of the tomogram the"
            " noise is for (at its binning), which set the frequencies of the weights."
        )
    return errors


def dose_fields(p: dict, fields: dict, notes: list[str]) -> dict:
    """NoiseSource fields of the dose options; files without doses get them (ValueError).

    ``--dose-per-tilt`` gives each view of a tilt file without doses its pre-exposure, in the
    file's order of acquisition or that of ``--acquisition``; the regular range needs both.
    What is assumed goes to ``notes``.
    """
    model, dose, order = p["dose_weighting"], p["dose_per_tilt"], p["acquisition"]
    if model == "none" or p["spectrum"]:
        return {"dose_weighting": model}  # NoiseSource names a problem (no numpy yet)
    from mwr_dask.noise import dose as doses

    if model not in doses.MODELS:
        return {"dose_weighting": model}
    if dose is not None and not (math.isfinite(dose) and dose >= 0):
        raise ValueError(f"--dose-per-tilt must be 0 or more e/A^2, not {dose:g}.")
    if order is not None:
        doses.parse_acquisition(order)  # ValueError: one sentence
    out = {"dose_weighting": model, "voltage": 300.0 if p["voltage"] is None else p["voltage"]}
    schemes = fields.get("tilt_schemes", ())
    if not schemes:
        if dose is None or order is None:
            raise ValueError(
                "dose weighting of the regular range needs --dose-per-tilt and --acquisition"
                " (or a --tilt-file whose views give their doses)."
            )
        from mwr_dask.noise.geometry import tilt_angles

        lo, hi, step = fields["minangle"], fields["maxangle"], fields["anglestep"]
        if lo < hi and 0 < step <= hi - lo:  # else NoiseSource names the range's problem
            out["doses"], note = doses.range_doses(tilt_angles(lo, hi, step).tolist(), dose, order)
            notes.append(f"the regular range {lo:g}..{hi:g}: {note}")
        return out
    missing = [s for s in schemes if doses.file_doses(s) is None]
    unordered = [s for s in missing if any(v.order is None for v in s.views)]
    if dose is not None and not missing:
        raise ValueError("--dose-per-tilt applies to tilt files without doses; these give theirs.")
    if order is not None and not unordered:
        raise ValueError(
            "--acquisition applies to tilt files that give no order of acquisition (.tlt, .aln);"
            " these give theirs."
        )
    if dose is not None:
        schemes = [doses.with_doses(s, dose, order) if s in missing else s for s in schemes]
        notes += [f"{s.name}: {s.notes[-1]}" for s in schemes if s not in fields["tilt_schemes"]]
        out["tilt_schemes"] = tuple(schemes)
    return out
