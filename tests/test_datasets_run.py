"""``generate-noise --tomograms`` and ``inspect OUT`` through the console script (slow: each
starts a local cluster). Small cubes, two volumes per folder."""

from __future__ import annotations

import json
import os
import shutil
from pathlib import Path

import mrcfile
import numpy as np
import pytest

from mwr_dask.noise import datasets as ds
from mwr_dask.noise.measured import measure_noise, spectrum_digest
from mwr_dask.noise.source import NoiseSource
from mwr_dask.noise.tiltfiles import read_tilt_file

from .helpers import assert_only_volumes, cli, read_all
from .test_datasets import NAMES, RELION, TOMOGRAMS, isonet_star

pytestmark = pytest.mark.slow
FAST = ["--ncpus", "1", "--no-dashboard"]


def test_relion_project_five_folders_own_schemes_independent_same_bytes_on_rerun(tmp_path):
    out = tmp_path / "out"
    run = ["generate-noise", str(out), "2", "16", "--tomograms", str(TOMOGRAMS), "--seed", "11"]
    first = cli(*run, *FAST)
    assert first.returncode == 0, first.stderr
    assert sorted(os.listdir(out)) == [*NAMES, ds.MANIFEST]
    volumes = {}
    for name in NAMES:
        assert_only_volumes(out / name, range(2))
        scheme = read_tilt_file(RELION / f"Denoise/job007/tilt_series/{name}.star")
        want = NoiseSource(
            16, seed=ds.tomogram_seed(11, name), voxel_size=10.0, tilt_schemes=(scheme,)
        )
        volumes[name] = read_all(out / name)
        for i in range(2):
            assert np.array_equal(volumes[name][f"n_{i:05d}.mrc"], want[i]), name
            with mrcfile.open(out / name / f"n_{i:05d}.mrc", header_only=True) as m:
                assert float(m.voxel_size.x) == pytest.approx(10.0)
    # TS_01 and TS_03 share their angles, not their noise
    assert not np.allclose(volumes["TS_01"]["n_00000.mrc"], volumes["TS_03"]["n_00000.mrc"])
    # a rerun, even one that rewrites every volume, gives the same bytes
    again = cli(*run, *FAST, "--overwrite", "-q")
    assert again.returncode == 0, again.stderr
    for name in NAMES:
        assert all(
            np.array_equal(a, b)
            for a, b in zip(read_all(out / name).values(), volumes[name].values(), strict=True)
        )
    # inspect checks each folder against its own row
    ok = cli("inspect", str(out), "--ncpus", "1", "--json")
    assert ok.returncode == 0, ok.stdout + ok.stderr
    report = json.loads(ok.stdout)
    assert [t["name"] for t in report["tomograms"]] == NAMES and report["ok"]
    shutil.copy(out / "TS_43/n_00000.mrc", out / "TS_01/n_00000.mrc")  # another tomogram's
    bad = cli("inspect", str(out), "--ncpus", "1")
    assert bad.returncode == 1
    assert "problem: TS_01: 1 of 2 volumes (e.g. n_00000.mrc) do not carry sha=" in bad.stdout


def test_isonet2_star_gives_each_folder_its_rows_range_and_mix_one_folder(tmp_path):
    ranges = [(-54, 66), (-40, 50), (-60, 60), (-66, 45), (-30, 70)]
    star = isonet_star(tmp_path, ranges)
    out = tmp_path / "out"
    args = f"{out} 2 16 --tomograms {star} --seed 4 --only TS_01,TS_45 --mode 2"
    proc = cli("generate-noise", *args.split(), *FAST)
    assert proc.returncode == 0, proc.stderr
    assert sorted(os.listdir(out)) == ["TS_01", "TS_45", ds.MANIFEST]
    rows = {t.name: t for t in ds.read_dataset(star).tomograms}
    for name, (lo, hi) in (("TS_01", ranges[0]), ("TS_45", ranges[3])):
        scheme = rows[name].scheme
        assert scheme.minangle == -hi and scheme.maxangle == -lo
        want = NoiseSource(
            16, mode=2, tilt_schemes=(scheme,), voxel_size=5.4, seed=ds.tomogram_seed(4, name)
        )
        got = read_all(out / name)
        assert all(np.array_equal(got[f"n_{i:05d}.mrc"], want[i]) for i in range(2))
    mixed = tmp_path / "mixed_out"
    proc = cli(*f"generate-noise {mixed} 5 16 --tomograms {star} --seed 4 --mix".split(), *FAST)
    assert proc.returncode == 0, proc.stderr
    assert sorted(os.listdir(mixed)) == [ds.MIXED, ds.MANIFEST]
    tomograms = ds.read_dataset(star).tomograms
    got = read_all(mixed / ds.MIXED)
    for i in range(5):
        alone = NoiseSource(16, seed=4, voxel_size=5.4, tilt_schemes=(tomograms[i].scheme,))
        assert np.array_equal(got[f"n_{i:05d}.mrc"], alone[i])
        lo, hi = ranges[i]
        assert alone.wedge(i) == (-hi, -lo)


def write_half(path: Path, data: np.ndarray) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    with mrcfile.new(str(path)) as m:
        m.set_data(data.astype(np.float32))
        m.voxel_size = 5.4


def test_measured_each_tomogram_from_its_own_halves(tmp_path):
    star = isonet_star(tmp_path, [(-60, 60)] * 5)
    rng = np.random.default_rng(0)
    for k, name in enumerate(["TS_01", "TS_03"]):
        signal = rng.standard_normal((32, 32, 32))
        for half in ("EVN", "ODD"):
            noise = (k + 1) * rng.standard_normal((32, 32, 32))
            write_half(tmp_path / f"tomograms_split/{half}/{name}_{half}.mrc", signal + noise)
    out = tmp_path / "out"
    args = f"{out} 2 8 --tomograms {star} --seed 2 --only TS_01,TS_03 --measured"
    proc = cli("generate-noise", *args.split(), *FAST)
    assert proc.returncode == 0, proc.stderr
    for name in ("TS_01", "TS_03"):
        spectrum = out / f"{name}.spectrum.mrc"
        even, odd = (tmp_path / f"tomograms_split/{h}/{name}_{h}.mrc" for h in ("EVN", "ODD"))
        assert spectrum_digest(measure_noise(even, odd, 8).spectrum) == (
            NoiseSource(8, spectrum=spectrum).spectrum.digest
        )
        want = NoiseSource(8, seed=ds.tomogram_seed(2, name), spectrum=spectrum, voxel_size=5.4)
        got = read_all(out / name)
        assert all(np.array_equal(got[f"n_{i:05d}.mrc"], want[i]) for i in range(2))
    _, rows = ds.read_manifest(out)
    assert [r["mwrSpectrum"] for r in rows] == ["TS_01.spectrum.mrc", "TS_03.spectrum.mrc"]
