"""The shortcuts taken for speed give what the slow, obvious code gives."""

import os

import mrcfile
import numpy as np
import pytest
import scipy.stats

from mwr_dask.files.mrc import read_volume, write_volume
from mwr_dask.noise.normals import standard_normal, volume_rng

from .helpers import range_generator


def test_box_muller_numbers_are_independent_standard_normals():
    draws = standard_normal(volume_rng(0, 0), np.empty(2_000_000, dtype=np.float32))
    assert draws.dtype == np.float32 and np.all(np.isfinite(draws))
    assert scipy.stats.kstest(draws, "norm").pvalue > 1e-3
    assert abs(float(draws.mean())) < 5 / np.sqrt(draws.size)
    assert abs(float(draws.std()) - 1) < 5 / np.sqrt(2 * draws.size)
    # the two numbers of a Box-Muller pair (first and second half) are independent
    a, b = draws[: draws.size // 2].astype(np.float64), draws[draws.size // 2 :]
    for x, y in ((a, b), (a**2, b**2), (np.abs(a), np.abs(b))):
        assert abs(np.corrcoef(x, y)[0, 1]) < 5 / np.sqrt(a.size)
    # as are neighbours in the stream
    assert abs(np.corrcoef(a[:-1], a[1:])[0, 1]) < 5 / np.sqrt(a.size)


def test_box_muller_is_a_pure_function_of_the_stream():
    one = standard_normal(volume_rng(3, 9), np.empty((10, 6), dtype=np.float32))
    two = standard_normal(volume_rng(3, 9), np.empty((10, 6), dtype=np.float32))
    assert np.array_equal(one, two)
    with pytest.raises(ValueError, match="even"):
        standard_normal(volume_rng(3, 9), np.empty(7, dtype=np.float32))


@pytest.mark.parametrize("mode", [1, 2])
def test_reused_scratch_does_not_leak_between_volumes(mode):
    g = range_generator(mode, 16, -45.0, 55.0, 5.0)
    first = g(volume_rng(1, 0))
    g(volume_rng(1, 1))
    assert np.array_equal(g(volume_rng(1, 0)), first)


@pytest.mark.parametrize("shape", [(16, 16, 16), (7, 9, 11)])
def test_written_file_is_byte_identical_to_mrcfile(tmp_path, shape):
    data = np.random.default_rng(5).standard_normal(shape, dtype=np.float32) * 3 + 0.25
    labels = ["mwr-dask 0.1.0 mode=1 cube=16 tilt=-60:60:2 index=1", "seed=5 voxel=4.35"]
    ours = tmp_path / "ours.mrc"
    write_volume(ours, data, 4.35, labels, tmp_path, fsync=True)
    theirs = tmp_path / "theirs.mrc"
    with mrcfile.new(theirs) as mrc:
        mrc.set_data(data)
        mrc.voxel_size = 4.35
        mrc.header.nlabl = 0
        mrc.header.label[:] = b""
        for label in labels:
            mrc.add_label(label)
    assert ours.read_bytes() == theirs.read_bytes()
    with open(os.devnull, "w") as sink:
        assert mrcfile.validate(str(ours), print_file=sink)
    assert np.array_equal(read_volume(ours), data)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["ours.mrc", "theirs.mrc"]


@pytest.mark.parametrize("labels", [["é"], ["x" * 81], ["a\nb"], ["ok"] * 11])
def test_bad_labels_are_refused_and_leave_nothing(tmp_path, labels):
    data = np.zeros((4, 4, 4), dtype=np.float32)
    with pytest.raises(ValueError):
        write_volume(tmp_path / "v.mrc", data, 1.0, labels, tmp_path)
    assert list(tmp_path.iterdir()) == []
