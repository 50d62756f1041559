"""Command-line interface: parse, validate, call the library, report.

One module per command; options shared by several commands are declared once in
:mod:`mwr_dask.cli.common`.
"""

from __future__ import annotations

import contextlib
import logging
import os
import sys
from typing import Annotated

import typer

from mwr_dask import __version__
from mwr_dask.cli.generate import generate_noise
from mwr_dask.cli.inspect import inspect
from mwr_dask.cli.measure import measure_noise

app = typer.Typer(
    name="mwr-dask",
    help="Missing-wedge noise volumes for IsoNet/MWR training, generated in parallel with Dask.",
    add_completion=False,
    no_args_is_help=True,
    pretty_exceptions_enable=False,
    rich_markup_mode=None,
)


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


app.command("generate-noise")(generate_noise)
app.command("generate_noise", hidden=True)(generate_noise)

app.command("inspect")(inspect)
app.command("measure-noise")(measure_noise)


def _is_usage_error(err: BaseException) -> bool:
    """Whether ``err`` is click's usage error (typer re-exports no class for it).

    Click's usage errors carry ``exit_code`` 2 and ``format_message``; typer may vendor click,
    so the class is recognised by what it does, not imported from a private module.
    """
    return getattr(err, "exit_code", None) == 2 and callable(getattr(err, "format_message", None))


def main() -> None:
    """Console-script entry point: usage errors are one line on stderr and exit code 2.

    A command that ended (whatever its exit code) has closed its cluster, files and folders;
    the process then exits without tearing the interpreter down (``os._exit``, after flushing
    its output and logs): freeing every module of numpy, scipy, Dask and bokeh took 0.45-0.6 s,
    a tenth of a run of 1000 volumes of 64^3 on 2 cores (docs/benchmarks.md). Exceptions that
    escape (a bug) leave the usual way, with their traceback.
    """
    try:
        _command()
    except SystemExit as done:
        code = done.code if isinstance(done.code, int) else 0 if done.code is None else 1
        if isinstance(done.code, str):
            print(done.code, file=sys.stderr)
        logging.shutdown()
        for stream in (sys.stdout, sys.stderr):
            with contextlib.suppress(OSError, ValueError):  # a closed pipe, a closed stream
                stream.flush()
        os._exit(code)


def _command() -> None:
    """Run the command line; always ends in SystemExit with the exit code."""
    try:
        code = app(standalone_mode=False)
    except typer.Abort:
        typer.echo("mwr-dask: aborted.", err=True)
        raise SystemExit(1) from None
    except Exception as err:
        if not _is_usage_error(err):
            raise
        ctx = getattr(err, "ctx", None)
        if type(err).__name__ == "NoArgsIsHelpError":
            typer.echo(ctx.get_help() if ctx else str(err))
            raise SystemExit(0) from None
        command = ctx.command_path if ctx else "mwr-dask"
        message = " ".join(err.format_message().split()).rstrip(".")
        typer.echo(f"mwr-dask: error: {message} (see '{command} --help').", err=True)
        raise SystemExit(2) from None
    raise SystemExit(code if isinstance(code, int) else 0)
