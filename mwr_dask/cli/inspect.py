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
    plot_problems,
)
from mwr_dask.parallel.cores import local_workers


def inspect(
    folder: Annotated[
        Path,
        typer.Argument(
            help="Noise folder to check (IsoNet's --noise_dir), or one tomogram (an MRC file)"
            " whose tilt range to estimate from its spectrum.",
            show_default=False,
        ),
    ],
    tilt_file: Annotated[
        Path | None,
        typer.Option(
            help="With a tomogram: the tilt file it was reconstructed from; says whether its"
            " scheme as read or inverted (--invert-tilts) puts the wedge where the tomogram"
            " has it.",
            show_default=False,
        ),
    ] = None,
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
    spectrum: Annotated[
        Path | None,
        typer.Option(
            help="Compare the folder's averaged spectrum with this measured spectrum (from"
            " 'mwr-dask measure-noise'), bin by bin, within its statistical error.",
            show_default=False,
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
        inspect_tomogram(folder, tilt_file, json_output)
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
    if tilt_file is not None:
        errors.append("--tilt-file applies to a tomogram (an MRC file), not to a noise folder.")
    if not folder.exists():
        errors.append(f"{folder} does not exist.")
    elif not folder.is_dir():
        errors.append(f"{folder} is not a folder.")
    elif not os.access(folder, os.R_OK | os.X_OK):
        errors.append(f"{folder} is not readable.")
    errors += plot_problems(plot)
    if plot is not None and plot.absolute().parent.is_dir():
        from mwr_dask.inspection.plot import inside

        if folder.is_dir() and inside(plot, folder):
            errors.append(
                f"--plot {plot} lies inside the noise folder {folder}, where training would"
                " open it as a volume: write it elsewhere."
            )
    inputs = {}
    if spectrum is not None and not errors:
        from mwr_dask.noise.measured import MeasureError, read_spectrum

        try:
            array, digest = read_spectrum(spectrum)
        except MeasureError as err:
            errors.append(str(err))
        else:
            inputs["spectrum"] = {"array": array, "digest": digest, "name": spectrum.name}
    if errors:
        raise fail(" ".join(errors))
    if ncpus is not None and not (scheduler or scheduler_file):
        ncpus, warning = local_workers(ncpus)  # no more workers than usable cores
        if warning:
            typer.echo(warning, err=True)
    # no dashboard: a short read-only run (a remote cluster keeps its own)
    from mwr_dask.cli.progress import Progress
    from mwr_dask.cli.signals import Interrupted, signals_raise
    from mwr_dask.parallel.clusters import ClusterError, UsageError, make_cluster, wait_for_workers

    try:
        options = make_cluster(
            scheduler=scheduler,
            scheduler_file=scheduler_file,
            ncpus=ncpus,
            dashboard_address=None,
            connect_timeout=connect_timeout,
        )
    except UsageError as err:
        raise fail(str(err)) from None

    def warn(line: str) -> None:
        typer.echo(f"mwr-dask: warning: {line}", err=True)

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
            count = len(list_volumes(folder))
            progress = Progress(count, quiet=json_output or not count, stream=sys.stderr)
            report = inspect_folder(
                folder,
                client,
                workers=threads,
                on_progress=lambda done, _: progress.update(done),
                inputs=inputs,
            )
    except Interrupted as stop:
        raise fail(f"stopped by {stop}.", stop.exit_code) from None
    except ClusterError as err:
        raise fail(str(err), 1) from None
    except OSError as err:
        raise fail(f"cannot read {err.filename or folder}: {err.strerror or err}.") from None
    wall = time.perf_counter() - t0
    from mwr_dask.inspection.plot import can_plot

    drawn = plot is not None and can_plot(report)
    if plot is not None:
        if not drawn:
            typer.echo("mwr-dask: warning: no spectrum analysed, no plot written.", err=True)
        else:
            from mwr_dask.inspection.plot import plot_report

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


def inspect_tomogram(path: Path, tilt_file: Path | None, json_output: bool) -> None:
    """Estimate one tomogram's tilt range; compare it with a tilt file's scheme if given.

    Exit status: 0 a wedge was found (and the scheme, as read, agrees); 1 no wedge, or the
    scheme agrees only inverted or not at all; 2 bad input.
    """
    import json

    from mwr_dask.inspection.tomogram import compare_with_scheme, tomogram_spectrum

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
    except ValueError as err:
        raise fail(f"{path} is not a folder, and not a tomogram to inspect: {err}.") from None
    except OSError as err:
        raise fail(f"cannot read {path}: {err.strerror or err}.") from None
    a = result.analysis
    nz, ny, nx = result.shape
    out: dict = {
        "tomogram": str(path),
        "shape_zyx": list(result.shape),
        "grid": result.side,
        "blocks": result.blocks,
        "spectrum": a.summary(),
        "tilt_file": None,
    }
    lines = [
        f"Tomogram    {path}, {nz} x {ny} x {nx} voxels (z, y, x)",
        f"Spectrum    {result.blocks} blocks of {result.side} x {min(ny, 32)} x {result.side}"
        f" (z, y, x; Hann window in z and x) averaged, radii {a.band[0]:.1f}..{a.band[1]:.1f}",
    ]
    ok = a.wedge_found and a.limit is None
    if a.limit is not None:
        lines.append(f"problem: {a.limit}.")
    elif not a.wedge_found:
        lines.append(
            "problem: no missing wedge in the kx-kz plane (is the tilt axis y and the beam z,"
            " as IsoNet reads the volume?)."
        )
    else:
        lo, hi = a.tilt_range
        u_lo, u_hi = a.tilt_uncertainty
        lines.append(
            f"  tilt range  {lo:.1f} .. {hi:.1f} deg (resolution {u_lo:.1f}, {u_hi:.1f}) in"
            " mwr-dask's geometry (docs/concepts.md): the range its noise should have"
        )
        if scheme is not None:
            cmp = compare_with_scheme((lo, hi), scheme)
            out["tilt_file"] = {"path": str(tilt_file), "label": scheme.label, **cmp}
            lines.append(
                f"Tilt file   {tilt_file}: {scheme.minangle:g} .. {scheme.maxangle:g} deg as"
                f" read (edges off by {cmp['off']:g} deg), {-scheme.maxangle:g} .."
                f" {-scheme.minangle:g} inverted (off by {cmp['off_inverted']:g} deg)"
            )
            if cmp["better"] == "as read":
                lines.append("OK: the tilt file as read puts the wedge where the tomogram has it.")
            else:
                ok = False
                lines.append(
                    "problem: the tilt file puts the wedge on the other side: generate the"
                    " noise with --invert-tilts."
                )
    if json_output:
        out["ok"] = bool(ok)
        typer.echo(json.dumps(out, indent=2))
    else:
        typer.echo("\n".join(lines))
    if not ok:
        raise typer.Exit(1)
