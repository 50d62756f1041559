"""Issue 21: the user's input files end in one sentence, never a hang, a gigabyte or bad noise.

FIFOs and ``/dev/zero`` as inputs are run under a time-out and a memory limit (``prlimit``),
so that a regression fails the test instead of hanging or exhausting the machine.
"""

from __future__ import annotations

import os
import shutil
import subprocess
import sys

import mrcfile
import numpy as np
import pytest

from mwr_dask.noise.inputs import read_regular
from mwr_dask.noise.source import NoiseSource
from mwr_dask.parallel.clusters.checks import ClusterError
from mwr_dask.parallel.clusters.remote import read_scheduler_file

MEMORY_LIMIT = 1_500_000_000  # bytes of address space: the CLI runs in a few hundred MB


def limited(*args: str, cwd, timeout: float = 60) -> subprocess.CompletedProcess:
    """The command under a memory limit (prlimit) and a time-out."""
    cmd = [sys.executable, "-m", "mwr_dask", *args]
    if shutil.which("prlimit"):
        cmd = ["prlimit", f"--as={MEMORY_LIMIT}", *cmd]
    elif os.environ.get("CI"):  # the memory limit is half of what these tests prove
        pytest.fail("prlimit (util-linux) is missing: the memory limit cannot be set")
    return subprocess.run(cmd, cwd=cwd, capture_output=True, text=True, timeout=timeout)


def one_sentence(proc: subprocess.CompletedProcess, *phrases: str) -> None:
    assert proc.returncode == 2, proc.stdout + proc.stderr
    assert "Traceback" not in proc.stderr and len(proc.stderr.strip().splitlines()) == 1
    for phrase in phrases:
        assert phrase in proc.stderr, proc.stderr


def test_read_regular_refuses_what_is_not_a_small_file(tmp_path):
    fifo = tmp_path / "fifo"
    os.mkfifo(fifo)
    with pytest.raises(ValueError, match="is a FIFO, not a file"):
        read_regular(fifo, 100)  # returns at once: no writer needed
    with pytest.raises(ValueError, match="is a character device, not a file"):
        read_regular("/dev/zero", 100)
    with pytest.raises(ValueError, match="is a folder, not a file"):
        read_regular(tmp_path, 100)
    big = tmp_path / "big"
    big.write_bytes(b"1" * 101)
    with pytest.raises(ValueError, match="is 101 bytes, more than the 100 it may have"):
        read_regular(big, 100)
    assert read_regular(big, 101) == b"1" * 101


@pytest.mark.parametrize("kind", ["fifo", "zero"])
def test_a_fifo_or_dev_zero_as_spectrum_is_one_sentence(tmp_path, kind):
    path = tmp_path / "spec.mrc"
    if kind == "fifo":
        os.mkfifo(path)
    else:
        path.symlink_to("/dev/zero")
    proc = limited("generate-noise", "out", "2", "8", "--spectrum", str(path), cwd=tmp_path)
    one_sentence(proc, "not a file")
    assert not (tmp_path / "out").exists()


@pytest.mark.parametrize("command", ["generate-noise", "inspect"])
@pytest.mark.parametrize("kind", ["fifo", "zero"])
def test_a_fifo_or_dev_zero_as_scheduler_file_is_one_sentence(tmp_path, kind, command):
    """Issue 21.5: a FIFO hung past --connect-timeout, /dev/zero read until MemoryError."""
    path = tmp_path / "scheduler.json"
    if kind == "fifo":
        os.mkfifo(path)
    else:
        path.symlink_to("/dev/zero")
    (tmp_path / "noise").mkdir()
    args = ("out", "2", "8") if command == "generate-noise" else ("noise",)
    proc = limited(command, *args, "--scheduler-file", str(path), cwd=tmp_path, timeout=30)
    one_sentence(proc, f"--scheduler-file {path} is a ", "not a file")
    assert not (tmp_path / "out").exists()
    # where it appears while it is waited for (after the check above): refused, never read
    with pytest.raises(ClusterError, match=r"is a .*, not a file"):
        read_scheduler_file(path, 30)


def write_spectrum_file(path, data) -> None:
    with np.errstate(over="ignore"), mrcfile.new(path, overwrite=True) as m:
        m.set_data(data)  # mrcfile's header statistics overflow for 3.4e38: not ours


@pytest.mark.parametrize(
    ("case", "said"),
    [
        ("huge", "would overflow"),
        ("denormal", "would overflow or lose its precision"),
        ("dc only", "no power away from the zero frequency"),
        ("int8 mask", "holds float32 powers, not int8 data"),
    ],
)
def test_spectra_that_cannot_give_unit_variance_noise_are_refused(tmp_path, case, said):
    """Issue 21.10: these gave all-zero, near-zero or constant volumes with exit 0."""
    n = 8
    data = {
        "huge": np.full((n, n, n), 3.4e38, np.float32),
        "denormal": np.full((n, n, n), 1e-40, np.float32),
        "dc only": np.zeros((n, n, n), np.float32),
        "int8 mask": np.ones((n, n, n), np.int8),
    }[case]
    data[n // 2, n // 2, n // 2] = 1 if case != "denormal" else data[0, 0, 0]
    path = tmp_path / "spec.mrc"
    write_spectrum_file(path, data)
    with pytest.raises(ValueError, match=said):
        NoiseSource(n, spectrum=path)
    proc = limited("generate-noise", "out", "2", str(n), "--spectrum", str(path), cwd=tmp_path)
    one_sentence(proc, said)
    assert not (tmp_path / "out").exists()


def test_a_measured_like_spectrum_still_makes_unit_variance_noise(tmp_path):
    n = 8
    k = np.fft.fftshift(np.fft.fftfreq(n))
    s = (1 + 3 * np.abs(k)[None, None, :] + 0 * k[:, None, None]).astype(np.float32)
    s = np.broadcast_to(s, (n, n, n)).copy()
    s[n // 2, n // 2, n // 2] = 0
    path = tmp_path / "spec.mrc"
    write_spectrum_file(path, s / s.mean())
    v = NoiseSource(n, spectrum=path, seed=1)[0]
    assert abs(float(v.std()) - 1) < 1e-5 and np.isfinite(v).all()


def test_a_mixture_of_170_ordinary_tilt_files_is_planned(tmp_path):
    """Issue 21.7: 170 files of 61 views crashed naming --anglestep; the limit is per file."""
    files = []
    for k in range(170):
        path = tmp_path / f"TS_{k:03d}.tlt"
        path.write_text("\n".join(f"{a + 0.01 * k:.2f}" for a in range(-60, 61, 2)) + "\n")
        files += ["--tilt-file", str(path)]
    proc = limited("generate-noise", "out", "340", "32", *files, "--dry-run", cwd=tmp_path)
    assert proc.returncode == 0, proc.stderr
    assert "170 tilt schemes" in proc.stdout and "Cached per worker" in proc.stdout
    assert not (tmp_path / "out").exists()


def test_a_tilt_file_of_more_views_than_a_tilt_series_is_one_sentence(tmp_path):
    path = tmp_path / "many.tlt"
    path.write_text("\n".join(f"{-80 + 160 * k / 10_001:.5f}" for k in range(10_001)) + "\n")
    for mode in ("1", "2"):
        proc = limited("generate-noise", "out", "2", "16", "--tilt-file", str(path), "--mode",
                       mode, cwd=tmp_path)  # fmt: skip
        one_sentence(proc, "many.tlt", "has 10,001 views, more than the 10,000 of any tilt series")
    assert not (tmp_path / "out").exists()


@pytest.mark.parametrize("kind", ["fifo", "zero", "big", "sparse"])
def test_tilt_files_that_are_no_tilt_files_are_one_short_sentence(tmp_path, kind):
    """Issue 21.5 and 21.6: FIFOs hung, /dev/zero filled memory, 100 MB took 135 s and 9.8 GB."""
    path = tmp_path / "TS.tlt"
    if kind == "fifo":
        os.mkfifo(path)
    elif kind == "zero":
        path.symlink_to("/dev/zero")
    elif kind == "big":
        path.write_text("1.0\n" * 25_000_000)  # 100 MB of one repeated angle
    else:
        with open(path, "wb") as f:
            f.truncate(100_000_000)  # sparse: 100 MB of NUL bytes
    proc = limited("generate-noise", "out", "2", "16", "--tilt-file", str(path), cwd=tmp_path)
    one_sentence(proc, "TS.tlt")
    assert len(proc.stderr) < 400
    assert not (tmp_path / "out").exists()


def test_a_huge_exclude_range_is_checked_before_it_is_expanded(tmp_path):
    """Issue 21.6: --exclude 1-1000000000000 built the list (8.9 GB at 1-10^8)."""
    path = tmp_path / "TS.tlt"
    path.write_text("\n".join(f"{a:.1f}" for a in range(-60, 61, 3)) + "\n")
    proc = limited("generate-noise", "out", "2", "16", "--tilt-file", str(path), "--exclude",
                   "1-1000000000000", cwd=tmp_path)  # fmt: skip
    one_sentence(proc, "--exclude names view 42, but the file has 41 views")
    assert not (tmp_path / "out").exists()
