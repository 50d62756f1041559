"""Noise measured from even/odd half tomograms: estimate, file, generator, command.

The halves are built here: one shared structured signal (spheres of random contrast and a plane
wave along z, ten times stronger than the noise) plus independent noise of a known spectrum in
each half: mode-1 back-projection noise of the asymmetric range -40..56 (cropped from a bigger
volume, so the cubes are not periodic), and an anisotropic coloured noise (a separable Gaussian
spectrum plus a floor, periodic over the whole volume, so its estimator's expectation is known
exactly).

Tolerances. One cube's periodogram has a relative standard deviation of 1 at each frequency; a
bin of B Fourier pixels (B/2 independent, Hermitian pairs) averaged over K cubes tapered with
Hann windows (equivalent noise bandwidth 1.5 pixels per axis, so 1.5^3 pixels per independent
value) and overlapping by half (K_eff = K / 1.1) has a relative error of
``1 / sqrt(K_eff * B / 2 / 1.5^3)``; the mean periodogram of M generated (periodic) volumes
``1 / sqrt(M * B / 2)``. Bins are compared within 4.5 combined standard deviations (plus 3 %
for what the tapered estimate smooths at the edges of the wedge).
"""

from __future__ import annotations

import hashlib
import math
import os
import pickle
import shutil
import subprocess
import sys
import warnings
from pathlib import Path

import mrcfile
import numpy as np
import pytest
from scipy.signal.windows import hann

from mwr_dask.files.mrc import write_spectrum
from mwr_dask.inspection.measured import kxkz_half_sum
from mwr_dask.inspection.spectrum import analyse, slice_power
from mwr_dask.noise import measured as m
from mwr_dask.noise.generators import BackProjection
from mwr_dask.noise.geometry import fold_direction, tilt_angles
from mwr_dask.noise.normals import volume_rng

from .helpers import cli

SHAPE = (64, 96, 96)  # (z, y, x)
N = 24
TILTS = (-40.0, 56.0)
VOXEL = 5.4
ENBW3 = 1.5**3
Z_TOL = 4.5


def write_mrc(path, data, voxel=VOXEL):
    with mrcfile.new(path, overwrite=True) as f:
        f.set_data(np.asarray(data, dtype=np.float32))
        f.voxel_size = voxel
    return path


def make_signal(seed=0, amplitude=10.0):
    """Spheres of random contrast and sizes plus a plane wave along z (kz = 5 on the 24 grid)."""
    rng = np.random.default_rng(seed)
    z, y, x = np.meshgrid(*[np.arange(s, dtype=np.float32) for s in SHAPE], indexing="ij")
    sig = np.zeros(SHAPE, np.float32)
    for _ in range(40):
        c = rng.uniform(0, SHAPE)
        r = rng.uniform(2, 9)
        sig += ((z - c[0]) ** 2 + (y - c[1]) ** 2 + (x - c[2]) ** 2 < r * r) * rng.normal()
    sig /= sig.std()
    sig += np.cos(2 * np.pi * 5 / N * z)
    return (amplitude * sig / sig.std()).astype(np.float32)


def bp_noise(seed, index):
    bp = _bp96()
    return bp(volume_rng(seed, index))[: SHAPE[0]]


_BP = {}


def _bp96():
    if "bp" not in _BP:
        _BP["bp"] = BackProjection(96, tuple(tilt_angles(*TILTS, 2.0)))
    return _BP["bp"]


SIGMAS = {"z": 0.125, "y": 0.21, "x": 0.33}  # cycles/voxel: 3, 5 and 8 pixels of the 24 grid
FLOOR = 0.05


def coloured_noise(seed):
    """Gaussian noise of power exp(-sum (f_a / s_a)^2) + FLOOR, periodic over SHAPE."""
    rng = np.random.default_rng(seed)
    white = rng.standard_normal(SHAPE)
    fz, fy = np.fft.fftfreq(SHAPE[0]), np.fft.fftfreq(SHAPE[1])
    fx = np.fft.rfftfreq(SHAPE[2])
    g = (
        np.exp(-((fz[:, None, None] / SIGMAS["z"]) ** 2))
        * np.exp(-((fy[None, :, None] / SIGMAS["y"]) ** 2))
        * np.exp(-((fx[None, None, :] / SIGMAS["x"]) ** 2))
    )
    out = np.fft.irfftn(np.fft.rfftn(white) * np.sqrt(g + FLOOR), s=SHAPE, axes=(0, 1, 2))
    return (out / out.std()).astype(np.float32)


def coloured_expectation(n=N):
    """Exact expectation of the Hann-tapered estimate of ``coloured_noise`` on the n grid.

    The spectrum is separable (a Gaussian plus a floor), so the expectation is a product of
    1-D sums over the volume's frequencies f_j: ``sum_j g(f_j) |W(k/n - f_j)|^2 / (L sum w^2)``
    with W the taper's Fourier transform; the floor's factor is 1 (Parseval).
    """
    w = hann(n, sym=False)
    t = np.arange(n)
    factors = []
    for axis, name in enumerate("zyx"):
        length = SHAPE[axis]
        f = np.fft.fftfreq(length)
        k = np.fft.fftfreq(n)
        nu = k[:, None] - f[None, :]
        big_w = (w[None, None, :] * np.exp(-2j * np.pi * nu[:, :, None] * t)).sum(axis=2)
        kernel = np.abs(big_w) ** 2 / (length * np.dot(w, w))
        factors.append(kernel @ np.exp(-((f / SIGMAS[name]) ** 2)))
    fz, fy, fx = factors
    e = fz[:, None, None] * fy[None, :, None] * fx[None, None, :] + FLOOR
    e = np.fft.fftshift(e)
    e[n // 2, n // 2, n // 2] = 0
    return e / e.mean()


@pytest.fixture(scope="module")
def halves(tmp_path_factory):
    """Files of the two test pairs: {'bp': (even, odd), 'coloured': (even, odd)} and noise."""
    d = tmp_path_factory.mktemp("halves")
    sig = make_signal()
    out = {}
    for name, (a, b) in {
        "bp": (bp_noise(1, 0), bp_noise(1, 1)),
        "coloured": (coloured_noise(1), coloured_noise(2)),
    }.items():
        out[name] = (
            write_mrc(d / f"{name}_even.mrc", sig + a),
            write_mrc(d / f"{name}_odd.mrc", sig + b),
        )
        out[f"{name}_noise"] = (a, b)
    return out


def periodogram(volumes) -> np.ndarray:
    """Mean 3-D periodogram of periodic volumes, fftshifted, DC 0, mean 1."""
    acc = 0.0
    for v in volumes:
        acc = acc + np.abs(np.fft.fftn(np.asarray(v, dtype=np.float64))) ** 2
    acc = np.fft.fftshift(acc)
    n = acc.shape[0]
    acc[n // 2, n // 2, n // 2] = 0
    return acc / acc.mean()


def grid3(n=N):
    k = (np.arange(n) - n // 2).astype(float)
    return np.meshgrid(k, k, k, indexing="ij")


def bin_sigma(pixels, cubes, volumes, ref_cubes=None):
    """Relative standard deviation of a bin mean (see the module's docstring)."""
    var = ENBW3 / (cubes / 1.1 * pixels / 2) + 1 / (volumes * pixels / 2)
    if ref_cubes:
        var += ENBW3 / (ref_cubes / 1.1 * pixels / 2)
    return math.sqrt(var)


def measure_files(pair, **kw):
    return m.measure_noise(pair[0], pair[1], N, **kw)


def generate(spectrum, tmp_path, count, seed=5):
    path = tmp_path / "s.mrc"
    digest = write_spectrum(path, spectrum, ["test"])
    gen = m.SpectrumNoise(str(path), digest)
    return [gen(volume_rng(seed, i)) for i in range(count)]


# --------------------------------------------------------------------------------------------
# the noise made from the measured spectrum reproduces the known one


@pytest.mark.slow
def test_backprojection_noise_reproduced(halves, tmp_path):
    meas = measure_files(halves["bp"])
    assert meas.cubes == meas.usable == 108
    vols = generate(meas.spectrum, tmp_path, 100)
    got = periodogram(vols)
    # the known spectrum as this estimator sees it: independent noise-only pairs, many cubes
    ref_sum, ref_cubes = 0.0, 0
    for j in range(5):
        s, pos, _ = m.estimate_spectrum(bp_noise(20 + j, 0), bp_noise(20 + j, 1), N)
        ref_sum, ref_cubes = ref_sum + s, ref_cubes + len(pos)
    ref = ref_sum / ref_sum.mean()
    kz, _, kx = grid3()
    r = np.hypot(kz, kx)  # the wedge does not depend on ky: bins over (kz, kx), all ky
    phi = fold_direction(kz, kx)
    worst = 0.0
    for r0 in (3, 5, 7, 9):
        for p0 in range(-90, 90, 15):
            sel = (r >= r0) & (r < r0 + 2) & (phi > p0) & (phi <= p0 + 15)
            ratio = got[sel].mean() / ref[sel].mean()
            tol = Z_TOL * bin_sigma(sel.sum(), meas.cubes, len(vols), ref_cubes) + 0.03
            worst = max(worst, abs(ratio - 1) / tol)
            assert abs(ratio - 1) < tol, (r0, p0, ratio, tol)
    assert worst > 0.05  # the comparison sees the noise of the estimate: it is not vacuous

    # the wedge on the right side: tilts -40..56 measure directions [-56, 40] of (kx, kz)
    a = analyse(kxkz_half_sum(periodogram(vols).astype(np.float64)), N, 1)
    assert a.wedge_found
    lo, hi = a.tilt_range
    assert abs(lo - TILTS[0]) < 6 and abs(hi - TILTS[1]) < 6, a.tilt_range
    assert a.wedge_ratio < 0.05
    # the radial fall-off: that of the estimator's reference, and of mode 1 made directly on
    # the 24^3 grid (about |k|^-2 over shells 4..10 at this size)
    ref_a = analyse(kxkz_half_sum(ref.astype(np.float64)), N, 1)
    assert a.radial_slope == pytest.approx(ref_a.radial_slope, abs=0.15)
    bp24 = BackProjection(N, tuple(tilt_angles(*TILTS, 2.0)))
    direct = sum(slice_power(bp24(volume_rng(9, i))) for i in range(100))
    assert a.radial_slope == pytest.approx(analyse(direct, N, 100).radial_slope, abs=0.25)
    assert a.radial_slope < -1.0


@pytest.mark.slow
def test_anisotropic_noise_reproduced(halves, tmp_path):
    meas = measure_files(halves["coloured"])
    vols = generate(meas.spectrum, tmp_path, 60)
    got = periodogram(vols)
    ref = coloured_expectation()
    kz, ky, kx = grid3()
    r = np.sqrt(kz**2 + ky**2 + kx**2)
    cos35 = math.cos(math.radians(35))
    level, known = {}, {}
    for r0 in (2, 4, 6, 8, 10):
        for axis, comp in (("z", kz), ("y", ky), ("x", kx)):
            sel = (r >= r0) & (r < r0 + 2) & (np.abs(comp) >= cos35 * r)
            ratio = got[sel].mean() / ref[sel].mean()
            tol = Z_TOL * bin_sigma(sel.sum(), meas.cubes, len(vols))
            assert abs(ratio - 1) < tol, (r0, axis, ratio, tol)
            level[r0, axis], known[r0, axis] = got[sel].mean(), ref[sel].mean()
    # the anisotropy itself: at radius 6, power along x > along y > along z, as known
    assert known[6, "x"] > 1.5 * known[6, "y"] > 3 * known[6, "z"]
    for a, b in (("x", "y"), ("y", "z"), ("x", "z")):
        ratio = (level[6, a] / level[6, b]) / (known[6, a] / known[6, b])
        assert ratio == pytest.approx(1, abs=0.15), (a, b)


def test_signal_does_not_leak(halves):
    """The signal (10x the noise, a plane wave on the kz axis inside the wedge) cancels."""
    with_signal = measure_files(halves["bp"]).spectrum
    a, b = halves["bp_noise"]
    noise_only, _, _ = m.estimate_spectrum(a, b, N)
    np.testing.assert_allclose(with_signal, noise_only, rtol=2e-3, atol=1e-6)
    # the plane wave's frequency: as empty as the rest of the wedge
    c = N // 2
    assert with_signal[c + 5, c, c] < 0.05 * np.median(with_signal)


def test_edge_cross_gone(halves):
    """Without a taper the cube's edges leak along the axes, into the wedge; with it, not."""
    a, b = halves["bp_noise"]
    c = N // 2
    ratios = {}
    for taper in ("hann", "none"):
        s, _, _ = m.estimate_spectrum(a, b, N, taper=taper)
        plane = s.mean(axis=1)  # (kz, kx), the wedge holds the kz axis
        k = np.arange(N) - c
        axis = plane[np.abs(k) >= 3, c]  # the kz axis, inside the wedge
        measured = plane[c, np.abs(k) >= 3]  # the kx axis, measured
        ratios[taper] = axis.mean() / measured.mean()
    assert ratios["hann"] < 0.01
    assert ratios["none"] > 5 * ratios["hann"]


@pytest.mark.parametrize("n", [8, 13, 24, 64, 97])
def test_the_taper_is_the_hand_written_periodic_hann_bit_for_bit(n):
    """scipy's hann(n, sym=False) replaced sin^2(pi j / n): the same float32 taper, so the
    same spectra (measured: identical spectrum files before and after)."""
    w = np.sin(np.pi * np.arange(n) / n) ** 2
    old = (w[:, None, None] * w[None, :, None] * w[None, None, :]).astype(np.float32)
    np.testing.assert_array_equal(m.taper_3d(n), old)
    assert np.all(m.taper_3d(n, "none") == 1.0)


def test_variance_falls_as_one_over_sqrt_k():
    """White-noise halves: the relative spread of the estimate is about 1/sqrt(K)."""
    rng = np.random.default_rng(3)
    a = rng.standard_normal(SHAPE, dtype=np.float32)
    b = rng.standard_normal(SHAPE, dtype=np.float32)
    n = 16
    spreads = {}
    for k in (16, 64, 256):
        s, pos, _ = m.estimate_spectrum(a, b, n, cubes=k, seed=1)
        assert len(pos) == k
        kz, ky, kx = grid3(n)
        away = np.sqrt(kz**2 + ky**2 + kx**2) > 2  # the taper spreads DC over its neighbours
        spreads[k] = float(s[away].std() / s[away].mean()) * math.sqrt(k)
    for k, value in spreads.items():
        assert 0.85 < value < 1.3, (k, spreads)


# --------------------------------------------------------------------------------------------
# choice of cubes


def test_cubes_avoid_padding_and_borders(tmp_path):
    rng = np.random.default_rng(4)
    e = rng.standard_normal(SHAPE, dtype=np.float32)
    o = rng.standard_normal(SHAPE, dtype=np.float32)
    e[:, :, 60:] = 0.0  # padded region, both halves
    o[:, :, 60:] = 0.0
    o[:, 70:, :] = 3.0  # constant in one half only
    s, pos, stats = m.estimate_spectrum(e, o, 16)
    assert len(pos) == stats["usable"] > 16
    assert np.all(pos[:, 2] + 16 <= 60) and np.all(pos[:, 1] + 16 <= 70)
    border = [math.ceil(0.05 * L) for L in SHAPE]
    assert np.all(pos >= border)
    assert np.all(pos + 16 <= np.array(SHAPE) - np.array(border))
    # white noise measured as white, away from DC
    kz, ky, kx = grid3(16)
    away = np.sqrt(kz**2 + ky**2 + kx**2) > 2
    assert abs(s[away].mean() - 1) < 0.05


def test_mask_restricts_cubes():
    rng = np.random.default_rng(5)
    e = rng.standard_normal(SHAPE, dtype=np.float32)
    o = rng.standard_normal(SHAPE, dtype=np.float32)
    mask = np.zeros(SHAPE, np.uint8)
    mask[:, 10:80, 30:90] = 1
    _, pos, _ = m.estimate_spectrum(e, o, 16, mask=mask)
    assert len(pos) >= 16
    assert np.all(pos[:, 1] >= 10) and np.all(pos[:, 1] + 16 <= 80)
    assert np.all(pos[:, 2] >= 30) and np.all(pos[:, 2] + 16 <= 90)


def test_cap_and_seeded_choice():
    rng = np.random.default_rng(6)
    e = rng.standard_normal(SHAPE, dtype=np.float32)
    o = rng.standard_normal(SHAPE, dtype=np.float32)
    _, all_pos, stats = m.estimate_spectrum(e, o, 8)
    assert stats["usable"] > m.MAX_CUBES == len(all_pos)
    _, p1, _ = m.estimate_spectrum(e, o, 8, cubes=20, seed=1)
    _, p1b, _ = m.estimate_spectrum(e, o, 8, cubes=20, seed=1)
    _, p2, _ = m.estimate_spectrum(e, o, 8, cubes=20, seed=2)
    np.testing.assert_array_equal(p1, p1b)
    assert not np.array_equal(p1, p2)
    # spread over the volume: the chosen cubes cover most of each axis
    for axis in range(3):
        assert np.ptp(p1[:, axis]) > 0.4 * SHAPE[axis]


# --------------------------------------------------------------------------------------------
# the file and the generator


def test_spectrum_file_round_trip(halves, tmp_path):
    meas = measure_files(halves["bp"])
    s = meas.spectrum
    assert s.dtype == np.float32 and s.shape == (N, N, N)
    assert s.mean() == pytest.approx(1.0, rel=1e-5)
    assert s[N // 2, N // 2, N // 2] == 0
    # symmetric under k -> -k (fftshifted, even n: index i <-> (n - i) % n)
    flip = np.roll(s[::-1, ::-1, ::-1], 1, axis=(0, 1, 2))
    np.testing.assert_array_equal(s, flip)
    path = tmp_path / "spec.mrc"
    digest = write_spectrum(path, s, meas.labels(), meas.voxel_size)
    assert os.listdir(tmp_path) == ["spec.mrc"]
    with open(os.devnull, "w") as sink:
        assert mrcfile.validate(str(path), print_file=sink)
    back, digest2 = m.read_spectrum(path)
    np.testing.assert_array_equal(back, s)
    assert digest == digest2 == m.spectrum_digest(s) and len(digest) == 16
    with mrcfile.open(path, header_only=True) as f:
        labels = [lab.decode() for lab in f.header.label[: f.header.nlabl]]
    text = " ".join(labels)
    for part in ("mwr-dask", "cubes=108", "bp_even.mrc", "bp_odd.mrc", "96x96x64", "@5.4"):
        assert part in text
    with mrcfile.open(path) as f:
        assert float(f.voxel_size.x) == pytest.approx(VOXEL)


def test_generator_properties(tmp_path):
    rng = np.random.default_rng(7)
    n = 16
    spec = rng.exponential(size=(n, n, n)).astype(np.float32)
    spec = (spec + spec[::-1, ::-1, ::-1]) / 2  # any non-negative array: made symmetric
    path = tmp_path / "s.mrc"
    digest = write_spectrum(path, spec, ["x"])
    gen = m.spectrum_noise(path)
    assert gen == m.SpectrumNoise(str(path.absolute()), digest)
    assert gen.n == n
    v = gen(volume_rng(11, 3))
    assert v.dtype == np.float32 and v.shape == (n, n, n)
    assert abs(float(v.mean(dtype=np.float64))) < 1e-6
    assert float(v.std(dtype=np.float64)) == pytest.approx(1.0, abs=1e-5)
    np.testing.assert_array_equal(v, gen(volume_rng(11, 3)))  # pure function of (seed, i)
    assert not np.array_equal(v, gen(volume_rng(11, 4)))
    # small when pickled (the array stays in the process's cache) and equal after
    blob = pickle.dumps(gen)
    assert len(blob) < 400
    clone = pickle.loads(blob)
    np.testing.assert_array_equal(clone(volume_rng(11, 3)), v)
    # a file changed since is an error, not silently other noise
    write_spectrum(path, spec * np.float32(2) + 1, ["x"])
    other = m.SpectrumNoise(str(path.absolute()), digest)
    with pytest.raises(m.MeasureError, match="changed"):
        other(volume_rng(0, 0))


@pytest.mark.slow
def test_generated_spectrum_is_the_file(tmp_path):
    """Averaged over volumes, the noise's periodogram is the spectrum, shell by shell."""
    n = 16
    kz, ky, kx = grid3(n)
    spec = (np.exp(-((kz / 3) ** 2) - ((kx / 6) ** 2)) + 0.02) * (np.abs(ky) < 4)
    spec = m.normalise_spectrum(spec)
    vols = generate(spec, tmp_path, 400)
    got = periodogram(vols)
    r = np.sqrt(kz**2 + ky**2 + kx**2)
    for r0 in range(1, 8):
        for sel in ((r >= r0) & (r < r0 + 1) & (np.abs(ky) < 4), (r >= r0) & (np.abs(ky) >= 4)):
            if sel.sum() == 0 or spec[sel].mean() == 0:
                continue
            tol = Z_TOL / math.sqrt(len(vols) * sel.sum() / 2)
            assert got[sel].mean() / spec[sel].mean() == pytest.approx(1, abs=tol)
    assert got[np.abs(ky) >= 4].max() < 1e-6  # exactly zero where the spectrum is zero


# --------------------------------------------------------------------------------------------
# the command


@pytest.mark.slow
def test_cli_writes_spectrum_and_plot(halves, tmp_path):
    even, odd = halves["bp"]
    out, png = tmp_path / "spec.mrc", tmp_path / "spec.png"
    proc = cli("measure-noise", str(even), str(odd), str(out), "--cubesize", str(N),
               "--plot", str(png))  # fmt: skip
    assert proc.returncode == 0, proc.stderr
    _, digest = m.read_spectrum(out)
    assert digest in proc.stdout and "108 cubes" in proc.stdout
    assert "Missing wedge: tilts about" in proc.stdout
    assert sorted(os.listdir(tmp_path)) == ["spec.mrc", "spec.png"]
    assert png.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"


def _error_case(case, halves, d):
    even, odd = halves["bp"]
    rng = np.random.default_rng(8)
    if case == "shape":
        return [str(even), str(write_mrc(d / "small.mrc", rng.standard_normal((64, 96, 90))))]
    if case == "voxel":
        with mrcfile.open(odd) as f:
            data = f.data.copy()
        return [str(even), str(write_mrc(d / "other_voxel.mrc", data, voxel=4.0))]
    if case == "same":
        return [str(even), str(even)]
    if case == "few":
        mask = np.zeros(SHAPE, np.uint8)
        mask[10:50, 10:50, 10:50] = 1
        return [str(even), str(odd), "--mask", str(write_mrc(d / "mask.mrc", mask))]
    if case == "too-many":
        return [str(even), str(odd), "--cubes", "500"]
    if case == "big":
        return [str(even), str(odd), "--cubesize", "65"]
    if case == "tiny-cube":
        return [str(even), str(odd), "--cubesize", "2"]
    if case == "one-cube":
        return [str(even), str(odd), "--cubes", "1"]
    if case == "no-file":
        return [str(d / "absent_even.mrc"), str(odd)]
    if case == "mask-shape":
        mask = np.ones((64, 96, 95), np.uint8)
        return [str(even), str(odd), "--mask", str(write_mrc(d / "mask.mrc", mask))]
    raise AssertionError(case)


ERRORS = {
    "shape": "differ in size",
    "voxel": "differ in voxel size",
    "same": "difference of the halves is zero",
    "few": "too few usable cubes",
    "too-many": "too few usable cubes",
    "big": "larger than the volume",
    "mask-shape": "the mask is",
    "tiny-cube": "--cubesize must be at least",
    "one-cube": "--cubes must be at least",
    "no-file": "absent_even.mrc",
}


@pytest.mark.slow
def test_cli_errors(halves, tmp_path):
    """Each error through the console script: exit 2, one line, nothing written.

    The commands run at once (each is mostly interpreter start).
    """
    procs = {}
    for case in ERRORS:
        inputs = tmp_path / case / "in"
        outdir = tmp_path / case / "out"
        inputs.mkdir(parents=True)
        outdir.mkdir()
        args = _error_case(case, halves, inputs)
        if "--cubesize" not in args:
            args += ["--cubesize", str(N)]
        files, options = args[:2], args[2:]
        procs[case] = subprocess.Popen(
            [sys.executable, "-m", "mwr_dask", "measure-noise", *files,
             str(outdir / "spec.mrc"), *options, "--plot", str(outdir / "p.png")],
            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
        )  # fmt: skip
    for case, proc in procs.items():
        out, err = proc.communicate(timeout=240)
        assert proc.returncode == 2, (case, out, err)
        lines = err.strip().splitlines()
        assert len(lines) == 1 and lines[0].startswith("mwr-dask: error: "), (case, err)
        assert ERRORS[case] in lines[0], (case, lines[0])
        assert os.listdir(tmp_path / case / "out") == []


def digests(*paths) -> dict:
    return {p: hashlib.sha256(p.read_bytes()).hexdigest() for p in paths}


def test_plot_onto_an_input_or_output_is_refused_before_any_work(halves, tmp_path):
    """Issue 21.4: --plot onto EVEN, ODD, --mask or SPECTRUM (through links too) is a usage
    error, found before anything is measured or written; so are plot paths that cannot be
    written."""
    from typer.testing import CliRunner

    from mwr_dask.cli import app

    even, odd = (shutil.copy(x, tmp_path / x.name) for x in halves["bp"])
    even, odd = Path(even), Path(odd)
    mask = write_mrc(tmp_path / "mask.mrc", np.ones(SHAPE, np.uint8))
    old = tmp_path / "old_spectrum.mrc"
    old.write_bytes(b"an earlier spectrum")
    (tmp_path / "hard.mrc").hardlink_to(even)
    (tmp_path / "soft.mrc").symlink_to(odd)
    (tmp_path / "folder.png").mkdir()
    before = digests(even, odd, mask, old)
    cases = {  # --plot: (SPECTRUM, what the message names)
        even: (tmp_path / "s.mrc", f"--plot {even} is EVEN"),
        odd: (tmp_path / "s.mrc", f"--plot {odd} is ODD"),
        mask: (tmp_path / "s.mrc", f"--plot {mask} is --mask"),
        old: (old, f"--plot {old} is SPECTRUM"),
        tmp_path / "new.mrc": (tmp_path / "new.mrc", "is SPECTRUM"),
        tmp_path / "hard.mrc": (tmp_path / "s.mrc", "hard.mrc is EVEN"),
        tmp_path / "soft.mrc": (tmp_path / "s.mrc", "soft.mrc is ODD"),
        tmp_path / "folder.png": (tmp_path / "s.mrc", "folder.png is a folder"),
        tmp_path / "no" / "p.png": (tmp_path / "s.mrc", "is not a folder"),
    }
    for plot, (spectrum, message) in cases.items():
        args = [str(even), str(odd), str(spectrum), "--cubesize", str(N), "--mask", str(mask)]
        result = CliRunner().invoke(app, ["measure-noise", *args, "--plot", str(plot)])
        assert result.exit_code == 2, (plot, result.output)
        assert message in result.output and "Traceback" not in result.output, result.output
        assert len(result.output.strip().splitlines()) == 1, result.output
    assert digests(even, odd, mask, old) == before
    assert not (tmp_path / "s.mrc").exists() and not (tmp_path / "new.mrc").exists()


def huge_header(src, dst, nsymbt: int, keep: int | None = None):
    """A copy of ``src`` whose header claims an extended header of ``nsymbt`` bytes."""
    raw = bytearray(Path(src).read_bytes())
    raw[92:96] = np.array([nsymbt], dtype="<i4").tobytes()
    Path(dst).write_bytes(bytes(raw[:keep]))
    return dst


def test_a_header_claiming_more_than_the_file_is_refused_before_mrcfile_reads_it(tmp_path):
    """Issue 21.6: mrcfile allocates the extended header a header claims (2 GiB here) before
    it looks at the file's size; open_volume checks the sizes first."""
    import tracemalloc

    src = write_mrc(tmp_path / "a.mrc", np.ones((16, 16, 16), np.float32))
    big = huge_header(src, tmp_path / "big.mrc", 2**31 - 1)
    garbage = huge_header(src, tmp_path / "garbage.mrc", 800 * 2**20, keep=5000)
    for path, size in ((big, 1024 + 4 * 16**3), (garbage, 5000)):
        tracemalloc.start()
        with pytest.raises(m.MeasureError, match=f"its header gives .* bytes, it holds {size}"):
            m.open_volume(path, "EVEN")
        peak = tracemalloc.get_traced_memory()[1]
        tracemalloc.stop()
        assert peak < 2**20, peak


@pytest.mark.slow
def test_bad_headers_cost_no_memory_in_the_commands(halves, tmp_path):
    """Issue 21.6 through the console scripts under a 600 MiB address-space limit (a healthy
    run needs less; a 2 GiB extended header or an 800 MiB claim in a 5 KB file did not fit)."""
    src = write_mrc(tmp_path / "a.mrc", np.ones((16, 16, 16), np.float32))
    bad = [
        huge_header(src, tmp_path / "big.mrc", 2**31 - 1),
        huge_header(src, tmp_path / "garbage.mrc", 800 * 2**20, keep=5000),
    ]
    limit = ["prlimit", f"--as={600 * 2**20}", sys.executable, "-m", "mwr_dask"]
    odd = str(halves["bp"][1])
    runs = [["inspect", str(b)] for b in bad] + [
        ["measure-noise", str(b), odd, str(tmp_path / "s.mrc"), "--cubesize", "8"] for b in bad
    ]
    runs.append(["measure-noise", str(halves["bp"][0]), odd, str(tmp_path / "ok.mrc"),
                 "--cubesize", str(N), "-q"])  # fmt: skip
    for args in runs:
        proc = subprocess.run([*limit, *args], capture_output=True, text=True, timeout=120)
        if str(tmp_path / "ok.mrc") in args:
            assert proc.returncode == 0, proc.stderr  # the limit leaves room for real work
            continue
        assert proc.returncode == 2, (args, proc.stderr)
        lines = proc.stderr.strip().splitlines()
        assert len(lines) == 1 and "is not a readable MRC file (its header gives" in lines[0]


def test_nan_inf_and_constant_halves_get_one_sentence_and_no_warnings(halves, tmp_path):
    """Issue 21.14: an inf voxel in a half raised numpy RuntimeWarnings on stderr; a constant
    half was told to give a smaller --cubesize."""
    even, odd = halves["bp"]
    clean = measure_files((even, odd))
    data = mrcfile.read(even).copy()
    for bad in (np.inf, np.nan, -np.inf):
        data[30, 40, 50] = bad
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")  # mrcfile, writing the test file
            path = write_mrc(tmp_path / "bad.mrc", data)
        with warnings.catch_warnings():
            warnings.simplefilter("error")  # any RuntimeWarning fails the test
            result = m.measure_noise(path, odd, N)
        assert np.isfinite(result.spectrum).all()
        assert result.cubes < clean.cubes  # the cubes around the voxel are left out
        assert any("NaN or infinite values" in note for note in result.warnings)
    constant = write_mrc(tmp_path / "constant.mrc", np.full(SHAPE, 3.0, np.float32))
    with pytest.raises(m.MeasureError, match=r"^EVEN is constant .*no noise to measure\.$"):
        m.measure_noise(constant, odd, N)
    with pytest.raises(m.MeasureError, match=r"^ODD is constant"):
        m.measure_noise(even, constant, N)


# --------------------------------------------------------------------------------------------
# halves split by tilt rather than by frames


def _tilt_and_frame_split(n=64, noise=0.5):
    """Halves of a 64^3 slab specimen (spheres) reconstructed by unfiltered back-projection.

    Frame split: both halves from all tilts -60..60 step 3 (half the signal each) plus
    independent back-projected noise. Tilt split: one half from the even-numbered tilts, the
    other from the odd-numbered ones.
    """
    from mwr_dask.noise.generators import backprojection_operator

    rng = np.random.default_rng(0)
    z, y, x = np.meshgrid(*[np.arange(n)] * 3, indexing="ij")
    s = np.zeros((n, n, n), np.float32)
    for _ in range(25):
        c = rng.uniform(8, 56, 3)
        r = rng.uniform(1.5, 5)
        s += ((z - c[0]) ** 2 + (y - c[1]) ** 2 + (x - c[2]) ** 2 < r * r) * rng.uniform(1, 5)
    s[:20] = 0
    s[44:] = 0
    angles = tilt_angles(-60, 60, 3)
    ops = {k: backprojection_operator(n, a)[0] for k, a in
           (("all", angles), ("even", angles[::2]), ("odd", angles[1::2]))}  # fmt: skip
    cols = s.transpose(0, 2, 1).reshape(n * n, n)  # (z * x, y)

    def recon(op):  # project (the adjoint of the back-projection), then back-project
        return (op @ (op.T @ cols)).reshape(n, n, n).transpose(0, 2, 1)

    def bp_noise(op, seed):
        p = np.random.default_rng(seed).standard_normal((op.shape[1], n)).astype(np.float32)
        return (op @ p).reshape(n, n, n).transpose(0, 2, 1)

    full = recon(ops["all"])
    frame = (full / 2 + noise * bp_noise(ops["all"], 1), full / 2 + noise * bp_noise(ops["all"], 2))
    scale = noise / math.sqrt(2)
    tilt = (
        recon(ops["even"]) + scale * bp_noise(ops["even"], 1),
        recon(ops["odd"]) + scale * bp_noise(ops["odd"], 2),
    )
    return frame, tilt


def test_tilt_split_halves_warned(tmp_path):
    frame, tilt = _tilt_and_frame_split()
    found = {}
    for name, (e, o) in (("frame", frame), ("tilt", tilt)):
        pe = write_mrc(tmp_path / f"{name}_even.mrc", e)
        po = write_mrc(tmp_path / f"{name}_odd.mrc", o)
        found[name] = m.measure_noise(pe, po, 16).warnings
    assert found["frame"] == ()
    assert len(found["tilt"]) == 1 and "split by tilt" in found["tilt"][0]


# --------------------------------------------------------------------------------------------
# wiring: NoiseSource(spectrum=...), the folder guard, generate-noise --spectrum


def _two_spectra(tmp_path, n=16):
    kz, _, kx = grid3(n)
    a = m.normalise_spectrum(np.exp(-((kz / 3) ** 2)) + 0.1 * np.ones((n, n, n)))
    b = m.normalise_spectrum(np.exp(-((kx / 3) ** 2)) + 0.1 * np.ones((n, n, n)))
    pa, pb = tmp_path / "a.mrc", tmp_path / "b.mrc"
    write_spectrum(pa, a, ["a"], 5.4)
    write_spectrum(pb, b, ["b"], 5.4)
    return pa, pb


def test_noise_source_with_spectrum(tmp_path):
    from mwr_dask import NoiseSource
    from mwr_dask.files.folder import conflicts
    from mwr_dask.noise.source import source_from_labels

    pa, pb = _two_spectra(tmp_path)
    source = NoiseSource(16, spectrum=pa, seed=3, voxel_size=5.4)
    assert source.mode == 3 and isinstance(source.spectrum, m.SpectrumNoise)
    gen = m.spectrum_noise(pa)
    np.testing.assert_array_equal(source.volume(2), gen(volume_rng(3, 2)))
    assert len(pickle.dumps(source)) < 600  # the array is not in it
    labels = source.labels(2)
    assert f"spectrum={gen.digest}" in labels[0] and "mode=3" in labels[0]
    assert all(len(label) <= 80 for label in labels)
    back = source_from_labels(labels)
    assert back.mode == 3 and back.spectrum.digest == gen.digest and back.seed == 3
    assert conflicts(back, source) == []
    other = NoiseSource(16, spectrum=pb, seed=3, voxel_size=5.4)
    assert conflicts(back, other) == [f"spectrum {other.spectrum.digest} (folder has {gen.digest})"]
    assert conflicts(back, NoiseSource(16, mode=2, seed=3, voxel_size=5.4))[0].startswith("mode 2")
    with pytest.raises(ValueError, match="must equal the cube of the spectrum"):
        NoiseSource(24, spectrum=pa)


@pytest.mark.slow
def test_generate_noise_with_spectrum(tmp_path):
    pa, pb = _two_spectra(tmp_path)
    out = tmp_path / "noise"
    common = ["--ncpus", "1", "--no-dashboard", "-q"]
    # usage errors: geometry options with --spectrum, another cube size (nothing written)
    for extra in (["--mode", "2"], ["--maxangle", "50"]):
        proc = cli("generate-noise", str(out), "2", "16", "--spectrum", str(pa), *extra, *common)
        assert proc.returncode == 2 and "cannot be given with it" in proc.stderr
    proc = cli("generate-noise", str(out), "2", "24", "--spectrum", str(pa), *common)
    assert proc.returncode == 2 and "must equal the cube of the spectrum" in proc.stderr
    assert not out.exists()
    proc = cli("generate-noise", str(out), "2", "16", "--spectrum", str(pa), "--seed", "4", *common)
    assert proc.returncode == 0, proc.stderr
    # appending with another spectrum is a conflict; with the same one the seed is adopted
    proc = cli(
        "generate-noise", str(out), "1", "16", "--start", "2", "--spectrum", str(pb), *common
    )
    assert proc.returncode == 2 and "spectrum" in proc.stderr and "folder has" in proc.stderr
    proc = cli(
        "generate-noise", str(out), "1", "16", "--start", "2", "--spectrum", str(pa), *common
    )
    assert proc.returncode == 0, proc.stderr
    with open(os.devnull, "w") as sink:
        for i in range(3):
            assert mrcfile.validate(str(out / f"n_{i:05d}.mrc"), print_file=sink)
    gen = m.spectrum_noise(pa)
    with mrcfile.open(out / "n_00002.mrc") as f:
        np.testing.assert_array_equal(f.data, gen(volume_rng(4, 2)))
        assert float(f.voxel_size.x) == pytest.approx(5.4)  # the spectrum's voxel size
        assert f"spectrum={gen.digest}" in f.header.label[0].decode()


def _write_folder(folder, source, count):
    from mwr_dask.files.mrc import write_volume

    folder.mkdir()
    for i in range(count):
        write_volume(folder / f"n_{i:05d}.mrc", source.volume(i), source.voxel_size,
                     source.labels(i), folder)  # fmt: skip


def test_inspect_compares_folder_with_spectrum(tmp_path):
    from mwr_dask import NoiseSource
    from mwr_dask.inspection import inspect_folder

    pa, pb = _two_spectra(tmp_path)
    measured = tmp_path / "measured"
    _write_folder(measured, NoiseSource(16, spectrum=pa, seed=1), 12)
    wedge = tmp_path / "wedge"
    _write_folder(wedge, NoiseSource(16, mode=2, seed=1), 12)

    def given(path):
        array, digest = m.read_spectrum(path)
        return {"spectrum": {"array": array, "digest": digest, "name": path.name}}

    own = inspect_folder(measured, inputs=given(pa))
    assert own.ok, own.problems
    info = own.summary["spectrum_file"]
    assert info["agrees"] and info["bins"] > 10 and info["log_rms"] < 0.1
    # the mode-3 labels are not compared with tilts: no tilt or mode problem without a file
    assert inspect_folder(measured).ok
    other = inspect_folder(measured, inputs=given(pb))
    assert not other.ok
    assert any("were made from spectrum" in p for p in other.problems)
    assert any("differs from b.mrc" in p for p in other.problems)
    # a mode-2 folder is compared, not judged: a warning with the numbers
    w = inspect_folder(wedge, inputs=given(pa))
    assert w.ok and any("differs from a.mrc" in x for x in w.warnings)
    assert not w.summary["spectrum_file"]["agrees"]


@pytest.mark.slow
def test_inspect_cli_spectrum(tmp_path):
    from mwr_dask import NoiseSource

    pa, pb = _two_spectra(tmp_path)
    folder = tmp_path / "measured"
    _write_folder(folder, NoiseSource(16, spectrum=pa, seed=1), 6)
    ok = cli("inspect", str(folder), "--ncpus", "1", "--spectrum", str(pa))
    assert ok.returncode == 0, ok.stdout + ok.stderr
    assert "a.mrc" in ok.stdout and "agrees" in ok.stdout
    bad = cli("inspect", str(folder), "--ncpus", "1", "--spectrum", str(pb))
    assert bad.returncode == 1 and "were made from spectrum" in bad.stdout
    missing = cli("inspect", str(folder), "--spectrum", str(tmp_path / "none.mrc"))
    assert missing.returncode == 2 and "cannot read the spectrum" in missing.stderr


@pytest.mark.slow
def test_generate_on_dask_workers(client, tmp_path):
    """Mode 3 on real worker processes: the volumes are the source's; workers that cannot
    read the spectrum are refused before anything is written."""
    from mwr_dask import NoiseSource, generate
    from mwr_dask.parallel.clusters import ClusterError
    from mwr_dask.parallel.run import check_workers

    pa, _ = _two_spectra(tmp_path)
    source = NoiseSource(16, spectrum=pa, seed=2)
    done = generate(tmp_path / "out", 4, source, client=client)
    assert done.ok and done.result.written == 4
    for i in range(4):
        with mrcfile.open(tmp_path / "out" / f"n_{i:05d}.mrc") as f:
            np.testing.assert_array_equal(f.data, source.volume(i))
    # the workers' check (the client reads the file when the source is made; here the file
    # goes away after that, as when it is on a disk the workers do not share)
    pa.rename(tmp_path / "moved.mrc")
    with pytest.raises(ClusterError, match="cannot read the spectrum"):
        check_workers(client, source, tmp_path / "out", tmp_path)
