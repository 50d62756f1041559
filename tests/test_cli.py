"""The command line: through typer's CliRunner and through the real console script."""

import os
import re
import shutil

import mrcfile
import numpy as np
import pytest
from typer.testing import CliRunner

from mwr_dask import __version__
from mwr_dask.cli import app
from mwr_dask.noise.source import source_from_labels

from .helpers import assert_only_volumes, cli, read_all

runner = CliRunner()
FAST = ["--ncpus", "2", "--no-dashboard", "--anglestep", "6"]


def labels_of(path):
    with mrcfile.open(path, header_only=True) as m:
        return [lab.decode() for lab in m.header.label[: m.header.nlabl]]


def test_version():
    result = runner.invoke(app, ["--version"])
    assert result.exit_code == 0 and __version__ in result.stdout


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["0", "16"], "NUMBER_VOLUME must be at least 1"),
        (["3", "1"], "CUBESIZE must be at least 2"),
        (["3", "16", "--mode", "3"], "--mode must be 1"),
        (["3", "16", "--minangle", "-95"], "strictly between -90 and 90"),
        (["3", "16", "--maxangle", "90"], "strictly between -90 and 90"),
        (["3", "16", "--minangle", "30", "--maxangle", "20"], "must be smaller than --maxangle"),
        (["3", "16", "--anglestep", "0"], "--anglestep must be positive"),
        (["3", "16", "--anglestep", "150"], "wider than the tilt range"),
        (["3", "16", "--start", "-1"], "--start must be 0 or more"),
        (["3", "16", "--ncpus", "0"], "--ncpus must be at least 1"),
        (["3", "16", "--voxel-size", "0"], "--voxel-size must be positive"),
    ],
)
def test_bad_input_is_one_sentence_exit_2_nothing_written(tmp_path, args, message):
    out = tmp_path / "noise"
    result = runner.invoke(app, ["generate-noise", str(out), *args])
    assert result.exit_code == 2, result.output
    assert message in result.output
    assert "Traceback" not in result.output
    assert not out.exists()


def test_output_path_that_is_a_file(tmp_path):
    f = tmp_path / "file"
    f.write_text("x")
    result = runner.invoke(app, ["generate-noise", str(f), "2", "8"])
    assert result.exit_code == 2 and "is not a folder" in result.output


@pytest.mark.slow
def test_seed_is_recorded_and_reused_when_appending(tmp_path):
    out = tmp_path / "noise"
    first = runner.invoke(app, ["generate-noise", str(out), "3", "12", *FAST])
    assert first.exit_code == 0, first.output
    seed = int(re.search(r"seed (\d+)", first.output).group(1))
    assert source_from_labels(labels_of(out / "n_00000.mrc")).seed == seed
    # the underscore spelling of the seed's command line, appending without --seed
    second = runner.invoke(app, ["generate_noise", str(out), "2", "12", "--start", "3", *FAST])
    assert second.exit_code == 0, second.output
    assert f"seed {seed}" in second.output
    assert_only_volumes(out, range(5))
    # the same five volumes in one run with the seed given
    again = tmp_path / "again"
    third = runner.invoke(
        app, ["generate-noise", str(again), "5", "12", "--seed", str(seed), *FAST]
    )
    assert third.exit_code == 0, third.output
    a, b = read_all(out), read_all(again)
    for name in a:
        np.testing.assert_array_equal(a[name], b[name])


@pytest.mark.slow
def test_conflicting_append_is_refused_unless_forced(tmp_path):
    out = tmp_path / "noise"
    assert runner.invoke(app, ["generate-noise", str(out), "2", "12", *FAST]).exit_code == 0
    result = runner.invoke(
        app, ["generate-noise", str(out), "2", "16", "--start", "2", "--mode", "2", *FAST]
    )
    assert result.exit_code == 2
    assert (
        "cube size 16 (folder has 12)" in result.output and "mode 2 (folder has 1)" in result.output
    )
    assert sorted(os.listdir(out)) == ["n_00000.mrc", "n_00001.mrc"]
    forced = runner.invoke(
        app,
        ["generate-noise", str(out), "1", "12", "--start", "2", "--mode", "2", "--force", *FAST],
    )
    assert forced.exit_code == 0, forced.output


@pytest.mark.slow
def test_console_script_end_to_end_with_a_local_cluster(tmp_path):
    """The seed's command line, program name swapped, on a real two-process LocalCluster."""
    if shutil.which("mwr-dask") is None:
        pytest.fail("the console script mwr-dask is not installed (pip install -e .)")
    import subprocess

    out = tmp_path / "noise16"
    proc = subprocess.run(
        [
            "mwr-dask",
            "generate_noise",
            str(out),
            "30",
            "16",
            "--ncpus",
            "2",
            "--seed",
            "5",
            "--dashboard-address",
            "127.0.0.1:0",
        ],
        capture_output=True,
        text=True,
        timeout=240,
    )
    assert proc.returncode == 0, proc.stderr
    assert "Dashboard: http://127.0.0.1:" in proc.stdout
    assert "30 written" in proc.stdout
    assert_only_volumes(out, range(30))
    # python -m mwr_dask works too, and resumes: everything is already there
    again = cli("generate-noise", str(out), "30", "16", "--ncpus", "2", "--no-dashboard")
    assert again.returncode == 0, again.stderr
    assert "0 written, 30 skipped" in again.stdout


def test_labels_of_a_huge_start_with_a_tilt_file_are_checked_before_anything(tmp_path):
    """Issue 21.11: the scheme's label counts too; refused before a cluster or a folder."""
    tlt = tmp_path / "TS.tlt"
    tlt.write_text("\n".join(f"{a:.2f}" for a in range(-60, 61, 3)) + "\n")
    out = tmp_path / "noise"
    result = runner.invoke(
        app,
        ["generate-noise", str(out), "1", "16", "--tilt-file", str(tlt), "--start", "1" + "0" * 25],
    )
    assert result.exit_code == 2, result.output
    assert "more than the 80 an MRC header holds" in result.output
    assert not out.exists()
