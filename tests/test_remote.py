"""generate-noise on Dask clusters it did not start: real scheduler and worker processes."""

from __future__ import annotations

import os
import pickle
import re
import subprocess
import sys
import time
import urllib.request

import mrcfile
import numpy as np
import pytest
from distributed import Client

from mwr_dask.noise.normals import volume_rng
from mwr_dask.noise.source import NoiseSource
from mwr_dask.parallel.pipeline import build_bag, partition_ranges

from .conftest import skip_or_fail
from .daskprocs import DaskProcesses
from .helpers import assert_only_volumes, cli, range_generator

SEED = "2024"


@pytest.fixture
def dask_cluster(tmp_path):
    procs = DaskProcesses(tmp_path)
    procs.start_scheduler()
    for _ in range(2):
        procs.start_worker()
    procs.wait_for_workers(2)
    yield procs
    procs.close()


def assert_matches_generator(folder, indices, mode, n, lo=-60.0, hi=60.0, step=2.0):
    g = range_generator(mode, n, lo, hi, step)
    for i in indices:
        with mrcfile.open(folder / f"n_{i:05d}.mrc") as m:
            np.testing.assert_array_equal(m.data, g(volume_rng(int(SEED), i)))


def scheduler_alive(procs: DaskProcesses) -> bool:
    if procs.scheduler.poll() is not None:
        return False
    with Client(procs.address, timeout="10s") as c:
        return len(c.scheduler_info()["workers"]) >= 1


@pytest.mark.slow
def test_scheduler_address_and_file_give_the_local_volumes(dask_cluster, tmp_path):
    local = tmp_path / "local"
    ref = cli("generate-noise", str(local), "12", "16", "--seed", SEED, "--ncpus", "2",
              "--no-dashboard")  # fmt: skip
    assert ref.returncode == 0, ref.stderr
    by_address = tmp_path / "by_address"
    run = cli("generate-noise", str(by_address), "12", "16", "--seed", SEED,
              "--scheduler", dask_cluster.address)  # fmt: skip
    assert run.returncode == 0, run.stderr + dask_cluster.log_text()
    assert "Remote cluster" in run.stdout and "Dashboard: http://127.0.0.1:" in run.stdout
    by_file = tmp_path / "by_file"
    run = cli("generate-noise", str(by_file), "12", "16", "--seed", SEED,
              "--scheduler-file", str(dask_cluster.scheduler_file))  # fmt: skip
    assert run.returncode == 0, run.stderr
    # the environment variable dask reads, relative output path, another working directory
    env = {**os.environ, "DASK_SCHEDULER_ADDRESS": dask_cluster.address}
    run = cli("generate-noise", "by_env", "12", "16", "--seed", SEED, env=env, cwd=tmp_path)
    assert run.returncode == 0, run.stderr
    for folder in (by_address, by_file, tmp_path / "by_env"):
        assert_only_volumes(folder, range(12))
        for i in range(12):
            name = f"n_{i:05d}.mrc"
            assert (folder / name).read_bytes() == (local / name).read_bytes()
    assert scheduler_alive(dask_cluster)


@pytest.mark.slow
def test_a_worker_killed_mid_run_does_not_fail_the_run(tmp_path):
    procs = DaskProcesses(tmp_path)
    try:
        procs.start_scheduler()
        victims = [procs.start_worker() for _ in range(3)]
        procs.wait_for_workers(3)
        out = tmp_path / "noise"
        run = subprocess.Popen(
            [sys.executable, "-m", "mwr_dask", "generate-noise", str(out), "300", "40",
             "--seed", SEED, "--scheduler", procs.address],
            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
        )  # fmt: skip
        deadline = time.monotonic() + 120
        while time.monotonic() < deadline and run.poll() is None:
            if out.is_dir() and len(os.listdir(out)) >= 20:
                break
            time.sleep(0.02)
        assert run.poll() is None, "the run ended before a worker could be killed"
        procs.kill(victims[0])  # SIGKILL to the worker's whole process group (nanny included)
        stdout, stderr = run.communicate(timeout=300)
        assert run.returncode == 0, stderr + procs.log_text()
        assert "300 written" in stdout or re.search(r"(\d+) written, (\d+) skipped", stdout)
        assert_only_volumes(out, range(300))
        assert_matches_generator(out, range(300), 1, 40)
    finally:
        procs.close()


@pytest.mark.slow
def test_a_worker_that_cannot_see_the_folder_is_named(tmp_path):
    """A worker on 'another node': its own mount namespace hides the output folder's parent."""
    procs = DaskProcesses(tmp_path)
    hidden = tmp_path / "shared"
    hidden.mkdir()
    try:
        procs.start_scheduler()
        procs.start_worker()
        if os.geteuid() != 0:
            skip_or_fail("needs root to give a worker its own mount namespace (unshare -m)")
        probe = subprocess.run(["unshare", "-m", "true"], capture_output=True)
        if probe.returncode != 0:
            skip_or_fail(f"unshare -m is not permitted here: {probe.stderr.decode().strip()}")
        procs.start_worker(
            prefix=("unshare", "-m", "--propagation", "private", "sh", "-c",
                    f"mount -t tmpfs tmpfs {hidden} && exec \"$0\" \"$@\""),
        )  # fmt: skip
        procs.wait_for_workers(2)
        run = cli("generate-noise", str(hidden / "noise"), "4", "16", "--seed", SEED,
                  "--scheduler", procs.address)  # fmt: skip
        assert run.returncode == 1
        assert re.search(r"worker tcp://127\.0\.0\.1:\d+ cannot see .*shared/noise", run.stderr)
        assert "shared" in run.stderr and "Traceback" not in run.stderr
        assert not (hidden / "noise").exists()  # nothing left behind
    finally:
        procs.close()


@pytest.mark.slow
def test_mismatched_package_versions_are_refused(tmp_path):
    fake = tmp_path / "fake"
    (fake / "mwr_dask").mkdir(parents=True)
    (fake / "mwr_dask" / "__init__.py").write_text('__version__ = "0.0.0-other"\n')
    procs = DaskProcesses(tmp_path)
    try:
        procs.start_scheduler()
        procs.start_worker(env={**os.environ, "PYTHONPATH": str(fake)})
        procs.wait_for_workers(1)
        run = cli("generate-noise", str(tmp_path / "noise"), "4", "16",
                  "--scheduler", procs.address)  # fmt: skip
        assert run.returncode == 1
        assert "mwr_dask 0.0.0-other" in run.stderr and "versions differ" in run.stderr
        assert not list((tmp_path / "noise").glob("*"))
    finally:
        procs.close()


@pytest.mark.slow
def test_unreachable_scheduler_is_a_clear_error_within_the_timeout(tmp_path):
    t0 = time.monotonic()
    run = cli("generate-noise", str(tmp_path / "noise"), "4", "16",
              "--scheduler", "tcp://127.0.0.1:9", "--connect-timeout", "2")  # fmt: skip
    elapsed = time.monotonic() - t0
    assert run.returncode == 1
    assert "cannot reach the Dask scheduler at tcp://127.0.0.1:9 within 2 s" in run.stderr
    assert "Traceback" not in run.stderr
    assert elapsed < 20
    missing = cli("generate-noise", str(tmp_path / "noise"), "4", "16", "--connect-timeout", "1",
                  "--scheduler-file", str(tmp_path / "none.json"))  # fmt: skip
    assert missing.returncode == 1 and "no scheduler file appeared" in missing.stderr


@pytest.mark.slow
def test_the_printed_dashboard_serves_during_a_local_run(tmp_path):
    run = subprocess.Popen(
        [sys.executable, "-m", "mwr_dask", "generate-noise", str(tmp_path / "noise"), "400", "40",
         "--ncpus", "2", "--dashboard-address", "127.0.0.1:0"],
        stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
    )  # fmt: skip
    try:
        link = None
        for line in run.stdout:
            if line.startswith("Dashboard: "):
                link = line.split()[1]
                break
        assert link, run.stderr.read()
        with urllib.request.urlopen(link, timeout=30) as page:
            assert page.status == 200
            body = page.read().decode(errors="replace")
        assert "bokeh" in body.lower() and "pip install" not in body
    finally:
        run.communicate(timeout=300)
    assert run.returncode == 0


def test_graph_stays_small_for_100000_volumes(tmp_path):
    params = NoiseSource(cubesize=64, seed=1)
    ranges = partition_ranges(0, 100_000, 64, params.volume_bytes)
    bag = build_bag(params, ranges, tmp_path, tmp_path)
    graph = dict(bag.__dask_graph__())
    size = len(pickle.dumps(graph))
    assert size / 100_000 < 16, size  # bytes per volume, whatever n is
    assert len(bag.to_delayed()) == len(ranges) < 100_000 / 50
