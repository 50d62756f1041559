"""``mwr-dask inspect``: check a noise folder, or estimate one tomogram's tilt range."""

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
    arg,
    cluster_option_problems,
    fail,
    opt,
    plot_problems,
)
from mwr_dask.parallel.cores import local_workers


def inspect(
    folder: Annotated[
        Path,
        arg(
            "Noise folder to check (IsoNet's --noise_dir), or one tomogram (an MRC file)"
            " whose tilt range to estimate from its spectrum."
        ),
    ],
    tilt_file: Annotated[
        Path | None,
        opt(
            "With a tomogram: the tilt file it was reconstructed from; says whether its"
            " scheme as read or inverted (--invert-tilts) puts the wedge where the tomogram"
            " has it."
        ),
    ] = None,
    plot: Annotated[
        Path | None,
        opt(
            "Write a PNG of the averaged spectrum: kx-kz section with the wedge, angular"
            " and radial profiles (needs matplotlib, the 'plot' extra of mwr-dask).",
            metavar="PNG",
        ),
    ] = None,
    json_output: Annotated[
        bool, typer.Option("--json", help="Print the report as JSON (for scripts).")
    ] = False,
    spectrum: Annotated[
        Path | None,
        opt(
            "Compare the folder's averaged spectrum with this measured spectrum (from"
            " 'mwr-dask measure-noise'), bin by bin, within its statistical error.",
            metavar="SPECTRUM",
        ),
    ] = None,
    ncpus: NcpusOption = None,
    scheduler: SchedulerOption = None,
    scheduler_file: SchedulerFileOption = None,
    connect_timeout: ConnectTimeoutOption = 10.0,
    worker_timeout: WorkerTimeoutOption = 60.0,
) -> None:
    """Check a noise folder: every volume readable, one cube size, no duplicates, the wedge.

    Exit status: 0 all is well; 1 broken, duplicated or inconsistent files; 2 bad input.
    """
    if folder.is_file():
        inspect_tomogram(folder, tilt_file, json_output, plot, spectrum)
        return
    if (folder / "tomograms_noise.star").is_file() and tilt_file is None:  # OUT of --tomograms
        from mwr_dask.cli.dataset import inspect_dataset_command

        inspect_dataset_command(folder, json_output, dict(
            ncpus=ncpus, scheduler=scheduler, scheduler_file=scheduler_file, plot=plot,
            spectrum=spectrum, connect_timeout=connect_timeout, worker_timeout=worker_timeout,
        ))  # fmt: skip
    errors = cluster_option_problems(
        ncpus, scheduler, scheduler_file, connect_timeout, worker_timeout
    )
    errors += folder_problems(folder, tilt_file, plot, spectrum)
    inputs = {} if errors else read_inputs(spectrum, errors)
    if errors:
        raise fail(" ".join(errors))
    if ncpus is not None and not (scheduler or scheduler_file):
        ncpus, warning = local_workers(ncpus)  # no more workers than usable cores
        if warning:
            typer.echo(warning, err=True)
    from mwr_dask.parallel.clusters import UsageError, make_cluster

    try:  # no dashboard: a short read-only run (a remote cluster keeps its own)
        options = make_cluster(
            scheduler=scheduler,
            scheduler_file=scheduler_file,
            ncpus=ncpus,
            dashboard_address=None,
            connect_timeout=connect_timeout,
        )
    except UsageError as err:
        raise fail(str(err)) from None
    t0 = time.perf_counter()
    report, threads = run_on_cluster(
        folder.absolute(), options, worker_timeout, json_output, inputs
    )
    wall = time.perf_counter() - t0
    drawn = write_plot(plot, report)
    if json_output:
        from mwr_dask.inspection import render_json

        plotted = str(plot) if drawn else None
        typer.echo(
            render_json(report, seconds=round(wall, 3), worker_threads=threads, plot=plotted)
        )
    else:
        from mwr_dask.inspection import render_text
        from mwr_dask.inspection.words import plural

        timing = (
            f"{plural(report.summary['count'], 'volume')} read in {wall:.1f} s by"
            f" {plural(threads, 'worker thread')} of"
            f" {'a remote' if options.remote else 'a local'} cluster (its start included)"
        )
        typer.echo(render_text(report, timing + (f"; plot written to {plot}" if drawn else "")))
    if not report.ok:
        raise typer.Exit(1)


def folder_problems(
    folder: Path, tilt_file: Path | None, plot: Path | None, spectrum: Path | None
) -> list[str]:
    """Usage errors of ``inspect FOLDER``, one sentence each."""
    errors = []
    if tilt_file is not None:
        errors.append("--tilt-file applies to a tomogram (an MRC file), not to a noise folder.")
    if not folder.exists():
        errors.append(f"{folder} does not exist.")
    elif not folder.is_dir():
        errors.append(f"{folder} is not a folder.")
    elif not os.access(folder, os.R_OK | os.X_OK):
        errors.append(f"{folder} is not readable.")
    errors += plot_problems(plot, {"--spectrum": spectrum})
    if plot is not None and folder.is_dir():
        from mwr_dask.inspection.plot import inside

        if inside(plot, folder):
            errors.append(
                f"--plot {plot} lies inside the noise folder {folder}, where training would"
                " open it as a volume: write it elsewhere."
            )
    return errors


def read_inputs(spectrum: Path | None, errors: list[str]) -> dict:
    """Read what the folder is compared with (``--spectrum``); problems go to ``errors``."""
    if spectrum is None:
        return {}
    from mwr_dask.noise.measured import MeasureError, read_spectrum

    try:
        array, digest = read_spectrum(spectrum)
    except MeasureError as err:
        errors.append(str(err))
        return {}
    return {"spectrum": {"array": array, "digest": digest, "name": spectrum.name}}


def run_on_cluster(folder: Path, options, worker_timeout: float, quiet: bool, inputs: dict):
    """Inspect ``folder`` on the cluster of ``options``: (the report, worker threads)."""
    from mwr_dask.cli.progress import Progress
    from mwr_dask.cli.signals import Interrupted, signals_raise
    from mwr_dask.inspection import inspect_folder, workers_missing_folder
    from mwr_dask.parallel.clusters import ClusterError, wait_for_workers

    def warn(line: str) -> None:
        typer.echo(f"mwr-dask: warning: {line}", err=True)

    bar: list[Progress] = []

    def progress(done: int, total: int) -> None:
        if not bar:  # created when reading starts, after the cluster is up
            bar.append(Progress(total, quiet=quiet or not total, stream=sys.stderr))
        if done:
            bar[0].update(done)

    try:
        with signals_raise(), options.client(warn=warn) as client:
            threads = wait_for_workers(client, worker_timeout)
            if options.remote:
                options.check(client)  # package versions, and workers that join later
                problems = workers_missing_folder(client, folder)
                if problems:
                    raise ClusterError(
                        "; ".join(problems[:4])
                        + ". Workers need the same versions as this client and the folder at"
                        " the same path."
                    )
            report = inspect_folder(
                folder, client, workers=threads, on_progress=progress, inputs=inputs
            )
    except Interrupted as stop:
        raise fail(f"stopped by {stop}.", stop.exit_code) from None
    except ClusterError as err:
        raise fail(str(err), 1) from None
    except OSError as err:
        raise fail(f"cannot read {err.filename or folder}: {err.strerror or err}.") from None
    return report, threads


def write_plot(plot: Path | None, report) -> bool:
    """Draw the report's spectrum into ``plot``; False when there is none to draw."""
    if plot is None:
        return False
    from mwr_dask.inspection.plot import can_plot, plot_report

    if not can_plot(report):
        typer.echo("mwr-dask: warning: no spectrum analysed, no plot written.", err=True)
        return False
    try:
        plot_report(report, plot)
    except OSError as err:
        raise fail(f"cannot write {plot}: {err.strerror or err}.") from None
    return True


def inspect_tomogram(
    path: Path, tilt_file: Path | None, json_output: bool, plot: Path | None, spectrum=None
) -> None:
    """Estimate one tomogram's tilt range; compare it with a tilt file's scheme if given.

    Exit status: 0 a wedge was found (and the scheme, as read, agrees); 1 no wedge, or the
    scheme agrees only inverted or not at all; 2 bad input.
    """
    import json

    from mwr_dask.inspection.tomogram import tomogram_spectrum
    from mwr_dask.noise.measured import MeasureError

    errors = plot_problems(plot, {"the tomogram": path, "--tilt-file": tilt_file})
    if spectrum is not None:
        errors.append("--spectrum applies to a noise folder, not to a tomogram.")
    if errors:
        raise fail(" ".join(errors))
    scheme = None
    if tilt_file is not None:
        from mwr_dask.noise.schemes import TiltSchemeError
        from mwr_dask.noise.tiltfiles import read_tilt_file

        try:
            scheme = read_tilt_file(tilt_file)
        except TiltSchemeError as err:
            raise fail(str(err)) from None
    try:
        result = tomogram_spectrum(path)
    except MeasureError as err:
        raise fail(f"{path} is not a folder, and not a tomogram to inspect: {err}") from None
    ok, lines, out = tomogram_report(result, scheme, tilt_file)
    out["plot"] = str(plot) if plot is not None and draw_tomogram(result, scheme, plot) else None
    if out["plot"] is not None:  # before the verdict
        lines.insert(len(lines) - lines[-1].startswith(("problem:", "OK:")), f"Plot        {plot}")
    typer.echo(json.dumps({**out, "ok": ok}, indent=2) if json_output else "\n".join(lines))
    if not ok:
        raise typer.Exit(1)


def tomogram_report(result, scheme, tilt_file: Path | None) -> tuple[bool, list[str], dict]:
    """Whether a tomogram passes, its report's lines for people, and its JSON-ready numbers."""
    a = result.analysis
    nz, ny, nx = result.shape
    out: dict = {
        "tomogram": result.path,
        "shape_zyx": list(result.shape),
        "grid": result.side,
        "blocks": result.blocks,
        "left_out": result.left_out,
        "spectrum": a.summary(),
        "tilt_file": None,
    }
    lines = [
        f"Tomogram    {result.path}, {nz} x {ny} x {nx} voxels (z, y, x)",
        f"Spectrum    {result.blocks} blocks of {result.side} x {min(ny, 32)} x {result.side}"
        f" (z, y, x; Hann window in z and x) averaged, radii {a.band[0]:.1f}..{a.band[1]:.1f}"
        + (f"; {result.left_out}" if result.left_out else ""),
    ]
    if a.limit is not None:
        return False, [*lines, f"problem: {a.limit}."], out
    if not a.wedge_found:
        return False, [*lines, "problem: no missing wedge in the kx-kz plane (is the tilt axis y"
                       " and the beam z, as IsoNet reads the volume?)."], out  # fmt: skip
    (lo, hi), (u_lo, u_hi) = a.tilt_range, a.tilt_uncertainty
    lines.append(
        f"  tilt range  {lo:.1f} .. {hi:.1f} deg (resolution {u_lo:.1f}, {u_hi:.1f}) in"
        " mwr-dask's geometry (docs/concepts.md): the range its noise should have"
    )
    if scheme is None:
        return True, lines, out
    ok, verdict, out["tilt_file"] = scheme_verdict(a, scheme, tilt_file)
    lines.append(
        f"Tilt file   {tilt_file}: {scheme.minangle:g} .. {scheme.maxangle:g} deg as"
        f" read (edges off by {out['tilt_file']['off']:g} deg), {-scheme.maxangle:g} .."
        f" {-scheme.minangle:g} inverted (off by {out['tilt_file']['off_inverted']:g} deg)"
    )
    return ok, [*lines, verdict], out


def scheme_verdict(a, scheme, tilt_file: Path) -> tuple[bool, str, dict]:
    """Compare the tomogram's wedge with the tilt file's: (as read agrees, the verdict, JSON).

    The verdict is one line: OK, use ``--invert-tilts``, or neither matches.
    """
    from mwr_dask.inspection.spectrum import TILT_SLACK_DEG
    from mwr_dask.inspection.tomogram import compare_with_scheme

    cmp = compare_with_scheme(a, scheme)
    info = {"path": str(tilt_file), "label": scheme.label, **cmp}
    if cmp["matches"] == "as read":
        return True, "OK: the tilt file as read puts the wedge where the tomogram has it.", info
    if cmp["matches"] == "inverted":
        verdict = (
            "problem: the tilt file puts the wedge on the other side: generate the noise with"
            " --invert-tilts."
        )
        return False, verdict, info
    (u_lo, u_hi), (lo, hi) = a.tilt_uncertainty, a.tilt_range
    verdict = (
        "problem: neither the tilt file as read nor inverted puts the wedge where the tomogram"
        f" has it (each edge within its resolution + {TILT_SLACK_DEG:g} deg, here"
        f" {u_lo + TILT_SLACK_DEG:.1f} and {u_hi + TILT_SLACK_DEG:.1f}): is it this"
        f" tomogram's file, with its exclusions? The noise should have tilts {lo:.0f} .."
        f" {hi:.0f}."
    )
    return False, verdict, info


def draw_tomogram(result, scheme, plot: Path) -> bool:
    """Draw a tomogram's spectrum into ``plot`` (the tilt file's range as read, if given)."""
    from mwr_dask.inspection.plot import Expected, plot_analysis
    from mwr_dask.inspection.tomogram import scheme_edges

    if result.analysis.limit is not None:
        typer.echo("mwr-dask: warning: no spectrum analysed, no plot written.", err=True)
        return False
    expected = None
    if scheme is not None:
        text = f"tilt file {scheme.minangle:g}..{scheme.maxangle:g} as read"
        expected = Expected(text, scheme_edges(scheme.angles))
    n, height = result.side, min(result.shape[1], 32)
    title = f"{Path(result.path).name}: spectrum of {result.blocks} blocks of {n} x {height} x {n}"
    try:
        plot_analysis(result.analysis, plot, title, expected)
    except OSError as err:
        raise fail(f"cannot write {plot}: {err.strerror or err}.") from None
    return True
