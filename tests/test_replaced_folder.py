"""Issue 21.3: an output folder replaced during a run (in a parent that others can write).

Each worker process writes through a descriptor of the folder opened once, and checks before
each volume that the folder's path still names it: a folder replaced by a link stops the run,
and nothing is written (or skipped) in the link's target.
"""

from __future__ import annotations

import os
from pathlib import Path

import numpy as np
import pytest

from mwr_dask.files.mrc import FOLDER_REPLACED, opened_folder, write_volume
from mwr_dask.noise.source import NoiseSource
from mwr_dask.parallel.pipeline import FATAL_ERRNOS, write_one

from .helpers import assert_only_volumes
from .test_reliability import start_cli, wait_for_files


def replace_by_link(folder: Path, target: Path) -> Path:
    """Rename ``folder`` away and put a link to ``target`` in its place; return where it went."""
    moved = folder.with_name(folder.name + ".moved")
    os.rename(folder, moved)
    folder.symlink_to(target, target_is_directory=True)
    return moved


def test_a_worker_does_not_follow_a_folder_replaced_by_a_link(tmp_path):
    source = NoiseSource(8, mode=2, seed=3)
    folder, target = tmp_path / "noise", tmp_path / "target"
    folder.mkdir()
    target.mkdir()
    first = write_one(0, source, str(folder), str(folder), False, False)
    assert first["status"] == "written"
    moved = replace_by_link(folder, target)
    # a complete volume in the link's target must not be skipped as this run's either
    write_volume(target / "n_00002.mrc", source.volume(2), 1.0, source.labels(2))
    for index in (1, 2):
        rec = write_one(index, source, str(folder), str(folder), False, False)
        assert rec["status"] == "failed" and rec["errno"] in FATAL_ERRNOS, rec
        assert f"the output folder {folder} was replaced during the run" in rec["error"]
    assert os.listdir(target) == ["n_00002.mrc"]
    assert_only_volumes(moved, [0])


def test_write_volume_checks_the_inode_the_run_recorded(tmp_path):
    data = np.zeros((8, 8, 8), np.float32)
    folder = tmp_path / "noise"
    folder.mkdir()
    ino = folder.stat().st_ino
    write_volume(folder / "n_00000.mrc", data, 1.0, [], folder, inodes=(ino, ino))
    impostor = tmp_path / "impostor"
    impostor.mkdir()  # another folder at the recorded path before a worker first opens it
    with pytest.raises(OSError) as err:
        write_volume(impostor / "n_00000.mrc", data, 1.0, [], impostor, inodes=(ino, ino))
    assert err.value.errno == FOLDER_REPLACED and "was replaced" in err.value.strerror
    assert os.listdir(impostor) == []
    target = tmp_path / "target"
    target.mkdir()
    replace_by_link(folder, target)
    with pytest.raises(OSError) as err:
        write_volume(folder / "n_00001.mrc", data, 1.0, [], folder, inodes=(ino, ino))
    assert err.value.errno == FOLDER_REPLACED and os.listdir(target) == []


def test_a_folder_removed_and_made_again_is_opened_again(tmp_path):
    """A long-lived worker (a remote cluster, the caller's client) keeps folders open between
    runs: a removed one (whose inode a new folder may get) is opened again, never written."""
    source = NoiseSource(8, mode=2, seed=3)
    folder = tmp_path / "noise"
    folder.mkdir()
    assert write_one(0, source, str(folder), str(folder), False, False)["status"] == "written"
    os.unlink(folder / "n_00000.mrc")
    folder.rmdir()
    folder.mkdir()  # the next run, same path
    rec = write_one(1, source, str(folder), str(folder), False, False)
    assert rec["status"] == "written", rec
    assert_only_volumes(folder, [1])
    fd = opened_folder(str(folder))
    assert os.fstat(fd).st_ino == folder.stat().st_ino


@pytest.mark.slow
def test_a_folder_replaced_by_a_link_mid_run_stops_the_run(tmp_path):
    parent = tmp_path / "shared"
    parent.mkdir()
    parent.chmod(0o777)  # others may rename what is in it: no sticky bit
    folder, target = parent / "noise", tmp_path / "target"
    target.mkdir()
    real = Path(os.path.realpath(folder))
    proc = start_cli("generate-noise", str(folder), "3000", "40", "--ncpus", "2", "--no-dashboard")
    wait_for_files(folder, 10, proc)
    moved = replace_by_link(folder, target)
    _, stderr = proc.communicate(timeout=180)
    assert proc.returncode == 1, stderr
    assert f"the output folder {real} was replaced during the run" in stderr
    assert "stopped early" in stderr and "Traceback" not in stderr
    assert os.listdir(target) == []
    names = os.listdir(moved)
    assert 10 <= len(names) < 3000
    assert_only_volumes(moved, [int(n[2:7]) for n in names])
