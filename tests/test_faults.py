"""Faults the docs promise to handle: a corrupted file with --verify, a partition that raises,
--quiet, a quota or a read-only filesystem mid-run."""

from __future__ import annotations

import errno
import os
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pytest

from mwr_dask import NoiseSource, generate

from .helpers import assert_only_volumes, cli, read_all

QUICK = ["--ncpus", "1", "--no-dashboard", "--mode", "2", "--seed", "3"]


@pytest.mark.slow
def test_verify_finds_a_corrupted_volume_that_resume_keeps(tmp_path):
    out = tmp_path / "v"
    assert cli("generate-noise", str(out), "4", "16", *QUICK).returncode == 0
    good = read_all(out)
    path = out / "n_00001.mrc"
    raw = bytearray(path.read_bytes())
    raw[5000:5400] = bytes(400)  # zeros in the data: header and size intact
    path.write_bytes(bytes(raw))
    plain = cli("generate-noise", str(out), "4", "16", *QUICK)
    assert plain.returncode == 0 and "0 written, 4 skipped" in plain.stdout
    assert path.read_bytes() == bytes(raw)  # the cheap check cannot see it
    verified = cli("generate-noise", str(out), "4", "16", *QUICK, "--verify")
    assert verified.returncode == 0, verified.stderr
    assert "1 written, 3 skipped" in verified.stdout
    assert all(np.array_equal(read_all(out)[k], v) for k, v in good.items())


@dataclass(frozen=True)
class FlakySource(NoiseSource):
    """Volume 3 raises the first time it is made (the marker file records that it did)."""

    marker: str = ""

    def volume(self, index):
        if index == 3 and not os.path.exists(self.marker):
            Path(self.marker).touch()
            raise RuntimeError("volume 3 failed once")
        return super().volume(index)


@pytest.mark.slow
@pytest.mark.parametrize(("retries", "ok"), [(1, True), (0, False)])
def test_retries_recover_a_partition_that_raises(tmp_path, retries, ok):
    from distributed import Client

    source = FlakySource(12, mode=2, seed=4, marker=str(tmp_path / "raised"))
    with Client(processes=False, n_workers=1, threads_per_worker=1, dashboard_address=":0") as c:
        done = generate(tmp_path / "out", 8, source, client=c, retries=retries)
    assert (tmp_path / "raised").exists()
    assert done.ok is ok
    if ok:
        # the retried partition skips what it wrote before it raised
        assert done.result.written + done.result.skipped == 8 and not done.result.crashed
        assert_only_volumes(tmp_path / "out", range(8))
    else:
        (lo, hi, error), = done.result.crashed  # fmt: skip
        assert lo <= 3 <= hi and "volume 3 failed once" in error
        assert done.result.failed == hi - lo + 1
        assert "n_00003.mrc" not in os.listdir(tmp_path / "out")


@pytest.mark.slow
def test_quiet_prints_errors_only(tmp_path):
    out = tmp_path / "q"
    done = cli("generate-noise", str(out), "3", "12", *QUICK, "--quiet")
    assert done.returncode == 0 and done.stdout == "" and done.stderr == ""
    (out / "notes.txt").write_text("x")  # a warning is not an error: silent too
    again = cli("generate-noise", str(out), "3", "12", *QUICK, "--quiet", "--start", "3")
    assert again.returncode == 0 and again.stdout == "" and again.stderr == ""
    bad = cli("generate-noise", str(out), "3", "12", *QUICK, "--quiet", "--seed", "4")
    assert bad.returncode == 2 and bad.stdout == ""
    assert bad.stderr.startswith("mwr-dask: error:") and bad.stderr.count("\n") == 1


@pytest.mark.slow
@pytest.mark.parametrize(
    ("code", "text"),
    [(errno.EDQUOT, "Disk quota exceeded"), (errno.EROFS, "Read-only file system")],
)
def test_quota_and_read_only_mid_run_stop_the_run(tmp_path, monkeypatch, code, text):
    """EDQUOT and EROFS from the 6th write on stop the run at once, like a full disk.

    The error is raised where the kernel would raise it (the write of a volume): a real user
    quota needs a filesystem with quotas, which this machine cannot mount (tmpfs usrquota is
    refused). A real read-only remount is the next test.
    """
    from distributed import Client

    import mwr_dask.parallel.pipeline

    real, calls = mwr_dask.parallel.pipeline.write_volume, []  # the paths asked for, in order

    def failing(path, *args, **kwargs):
        calls.append(path)
        if len(calls) > 5:
            raise OSError(code, text, str(path))
        return real(path, *args, **kwargs)

    monkeypatch.setattr(mwr_dask.parallel.pipeline, "write_volume", failing)
    source = NoiseSource(8, mode=2, seed=6)
    with Client(processes=False, n_workers=1, threads_per_worker=1, dashboard_address=":0") as c:
        done = generate(tmp_path / "out", 400, source, client=c, retries=0)
    assert done.result.stopped and not done.ok
    assert done.result.written == 5
    assert any(text in error for _, error in done.result.errors)
    assert_only_volumes(tmp_path / "out", [int(n[2:7]) for n in os.listdir(tmp_path / "out")])


@pytest.mark.slow
def test_read_only_remount_mid_run_stops_with_no_partial_file(tmp_path):
    """A real filesystem remounted read-only under a running generate-noise (root only)."""
    import subprocess
    import sys
    import time

    from .conftest import skip_or_fail

    if os.geteuid() != 0:
        skip_or_fail("remounting a tmpfs read-only needs root")
    fs = tmp_path / "fs"
    fs.mkdir()
    mounted = subprocess.run(["mount", "-t", "tmpfs", "-o", "size=2g", "tmpfs", str(fs)],
                             capture_output=True, text=True)  # fmt: skip
    if mounted.returncode != 0:
        skip_or_fail(f"cannot mount a tmpfs here: {mounted.stderr.strip()}")
    try:
        out = fs / "noise"
        # mode 1 at 24^3: milliseconds of work between two files, when none is open for writing
        command = [sys.executable, "-m", "mwr_dask", "generate-noise", str(out), "20000", "24",
                   "--ncpus", "1", "--no-dashboard", "--seed", "3"]  # fmt: skip
        proc = subprocess.Popen(command, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
        deadline = time.monotonic() + 180
        while time.monotonic() < deadline and len(os.listdir(out) if out.exists() else []) < 50:
            time.sleep(0.05)
        remounted = None
        while time.monotonic() < deadline and proc.poll() is None:
            remounted = subprocess.run(["mount", "-o", "remount,ro", str(fs)], capture_output=True)
            if remounted.returncode == 0:
                break
            time.sleep(0.002)  # refused while a volume is open for writing
        _stdout, stderr = proc.communicate(timeout=300)
        assert remounted is not None and remounted.returncode == 0, "the run ended first"
        assert proc.returncode == 1, stderr
        assert "Read-only file system" in stderr and "stopped early" in stderr, stderr
        assert "Traceback" not in stderr
        names = sorted(os.listdir(out))
        assert 50 <= len(names) < 20000
        assert_only_volumes(out, [int(n[2:7]) for n in names])
    finally:
        subprocess.run(["umount", "-l", str(fs)], capture_output=True)
