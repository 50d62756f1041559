"""Issue 14: other users, odd filesystems, odd entries and odd values, through the console script.

The suite runs as root; the other user is ``nobody``, who plants links, FIFOs and folders in a
sticky world-writable folder (like /tmp or a shared project folder), with ``setpriv``.
"""

from __future__ import annotations

import os
import resource
import shutil
import subprocess
import tempfile
from pathlib import Path

import mrcfile
import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from mwr_dask.files.mrc import is_complete, state_dir, write_volume
from mwr_dask.noise.source import NoiseSource
from mwr_dask.parallel.pipeline import partition_plan, partition_ranges

from .conftest import skip_or_fail
from .helpers import assert_only_volumes, cli

RUN = ("--ncpus", "1", "--no-dashboard", "--seed", "5")


def as_nobody(*command: str) -> None:
    """Run ``command`` as the user nobody (the other user of a shared machine)."""
    subprocess.run(
        ["setpriv", "--reuid", "nobody", "--regid", "nogroup", "--clear-groups", *command],
        check=True,
        capture_output=True,
    )


@pytest.fixture
def shared():
    """A sticky world-writable folder (like /tmp) that nobody can reach: ``<base>/shared``."""
    if os.geteuid() != 0 or not shutil.which("setpriv"):
        skip_or_fail("acting as another user needs root and setpriv")
    base = Path(tempfile.mkdtemp(prefix="mwr-hardening-", dir="/tmp"))
    base.chmod(0o755)
    folder = base / "shared"
    folder.mkdir()
    folder.chmod(0o1777)
    yield folder
    shutil.rmtree(base, ignore_errors=True)


@pytest.fixture
def mount(tmp_path):
    """Mount a tmpfs of ``size`` at a fresh folder; unmounted afterwards (root; CI is root)."""
    mounted = []

    def make(name: str, size: str = "8m") -> Path:
        where = tmp_path / name
        where.mkdir()
        if os.geteuid() != 0:
            skip_or_fail("mounting a tmpfs needs root")
        done = subprocess.run(["mount", "-t", "tmpfs", "-o", f"size={size}", "tmpfs", str(where)],
                              capture_output=True, text=True)  # fmt: skip
        if done.returncode != 0:
            skip_or_fail(f"cannot mount a tmpfs here: {done.stderr.strip()}")
        mounted.append(where)
        return where

    yield make
    for where in mounted:
        subprocess.run(["umount", "-l", str(where)], check=False)


def attack(shared: Path, target: Path, victim: Path, how: str) -> Path:
    """Plant, as nobody, the hidden sibling of ``shared/noise``: links to the victim's files."""
    sibling = shared / ".noise.mwr-dask"
    if how == "link":  # the sibling itself is a link to a folder of nobody's
        theirs = shared / "theirs"
        as_nobody("mkdir", str(theirs))
        as_nobody("ln", "-s", str(target), str(theirs / "tmp"))
        as_nobody("ln", "-s", str(victim), str(theirs / "lock"))
        as_nobody("ln", "-s", str(theirs), str(sibling))
    else:  # a folder of nobody's holding the links
        as_nobody("mkdir", str(sibling))
        as_nobody("ln", "-s", str(target), str(sibling / "tmp"))
        as_nobody("ln", "-s", str(victim), str(sibling / "lock"))
    return sibling


@pytest.mark.slow
@pytest.mark.parametrize("how", ["link", "folder"])
def test_a_planted_sibling_never_deletes_or_overwrites_anything(shared, tmp_path, how):
    # item 1: nobody plants tmp -> the victim's folder and lock -> the victim's file
    target = tmp_path / "precious"
    target.mkdir()
    for k in range(3):
        (target / f"data{k}.txt").write_text(f"keep {k}")
    victim = tmp_path / "victim.txt"
    victim.write_text("mine")
    sibling = attack(shared, target, victim, how)
    folder = shared / "noise"
    # the run has no use for the sibling (anonymous temporaries, lock on the folder)
    run = cli("generate-noise", str(folder), "3", "16", *RUN)
    assert run.returncode == 0, run.stderr
    assert_only_volumes(folder, range(3))
    # where it needs the sibling, it refuses the planted one in one sentence, before any work
    shutil.rmtree(folder)
    env = {**os.environ, "MWR_DASK_NO_TMPFILE": "1"}
    run = cli("generate-noise", str(folder), "3", "16", *RUN, env=env)
    assert run.returncode == 2, run.stderr
    why = "is a symbolic link, not a folder of yours" if how == "link" else "belongs to user nobody"
    assert why in run.stderr and "Traceback" not in run.stderr
    assert len(run.stderr.strip().splitlines()) == 1
    assert not folder.exists()
    assert sorted(os.listdir(target)) == ["data0.txt", "data1.txt", "data2.txt"]
    assert victim.read_text() == "mine"
    assert sibling.is_symlink() == (how == "link")


@pytest.mark.slow
def test_the_sibling_is_private_and_removed_when_it_is_needed(tmp_path):
    # a sibling writable by others is refused; one made by the run is 0700 and goes after it
    folder = tmp_path / "noise"
    env = {**os.environ, "MWR_DASK_NO_TMPFILE": "1"}
    open_sibling = state_dir(folder)
    open_sibling.mkdir()
    open_sibling.chmod(0o777)
    run = cli("generate-noise", str(folder), "2", "16", *RUN, env=env)
    assert run.returncode == 2 and "can be written by other users" in run.stderr
    open_sibling.rmdir()
    run = cli("generate-noise", str(folder), "2", "16", *RUN, env=env)
    assert run.returncode == 0, run.stderr
    assert_only_volumes(folder, range(2))
    assert sorted(os.listdir(tmp_path)) == ["noise"]


@pytest.mark.slow
def test_an_output_folder_that_is_a_mount_point_or_a_link_into_one(tmp_path, mount):
    # item 5: temporaries on the folder's own filesystem; free space measured there
    small = mount("small", "1m")
    run = cli("generate-noise", str(small), "100", "32", *RUN)
    assert run.returncode == 2
    assert "need 13.5 MB but only 1.0" in run.stderr  # the tmpfs, not the parent's disk
    big = mount("big")
    run = cli("generate-noise", str(big), "4", "16", *RUN)
    assert run.returncode == 0, run.stderr
    assert_only_volumes(big, range(4))
    # a link into the other filesystem, named or anonymous temporaries
    (big / "noise").mkdir()
    link = tmp_path / "link"
    link.symlink_to(big / "noise")
    env = {**os.environ, "MWR_DASK_NO_TMPFILE": "1"}
    run = cli("generate-noise", str(link), "3", "16", *RUN, env=env)
    assert run.returncode == 0, run.stderr
    assert_only_volumes(big / "noise", range(3))
    assert not state_dir(link).exists() and state_dir(link).parent == big
    # a mount point whose filesystem had no O_TMPFILE: refused before any work, with the way out
    run = cli("generate-noise", str(big), "6", "16", *RUN, env=env)
    assert run.returncode == 2 and "a mount point" in run.stderr
    assert "use a subfolder of it" in run.stderr
    assert sorted(os.listdir(big)) == ["n_00000.mrc", "n_00001.mrc", "n_00002.mrc",
                                       "n_00003.mrc", "noise"]  # fmt: skip


@pytest.mark.slow
def test_fifo_and_links_named_like_volumes_are_conflicts_never_opened(shared, tmp_path):
    # item 7: a FIFO (or a link) named n_00001.mrc must not hang the run; it is named
    folder = shared / "noise"
    as_nobody("mkdir", "-m", "1777", str(folder))  # a shared noise folder
    as_nobody("mkfifo", str(folder / "n_00001.mrc"))
    victim = tmp_path / "victim.mrc"
    victim.write_text("mine")
    as_nobody("ln", "-s", str(victim), str(folder / "n_00002.mrc"))
    for extra in ([], ["--dry-run"], ["--verify"]):
        run = cli("generate-noise", str(folder), "3", "16", *RUN, *extra, timeout=120)
        assert run.returncode == 2, run.stderr
        assert "n_00001.mrc is a FIFO, not a file" in run.stderr
        assert "n_00002.mrc is a symbolic link, not a file" in run.stderr
    # --force replaces them with volumes; the link's target is not touched
    run = cli("generate-noise", str(folder), "3", "16", *RUN, "--force", timeout=120)
    assert run.returncode == 0, run.stderr
    assert_only_volumes(folder, range(3))
    assert victim.read_text() == "mine"


def isonet_volume(path: Path, n: int = 16) -> None:
    """An unlabelled float32 volume as IsoNet v1 writes its noise."""
    rng = np.random.default_rng(1)
    with mrcfile.new(path, overwrite=True) as mrc:
        mrc.set_data(rng.standard_normal((n, n, n)).astype(np.float32))


@pytest.mark.slow
def test_unlabelled_volumes_are_foreign_unless_forced(tmp_path):
    # item 8: IsoNet v1 volumes (no labels) are refused, with --verify too, each reason named
    folder = tmp_path / "noise"
    folder.mkdir()
    for i in (0, 1, 2):
        isonet_volume(folder / f"n_{i:05d}.mrc")
    theirs = {p.name: p.read_bytes() for p in folder.iterdir()}
    ours = NoiseSource(16, seed=9)
    write_volume(folder / "n_00003.mrc", np.zeros((16,) * 3, np.float32), 1.0, ours.labels(3))
    for extra in ([], ["--verify"]):
        run = cli("generate-noise", str(folder), "6", "16", *RUN, *extra)
        assert run.returncode == 2, run.stderr
        assert "3 volumes without mwr-dask labels (e.g. n_00000.mrc" in run.stderr
        assert "seed 5 (folder has 9)" in run.stderr
    run = cli("generate-noise", str(folder), "6", "16", *RUN, "--force")
    assert run.returncode == 0, run.stderr
    assert "2 written, 4 skipped" in run.stdout  # mixed, as forced
    assert {name: (folder / name).read_bytes() for name in theirs} == theirs
    run = cli("generate-noise", str(folder), "6", "16", *RUN, "--force", "--verify")
    assert run.returncode == 0 and "4 written, 2 skipped" in run.stdout, run.stderr


@pytest.mark.slow
def test_a_corrupt_map_id_is_regenerated_on_resume(tmp_path):
    # item 9: a file that mrcfile.open refuses (strict mode) is not complete
    folder = tmp_path / "noise"
    run = cli("generate-noise", str(folder), "3", "16", *RUN)
    assert run.returncode == 0, run.stderr
    good = (folder / "n_00001.mrc").read_bytes()
    with open(folder / "n_00001.mrc", "r+b") as f:
        f.seek(208)
        f.write(b"XYZ ")
    with pytest.raises(ValueError, match="Map ID"):
        mrcfile.open(folder / "n_00001.mrc").close()
    run = cli("generate-noise", str(folder), "3", "16", *RUN)
    assert run.returncode == 0 and "1 written, 2 skipped" in run.stdout, run.stderr
    assert (folder / "n_00001.mrc").read_bytes() == good


@settings(max_examples=60, deadline=None)
@given(offset=st.integers(0, 1023), value=st.integers(0, 255))
def test_complete_means_mrcfile_opens_it_strictly(tmp_path_factory, offset, value):
    path = tmp_path_factory.mktemp("one") / "n_00000.mrc"
    data = np.random.default_rng(0).standard_normal((8, 8, 8)).astype(np.float32)
    write_volume(path, data, 1.0, NoiseSource(8).labels(0))
    raw = bytearray(path.read_bytes())
    raw[offset] = value
    path.write_bytes(bytes(raw))
    if is_complete(path, 8):
        with mrcfile.open(path) as mrc:  # strict, the default: must not raise
            assert mrc.data.shape == (8, 8, 8)


@pytest.mark.slow
@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["--anglestep", "nan"], "--anglestep must be positive and finite, not nan"),
        (["--anglestep", "1e-300"], "makes more than 10,000 tilts"),
        (["--seed", str(10**75)], "less than 2^128"),
        (["--start", str(10**30)], "more than the 80 an MRC header holds"),
        (["--minangle", "-59.123456789012345", "--anglestep", "1.123456789012345"],
         "more than the 80 an MRC header holds"),
        (["--voxel-size", "1e40"], "cannot be stored in the MRC header"),
        (["--voxel-size", "1e-45"], "cannot be stored in the MRC header"),
        (["--voxel-size", "inf"], "--voxel-size must be positive and finite, not inf"),
        (["--connect-timeout", "nan"], "--connect-timeout must be a positive number of seconds"),
        (["--connect-timeout", "inf"], "--connect-timeout must be a positive number of seconds"),
        (["--worker-timeout", "nan"], "--worker-timeout must be a positive number of seconds"),
    ],
)  # fmt: skip
def test_values_a_worker_would_trip_over_are_refused_up_front(tmp_path, args, message):
    # item 14: one sentence, exit 2, nothing written
    run = cli("generate-noise", str(tmp_path / "noise"), "3", "16", *args)
    assert run.returncode == 2, run.stderr
    assert message in run.stderr and "Traceback" not in run.stderr
    assert len(run.stderr.strip().splitlines()) == 1
    assert os.listdir(tmp_path) == []


@pytest.mark.slow
@pytest.mark.parametrize(
    "args",
    [
        ["--mode", "2", "--anglestep", "1e-9"],  # mode 2 does not use the step
        ["--mode", "2", "--minangle", "-1", "--maxangle", "1"],  # nor checks it on the range
    ],
)
def test_the_mode_2_step_is_not_used(tmp_path, args):
    run = cli("generate-noise", str(tmp_path / "noise"), "3", "16", *args, "--dry-run")
    assert run.returncode == 0, run.stderr
    assert "mode 2 (wedge filter)" in run.stdout


def limit_memory() -> None:
    resource.setrlimit(resource.RLIMIT_AS, (8 * 2**30, 8 * 2**30))


@pytest.mark.slow
def test_dry_run_of_10_21_volumes_is_planned_without_listing_them(tmp_path):
    # item 15: the plan is arithmetic; under an 8 GiB address-space limit
    n = 10**21
    run = cli("generate-noise", str(tmp_path / "noise"), str(n), "32", "--ncpus", "2",
              "--dry-run", preexec_fn=limit_memory, timeout=120)  # fmt: skip
    assert run.returncode == 0, run.stderr
    parts, base, extra = partition_plan(0, n, 2, NoiseSource(32).volume_bytes)
    each = f"{base}" if extra == 0 else f"{base}-{base + 1}"
    assert f"Tasks: {parts:,} (one per partition of {each} volumes)" in run.stdout
    assert os.listdir(tmp_path) == []


@given(
    start=st.integers(0, 10**6),
    count=st.integers(1, 3000),
    workers=st.integers(1, 64),
    size=st.integers(1, 2**28),
)
def test_the_partition_plan_describes_the_partitions(start, count, workers, size):
    ranges = partition_ranges(start, count, workers, size)
    parts, base, extra = partition_plan(start, count, workers, size)
    assert len(ranges) == parts
    assert [len(r) for r in ranges] == [base + 1] * extra + [base] * (parts - extra)
    assert ranges[0].start == start and ranges[-1].stop == start + count


@pytest.fixture
def small_fs(mount):
    return mount("small", "1m")


@pytest.mark.slow
def test_a_full_filesystem_at_start_is_one_sentence_and_leaves_nothing(small_fs):
    # item 14: 100% full before the run
    with open(small_fs / "filler", "wb", buffering=0) as f, pytest.raises(OSError):
        while True:
            f.write(b"\0" * 65536)
    run = cli("generate-noise", str(small_fs / "noise"), "2", "16", *RUN)
    assert run.returncode == 2, run.stderr
    assert "Traceback" not in run.stderr and len(run.stderr.strip().splitlines()) == 1
    assert os.listdir(small_fs) == ["filler"]


@pytest.mark.slow
def test_a_long_folder_name_and_a_parent_nobody_can_write(tmp_path):
    # item 14: a 250-character name (its sibling would exceed NAME_MAX: it is shortened),
    # and a writable folder in a parent that cannot be written (immutable, even for root)
    long = tmp_path / ("n" * 250)
    env = {**os.environ, "MWR_DASK_NO_TMPFILE": "1"}
    for extra in ({}, {"env": env}):
        run = cli("generate-noise", str(long), "2", "16", *RUN, **extra)
        assert run.returncode == 0, run.stderr
        assert_only_volumes(long, range(2))
        shutil.rmtree(long)
        assert os.listdir(tmp_path) == []  # no sibling left, whatever its name
    parent = tmp_path / "parent"
    (parent / "noise").mkdir(parents=True)
    if os.geteuid() != 0 or subprocess.run(["chattr", "+i", str(parent)]).returncode != 0:
        skip_or_fail("making a folder immutable needs root and chattr on this filesystem")
    try:
        run = cli("generate-noise", str(parent / "noise"), "2", "16", *RUN)
        assert run.returncode == 0, run.stderr
        assert_only_volumes(parent / "noise", range(2))
    finally:
        subprocess.run(["chattr", "-i", str(parent)], check=True)
