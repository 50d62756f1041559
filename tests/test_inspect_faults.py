"""`inspect` on odd folders: the faults of issue 14 item 16 (and item 12's huge header).

Through the real console script where the command line matters (exit status, stdout as
strict JSON, signals), and through ``inspect_folder`` on the session's cluster elsewhere, to
keep the number of cluster starts small.
"""

import gzip
import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import mrcfile
import numpy as np
import psutil
import pytest
from typer.testing import CliRunner

from mwr_dask.cli import app
from mwr_dask.files.mrc import state_dir
from mwr_dask.inspection import inspect_folder
from mwr_dask.inspection.reading import inspect_file, read_volume
from mwr_dask.noise.source import NoiseSource
from mwr_dask.parallel.pipeline import run

from .helpers import cli

runner = CliRunner()


def strict_json(text: str):
    """json.loads that refuses NaN, Infinity and -Infinity (not JSON)."""

    def refuse(name):
        raise ValueError(f"not JSON: {name}")

    return json.loads(text, parse_constant=refuse)


def generate(client, folder: Path, params: NoiseSource, count: int) -> Path:
    """A folder written by the real pipeline (as generate-noise writes it)."""
    tmp = state_dir(folder) / "tmp"
    tmp.mkdir(parents=True, exist_ok=True)
    folder.mkdir(parents=True, exist_ok=True)
    assert run(client, params, 0, count, folder, tmp).written == count
    return folder


def write(path: Path, data: np.ndarray) -> None:
    with mrcfile.new(path) as m:
        m.set_data(data)


def huge_header(src: Path, dst: Path, side: int, size: int | None = None) -> None:
    """A copy of ``src`` whose header claims a cube of ``side``; ``size``: sparse file size."""
    raw = bytearray(src.read_bytes()[:1024])
    raw[0:12] = np.array([side] * 3, dtype="<i4").tobytes()
    with open(dst, "wb") as f:
        f.write(raw)
        f.truncate(size or len(raw) + 4096)


# ----------------------------------------------------------------------------- the spectrum


@pytest.mark.slow
@pytest.mark.parametrize(
    ("mode", "lo", "hi", "step"), [(1, -60, 60, 30), (1, -89, 89, 1), (2, -89, 89, 1)]
)
def test_valid_folders_at_coarse_steps_and_edges_near_90_pass(client, tmp_path, mode, lo, hi, step):
    params = NoiseSource(cubesize=32, mode=mode, minangle=lo, maxangle=hi, anglestep=step, seed=2)
    report = inspect_folder(generate(client, tmp_path / "noise", params, 12), client)
    assert report.ok, report.problems
    info = report.summary["spectrum"]
    assert info["mode_agrees"] and info["looks_like_mode"] == mode
    if (mode, step) == (1, 30):
        assert info["tilt_range_agrees"] is None
        assert any("separate lines" in w for w in report.warnings)


@pytest.mark.slow
def test_cubes_2_to_7_are_reported_not_a_traceback(client, tmp_path):
    for n in (2, 3, 5, 7):
        folder = generate(client, tmp_path / f"c{n}", NoiseSource(cubesize=n, seed=1), 3)
        report = inspect_folder(folder)
        assert report.spectrum is not None and report.spectrum.limit is not None
        assert any(f"{n}^3 is too small for the spectral checks" in w for w in report.warnings)
        # mrcfile.validate doubts the header's mean of some tiny volumes (a mean of ~1e-8
        # against the 1e-8 absolute tolerance of its check): that is reported, nothing else
        assert all("Data statistics appear" in why for why in report.summary["broken"].values())
    png = tmp_path / "tiny.png"
    done = cli("inspect", str(tmp_path / "c2"), "--ncpus", "1", "--json", "--plot", str(png))
    assert done.returncode in (0, 1) and "Traceback" not in done.stderr, done.stderr
    report = strict_json(done.stdout)
    assert report["spectrum"]["limit"].startswith("2^3 is too small") and report["plot"] is None
    assert "no plot written" in done.stderr and not png.exists()


# ----------------------------------------------------------------------------- the entries


def test_non_regular_files_and_oversized_headers_are_not_opened(tmp_path):
    fifo = tmp_path / "n_00001.mrc"
    os.mkfifo(fifo)
    rec, data = inspect_file(str(fifo))  # would block for ever if opened for reading
    assert data is None and rec.error == "a FIFO, not a regular file"
    volume = tmp_path / "v.mrc"
    write(volume, np.ones((8, 8, 8), dtype=np.float32))
    rec, data = read_volume(str(volume), limit=1000)
    assert data is None and rec.error.startswith("too large to check: the header gives 8x8x8")
    assert rec.labels[0].startswith("Created by mrcfile") and rec.shape == (8, 8, 8)
    packed = tmp_path / "packed.mrc"
    packed.write_bytes(gzip.compress(volume.read_bytes()))
    rec, data = inspect_file(str(packed))
    assert data is None and rec.error.startswith("compressed (gzip)")
    claims = tmp_path / "claims.mrc"
    huge_header(volume, claims, 100_000)
    rec, data = inspect_file(str(claims))  # 4e15 bytes: never allocated
    assert data is None and rec.error == f"truncated: {1024 + 4096} of {1024 + 4 * 10**15} bytes"


@pytest.mark.slow
def test_links_fifos_and_huge_headers_give_a_report(client, tmp_path):
    folder = generate(client, tmp_path / "noise", NoiseSource(cubesize=16, seed=1), 3)
    os.symlink("n_00005.mrc", folder / "n_00005.mrc")  # a loop
    os.mkfifo(folder / "n_00006.mrc")
    os.symlink(tmp_path / "nowhere", folder / "n_00007.mrc")
    huge_header(folder / "n_00000.mrc", folder / "n_00008.mrc", 100_000)
    side = 3000  # 108 GB of data in a sparse file of the right size
    huge_header(folder / "n_00000.mrc", folder / "n_00009.mrc", side, 1024 + 4 * side**3)
    os.symlink("b", folder / "a")
    os.symlink("a", folder / "b")
    done = cli("inspect", str(folder), "--ncpus", "1", timeout=120)
    assert done.returncode == 1 and "Traceback" not in done.stderr, done.stderr
    out = done.stdout
    for text in (
        "n_00005.mrc (a symbolic link loop)",
        "n_00006.mrc (a FIFO)",
        "n_00007.mrc (a dangling symbolic link)",
        "a (a symbolic link loop)",
        "problem: n_00008.mrc: truncated: 5120 of 4000000000001024 bytes.",
        "problem: n_00009.mrc: too large to check: the header gives 3000x3000x3000 voxels",
    ):
        assert text in out, out
    assert out.splitlines()[-1].startswith("FAILED")


@pytest.mark.slow
@pytest.mark.filterwarnings("ignore:Data array contains NaN")  # mrcfile, writing the test file
def test_nan_and_constant_volumes_fail_and_the_json_stays_json(tmp_path):
    folder = tmp_path / "noise"
    folder.mkdir()
    nan = np.random.default_rng(0).standard_normal((16, 16, 16)).astype(np.float32)
    nan[3, 4, 5] = np.nan
    write(folder / "n_00000.mrc", nan)
    write(folder / "n_00001.mrc", np.full((16, 16, 16), 0.5, dtype=np.float32))
    done = cli("inspect", str(folder), "--ncpus", "1", "--json")
    assert done.returncode == 1, done.stderr
    report = strict_json(done.stdout)  # no NaN: the folder has no good volume to average
    assert report["broken"] == {
        "n_00000.mrc": "1 NaN or infinite value",
        "n_00001.mrc": "constant data",
    }
    assert report["good"] == 0 and report["mean"] is None and report["std"] is None
    assert report["spectrum"] is None and report["ok"] is False and report["exit_code"] == 1


# ----------------------------------------------------------------------------- --plot


def test_a_plot_inside_the_noise_folder_is_refused(tmp_path):
    folder = tmp_path / "noise"
    (folder / "sub").mkdir(parents=True)
    (tmp_path / "link").symlink_to(folder)
    (tmp_path / "elsewhere").mkdir()
    (tmp_path / "elsewhere" / "p.png").symlink_to(folder / "p.png")
    before = sorted(os.listdir(folder))
    for plot in (
        folder / "spectrum.png",
        tmp_path / "link" / "spectrum.png",
        folder / "sub" / ".." / "spectrum.png",
        folder / "sub" / "spectrum.png",
        tmp_path / "elsewhere" / "p.png",
        tmp_path / "link",
    ):
        result = runner.invoke(app, ["inspect", str(folder), "--plot", str(plot)])
        assert result.exit_code == 2, (plot, result.output)
        assert "lies inside the noise folder" in result.output and "Traceback" not in result.output
    assert sorted(os.listdir(folder)) == before and not (folder / "p.png").exists()


# ----------------------------------------------------------------------------- signals


@pytest.mark.slow
@pytest.mark.parametrize(("sig", "code"), [(signal.SIGINT, 130), (signal.SIGTERM, 143)])
def test_sigint_and_sigterm_stop_inspect(tmp_path, sig, code):
    folder = tmp_path / "noise"
    folder.mkdir()
    write(folder / "n_00000.mrc", np.random.default_rng(0).standard_normal((64,) * 3, np.float32))
    for i in range(1, 3000):  # long enough to read that the signal comes mid-run
        os.link(folder / "n_00000.mrc", folder / f"n_{i:05d}.mrc")
    proc = subprocess.Popen(
        [sys.executable, "-m", "mwr_dask", "inspect", str(folder), "--ncpus", "2"],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        start_new_session=True,
    )
    children = []
    while not children and proc.poll() is None:  # the local cluster's processes
        children = psutil.Process(proc.pid).children(recursive=True)
        time.sleep(0.05)
    time.sleep(0.5)
    proc.send_signal(sig)
    stdout, stderr = proc.communicate(timeout=120)
    assert proc.returncode == code, stderr
    assert f"stopped by {signal.Signals(sig).name}" in stderr and "Traceback" not in stderr
    assert stdout == ""
    _, alive = psutil.wait_procs(children, timeout=30)
    assert not alive, f"orphaned processes: {alive}"
