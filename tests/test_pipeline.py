"""The Dask pipeline on a real multi-process cluster: determinism, files, metadata."""

import os
from pathlib import Path

import mrcfile
import numpy as np
import pytest
from hypothesis import given
from hypothesis import strategies as st

from mwr_dask.files.mrc import state_dir
from mwr_dask.noise.normals import volume_rng
from mwr_dask.noise.source import NoiseSource, source_from_labels
from mwr_dask.parallel.pipeline import PARTITION_BYTES, build_bag, partition_ranges, run

from .helpers import assert_only_volumes, range_generator, read_all

PARAMS = NoiseSource(cubesize=16, mode=1, minangle=-50, maxangle=60, anglestep=5, seed=42)


def generate(client, folder: Path, params=PARAMS, start=0, count=12, **kw):
    tmp = state_dir(folder) / "tmp"
    tmp.mkdir(parents=True, exist_ok=True)
    folder.mkdir(parents=True, exist_ok=True)
    return run(client, params, start, count, folder, tmp, **kw)


@given(
    start=st.integers(0, 10**6),
    count=st.integers(1, 5000),
    workers=st.integers(1, 64),
    size=st.sampled_from([1024 + 4 * 32**3, 1024 + 4 * 128**3, 1024 + 4 * 256**3]),
)
def test_partitions_cover_every_index_once(start, count, workers, size):
    ranges = partition_ranges(start, count, workers, size)
    flat = [i for r in ranges for i in r]
    assert flat == list(range(start, start + count))
    lengths = [len(r) for r in ranges]
    assert max(lengths) - min(lengths) <= 1
    assert len(ranges) >= min(count, 4 * workers)
    if len(ranges) > 4 * workers:  # split further only to bound the bytes of a partition
        assert max(lengths) * size <= PARTITION_BYTES + size


@pytest.mark.slow
@pytest.mark.parametrize("mode", [1, 2])
def test_files_are_valid_and_match_the_generator(client, tmp_path, mode):
    params = NoiseSource(
        cubesize=16, mode=mode, minangle=-40, maxangle=56, anglestep=4, seed=7, voxel_size=4.35
    )
    folder = tmp_path / "noise"
    result = generate(client, folder, params, start=3, count=10)
    assert (result.written, result.skipped, result.failed) == (10, 0, 0)
    assert_only_volumes(folder, range(3, 13))
    g = range_generator(mode, 16, -40.0, 56.0, 4.0)
    for i in range(3, 13):
        with mrcfile.open(folder / f"n_{i:05d}.mrc") as m:
            assert m.data.dtype == np.float32
            assert m.header.mode == 2
            assert np.isclose(m.voxel_size.x, 4.35)
            labels = [lab.decode() for lab in m.header.label[: m.header.nlabl]]
            assert source_from_labels(labels) == params
            assert f"index={i}" in labels[0]
            np.testing.assert_array_equal(m.data, g(volume_rng(7, i)))
    # temporaries live outside the folder and are gone
    assert os.listdir(state_dir(folder) / "tmp") == []


@pytest.mark.slow
def test_same_volumes_whatever_the_partitioning_or_split(client, tmp_path):
    one = tmp_path / "one"
    assert generate(client, one, count=20).written == 20
    # split into appends of different sizes, planned for other worker counts
    split = tmp_path / "split"
    assert generate(client, split, start=0, count=7, workers=1).written == 7
    assert generate(client, split, start=7, count=13, workers=16).written == 13
    a, b = read_all(one), read_all(split)
    assert sorted(a) == sorted(b) == [f"n_{i:05d}.mrc" for i in range(20)]
    for name in a:
        np.testing.assert_array_equal(a[name], b[name])


@pytest.mark.slow
def test_same_volumes_whatever_the_worker_count(client, tmp_path):
    """Two workers in processes against one process computing in-line."""
    assert generate(client, tmp_path / "dask", count=8).written == 8
    ref = read_all(tmp_path / "dask")
    bag = build_bag(
        PARAMS, partition_ranges(0, 8, 1, PARAMS.volume_bytes), tmp_path / "sync", tmp_path / "t"
    )
    (tmp_path / "sync").mkdir()
    (tmp_path / "t").mkdir()
    summaries = bag.compute(scheduler="sync")
    assert sum(summary["written"] for summary in summaries) == 8
    local = read_all(tmp_path / "sync")
    assert sorted(ref) == sorted(local) == [f"n_{i:05d}.mrc" for i in range(8)]
    for name in ref:
        np.testing.assert_array_equal(ref[name], local[name])


@pytest.mark.parametrize("mode", [1, 2])
def test_volumes_are_distinct(mode):
    g = range_generator(mode, 16, -60.0, 60.0, 3.0)
    vols = np.stack([g(volume_rng(1, i)).ravel() for i in range(40)])
    corr = np.corrcoef(vols)
    off = corr[~np.eye(len(vols), dtype=bool)]
    # independent volumes: |r| ~ N(0, 1/sqrt(n_eff)); mode 1 has fewer effective samples
    assert np.abs(off).max() < 0.25
    assert abs(off.mean()) < 0.01


def test_seeds_change_every_volume():
    g = range_generator(2, 16, -60.0, 60.0, 2.0)
    a = g(volume_rng(1, 0))
    b = g(volume_rng(2, 0))
    assert abs(np.corrcoef(a.ravel(), b.ravel())[0, 1]) < 0.1


@pytest.mark.slow
def test_resume_skips_complete_files_and_replaces_broken_ones(client, tmp_path):
    folder = tmp_path / "noise"
    generate(client, folder, count=6)
    ref = read_all(folder)
    (folder / "n_00002.mrc").write_bytes(b"truncated")
    with open(folder / "n_00004.mrc", "r+b") as f:
        f.truncate(2000)
    mtime = os.stat(folder / "n_00000.mrc").st_mtime_ns
    result = generate(client, folder, count=6)
    assert (result.written, result.skipped) == (2, 4)
    assert os.stat(folder / "n_00000.mrc").st_mtime_ns == mtime
    again = read_all(folder)
    for name in ref:
        np.testing.assert_array_equal(ref[name], again[name])
    result = generate(client, folder, count=6, overwrite=True)
    assert result.written == 6
