"""`mwr-dask inspect`: the spectrum estimates, the file checks, the command line and the plot."""

import json
import shutil
import struct
import sys
from pathlib import Path

import mrcfile
import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from typer.testing import CliRunner

from mwr_dask.cli import app
from mwr_dask.files.mrc import state_dir
from mwr_dask.inspection import FileRecord, inspect_folder, workers_missing_folder
from mwr_dask.inspection.duplicates import correlated_pairs, shared_value_pairs
from mwr_dask.inspection.reading import value_sketch
from mwr_dask.inspection.rules import spectrum_findings
from mwr_dask.inspection.spectrum import analyse, circular_gap, fit_arc, full_plane, slice_power
from mwr_dask.noise.geometry import measured_2d
from mwr_dask.noise.normals import volume_rng
from mwr_dask.noise.source import NoiseSource
from mwr_dask.parallel.pipeline import run

from .daskprocs import DaskProcesses
from .helpers import cli, range_generator
from .spectra import kxkz_power

runner = CliRunner()
N = 32
COUNT = 24
GEOMETRIES = [(1, -60.0, 60.0), (2, -60.0, 60.0), (1, -40.0, 56.0), (2, -40.0, 56.0)]


def make_folder(client, folder: Path, params: NoiseSource, count: int = COUNT) -> Path:
    """Generate a folder with the real pipeline."""
    tmp = state_dir(folder) / "tmp"
    tmp.mkdir(parents=True, exist_ok=True)
    folder.mkdir(parents=True, exist_ok=True)
    result = run(client, params, 0, count, folder, tmp)
    assert result.written == count
    return folder


@pytest.fixture(scope="module")
def folders(client, tmp_path_factory):
    """One folder per (mode, tilt range): 24 volumes of 32^3."""
    root = tmp_path_factory.mktemp("inspect")
    out = {}
    for mode, lo, hi in GEOMETRIES:
        params = NoiseSource(cubesize=N, mode=mode, minangle=lo, maxangle=hi, seed=11)
        out[mode, lo, hi] = make_folder(client, root / f"m{mode}_{lo:g}_{hi:g}", params)
    return out


def broken_copy(src: Path, dst: Path) -> Path:
    """A copy of ``src`` with a truncated file, a duplicated one and a stray entry."""
    shutil.copytree(src, dst)
    with open(dst / "n_00004.mrc", "r+b") as f:
        f.truncate(5000)
    shutil.copy(dst / "n_00002.mrc", dst / f"n_{COUNT:05d}.mrc")
    (dst / "README.txt").write_text("noise for run 7\n")
    return dst


# ----------------------------------------------------------------------------- the spectrum


@pytest.mark.slow
@pytest.mark.parametrize(("mode", "lo", "hi"), GEOMETRIES)
def test_estimated_tilt_range_of_real_folders(client, folders, mode, lo, hi):
    report = inspect_folder(folders[mode, lo, hi], client)
    assert report.ok, report.problems
    sp = report.spectrum
    assert sp.volumes == COUNT and sp.wedge_found
    est_lo, est_hi = sp.tilt_range
    # mode 1 puts the half-power edges up to half a step (1 degree) beyond the outer tilts
    assert abs(est_lo - lo) <= 2.0 and abs(est_hi - hi) <= 2.0, sp.tilt_range
    info = report.summary["spectrum"]
    assert info["tilt_range_agrees"] and info["mode_agrees"] and info["looks_like_mode"] == mode
    if mode == 2:
        assert sp.wedge_ratio < 1e-10 and abs(sp.radial_slope) < 0.15
    else:
        assert 0.005 < sp.wedge_ratio < 0.15 and -2.2 < sp.radial_slope < -1.0
    assert report.summary["count"] == COUNT and not report.summary["duplicates"]
    assert abs(report.summary["mean"]) < 1e-4 and abs(report.summary["std"] - 1) < 1e-4


def test_slice_power_matches_the_full_2d_spectrum():
    v = range_generator(1, 12, -50.0, 40.0, 5.0)(volume_rng(1, 0))
    ours = full_plane(slice_power(v), 12) * v.size * v.var()
    ref = kxkz_power([v - v.mean()]) * 12  # kxkz_power averages over y; ours sums
    np.testing.assert_allclose(ours, ref, rtol=1e-4, atol=1e-6 * ref.max())
    v15 = np.random.default_rng(0).standard_normal((15, 15, 15)).astype(np.float32)
    ours15 = full_plane(slice_power(v15), 15) * v15.size * v15.var()
    np.testing.assert_allclose(ours15, kxkz_power([v15 - v15.mean()]) * 15, rtol=1e-4, atol=1e-3)


def ideal_spectrum(n: int, lo: float, hi: float, slope: float = 0.0, leak: float = 0.0):
    """Half-plane power of an ideal wedge: measured region ~ |k|^slope, ``leak`` elsewhere."""
    m = measured_2d(n, lo, hi)
    f = np.fft.fftfreq(n) * n
    k = np.hypot(*np.meshgrid(f, f, indexing="ij"))
    k[0, 0] = 1
    p = np.where(m, 1.0, leak) * k**slope
    return p[:, : n // 2 + 1]


@pytest.mark.slow
@settings(max_examples=25, deadline=None)
@given(
    lo=st.floats(-80, 60),
    width=st.floats(25, 160),
    n=st.sampled_from([24, 32, 48]),
    slope=st.sampled_from([0.0, -1.5]),
)
def test_estimate_recovers_any_tilt_range_within_its_resolution(lo, width, n, slope):
    hi = lo + width
    if hi >= 89:
        return
    leak = 0.03 if slope else 0.0
    sp = analyse(ideal_spectrum(n, lo, hi, slope, leak), n, 1)
    assert sp.wedge_found
    (est_lo, est_hi), (u_lo, u_hi) = sp.tilt_range, sp.tilt_uncertainty
    assert abs(est_lo - lo) <= u_lo + 0.3, (sp.tilt_range, sp.tilt_uncertainty)
    assert abs(est_hi - hi) <= u_hi + 0.3, (sp.tilt_range, sp.tilt_uncertainty)
    assert sp.radial_slope == pytest.approx(slope, abs=0.1)


def test_swapped_axes_put_the_beam_in_the_measured_region():
    """Volumes stored (x, y, z): the wedge turns by 90 degrees and contains kx, not kz."""
    n = 32
    half = ideal_spectrum(n, -60, 60)
    full = np.fft.ifftshift(full_plane(half, n)).T  # swap kz and kx
    sp = analyse(full[:, : n // 2 + 1], n, 1)
    lo, hi = sp.tilt_range
    assert lo < -90 or hi > 90  # the measured arc holds the direction +-90 (kz)
    assert (lo, hi) == pytest.approx((-150, -30), abs=1.5)
    problems = spectrum_findings(sp, NoiseSource(cubesize=n, mode=2)).problems
    assert any("beam direction kz" in p for p in problems)
    assert any("disagrees with the labels" in p for p in problems)


def test_white_noise_has_no_wedge():
    vols = np.random.default_rng(3).standard_normal((6, 24, 24, 24)).astype(np.float32)
    sp = analyse(sum(slice_power(v) for v in vols), 24, 6)
    assert not sp.wedge_found and sp.tilt_range is None
    assert any("no missing wedge" in p for p in spectrum_findings(sp, None).problems)


def test_fit_arc_across_plus_minus_90():
    phi = np.linspace(-89.5, 90, 360)
    values = (np.abs(phi) > 70).astype(float)  # high on [70, 110] modulo 180
    fit = fit_arc(phi, values)
    assert fit.lo == pytest.approx(70, abs=0.5) and fit.hi == pytest.approx(110, abs=0.5)
    assert fit.low == 0 and fit.high == 1
    gap = circular_gap(np.array([80.0, -80.0, 0.0]), fit.lo, fit.hi)
    assert gap[0] > 0 and gap[1] > 0 and gap[2] < -60


@pytest.mark.slow
def test_labels_that_disagree_with_the_spectrum_are_a_problem(client, folders):
    sp = inspect_folder(folders[2, -40.0, 56.0], client).spectrum
    truth = NoiseSource(cubesize=N, mode=2, minangle=-40, maxangle=56)
    assert spectrum_findings(sp, truth).problems == []
    flipped = NoiseSource(cubesize=N, mode=2, minangle=-56, maxangle=40)  # mirrored range
    assert any("disagrees with the labels" in p for p in spectrum_findings(sp, flipped).problems)
    other_mode = NoiseSource(cubesize=N, mode=1, minangle=-40, maxangle=56)
    assert any("looks like mode 2" in p for p in spectrum_findings(sp, other_mode).problems)


# ----------------------------------------------------------------------------- the files


@pytest.mark.slow
def test_broken_duplicated_and_stray_files_are_named(client, folders, tmp_path):
    folder = broken_copy(folders[2, -60.0, 60.0], tmp_path / "bad")
    # a near-duplicate (a mix of two volumes, both wedge-filtered) and a wrong dtype
    five, seven = (mrcfile.read(folder / f"n_0000{i}.mrc") for i in (5, 7))
    with mrcfile.open(folder / "n_00006.mrc", "r+") as m:
        m.set_data((five + 0.3 * seven).astype(np.float32))
    with mrcfile.open(folder / "n_00009.mrc", "r+") as m:
        m.set_data(m.data.astype(np.float16))
    report = inspect_folder(folder, client)
    assert not report.ok
    broken = report.summary["broken"]
    assert set(broken) == {"n_00004.mrc", "n_00009.mrc", f"n_{COUNT:05d}.mrc"}
    assert "truncated" in broken["n_00004.mrc"]
    assert "dtype float16" in broken["n_00009.mrc"]
    assert "labels say index 2" in broken[f"n_{COUNT:05d}.mrc"]
    assert report.summary["duplicates"] == [["n_00002.mrc", f"n_{COUNT:05d}.mrc"]]
    assert report.others == ["README.txt"]
    near = report.summary["near_duplicates"]
    assert [e["pair"] for e in near] == [["n_00005.mrc", "n_00006.mrc"]]
    assert near[0]["correlation"] == pytest.approx(1 / np.sqrt(1.09), abs=0.02)
    assert any("near-duplicates" in w for w in report.warnings)


def test_shifted_overlap_is_a_near_duplicate():
    big = np.random.default_rng(1).standard_normal((40, 40, 40)).astype(np.float32)
    a, b = big[:32, :32, :32], big[4:36, 2:34, :32]  # 80% of the voxels shared, shifted
    c = np.random.default_rng(2).standard_normal((32, 32, 32)).astype(np.float32)
    recs = [
        FileRecord(name=x, index=i, sketch=value_sketch(v))
        for i, (x, v) in enumerate([("a", a), ("b", b), ("c", c)])
    ]
    pairs = shared_value_pairs(recs)
    assert [(i, j) for i, j, _ in pairs] == [(0, 1)]
    assert pairs[0][2] == pytest.approx(0.8, abs=0.15)


def test_correlated_pairs_on_samples():
    rng = np.random.default_rng(5)
    base = rng.standard_normal((300, 512)).astype(np.float32)
    base[7] = -2 * base[3] + 0.1 * rng.standard_normal(512)  # a scaled, negated copy
    recs = [FileRecord(name=str(i), index=i, sample=s) for i, s in enumerate(base)]
    pairs, compared = correlated_pairs(recs)
    assert compared == 300
    assert [(i, j) for i, j, _ in pairs] == [(3, 7)] and pairs[0][2] < -0.95
    # beyond max_volumes, a sample of the volumes: the pair may or may not be in it
    pairs, compared = correlated_pairs(recs, max_volumes=100)
    assert compared == 100 and all((i, j) == (3, 7) for i, j, _ in pairs)


# ----------------------------------------------------------------------------- the command


def png_size(path: Path) -> tuple[int, int]:
    data = path.read_bytes()
    assert data[:8] == b"\x89PNG\r\n\x1a\n" and data[12:16] == b"IHDR"
    return struct.unpack(">II", data[16:24])


@pytest.mark.slow
def test_cli_clean_folder_json_and_plot(folders, tmp_path):
    png = tmp_path / "spectrum.png"
    folder = folders[1, -40.0, 56.0]
    result = runner.invoke(
        app, ["inspect", str(folder), "--ncpus", "2", "--json", "--plot", str(png)]
    )
    assert result.exit_code == 0, result.output
    report = json.loads(result.stdout)
    assert report["ok"] and report["count"] == COUNT and report["problems"] == []
    assert report["spectrum"]["looks_like_mode"] == 1
    assert png.exists() and png_size(png) == (1500, 460)
    assert png.stat().st_size < 200_000


@pytest.mark.slow
def test_cli_broken_folder_exit_1_names_everything(folders, tmp_path):
    folder = broken_copy(folders[1, -60.0, 60.0], tmp_path / "bad")
    result = runner.invoke(app, ["inspect", str(folder), "--ncpus", "1"])
    assert result.exit_code == 1, result.output
    out = result.stdout
    assert "n_00004.mrc: truncated" in out
    assert f"n_00002.mrc = n_{COUNT:05d}.mrc: identical data" in out
    assert "README.txt" in out
    assert out.splitlines()[-1].startswith("FAILED") and "Traceback" not in result.output


@pytest.mark.parametrize(
    ("make", "message"),
    [
        (lambda p: p / "missing", "does not exist"),
        (lambda p: p / "file" if (p / "file").write_text("x") else None, "is not a folder"),
    ],
)
def test_cli_bad_folder_exit_2(tmp_path, make, message):
    result = runner.invoke(app, ["inspect", str(make(tmp_path))])
    assert result.exit_code == 2 and message in result.output
    assert "Traceback" not in result.output


def test_cli_plot_without_matplotlib_exit_2(tmp_path, monkeypatch):
    monkeypatch.setitem(sys.modules, "matplotlib", None)  # import matplotlib -> ImportError
    result = runner.invoke(app, ["inspect", str(tmp_path), "--plot", str(tmp_path / "x.png")])
    assert result.exit_code == 2
    assert "--plot needs matplotlib: pip install 'mwr-dask[plot]'" in result.output


@pytest.mark.slow
def test_cli_on_a_running_cluster(folders, tmp_path):
    """--scheduler: real scheduler and worker processes that see the folder."""
    procs = DaskProcesses(tmp_path)
    try:
        procs.start_scheduler()
        procs.start_worker()
        procs.wait_for_workers(1)
        run = cli("inspect", str(folders[2, -40.0, 56.0]), "--scheduler", procs.address, "--json")
        assert run.returncode == 0, run.stderr + procs.log_text()
        report = json.loads(run.stdout)
        assert report["ok"] and report["worker_threads"] == 1
        assert report["spectrum"]["tilt_range_agrees"]
        text = cli("inspect", str(folders[2, -40.0, 56.0]), "--scheduler-file",
                   str(procs.scheduler_file))  # fmt: skip
        assert text.returncode == 0 and "1 worker thread of a remote cluster" in text.stdout
    finally:
        procs.close()


@pytest.mark.slow
def test_workers_that_cannot_see_the_folder_are_named(client, tmp_path):
    assert workers_missing_folder(client, tmp_path) == []
    missing = workers_missing_folder(client, tmp_path / "elsewhere")
    assert len(missing) == 2 and all("cannot read" in m and "elsewhere" in m for m in missing)


def test_empty_folder_is_a_problem(tmp_path):
    report = inspect_folder(tmp_path)
    assert not report.ok and "no n_*.mrc volumes" in report.problems[0]
