"""``mwr-dask measure-noise``: the noise spectrum of a pair of even/odd half tomograms."""

from __future__ import annotations

import os
import uuid
from pathlib import Path
from typing import Annotated

import typer

from mwr_dask.cli.common import arg, fail, opt, plot_problems


def measure_noise(
    even: Annotated[Path, arg("Half tomogram of the even movie frames (MRC).")],
    odd: Annotated[Path, arg("Half tomogram of the odd movie frames (MRC).")],
    spectrum: Annotated[
        Path, arg("MRC file to write the noise power spectrum to (replaced if it exists).")
    ],
    cubesize: Annotated[
        int,
        opt(
            "Cube side in voxels: the grid of the spectrum, the CUBESIZE of the noise"
            " volumes made from it (the training --cube_size)."
        ),
    ],
    mask: Annotated[
        Path | None,
        opt("MRC volume of the halves' shape: cubes are taken only where it is non-zero."),
    ] = None,
    cubes: Annotated[
        int | None,
        opt(
            "Number of cubes averaged (the error per Fourier pixel is about"
            " 1/sqrt(CUBES)). Default: every usable cube, at most 400."
        ),
    ] = None,
    seed: Annotated[
        int,
        typer.Option(help="Seed of the choice of cubes when more fit than are used."),
    ] = 0,
    plot: Annotated[
        Path | None,
        opt(
            "Write a PNG of the spectrum: kx-kz and kx-ky views and radial profiles"
            " (needs matplotlib, the 'plot' extra of mwr-dask).",
            metavar="PNG",
        ),
    ] = None,
    quiet: Annotated[bool, typer.Option("--quiet", "-q", help="Print errors only.")] = False,
) -> None:
    """Measure the noise power spectrum of ODD - EVEN on the grid of a CUBESIZE^3 cube.

    The halves must be reconstructed from the even and the odd movie frames (not from the
    even and odd tilts): their difference then holds noise only. Write noise volumes with
    this spectrum with 'mwr-dask generate-noise OUT COUNT N --spectrum SPECTRUM'.
    """
    from mwr_dask.noise import measured as m
    from mwr_dask.parallel.cores import usable_cores

    errors = usage_problems(even, odd, spectrum, cubesize, mask, cubes, seed, plot)
    if errors:
        raise fail(" ".join(errors))
    try:
        result = m.measure_noise(
            even, odd, cubesize, mask_path=mask, cubes=cubes, seed=seed, workers=usable_cores()
        )
    except m.MeasureError as err:
        raise fail(str(err)) from None
    for note in result.warnings:
        typer.echo(f"mwr-dask: warning: {note}", err=True)
    digest = write_outputs(result, spectrum, plot)
    if not quiet:
        typer.echo(describe(result, spectrum, digest))
        if plot is not None:
            typer.echo(f"Plot written to {plot}")


def usage_problems(
    even: Path,
    odd: Path,
    spectrum: Path,
    cubesize: int,
    mask: Path | None,
    cubes: int | None,
    seed: int,
    plot: Path | None = None,
) -> list[str]:
    """Usage errors of ``measure-noise``, one sentence each."""
    from mwr_dask.noise import measured as m

    errors = []
    for name, path in (("EVEN", even), ("ODD", odd), ("--mask", mask)):
        if path is not None and not path.is_file():
            errors.append(f"{name} {path} is not a file.")
    if cubesize < m.MIN_CUBESIZE:
        errors.append(f"--cubesize must be at least {m.MIN_CUBESIZE}, not {cubesize}.")
    if cubes is not None and cubes < m.MIN_CUBES:
        errors.append(f"--cubes must be at least {m.MIN_CUBES}, not {cubes}.")
    if seed < 0:
        errors.append(f"--seed must be 0 or more, not {seed}.")
    out = spectrum.absolute()
    if out.is_dir():
        errors.append(f"SPECTRUM {spectrum} is a folder.")
    elif not out.parent.is_dir():
        errors.append(f"cannot write {spectrum}: {out.parent} is not a folder.")
    elif out.exists() and any(
        p is not None and p.is_file() and p.samefile(out) for p in (even, odd, mask)
    ):
        errors.append(f"SPECTRUM {spectrum} is one of the inputs.")
    files = {"EVEN": even, "ODD": odd, "--mask": mask, "SPECTRUM": spectrum}
    return errors + plot_problems(plot, files)


def write_outputs(result, spectrum: Path, plot: Path | None) -> str:
    """Write the spectrum file (and the plot) of ``result``; return the spectrum's digest.

    The plot is drawn first and renamed into place after the spectrum: nothing is left on
    error.
    """
    from mwr_dask.files.mrc import write_spectrum
    from mwr_dask.inspection.plot import plot_spectrum

    plot_tmp = None
    try:
        if plot is not None:
            plot_tmp = plot.absolute().parent / f".{plot.name}.{uuid.uuid4().hex[:8]}.tmp"
            plot_spectrum(
                result.spectrum,
                plot_tmp,
                f"{spectrum.name}: noise of {result.odd.name} - {result.even.name},"
                f" {result.cubes} cubes of {result.cubesize}^3",
            )
        out = spectrum.absolute()
        digest = write_spectrum(out, result.spectrum, result.labels(), result.voxel_size)
        if plot_tmp is not None:
            os.replace(plot_tmp, plot)
            plot_tmp = None
    except OSError as err:
        raise fail(f"cannot write {err.filename or spectrum}: {err.strerror or err}.") from None
    finally:
        if plot_tmp is not None:
            plot_tmp.unlink(missing_ok=True)
    return digest


def describe(result, path: Path, digest: str) -> str:
    """Describe what was measured, in a few lines for people."""
    from mwr_dask.inspection.measured import kxkz_half_sum
    from mwr_dask.inspection.spectrum import analyse

    n = result.cubesize
    lines = [
        f"Wrote {path} ({n}^3, digest {digest}) from {result.cubes} cubes of the"
        f" {result.usable} usable (error per Fourier pixel about"
        f" {100 / result.cubes**0.5:.0f} %).",
        f"Noise std / std of (EVEN + ODD) / 2 in the cubes: {result.noise_ratio:.3f}.",
    ]
    a = analyse(kxkz_half_sum(result.spectrum), n, 1)
    if a.wedge_found and a.tilt_range is not None:
        lo, hi = a.tilt_range
        lines.append(
            f"Missing wedge: tilts about {lo:.0f} .. {hi:.0f} deg (power in the wedge"
            f" {a.wedge_ratio:.3f} of the measured region)."
        )
    else:
        lines.append("No missing wedge found in the spectrum.")
    return "\n".join(lines)
