"""Running what the options describe: the cluster, ``--dry-run``'s plan, the run and its report.

Shared by ``generate-noise`` for one folder and for a dataset (``cli/dataset.py``).
"""

from __future__ import annotations

import time
from pathlib import Path

import typer

from mwr_dask.cli.common import fail, needs

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

#: generate-noise's options that a dataset's :func:`run_and_report` passes on to the run.
RUN_OPTIONS = ("overwrite", "verify", "force", "fsync", "retries", "worker_timeout")


def batch_flag_problems(values: dict) -> list[str]:
    """Batch-cluster options given without --cluster, or with a local/remote cluster's."""
    given = [name for name in BATCH_FLAGS if values[name] not in (None, [], ())]
    if values["cluster"] is None:
        return needs([f"--{name.replace('_', '-')}" for name in given], "--cluster")
    errors = []
    if values["scheduler"] or values["scheduler_file"]:
        errors.append("give --cluster or --scheduler/--scheduler-file, not both.")
    if values["ncpus"] is not None:
        errors.append("--ncpus sets the local cluster; with --cluster give --jobs, --cores.")
    return errors


def cluster_of(values: dict, output_folder: Path, source, quiet: bool):
    """Return the cluster the options describe, checked against a volume's memory (exit 2)."""
    from mwr_dask.parallel.clusters import UsageError, make_cluster

    errors: list[str] = []
    hpc = batch_cluster(values, output_folder, errors)
    ncpus = values["ncpus"]
    if ncpus is not None and hpc is None and not (values["scheduler"] or values["scheduler_file"]):
        from mwr_dask.parallel.cores import local_workers

        ncpus, warning = local_workers(ncpus)  # no more workers than usable cores
        if warning and not quiet:
            typer.echo(warning, err=True)
    if not errors:
        try:
            options = make_cluster(
                scheduler=values["scheduler"],
                scheduler_file=values["scheduler_file"],
                ncpus=ncpus,
                dashboard_address=values["dashboard_address"] if values["dashboard"] else None,
                connect_timeout=values["connect_timeout"],
                batch=hpc,
            )
        except UsageError as err:
            errors.append(str(err))
        else:
            errors += options.memory_problems(source)
    if errors:
        raise fail(" ".join(errors))
    return options


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
    from mwr_dask.noise.dose import describe
    from mwr_dask.noise.generators import cost_note
    from mwr_dask.parallel.plan import describe_plan
    from mwr_dask.parallel.run import plan_source

    try:
        source, existing = plan_source(folder, source, adopt_seed=adopt_seed, force=force)
    except FolderError as err:
        raise fail(str(err)) from None
    fresh = adopt_seed and existing.recorded is None
    typer.echo(
        describe_plan(source, start, count, folder, existing.indices, options, fresh_seed=fresh)
    )
    note = cost_note(source.cubesize, source.mode)
    if note:
        typer.echo(note)
    dosed = source.dose_weighting != "none"
    if dosed and not source.tilt_schemes:
        typer.echo(f"regular range {source.tilt}:\n{describe(source.dose_weights(0))}")
    if source.tilt_schemes:
        for i, scheme in enumerate(source.tilt_schemes):
            typer.echo(scheme.describe())
            if dosed:
                typer.echo(describe(source.dose_weights(i)))
        k = len(source.tilt_schemes)
        typer.echo(
            f"Cached per worker: {source.cached_bytes() / 2**20:.1f} MiB for the {k}"
            f" scheme{'s' * (k != 1)} (mode {source.mode}:"
            f" {'operators' if source.mode == 1 else 'masks'} and scratch, built once per"
            " scheme on first use)"
        )
    raise typer.Exit(0)


def reporters(quiet: bool):
    """Return ``say`` (stdout lines) and ``warn`` (stderr warnings); both silent when quiet."""

    def warn(line: str) -> None:
        if not quiet:
            typer.echo(f"mwr-dask: warning: {line}", err=True)

    return (lambda line: None) if quiet else typer.echo, warn


def run_and_report(folder: Path, source, start: int, count: int, options, *, quiet, **run):
    """Run :func:`mwr_dask.parallel.run.generate` with progress and report; exit 1 on failures."""
    from mwr_dask.cli.progress import Progress
    from mwr_dask.cli.signals import Interrupted, signals_raise
    from mwr_dask.files.folder import FolderError
    from mwr_dask.parallel.clusters import ClusterError
    from mwr_dask.parallel.pipeline import RunResult
    from mwr_dask.parallel.run import complete_count, generate

    say, warn = reporters(quiet)
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
    more = result.failed - len(result.errors) - sum(hi - lo + 1 for lo, hi, _ in result.crashed)
    if more > 0:  # the run keeps a few errors (pipeline.KEPT_ERRORS)
        typer.echo(f"mwr-dask: error: {more} more volume{'s' * (more != 1)} failed.", err=True)
    if result.stopped:
        typer.echo(
            "mwr-dask: error: stopped early: no more volumes can be written to the output"
            " folder (see the error above); no partial file was left.",
            err=True,
        )
