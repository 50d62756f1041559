"""Faults and bad input: kills, signals, full disks, concurrent runs, validation."""

from __future__ import annotations

import math
import os
import re
import shutil
import signal
import subprocess
import sys
import time
from dataclasses import replace
from pathlib import Path

import numpy as np
import psutil
import pytest
from hypothesis import given
from hypothesis import strategies as st

from mwr_dask.files.folder import conflicts, disk_bytes, folder_lock
from mwr_dask.files.mrc import state_dir
from mwr_dask.noise.source import MAX_TILTS, NoiseSource

from .conftest import skip_or_fail
from .helpers import assert_only_volumes, cli

SEED = "777"


def start_cli(*args: str) -> subprocess.Popen:
    """The real CLI in its own process group (like a batch job step)."""
    return subprocess.Popen(
        [sys.executable, "-m", "mwr_dask", *args],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        start_new_session=True,
    )


def wait_for_files(folder: Path, count: int, proc: subprocess.Popen, timeout=120) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if folder.is_dir() and len(os.listdir(folder)) >= count:
            return
        assert proc.poll() is None, f"the run ended early: {proc.communicate()}"
        time.sleep(0.01)
    raise AssertionError("no files appeared")


@pytest.mark.slow
def test_sigkill_of_the_process_group_then_rerun_gives_the_uninterrupted_volumes(tmp_path):
    args = ["300", "40", "--seed", SEED, "--ncpus", "2", "--no-dashboard"]
    reference = tmp_path / "reference"
    done = cli("generate-noise", str(reference), *args)
    assert done.returncode == 0, done.stderr
    folder = tmp_path / "killed"
    proc = start_cli("generate-noise", str(folder), *args)
    wait_for_files(folder, 40, proc)
    os.killpg(proc.pid, signal.SIGKILL)
    proc.wait(timeout=30)
    # whatever is there is complete and valid; nothing else is in the folder
    survivors = sorted(os.listdir(folder))
    assert 40 <= len(survivors) < 300
    assert_only_volumes(folder, [int(name[2:7]) for name in survivors])
    mtimes = {name: os.stat(folder / name).st_mtime_ns for name in survivors}
    # the rerun skips the finished files, writes the rest, cleans the temporaries
    again = cli("generate-noise", str(folder), *args)
    assert again.returncode == 0, again.stderr
    assert f"{300 - len(survivors)} written, {len(survivors)} skipped" in again.stdout
    assert_only_volumes(folder, range(300))
    for name, mtime in mtimes.items():
        assert os.stat(folder / name).st_mtime_ns == mtime
    for name in os.listdir(reference):
        assert (folder / name).read_bytes() == (reference / name).read_bytes()
    assert not state_dir(folder).exists()


@pytest.mark.slow
@pytest.mark.parametrize(("sig", "code"), [(signal.SIGINT, 130), (signal.SIGTERM, 143)])
def test_sigint_and_sigterm_stop_cleanly(tmp_path, sig, code):
    folder = tmp_path / "noise"
    proc = start_cli("generate-noise", str(folder), "3000", "40", "--ncpus", "2", "--no-dashboard")
    wait_for_files(folder, 10, proc)
    children = psutil.Process(proc.pid).children(recursive=True)
    assert children, "the local cluster's worker processes should be running"
    proc.send_signal(sig)
    _, stderr = proc.communicate(timeout=120)
    assert proc.returncode == code, stderr
    assert f"stopped by {signal.Signals(sig).name}" in stderr
    assert "rerun the same command to finish" in stderr and "Traceback" not in stderr
    _, alive = psutil.wait_procs(children, timeout=30)
    assert not alive, f"orphaned processes: {alive}"
    names = os.listdir(folder)
    assert 0 < len(names) < 3000
    assert_only_volumes(folder, [int(n[2:7]) for n in names])


def tmpfs(tmp_path: Path, size: str):
    """Mount a tmpfs of ``size`` at ``tmp_path/small``: a real full disk (root; CI is root)."""
    mount = tmp_path / "small"
    mount.mkdir()
    if os.geteuid() != 0:
        skip_or_fail("mounting a small tmpfs for the disk-full tests needs root")
    done = subprocess.run(["mount", "-t", "tmpfs", "-o", f"size={size}", "tmpfs", str(mount)],
                          capture_output=True, text=True)  # fmt: skip
    if done.returncode != 0:
        skip_or_fail(f"cannot mount a tmpfs here: {done.stderr.strip()}")
    yield mount
    subprocess.run(["umount", "-l", str(mount)], check=False)


@pytest.fixture
def small_fs(tmp_path):
    """A 1 MiB tmpfs."""
    yield from tmpfs(tmp_path, "1m")


@pytest.fixture
def fs_5m(tmp_path):
    """A 5 MiB tmpfs."""
    yield from tmpfs(tmp_path, "5m")


@pytest.mark.slow
def test_not_enough_free_space_is_refused_with_the_plan(small_fs):
    run = cli("generate-noise", str(small_fs / "noise"), "100", "32", "--no-dashboard")
    assert run.returncode == 2
    assert re.search(r"the volumes still to write need 13.5 MB but only 1\.0\d MB", run.stderr)
    assert not (small_fs / "noise").exists() and os.listdir(small_fs) == []


@pytest.mark.slow
def test_the_free_space_check_counts_whole_blocks(fs_5m):
    # issue 21.14: 280 volumes of 16^3 are 4.87 MB, less than 5 MiB, but tmpfs gives each
    # 17,408-byte file 5 pages of 4 KiB: 256 fit. Refused before anything is written.
    run = cli("generate-noise", str(fs_5m / "noise"), "280", "16", "--no-dashboard")
    assert run.returncode == 2, run.stdout + run.stderr
    assert "Traceback" not in run.stderr and len(run.stderr.strip().splitlines()) == 1
    said = r"need 5\.75 MB but only 5\.2\d MB are free .* blocks of 4096 bytes"
    assert re.search(said, run.stderr), run.stderr
    assert os.listdir(fs_5m) == []
    run = cli("generate-noise", str(fs_5m / "noise"), "250", "16", "--ncpus", "2", "--no-dashboard")
    assert run.returncode == 0, run.stdout + run.stderr
    assert_only_volumes(fs_5m / "noise", range(250))


def test_disk_bytes_rounds_each_file_up_to_whole_blocks():
    assert disk_bytes(17408, 280, 4096) == (280 * 5 + 5) * 4096  # 5 pages each, 5 for entries
    assert disk_bytes(17408, 250, 4096) <= 5 * 2**20 < disk_bytes(17408, 256, 4096)
    assert disk_bytes(4096, 1, 4096) == 2 * 4096 and disk_bytes(4097, 1, 4096) == 3 * 4096
    assert disk_bytes(4 * 1024 * 4096, 1, 4096) == (4096 + 4 + 1) * 4096  # indirect blocks
    assert disk_bytes(17408, 1, 2**20) == 2 * 2**16  # NFS's 1 MiB wsize: 64 KiB counted
    assert disk_bytes(17408, 0, 4096) == 0
    n = 10**21  # a --dry-run count: exact integers
    assert disk_bytes(131072 + 1024, n, 4096) == (n * 33 + -(-n // 64)) * 4096


@pytest.mark.slow
def test_disk_full_mid_run_stops_with_a_clear_error_and_no_partial_file(small_fs):
    # 50 volumes of 16^3 (5 pages each) pass the free-space check on 1 MiB; once the run has
    # said what it writes (before its cluster starts), a filler leaves room for 5 volumes
    folder = small_fs / "noise"
    proc = start_cli("generate-noise", str(folder), "50", "16", "--ncpus", "2", "--no-dashboard")
    for line in proc.stdout:
        if line.startswith("Writing "):
            break
    with open(small_fs / "filler", "wb") as f:
        f.write(b"\0" * (shutil.disk_usage(small_fs).free - 5 * 5 * 4096))
    stdout, stderr = proc.communicate(timeout=240)
    assert proc.returncode == 1, stdout + stderr
    assert "No space left on device" in stderr
    assert "stopped early" in stderr and "Traceback" not in stderr
    names = os.listdir(folder)
    assert 0 < len(names) < 50
    assert_only_volumes(folder, [int(n[2:7]) for n in names])
    assert not list(state_dir(folder).glob("tmp/*"))


@pytest.mark.slow
def test_a_second_run_on_the_same_folder_is_refused(tmp_path):
    # item 4 of issue 14: the lock is on the real folder, so a link to it is the same folder
    folder = tmp_path / "noise"
    link = tmp_path / "link"
    link.symlink_to(folder)
    with folder_lock(folder):
        runs = [cli("generate-noise", str(path), "2", "16", "--no-dashboard")
                for path in (folder, link)]  # fmt: skip
    for run in runs:
        assert run.returncode == 2, run.stderr
        assert f"another mwr-dask run (pid {os.getpid()} on" in run.stderr
        assert "is writing to" in run.stderr and "Traceback" not in run.stderr
    assert os.listdir(folder) == []
    assert sorted(os.listdir(tmp_path)) == ["link", "noise"]  # no sibling either


@pytest.mark.slow
@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["0", "16"], "NUMBER_VOLUME must be at least 1"),
        (["3", "1"], "CUBESIZE must be at least 2"),
        (["3", "16.5"], "Invalid value for 'cubesize'"),
        (["3", "16", "--bogus"], "No such option: --bogus"),
        (["3", "16", "--mode", "3"], "--mode must be 1"),
        (["3", "16", "--minangle", "-90"], "strictly between -90 and 90"),
        (["3", "16", "--maxangle", "91"], "strictly between -90 and 90"),
        (["3", "16", "--minangle", "30", "--maxangle", "20"], "must be smaller than --maxangle"),
        (["3", "16", "--minangle", "30", "--maxangle", "30"], "must be smaller than --maxangle"),
        (["3", "16", "--anglestep", "-1"], "--anglestep must be positive"),
        (["3", "16", "--anglestep", "121"], "wider than the tilt range"),
        (["3", "16", "--start", "-5"], "--start must be 0 or more"),
        (["3", "16", "--ncpus", "0"], "--ncpus must be at least 1"),
        (["3", "3000", "--ncpus", "1"], "GiB per worker in mode 1"),
    ],
)
def test_bad_input_through_the_console_script(tmp_path, args, message):
    folder = tmp_path / "noise"
    run = cli("generate-noise", str(folder), *args)
    assert run.returncode == 2, run.stderr
    assert message in run.stderr
    assert "Traceback" not in run.stderr
    assert os.listdir(tmp_path) == []  # nothing written, not even beside the folder


@pytest.mark.slow
def test_output_path_that_is_a_file_or_read_only(tmp_path):
    f = tmp_path / "file"
    f.write_text("x")
    run = cli("generate-noise", str(f), "2", "16")
    assert run.returncode == 2 and "exists and is not a folder" in run.stderr
    run = cli("generate-noise", str(f / "noise"), "2", "16")
    assert run.returncode == 2 and "cannot create" in run.stderr
    if os.geteuid() == 0:
        ro = tmp_path / "ro"
        ro.mkdir()
        mounted = subprocess.run(["mount", "-t", "tmpfs", "-o", "ro,size=1m", "tmpfs", str(ro)],
                                 capture_output=True)  # fmt: skip
        if mounted.returncode == 0:
            try:
                run = cli("generate-noise", str(ro / "noise"), "2", "16")
                assert run.returncode == 2
                assert "cannot create" in run.stderr and "Read-only file system" in run.stderr
            finally:
                subprocess.run(["umount", "-l", str(ro)], check=False)
    else:
        ro = tmp_path / "ro"
        ro.mkdir(mode=0o500)
        run = cli("generate-noise", str(ro / "noise"), "2", "16")
        assert run.returncode == 2 and "cannot create" in run.stderr


odd = st.sampled_from([math.nan, math.inf, -math.inf])
angles = st.floats(-120, 120) | odd


@given(
    n=st.integers(-3, 2000),
    cube=st.integers(-3, 600),
    start=st.integers(-5, 10**6) | st.integers(10**25, 10**40),
    mode=st.integers(-1, 4),
    lo=angles,
    hi=angles,
    step=st.floats(-5, 250) | st.floats(1e-300, 1e-3) | odd,
    voxel=st.floats(-1, 10) | st.floats(1e-45, 1e-36) | st.floats(1e30, 1e40) | odd,
    seed=st.integers(0, 10) | st.integers(2**127, 2**129),
)
def test_validation_accepts_exactly_the_valid_parameters(
    n, cube, start, mode, lo, hi, step, voxel, seed
):
    fields = dict(cubesize=cube, mode=mode, minangle=lo, maxangle=hi, anglestep=step, seed=seed)
    with np.errstate(over="ignore", invalid="ignore"):
        cell = np.float32(voxel * cube)  # what the header stores
    valid = (
        n >= 1
        and cube >= 2
        and start >= 0
        and mode in (1, 2)
        and -90 < lo < 90
        and -90 < hi < 90
        and lo < hi
        and 0 < step < math.inf
        # mode 1 needs two tilts and at most MAX_TILTS; mode 2 does not use the step
        and (mode != 1 or (step <= hi - lo and math.floor((hi - lo) / step + 1e-6) < MAX_TILTS))
        # the float32 header stores the cell (voxel size x cube) as a normal number
        and 0 < voxel < math.inf
        and np.finfo(np.float32).tiny <= cell < math.inf
        and seed < 2**128
    )
    if valid:  # and every label of the run, with the largest seed, fits 80 characters
        try:
            worst = NoiseSource(**{**fields, "seed": 2**128 - 1}, voxel_size=voxel)
            valid = all(len(label) <= 80 for label in worst.labels(start + n - 1))
        except ValueError:  # the labels of index 0 are already too long
            valid = False
    try:  # the parameters are checked once, when the source is made; the run by run_problems
        errors = NoiseSource(**fields, voxel_size=voxel).run_problems(n, start)
    except ValueError as err:
        errors = [f"{sentence}." for sentence in str(err).split(". ") if sentence]
    assert (errors == []) == valid, errors
    assert all(e.endswith(".") and "\n" not in e for e in errors)


params_st = st.builds(
    NoiseSource,
    cubesize=st.sampled_from([32, 64]),
    mode=st.sampled_from([1, 2]),
    minangle=st.sampled_from([-60.0, -40.0]),
    maxangle=st.sampled_from([60.0, 56.0]),
    anglestep=st.sampled_from([2.0, 3.0]),
    seed=st.sampled_from([1, 2**100]),
    voxel_size=st.sampled_from([1.0, 4.35]),
)


@given(a=params_st, b=params_st)
def test_conflicts_name_every_difference_that_matters(a, b):
    found = conflicts(a, b)
    expected = {
        "cube size": a.cubesize != b.cubesize,
        "mode": a.mode != b.mode,
        "seed": a.seed != b.seed,
        "voxel size": a.voxel_size != b.voxel_size,
        # the step changes mode 1 volumes only
        "tilts": a.mode == b.mode
        and ((a.minangle, a.maxangle) != (b.minangle, b.maxangle)
             or (b.mode == 1 and a.anglestep != b.anglestep)),
    }  # fmt: skip
    for what, differs in expected.items():
        assert any(f.startswith(what) for f in found) == differs, (what, found)
    assert conflicts(a, replace(a)) == []
    # symmetric: the same kinds of difference whichever side is the folder's
    assert [f.split(" ")[0] for f in conflicts(b, a)] == [f.split(" ")[0] for f in found]
