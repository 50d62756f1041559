"""Defaults are promises: every default that ``--help``, README and docs state, checked by
running the command (or the library) the way a user does and reading what was written.

The promises, and where they are made:

- ``generate-noise OUT N SIZE`` (README's main command, ``--help``, docs/usage.md): mode 1,
  tilts -60..60 every 2 degrees, no filter, a fresh 128-bit seed per new folder (printed and
  recorded), voxel size 1, ``--start 0`` and exactly N files, one local worker per usable core
  (the CPU affinity, not the machine's count), a dashboard on 127.0.0.1 (port 8787 when free),
  files skipped when complete (no ``--overwrite``), other parameters refused (no ``--force``),
  ``--connect-timeout`` 10 s; appending without ``--seed`` keeps the folder's seed;
  ``--dry-run`` says that a fresh seed will be drawn;
- ``--mode 2`` keeps the -60..60 range; ``--filter sirt-like`` takes ``--radial 0.35 0.035`` and
  10 iterations; ``--spectrum`` takes the spectrum's voxel size;
- ``--cluster slurm`` (docs/hpc.md): 1 job of 1 core, 2 GiB per core, dask-jobqueue's
  walltime 00:30:00, the job output beside the output folder;
- ``measure-noise`` (docs/measured-noise.md): ``--seed 0``, every usable cube up to 400;
- the library (docs/api.md): ``NoiseSource(n)`` has the command's defaults and a fresh seed per
  instance; ``generate`` runs on a local cluster of the usable cores, without a dashboard.
"""

from __future__ import annotations

import os
import re
import shutil
import socket
import subprocess

import mrcfile
import numpy as np
import pytest

from mwr_dask import NoiseSource, generate

from .helpers import assert_only_volumes

SEED_LABEL = re.compile(r"^seed=(\d+) voxel=(\S+)$")


def mwr_dask(*args: str, cwd, timeout: float = 240) -> subprocess.CompletedProcess:
    """The console script as a user types it."""
    if shutil.which("mwr-dask") is None:
        pytest.fail("the console script mwr-dask is not installed (pip install -e .)")
    return subprocess.run(
        ["mwr-dask", *args], cwd=cwd, capture_output=True, text=True, timeout=timeout
    )


def labels(path) -> list[str]:
    with mrcfile.open(path, header_only=True) as m:
        return [lab.decode() for lab in m.header.label[: m.header.nlabl]]


def recorded_seed(path) -> int:
    (match,) = [m for m in map(SEED_LABEL.match, labels(path)) if m]
    return int(match.group(1))


def volumes(folder) -> list[np.ndarray]:
    out = []
    for name in sorted(os.listdir(folder)):
        with mrcfile.open(folder / name) as m:
            out.append(np.array(m.data))
    return out


def port_free(port: int) -> bool:
    with socket.socket() as s:
        try:
            s.bind(("127.0.0.1", port))
        except OSError:
            return False
    return True


@pytest.fixture(scope="module")
def first_run(tmp_path_factory):
    """``mwr-dask generate-noise a 3 24``, nothing else, in an empty folder."""
    cwd = tmp_path_factory.mktemp("defaults")
    dashboard_free = port_free(8787)
    proc = mwr_dask("generate-noise", "a", "3", "24", cwd=cwd)
    assert proc.returncode == 0, proc.stderr
    return cwd, proc, dashboard_free


@pytest.mark.slow
def test_main_command_writes_what_help_and_readme_promise(first_run):
    cwd, proc, _ = first_run
    folder = cwd / "a"
    # --start 0 and exactly N files, each a valid float32 MRC of the cube
    assert_only_volumes(folder, range(3))
    for path in sorted(folder.iterdir()):
        with mrcfile.open(path) as m:
            assert m.data.dtype == np.float32 and m.data.shape == (24, 24, 24)
            assert float(m.voxel_size.x) == 1.0  # --voxel-size 1
            data = np.asarray(m.data, dtype=np.float64)
        assert abs(data.mean()) < 1e-5 and abs(data.std() - 1) < 1e-5
    first = labels(folder / "n_00000.mrc")
    # mode 1, tilts -60:60:2, no filter label, voxel 1
    assert " mode=1 " in first[0] and " tilt=-60:60:2 " in first[0] and "index=0" in first[0]
    assert not any("filter=" in label for label in first)
    seed = recorded_seed(folder / "n_00000.mrc")
    assert {recorded_seed(p) for p in folder.iterdir()} == {seed}
    assert 2**64 < seed < 2**128  # 128 bits from the OS (below 2^64 with odds 2^-64)
    # the seed is printed as it is recorded
    assert f"tilts -60:60:2 deg, seed {seed}" in proc.stdout
    # the data are those of the documented defaults, spelt out
    spelt_out = NoiseSource(
        24, mode=1, minangle=-60, maxangle=60, anglestep=2, seed=seed, voxel_size=1,
        filter="none",
    )  # fmt: skip
    for i, data in enumerate(volumes(folder)):
        assert np.array_equal(data, spelt_out[i])


@pytest.mark.slow
def test_local_cluster_defaults(first_run):
    """One single-threaded worker per usable core; the dashboard on 127.0.0.1 (8787 if free)."""
    _, proc, dashboard_free = first_run
    usable = len(os.sched_getaffinity(0))
    assert re.search(rf"^Local cluster: tls://127\.0\.0\.1:\d+, {usable} worker threads$",
                     proc.stdout, re.M), proc.stdout  # fmt: skip
    link = re.search(r"^Dashboard: (http://\S+)$", proc.stdout, re.M)
    assert link, proc.stdout
    if dashboard_free:
        assert link.group(1) == "http://127.0.0.1:8787/status"
    else:
        assert re.fullmatch(r"http://127\.0\.0\.1:\d+/status", link.group(1))


@pytest.mark.slow
@pytest.mark.skipif(
    len(os.sched_getaffinity(0)) < 2 or shutil.which("taskset") is None,
    reason="needs two cores and taskset",
)
def test_ncpus_defaults_to_the_usable_cores_not_the_machines(tmp_path):
    proc = subprocess.run(
        ["taskset", "-c", "0", "mwr-dask", "generate-noise", "c", "1", "16", "--no-dashboard"],
        cwd=tmp_path, capture_output=True, text=True, timeout=240,
    )  # fmt: skip
    assert proc.returncode == 0, proc.stderr
    assert re.search(r"^Local cluster: \S+, 1 worker threads$", proc.stdout, re.M), proc.stdout


@pytest.mark.slow
def test_every_new_folder_gets_a_fresh_seed_and_appends_keep_it(first_run):
    cwd, _, _ = first_run
    second = mwr_dask("generate-noise", "b", "3", "24", "--no-dashboard", cwd=cwd)
    assert second.returncode == 0, second.stderr
    a, b = cwd / "a", cwd / "b"
    seed_a, seed_b = recorded_seed(a / "n_00000.mrc"), recorded_seed(b / "n_00000.mrc")
    assert seed_a != seed_b
    # disjoint noise: no volume of one folder resembles any of the other
    for va in volumes(a):
        for vb in volumes(b):
            assert abs(np.corrcoef(va.ravel(), vb.ravel())[0, 1]) < 0.05
    # append without --seed: the folder's seed, printed and recorded
    more = mwr_dask("generate-noise", "b", "2", "24", "--start", "3", "--no-dashboard", cwd=cwd)
    assert more.returncode == 0, more.stderr
    assert f"seed {seed_b}" in more.stdout
    assert_only_volumes(b, range(5))
    assert {recorded_seed(p) for p in b.iterdir()} == {seed_b}
    # the same command again: complete files are skipped (no --overwrite)
    again = mwr_dask("generate-noise", "b", "2", "24", "--start", "3", "--no-dashboard", cwd=cwd)
    assert again.returncode == 0 and "0 written, 2 skipped" in again.stdout, again.stdout
    # other parameters are refused (no --force), nothing written
    before = {p.name: p.stat().st_mtime_ns for p in b.iterdir()}
    other = mwr_dask("generate-noise", "b", "1", "24", "--start", "5", "--mode", "2", cwd=cwd)
    assert other.returncode == 2 and "mode 2 (folder has 1)" in other.stderr
    assert {p.name: p.stat().st_mtime_ns for p in b.iterdir()} == before


def test_dry_run_says_a_fresh_seed_will_be_drawn(tmp_path):
    proc = mwr_dask("generate-noise", "new", "3", "24", "--dry-run", cwd=tmp_path)
    assert proc.returncode == 0, proc.stderr
    assert "seed fresh (128 bits from the OS" in proc.stdout
    assert not re.search(r"seed \d", proc.stdout)
    assert not (tmp_path / "new").exists()


def test_dry_run_of_a_folder_shows_its_seed(tmp_path):
    folder = tmp_path / "old"
    source = NoiseSource(16, seed=2**100 + 7)
    folder.mkdir()
    with mrcfile.new(folder / "n_00000.mrc") as m:
        m.set_data(source[0])
        m.voxel_size = 1.0
        for i, label in enumerate(source.labels(0)):
            m.header.label[i] = label
        m.header.nlabl = len(source.labels(0))
    proc = mwr_dask("generate-noise", "old", "3", "16", "--start", "1", "--dry-run", cwd=tmp_path)
    assert proc.returncode == 0, proc.stderr
    assert f"seed {2**100 + 7}" in proc.stdout


def test_connect_timeout_defaults_to_10_s(tmp_path):
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]  # closed again: nothing listens there
    proc = mwr_dask("generate-noise", "x", "1", "16", "--scheduler", f"tcp://127.0.0.1:{port}",
                    cwd=tmp_path)  # fmt: skip
    assert proc.returncode == 1
    assert f"cannot reach the Dask scheduler at tcp://127.0.0.1:{port} within 10 s" in proc.stderr
    assert not (tmp_path / "x").exists()


@pytest.mark.slow
def test_mode_2_and_filter_defaults(tmp_path):
    wedge = mwr_dask("generate-noise", "w", "1", "16", "--mode", "2", "--no-dashboard",
                     cwd=tmp_path)  # fmt: skip
    assert wedge.returncode == 0, wedge.stderr
    path = tmp_path / "w" / "n_00000.mrc"
    assert " mode=2 " in labels(path)[0] and " tilt=-60:60:2 " in labels(path)[0]
    seed = recorded_seed(path)
    with mrcfile.open(path) as m:
        assert np.array_equal(m.data, NoiseSource(16, mode=2, minangle=-60, maxangle=60,
                                                  seed=seed)[0])  # fmt: skip
    sirt = mwr_dask("generate-noise", "s", "1", "16", "--filter", "sirt-like", "--no-dashboard",
                    cwd=tmp_path)  # fmt: skip
    assert sirt.returncode == 0, sirt.stderr
    path = tmp_path / "s" / "n_00000.mrc"
    assert labels(path)[-1] == "filter=sirt-like radial=0.35,0.035 sirt=10"
    spelt_out = NoiseSource(16, filter="sirt-like", radial=(0.35, 0.035), sirt_iterations=10,
                            seed=recorded_seed(path))  # fmt: skip
    with mrcfile.open(path) as m:
        assert np.array_equal(m.data, spelt_out[0])


def test_batch_defaults_in_the_job_script(tmp_path):
    """docs/hpc.md: 1 job, 1 core, 2 GiB per core, walltime 00:30:00, logs beside the folder."""
    env = {**os.environ, "DASK_CONFIG": str(tmp_path / "no-config")}  # no user settings
    proc = subprocess.run(
        ["mwr-dask", "generate-noise", "out", "10", "16", "--cluster", "slurm", "--dry-run"],
        cwd=tmp_path, capture_output=True, text=True, timeout=120, env=env,
    )  # fmt: skip
    assert proc.returncode == 0, proc.stderr
    assert "SLURM: 1 job, each 1 core, 2 GiB, walltime 00:30:00, running 1 worker process" in (
        proc.stdout
    )
    assert "#SBATCH -n 1" in proc.stdout and "#SBATCH --cpus-per-task=1" in proc.stdout
    assert "#SBATCH --mem=2G" in proc.stdout and "#SBATCH -t 00:30:00" in proc.stdout
    assert f"#SBATCH -e {tmp_path}/.out.mwr-dask/jobs/" in proc.stdout


def test_library_defaults_and_a_fresh_seed_per_source():
    a, b = NoiseSource(16), NoiseSource(16)
    assert a.seed != b.seed and 0 <= a.seed < 2**128 and 0 <= b.seed < 2**128
    assert not np.array_equal(a[0], b[0])
    spelt_out = NoiseSource(16, mode=1, minangle=-60, maxangle=60, anglestep=2, seed=a.seed,
                            voxel_size=1, filter="none")  # fmt: skip
    assert np.array_equal(a[0], spelt_out[0]) and np.array_equal(a[5], spelt_out[5])


@pytest.mark.slow
def test_generate_defaults_to_a_local_cluster_of_the_usable_cores(tmp_path):
    said: list[str] = []
    source = NoiseSource(16)
    done = generate(tmp_path / "lib", 2, source, say=said.append)
    assert done.ok and done.source.seed == source.seed
    assert_only_volumes(tmp_path / "lib", range(2))
    assert recorded_seed(tmp_path / "lib" / "n_00001.mrc") == source.seed
    usable = len(os.sched_getaffinity(0))
    assert any(re.fullmatch(rf"Local cluster: \S+, {usable} worker threads", s) for s in said)
    assert not any(s.startswith("Dashboard:") for s in said)  # no dashboard in the library


@pytest.mark.slow
def test_measure_noise_defaults(tmp_path):
    """``--seed 0`` and every usable cube (at most 400), as the spectrum's labels record."""
    rng = np.random.default_rng(1)
    for name in ("even", "odd"):
        with mrcfile.new(tmp_path / f"{name}.mrc") as m:
            m.set_data(rng.standard_normal((40, 40, 40)).astype(np.float32))
            m.voxel_size = 3.0
    proc = mwr_dask("measure-noise", "even.mrc", "odd.mrc", "s.mrc", "--cubesize", "8",
                    cwd=tmp_path)  # fmt: skip
    assert proc.returncode == 0, proc.stderr
    spectrum_labels = labels(tmp_path / "s.mrc")
    assert spectrum_labels[-1].endswith(" seed=0")
    cubes = int(re.search(r" cubes=(\d+) ", spectrum_labels[0]).group(1))
    assert 16 <= cubes <= 400
    # the voxel size of noise made from it defaults to the spectrum's (the halves')
    run = mwr_dask("generate-noise", "m", "1", "8", "--spectrum", "s.mrc", "--no-dashboard",
                   cwd=tmp_path)  # fmt: skip
    assert run.returncode == 0, run.stderr
    with mrcfile.open(tmp_path / "m" / "n_00000.mrc") as m:
        assert float(m.voxel_size.x) == pytest.approx(3.0)
        assert "voxel=3 " in labels(tmp_path / "m" / "n_00000.mrc")[1] + " "
