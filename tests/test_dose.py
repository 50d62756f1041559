"""Dose weighting (issue 20): the models, each view's pre-exposure, the physics, the interface.

The physics is checked on a real dose-symmetric RELION 5 tilt series (EMPIAR-10164 TS_01,
tests/data/dose/README.md) at 10 A voxels, where the highest-dose view keeps a fifth of its
amplitude at Nyquist.
"""

from __future__ import annotations

import hashlib
import math
import random
import re
from pathlib import Path

import numpy as np
import pytest

from mwr_dask.noise import dose, exactmath
from mwr_dask.noise.generators import BackProjection, WedgeFilter, backprojection_operator
from mwr_dask.noise.normals import volume_rng
from mwr_dask.noise.schemes import TiltSchemeError
from mwr_dask.noise.source import NoiseSource, source_from_labels
from mwr_dask.noise.tiltfiles import read_tilt_file

from . import tiltfixtures as fx
from .test_physics import reference_backprojection

DATA = Path(__file__).parent / "data" / "dose"
TS01 = DATA / "relion5_TS_01.star"  # 300 kV, Hagen's dose-symmetric order, 3 e/A^2 per view
TS107 = DATA / "relion5_tomo200528_107.star"  # 200 kV, SerialEM's dose-symmetric order
MDOC = DATA / "TS_01.mrc.mdoc"  # the mdoc of TS01: DateTime, ExposureDose = 0
VOXEL = 10.0


def gg_weight(n_dose, k, scale=1.0):
    """Grant & Grigorieff's amplitude weight, straight from the paper (numpy, k in 1/A)."""
    k = np.asarray(k, dtype=np.float64)
    with np.errstate(divide="ignore"):
        critical = scale * (0.245 * np.power(k, -1.665) + 2.81)
    return np.where(k > 0, np.exp(-n_dose / (2.0 * critical)), 1.0)


def star_views(path):
    """(angle in the geometry of docs/concepts.md, pre-exposure) of each row of a RELION star.

    Read independently of mwr_dask: the _rlnTomoYTilt and _rlnMicrographPreExposure columns
    of the same row, negated as RELION's projection needs (docs/tilt-schemes.md), by angle.
    """
    lines = Path(path).read_text().splitlines()
    names = [line.split()[0] for line in lines if line.startswith("_rln")]
    rows = [line.split() for line in lines if len(line.split()) == len(names)]
    tilt, pre = names.index("_rlnTomoYTilt"), names.index("_rlnMicrographPreExposure")
    return sorted((-float(r[tilt]) + 0.0, float(r[pre])) for r in rows)


def source(n, scheme, model="grant-grigorieff", **kwargs):
    return NoiseSource(n, seed=3, voxel_size=VOXEL, tilt_schemes=(scheme,),
                       dose_weighting=model, **kwargs)  # fmt: skip


# --- the models -------------------------------------------------------------------------


def test_exp_array_is_exactmath_exp_bit_for_bit():
    x = np.concatenate(
        [np.random.default_rng(1).uniform(-700.0, 2.0, 20_000), [0.0, -0.0, -1e-300, -699.99]]
    )
    expected = np.array([exactmath.exp(float(v)) for v in x])
    assert np.array_equal(dose.exp_array(x).view(np.int64), expected.view(np.int64))
    assert dose.exp_array(np.array([-800.0]))[0] == 0.0


@pytest.mark.parametrize(("voltage", "scale"), [(300.0, 1.0), (200.0, 0.8), (100.0, 0.64)])
def test_weights_follow_the_models(voltage, scale):
    f2 = np.linspace(0.0, 0.5, 41) ** 2  # cycles^2 / pixel^2
    k = np.sqrt(f2) / VOXEL
    gg = dose.DoseWeights("grant-grigorieff", voltage, VOXEL, (0.0, 30.0), (0.0, 87.5))
    w = gg.amplitudes(f2)
    assert np.array_equal(w[0], np.ones_like(f2))  # no dose before the first view
    assert np.allclose(w[1], gg_weight(87.5, k, scale), rtol=1e-12, atol=0)
    assert w[1][0] == 1.0 and w[1][-1] < 0.4
    b = dose.DoseWeights("bfactor", 300.0, VOXEL, (0.0,), (87.5,)).amplitudes(f2)[0]
    assert np.allclose(b, np.exp(-4 * 87.5 / 4 * k**2), rtol=1e-12)  # Warp: B = -4 N, exp(B k^2/4)
    assert gg.at_nyquist(87.5) == pytest.approx(gg_weight(87.5, 0.05, scale), rel=1e-12)


def test_library_refuses_what_cannot_weight_volumes():
    scheme = read_tilt_file(TS01)
    for kwargs, words in [
        ({"voltage": 120.0}, "--voltage must be 300, 200 or 100 kV"),
        ({"model": "bogus"}, "--dose-weighting must be one of"),
    ]:
        with pytest.raises(ValueError, match=re.escape(words)):
            source(16, scheme, **kwargs)
    with pytest.raises(ValueError, match="gives no dose for each view"):
        source(16, read_tilt_file(MDOC))  # ExposureDose = 0: no doses
    with pytest.raises(ValueError, match="pre-exposure -3 e/A"):
        NoiseSource(16, seed=1, anglestep=30, dose_weighting="bfactor", doses=(0, -3, 6, 9, 12))
    ranged = NoiseSource(16, seed=1, anglestep=30, dose_weighting="bfactor")  # no doses yet
    assert "needs each tilt's pre-exposure" in ranged.run_problems(2)[0]
    with pytest.raises(ValueError, match="needs each tilt's pre-exposure"):
        ranged[0]
    short = NoiseSource(16, seed=1, anglestep=30, dose_weighting="bfactor", doses=(0.0, 3.0))
    assert short.run_problems(2) == ["doses: 2 values for the 5 tilts of -60:60:30."]


# --- pre-exposures from the files ---------------------------------------------------------


def shuffled_rows(path: Path, out: Path, seed: int) -> Path:
    """The STAR file with its data rows in another order."""
    lines = path.read_text().splitlines()
    columns = sum(line.startswith("_rln") for line in lines)
    rows = [i for i, line in enumerate(lines) if len(line.split()) == columns]
    order = rows[:]
    random.Random(seed).shuffle(order)
    new = lines[:]
    for i, j in zip(rows, order, strict=True):
        new[i] = lines[j]
    out.write_text("\n".join(new) + "\n")
    return out


def shuffled_sections(path: Path, out: Path, seed: int) -> Path:
    """The mdoc with its [ZValue] sections in another order (the header first)."""
    head, *sections = re.split(r"\n(?=\[ZValue)", path.read_text())
    random.Random(seed).shuffle(sections)
    out.write_text("\n".join([head, *[s.rstrip("\n") + "\n" for s in sections]]))
    return out


def test_relion_pre_exposures_are_paired_with_their_views_whatever_the_row_order(tmp_path):
    scheme = read_tilt_file(TS01)
    assert list(zip(scheme.angle_tuple, dose.file_doses(scheme), strict=True)) == star_views(TS01)
    shuffled = read_tilt_file(shuffled_rows(TS01, tmp_path / "TS_01.star", seed=4))
    assert [v.angle for v in shuffled.views] != [v.angle for v in scheme.views]
    assert dose.file_doses(shuffled) == dose.file_doses(scheme)
    assert source(16, shuffled)[2].tobytes() == source(16, scheme)[2].tobytes()
    assert source(16, shuffled).labels(2) == source(16, scheme).labels(2)


def test_mdoc_with_a_dose_per_view_gives_relions_pre_exposures():
    # the same tilt series: SerialEM's DateTime order, 3 e/A^2 per view, is RELION's record
    mdoc = dose.with_doses(read_tilt_file(MDOC), 3.0, None)
    got = {round(a): d for a, d in zip(mdoc.angle_tuple, dose.file_doses(mdoc), strict=True)}
    relion = star_views(TS01)
    assert len(relion) == 40 and len(got) == 41  # RELION excluded the view at (file) -60
    assert all(got[round(a)] == pre for a, pre in relion)
    assert (
        mdoc.notes[-1]
        == "no doses in the file: 3 e/A^2 per view in the file's order of acquisition"
    )


def test_shuffling_mdoc_sections_changes_nothing(tmp_path):
    a = dose.with_doses(read_tilt_file(MDOC), 3.0, None)
    shuffled = shuffled_sections(MDOC, tmp_path / "s.mdoc", 7)
    assert shuffled.read_text() != MDOC.read_text()  # the sections really moved ...
    b = dose.with_doses(read_tilt_file(shuffled), 3.0, None)
    assert [v.angle for v in b.views] == [v.angle for v in a.views]  # ... views in ZValue order
    assert dose.file_doses(b) == dose.file_doses(a)
    assert source(16, b)[1].tobytes() == source(16, a)[1].tobytes()


def test_mdoc_exposure_doses_sum_in_acquisition_order_not_file_order(tmp_path):
    shots = fx.acquisition()
    head, *sections = re.split(
        r"\n(?=\[ZValue)", fx.write_mdoc(tmp_path / "a.mdoc", shots).read_text()
    )
    # uneven doses: the k-th view acquired (section k) gets 1 + k/10 e/A^2
    sections = [t.replace("ExposureDose = 3.0", f"ExposureDose = {1 + k / 10}") for k, t in
                enumerate(sections)]  # fmt: skip
    path = tmp_path / "ts.mdoc"
    path.write_text("\n".join([head, *sections]))
    shuffled = read_tilt_file(shuffled_sections(path, tmp_path / "s.mdoc", 3))
    expected = {s.angle: sum(1 + k / 10 for k in range(s.order - 1)) for s in shots}
    assert {v.angle: v.dose for v in shuffled.views} == pytest.approx(expected)
    # without DateTime, SerialEM's PriorRecordDose orders the sections
    sections = [re.sub(r"DateTime = .*", f"PriorRecordDose = {1.5 * k}", t) for k, t in
                enumerate(sections)]  # fmt: skip
    path.write_text("\n".join([head, *sections]))
    prior = read_tilt_file(shuffled_sections(path, tmp_path / "p.mdoc", 5))
    assert "DateTime" not in path.read_text()
    assert {v.angle: v.dose for v in prior.views} == pytest.approx(expected)
    # a stack sorted by angle: ZValue no longer the order of acquisition, DateTime still is
    acquired = sorted(shots, key=lambda s: s.order)  # section k of write_mdoc: view k acquired
    by_angle = sorted(range(len(shots)), key=lambda k: acquired[k].angle)
    original = fx.write_mdoc(tmp_path / "b.mdoc", shots).read_text().split("\n[ZValue")[1:]
    renumbered = [
        re.sub(r"^ = \d+\]", f" = {z}]", original[k]).replace(
            "ExposureDose = 3.0", f"ExposureDose = {1 + k / 10}"
        )
        for z, k in enumerate(by_angle)
    ]
    path.write_text(head + "".join("\n[ZValue" + t for t in renumbered))
    sorted_stack = read_tilt_file(path)
    assert [v.angle for v in sorted_stack.views] == sorted(v.angle for v in sorted_stack.views)
    assert {v.angle: v.dose for v in sorted_stack.views} == pytest.approx(expected)


@pytest.mark.parametrize(
    ("label", "shift"), [("WarpTools", 0.0), ("Warp 1 mid", 1.5), ("Warp 1 after", 3.0)]
)
def test_warp_doses_become_pre_exposures(tmp_path, label, shift):
    # WarpTools writes i * dose (the pre-exposure); Warp 1 wrote (i + 0.5) * dose with a default
    # dose per view, or the running sum of the mdoc's ExposureDose (the dose after the view)
    shots = [fx.Shot(s.angle, s.order, s.pre_dose + shift) for s in fx.acquisition()]
    for write in (fx.write_tomostar, fx.write_warp_xml):
        scheme = read_tilt_file(write(tmp_path / f"ts.{write.__name__}", shots))
        pre = {s.angle: s.pre_dose - shift for s in shots}
        # Warp's numbers are the negated stage angles (fixtures as ts_import writes them):
        # doses come sorted by the geometry's angle, the stage angle negated
        used = sorted((a for a in pre if a >= -45.0), reverse=True)
        assert dose.file_doses(scheme) == tuple(pre[a] for a in used)


def test_acquisition_orders():
    def first(angles, spec, k=9):
        ranks = dose.acquisition_order(angles, spec)
        return [angles[i] for i in sorted(range(len(angles)), key=ranks.__getitem__)][:k]

    a = [float(x) for x in range(-60, 61, 3)]
    # SerialEM's help: "with a size of 2, images would be taken at angles 0, -2, -4, +2, +4"
    assert first(a, "dose-symmetric") == [0, -3, -6, 3, 6, -9, -12, 9, 12]
    assert first(a, "dose-symmetric:3") == [0, 3, 6, 9, -3, -6, -9, 12, 15]
    assert first(a, "dose-symmetric:-1:6") == [6, 3, 9, 0, 12, -3, 15, -6, 18]
    assert first(a, "bidirectional:-21", 4) == [-21, -18, -15, -12]  # to the farther end
    assert first(a, "bidirectional:-21", 30)[27:] == [60, -24, -27]  # then back
    assert first(a, "unidirectional", 3) == [-60, -57, -54]
    assert first(a, "unidirectional:55", 3) == [60, 57, 54]
    # the 200 kV RELION file: SerialEM's order at 2.2 e/A^2 per view, up to its larger groups
    real = read_tilt_file(TS107)
    angles = [v.angle for v in real.views]
    assumed = dose.acquisition_order(angles, "dose-symmetric")
    low = [i for i, a in enumerate(angles) if abs(a) < 28]
    assert [round(real.views[i].dose / 2.2) + 1 for i in low] == [assumed[i] for i in low]


def test_files_without_order_need_an_acquisition(tmp_path):
    tlt = fx.write_tlt(tmp_path / "ts.tlt", [s.angle for s in fx.acquisition()])
    with pytest.raises(TiltSchemeError, match="gives no order of acquisition: name it with"):
        dose.with_doses(read_tilt_file(tlt), 3.0, None)
    scheme = dose.with_doses(read_tilt_file(tlt, exclude="1-3"), 3.0, "dose-symmetric:1:6")
    # fx.acquisition: from the pre-tilt 6, +1 step, -1 step, ... (groups of 1, positive first)
    assert [v.dose for v in scheme.views] == [s.pre_dose for s in fx.acquisition()]
    assert scheme.excluded and all(v.dose is not None for v in scheme.excluded)  # exposed too
    assert (
        "assumed dose-symmetric order from 6 deg, groups of 1 starting on the positive"
        in (scheme.notes[-1])
    )
    with pytest.raises(TiltSchemeError, match="G must be a whole number other than 0"):
        dose.with_doses(read_tilt_file(tlt), 3.0, "dose-symmetric:0")


# --- bytes ---------------------------------------------------------------------------------

#: sha256 (16 digits) of volumes 0-2 of each source, written by main before dose weighting
#: existed (commit b7eb109), numpy 2.4.6 and scipy 1.17.1.
BYTES = {
    "mode1": "0879da09ec9a982f",
    "mode2": "a7bed764b57e4828",
    "ramp": "672c527108850805",
    "imod": "898ede7f1fedf36a",
    "scheme1": "fa0907e6f2125635",
    "scheme2": "a8499b6550c8fabb",
}


def test_without_dose_weighting_every_volume_keeps_its_bytes():
    from importlib.metadata import version

    if (version("numpy"), version("scipy")) != ("2.4.6", "1.17.1"):
        pytest.skip("the recorded bytes are those of numpy 2.4.6 and scipy 1.17.1")
    from mwr_dask.noise.schemes import TiltScheme, View

    angles = [-48.0, -45.0, -42.0, -27.0, -3.0, 0.0, 3.5, 30.0, 57.0, 66.0]
    uneven = TiltScheme(tuple(View(i + 1, a) for i, a in enumerate(angles)), source="uneven.tlt")
    cases = {
        "mode1": {"mode": 1, "anglestep": 3.0},
        "mode2": {"mode": 2, "minangle": -50.0, "maxangle": 65.0},
        "ramp": {"mode": 1, "filter": "ramp"},
        "imod": {"mode": 1, "anglestep": 3.0, "filter": "imod"},
        "scheme1": {"mode": 1, "tilt_schemes": (uneven,)},
        "scheme2": {"mode": 2, "tilt_schemes": (uneven,)},
    }
    for name, kwargs in cases.items():
        for model in ({}, {"dose_weighting": "none"}):
            src = NoiseSource(24, seed=20260, voxel_size=7.5, **kwargs, **model)
            h = hashlib.sha256(b"".join(np.ascontiguousarray(src[i]).tobytes() for i in range(3)))
            assert h.hexdigest()[:16] == BYTES[name], name
            assert not any(label.startswith(("dose=", "dq")) for label in src.labels(0))
            assert not any("dsha=" in label for label in src.labels(0))


@pytest.mark.parametrize("mode", [1, 2])
def test_zero_doses_equal_the_unweighted_volumes(mode):
    zero = dose.with_doses(read_tilt_file(MDOC), 0.0, None)  # every pre-exposure 0
    weighted = source(24, zero, mode=mode)
    plain = NoiseSource(24, mode=mode, seed=3, voxel_size=VOXEL, tilt_schemes=(zero,))
    for i in range(2):
        assert np.allclose(weighted[i], plain[i], atol=3e-5), i
        assert weighted[i].tobytes() != plain[i].tobytes()  # the weighted path ran


# --- physics --------------------------------------------------------------------------------


def reference_weighting(stacked, n, angles, doses, length=512, along_t=None):
    """Each view's projection (t, y) filtered in 2-D by its weight, float64, padded to 512^2.

    ``along_t``: a reconstruction filter's W_v(f_t) too, (views, length) at ``fftfreq``.
    """
    _, widths = backprojection_operator(n, np.asarray(angles))
    f = np.fft.fftfreq(length)
    k = np.hypot(f[:, None], f[None, :]) / VOXEL
    out, offset = [], 0
    for v, (width, n_dose) in enumerate(zip(widths, doses, strict=True)):
        p = stacked[offset : offset + width].astype(np.float64)
        weight = gg_weight(n_dose, k) * (1.0 if along_t is None else along_t[v][:, None])
        out.append(np.fft.ifft2(np.fft.fft2(p, s=(length, length)) * weight).real[:width, :n])
        offset += width
    return np.concatenate(out)


def plane_bands(n, angle, bands):
    """Masks of the rfftn voxels on the view's plane (within half a pixel), per |k| band."""
    k = np.round(np.fft.fftfreq(n) * n)
    kz, ky, kx = np.meshgrid(k, k, np.arange(n // 2 + 1), indexing="ij")
    t = math.radians(angle)
    on = np.abs(kx * math.sin(t) + kz * math.cos(t)) < 0.5
    r = np.sqrt(kz**2 + ky**2 + kx**2) / n
    return [on & (r >= lo) & (r < hi) for lo, hi in bands], r, np.hypot(kz, kx)


def views_by_dose(angles, doses):
    order = np.argsort(doses, kind="stable")
    return {"lowest": order[0], "middle": order[len(order) // 2], "highest": order[-1]}


def test_mode1_on_each_views_plane_equals_an_independent_filtered_backprojection():
    """Weighted over unweighted power (same projections) on the lowest-, middle- and
    highest-dose views' planes, in 3-D |k| bands: mwr-dask against the definition done
    independently (the star file read directly, float64 FFTs padded to 512, np.exp, a
    real-space back-projection with np.interp). They agree to 1e-3 (float32 and the padding);
    2 % is allowed. Without the weighting the highest-dose view's ratio would be 1, not 0.15.
    """
    n = 64
    angles, doses = (np.array(c) for c in zip(*star_views(TS01), strict=True))
    scheme = read_tilt_file(TS01)
    weighted = source(n, scheme).generator(0)
    plain = BackProjection(n, scheme.angle_tuple)
    assert weighted.angles == tuple(angles)
    power = {"plain": 0.0, "ours": 0.0, "reference": 0.0}
    for i in range(2):
        stacked = plain.projections(volume_rng(5, i))
        volumes = {
            "plain": plain.backproject(stacked),
            "ours": weighted.backproject(weighted.filter_projections(stacked.copy())),
            "reference": reference_backprojection(
                n, angles, reference_weighting(stacked, n, angles, doses)
            ),
        }
        for key, v in volumes.items():
            power[key] = power[key] + np.abs(np.fft.rfftn(np.asarray(v, np.float64))) ** 2
    bands = [(0.05, 0.1), (0.1, 0.2), (0.2, 0.3), (0.3, 0.4), (0.4, 0.5), (0.5, 0.87)]
    for name, v in views_by_dose(angles, doses).items():
        masks, _, _ = plane_bands(n, angles[v], bands)
        for band, sel in zip(bands, masks, strict=True):
            ours = power["ours"][sel].sum() / power["plain"][sel].sum()
            ref = power["reference"][sel].sum() / power["plain"][sel].sum()
            assert ours == pytest.approx(ref, rel=0.02), (name, band)
        if name == "highest":
            assert 0.1 < ours < 0.2  # |k| 0.5-0.87: strongly weighted


def test_mode1_follows_the_model_within_the_overlap_of_neighbouring_views():
    """The same ratio against the plain expectation W_v(|k|)^2 = exp(-N_v / Ne(k)).

    A voxel on view v's plane also collects the views whose planes pass within about a pixel
    of it: the cube crops each back-projected view to about n voxels along its beam, which
    blurs its plane by sinc^2 of the distance. A voxel at distance r from the tilt axis is
    r sin(dtheta) pixels from the plane of a view dtheta away: near the axis (low |k|, or
    voxels close to ky) many views overlap. So the voxels are taken within 45 degrees of the
    x-z plane (r >= 0.7 |k| n), and the ratio must lie between the smallest and the largest
    expectation of the views whose planes pass within one pixel of the band's innermost
    voxels (at 96^3 and 3-degree steps: 11 views at |k| 0.05, 3 at 0.2, v alone from 0.3),
    widened towards the extremes of all views by 5 %: up to 5 % of a voxel's power may come
    from any view, through the blur's side lobes (sinc^2 <= 4.7 % beyond one pixel) and the
    aliases of linear interpolation (measured: 1-3 %, i.e. the highest-dose view up to 7 % above
    its plain expectation, the lowest-dose one 1-3 % below). Weighting the wrong views (the
    doses in reverse order) is off by a factor 2-7 where v is alone.
    """
    n = 96
    scheme = read_tilt_file(TS01)
    gen, plain = source(n, scheme).generator(0), BackProjection(n, scheme.angle_tuple)
    angles, doses = (np.array(c) for c in zip(*star_views(TS01), strict=True))  # independent
    assert tuple(angles) == gen.angles
    pw = pu = 0.0
    for i in range(2):
        stacked = plain.projections(volume_rng(11, i))
        pu = pu + np.abs(np.fft.rfftn(plain.backproject(stacked).astype(np.float64))) ** 2
        vw = gen.backproject(gen.filter_projections(stacked.copy()))
        pw = pw + np.abs(np.fft.rfftn(vw.astype(np.float64))) ** 2
    bands = [(0.05, 0.1), (0.1, 0.2), (0.2, 0.3), (0.3, 0.35), (0.35, 0.4)]
    alone = 0
    for name, v in views_by_dose(angles, doses).items():
        masks, r, rxz = plane_bands(n, angles[v], bands)
        for (lo, _), sel in zip(bands, masks, strict=True):
            sel = sel & (rxz >= 0.7 * lo * n)
            ratio = pw[sel].sum() / pu[sel].sum()
            expected = [gg_weight(d, r[sel] / VOXEL).__pow__(2).mean() for d in doses]
            near = 0.7 * lo * n * np.abs(np.sin(np.radians(angles - angles[v]))) < 1.0
            low, high = min(np.array(expected)[near]), max(np.array(expected)[near])
            low -= 0.05 * (low - min(expected))  # up to 5 % of the power from any view
            high += 0.05 * (max(expected) - high)
            assert low <= ratio <= high, (name, lo, ratio, low, high)
            alone += int(near.sum() == 1)
    assert alone >= 6  # v alone in the two highest bands of each view: the plain expectation


@pytest.mark.parametrize("filter_name", ["none", "ramp"])
def test_mode1_weights_each_projection_in_2d_together_with_the_filter(filter_name):
    from mwr_dask.noise.filters import make_filter, response

    n = 24
    scheme = read_tilt_file(TS01)
    gen = source(n, scheme, filter=filter_name).generator(0)
    assert gen.padded_rows >= 2 * n and gen.padded_length >= 2 * max(
        backprojection_operator(n, np.asarray(gen.angles))[1]
    )
    stacked = gen.projections(volume_rng(2, 0))
    got = gen.filter_projections(stacked.copy())
    length = 256
    along_t = None  # the filter along t only, multiplied in, on the same padded projection
    if filter_name != "none":
        f = np.abs(np.fft.fftfreq(length))
        along_t = response(make_filter(filter_name), f, np.asarray(gen.angles), length=length)
    expected = reference_weighting(stacked, n, gen.angles, gen.dose.doses, length, along_t)
    # float32 FFTs and the kernels' tails wrapped at the shorter padding: 2e-3 of the largest
    assert np.abs(got - expected).max() < 2e-3 * np.abs(expected).max()


def test_mode2_weights_each_fourier_pixel_by_its_nearest_view():
    n = 24
    scheme = read_tilt_file(TS01)
    gen = source(n, scheme, mode=2).generator(0)
    plain = WedgeFilter(n, scheme.minangle, scheme.maxangle)
    w = dose.wedge_weights(gen.dose, n)
    for i in range(2):
        unweighted = plain(volume_rng(4, i)).astype(np.float64)
        expected = np.fft.irfftn(np.fft.rfftn(unweighted) * w, s=unweighted.shape, axes=(0, 1, 2))
        expected = (expected - expected.mean()) / expected.std()
        assert np.allclose(gen(volume_rng(4, i)), expected, atol=2e-5)
    # the nearest view, by angle, away from ties; the ky axis takes the RMS of all views
    k = np.round(np.fft.fftfreq(n) * n)
    kz, kx = np.meshgrid(k, np.arange(n // 2 + 1.0), indexing="ij")
    direction = np.degrees(np.arctan2(-kz, kx))  # the tilt measuring (kx, kz): -direction
    direction = (direction + 90.0) % 180.0 - 90.0
    gap = np.abs((direction[None] - np.array(gen.dose.angles)[:, None, None] + 90.0) % 180.0 - 90.0)
    clear = (np.sort(gap, axis=0)[1] - np.sort(gap, axis=0)[0] > 0.01) & (kz**2 + kx**2 > 0)
    near = dose.nearest_views(gen.dose, kz, kx)
    assert np.array_equal(near[clear], np.argmin(gap, axis=0)[clear])
    ky = np.abs(k) / n / VOXEL
    axis = np.sqrt(np.mean([gg_weight(d, ky) ** 2 for d in gen.dose.doses], axis=0))
    assert np.allclose(w[0, :, 0], axis, rtol=1e-12)


def test_both_modes_attenuate_the_same_directions():
    from mwr_dask.inspection.spectrum import slice_power

    n = 32
    doses, _ = dose.range_doses(np.arange(-60.0, 61.0, 3.0), 3.0, "unidirectional")
    profiles = []
    for mode in (1, 2):  # 0 e/A^2 at -60 degrees, 120 at +60: one side attenuated
        kwargs = {"mode": mode, "seed": 3, "voxel_size": VOXEL, "anglestep": 3.0}
        weighted = NoiseSource(n, **kwargs, dose_weighting="grant-grigorieff", doses=doses)
        plain = NoiseSource(n, **kwargs)
        ratio = sum(slice_power(weighted[i]) for i in range(4)) / sum(
            slice_power(plain[i]) for i in range(4)
        )
        f = np.fft.fftfreq(n)
        kz, kx = np.meshgrid(f, f[: n // 2 + 1], indexing="ij")
        tilt = (np.degrees(np.arctan2(-kz, kx)) + 90.0) % 180.0 - 90.0  # the view measuring it
        band = (np.hypot(kz, kx) > 0.3) & (np.hypot(kz, kx) < 0.45)
        bins = np.digitize(tilt[band], np.arange(-55.0, 56.0, 10.0))
        profiles.append([ratio[band][bins == b].mean() for b in range(1, 12)])
    assert np.corrcoef(*profiles)[0, 1] > 0.95  # the same directions in both modes
    assert all(p[0] > 2 * p[-1] for p in profiles)  # the tilts acquired last lose most


# --- labels and the folder guard -------------------------------------------------------------


def test_labels_record_model_voltage_and_doses():
    from mwr_dask.files.folder import conflicts

    scheme = read_tilt_file(TS01)
    weighted = source(32, scheme)
    labels = weighted.labels(5)
    dsha = dose.dose_digest(dose.file_doses(scheme))
    assert f"dose=grant-grigorieff kv=300 dsha={dsha}" in labels
    assert all(len(x) <= 80 and x.isascii() and x.isprintable() for x in labels)
    back = source_from_labels(labels)
    assert back.dose_weighting == "grant-grigorieff" and back.voltage == 300.0
    assert back.doses == dose.quantized(dose.file_doses(scheme))  # 0.25 e/A^2 steps
    assert len(back.tilts(0)) == len(back.doses) == 40
    # the most views whose doses the labels hold, with a filter and a mixture: 10 labels
    angles = np.linspace(-70.0, 70.0, dose.MAX_DOSE_VIEWS)
    doses_, _ = dose.range_doses(angles, 1.0, "dose-symmetric")
    from mwr_dask.noise.schemes import TiltScheme, View

    views = [View(i + 1, a, i + 1, d) for i, (a, d) in enumerate(zip(angles, doses_, strict=True))]
    big = TiltScheme(tuple(views), source="big.tlt")
    full = NoiseSource(16, seed=1, voxel_size=VOXEL, tilt_schemes=(big, scheme), filter="imod",
                       dose_weighting="bfactor")  # fmt: skip
    assert len(full.labels(10**6)) == 10 and full.label_problems(10**7) == []
    bigger = TiltScheme((*big.views, View(len(angles) + 1, 80.0, 0, 1.0)), source="more.tlt")
    with pytest.raises(ValueError, match="which hold 152"):
        NoiseSource(16, seed=1, voxel_size=VOXEL, tilt_schemes=(bigger,), dose_weighting="bfactor")
    # the guard
    plain = NoiseSource(32, seed=3, voxel_size=VOXEL, tilt_schemes=(scheme,))
    record = weighted.schemes_record
    assert conflicts(back, weighted, record) == []
    assert conflicts(source_from_labels(plain.labels(0)), weighted, plain.schemes_record) == [
        "dose=grant-grigorieff kv=300 (folder has dose=none)"
    ]
    assert conflicts(back, plain, record) == ["dose=none (folder has dose=grant-grigorieff kv=300)"]
    no_doses = NoiseSource(32, seed=3, voxel_size=VOXEL, tilt_schemes=(read_tilt_file(MDOC),))
    assert conflicts(back, no_doses, record)[0].startswith("tilt schemes and doses ")
    assert conflicts(back, source(32, scheme, voltage=200.0), record) == [
        "dose=grant-grigorieff kv=200 (folder has dose=grant-grigorieff kv=300)"
    ]
    other = dose.with_doses(read_tilt_file(MDOC), 2.0, None)  # other doses, other angles
    found = conflicts(back, source(32, other), record)
    mine = source(32, other).schemes_record
    assert found == [f"tilt schemes and doses {mine} (folder has tilt schemes and doses {record})"]
    # a regular range: the doses themselves
    a, _ = dose.range_doses(np.arange(-60.0, 61.0, 30.0), 3.0, "dose-symmetric")
    b, _ = dose.range_doses(np.arange(-60.0, 61.0, 30.0), 3.0, "dose-symmetric:2")
    ra = NoiseSource(16, seed=1, anglestep=30, voxel_size=VOXEL, dose_weighting="bfactor", doses=a)
    rb = NoiseSource(16, seed=1, anglestep=30, voxel_size=VOXEL, dose_weighting="bfactor", doses=b)
    assert source_from_labels(ra.labels(0)) == ra
    assert conflicts(source_from_labels(ra.labels(0)), rb) == [
        "other doses per tilt (the folder's volumes record theirs)"
    ]


# --- the command line -----------------------------------------------------------------------


def run_cli(tmp_path, *args):
    from typer.testing import CliRunner

    from mwr_dask.cli import app

    out = tmp_path / "noise"
    result = CliRunner().invoke(app, ["generate-noise", str(out), "2", "16", "--seed", "1",
                                      "--ncpus", "1", "--no-dashboard", *args])  # fmt: skip
    return result, out


def bad_files(tmp_path):
    negative = tmp_path / "negative.star"
    negative.write_text(TS01.read_text().replace("\t85.000000\t0.000000\t", "\t85.000000\t-2\t"))
    shots = fx.acquisition()
    xml = fx.write_warp_xml(tmp_path / "short.xml", shots)
    text = xml.read_text()
    xml.write_text(re.sub(r"(<Dose>)[^\n]*\n", r"\1", text, count=1))  # one <Dose> entry less
    nan = tmp_path / "nan.star"
    nan.write_text(TS01.read_text().replace("\t85.000000\t0.000000\t", "\t85.000000\tnan\t"))
    tlt = fx.write_tlt(tmp_path / "t.tlt", [0, 3, 6])
    return {"negative": negative, "nan": nan, "xml": xml, "tlt": tlt}


@pytest.mark.parametrize(
    ("args", "words"),
    [
        (["--tilt-file", "{ts01}", "--dose-weighting", "bfactor"], "needs --voxel-size"),
        (["--tilt-file", "{mdoc}", "--dose-weighting", "bfactor", "--voxel-size", "10"],
         "TS_01.mrc.mdoc gives no dose for each view: give --dose-per-tilt"),
        (["--tilt-file", "{tlt}", "--dose-weighting", "bfactor", "--voxel-size", "10",
          "--dose-per-tilt", "3"], "gives no order of acquisition: name it with --acquisition"),
        (["--tilt-file", "{negative}", "--dose-weighting", "bfactor", "--voxel-size", "10"],
         "pre-exposure -2 e/A^2 is not between 0 and"),
        (["--tilt-file", "{nan}", "--dose-weighting", "bfactor", "--voxel-size", "10"],
         "_rlnMicrographPreExposure of row 20 is nan, not a number"),
        (["--tilt-file", "{xml}", "--dose-weighting", "bfactor", "--voxel-size", "10"],
         "(40 <Dose> entries for 41 <Angles>: no dose read)"),
        (["--tilt-file", "{ts01}", "--dose-weighting", "grant-grigorieff", "--voxel-size", "10",
          "--voltage", "120"], "--voltage must be 300, 200 or 100 kV"),
        (["--dose-weighting", "bfactor", "--voxel-size", "10", "--dose-per-tilt", "-1",
          "--acquisition", "dose-symmetric"], "--dose-per-tilt must be 0 or more e/A^2, not -1."),
        (["--dose-weighting", "bfactor", "--voxel-size", "10", "--dose-per-tilt", "nan",
          "--acquisition", "dose-symmetric"], "--dose-per-tilt must be 0 or more e/A^2, not nan."),
        (["--dose-weighting", "bfactor", "--voxel-size", "10", "--dose-per-tilt", "3"],
         "dose weighting of the regular range needs --dose-per-tilt and --acquisition"),
        (["--dose-weighting", "bfactor", "--voxel-size", "10", "--dose-per-tilt", "3",
          "--acquisition", "zigzag"], "--acquisition must be dose-symmetric[:G[:START]]"),
        (["--tilt-file", "{ts01}", "--dose-weighting", "bfactor", "--voxel-size", "10",
          "--dose-per-tilt", "3"], "--dose-per-tilt applies to tilt files without doses"),
        (["--tilt-file", "{ts01}", "--dose-weighting", "bfactor", "--voltage", "300",
          "--voxel-size", "10"], "--voltage applies to --dose-weighting grant-grigorieff"),
        (["--dose-per-tilt", "3"], "--dose-per-tilt needs --dose-weighting"),
        (["--dose-weighting", "gg", "--voxel-size", "10"], "--dose-weighting must be one of"),
        (["--spectrum", "{spectrum}", "--dose-weighting", "bfactor"],
         "does not apply to a measured spectrum (mode 3)"),
    ],
)  # fmt: skip
def test_cli_bad_dose_inputs_are_one_sentence_exit_2_nothing_written(tmp_path, args, words):
    files = {"ts01": TS01, "mdoc": MDOC, **bad_files(tmp_path), "spectrum": spectrum_file(tmp_path)}
    result, out = run_cli(tmp_path, *[a.format(**files) for a in args])
    assert result.exit_code == 2, result.output
    assert words in result.output
    assert result.output.count("error:") == 1 and "Traceback" not in result.output
    message = result.output.split("error:", 1)[1].strip()
    assert message.endswith(".") and message.count(". ") == 0, message  # one sentence
    assert not out.exists()


def spectrum_file(tmp_path):
    from mwr_dask.files.mrc import write_spectrum

    path = tmp_path / "spectrum.mrc"
    s = np.ones((16, 16, 16), np.float32)
    s[8, 8, 8] = 0.0
    write_spectrum(path, s, ["test spectrum"])
    return path


def test_cli_dry_run_says_the_doses_and_the_weight_at_nyquist(tmp_path):
    result, out = run_cli(tmp_path, "--tilt-file", str(MDOC), "--dose-weighting",
                          "grant-grigorieff", "--voxel-size", "10", "--dose-per-tilt", "3",
                          "--dry-run")  # fmt: skip
    assert result.exit_code == 0, result.output
    assert "note: TS_01.mrc.mdoc: no doses in the file: 3 e/A^2 per view in the file's order" in (
        result.output
    )
    # the highest-dose view (120 e/A^2) keeps exp(-120 / (2 Ne(1/20 A))) at Nyquist
    keeps = f"{gg_weight(120.0, 0.05):.3g}"
    assert "  dose: pre-exposure 0 .. 120 e/A^2 over 41 views; grant-grigorieff at 300 kV:" in (
        result.output
    )
    assert f"keeps {keeps} of its amplitude at Nyquist (1/20 A)" in result.output
    assert not out.exists()


@pytest.mark.slow
def test_cli_writes_the_library_volumes_and_guards_the_folder(tmp_path):
    import mrcfile

    from .helpers import assert_only_volumes, cli

    out = tmp_path / "noise"
    common = ["--ncpus", "1", "--no-dashboard", "--seed", "4", "--voxel-size", "10"]
    done = cli("generate-noise", str(out), "2", "16", "--tilt-file", str(TS107),
               "--dose-weighting", "grant-grigorieff", "--voltage", "200", *common)  # fmt: skip
    assert done.returncode == 0, done.stderr
    expected = NoiseSource(16, seed=4, voxel_size=10.0, tilt_schemes=(read_tilt_file(TS107),),
                           dose_weighting="grant-grigorieff", voltage=200.0)  # fmt: skip
    with mrcfile.open(out / "n_00001.mrc") as m:
        assert np.array_equal(m.data, expected[1])
        labels = [lab.decode() for lab in m.header.label[: m.header.nlabl]]
    assert labels == expected.labels(1)
    refused = cli("generate-noise", str(out), "1", "16", "--start", "2",
                  "--tilt-file", str(TS107), *common)  # fmt: skip
    assert refused.returncode == 2
    assert "dose=none (folder has dose=grant-grigorieff kv=200)" in refused.stderr
    assert_only_volumes(out, [0, 1])


# --- inspect ---------------------------------------------------------------------------------


@pytest.mark.parametrize("mode", [1, 2])
def test_inspect_checks_the_attenuation_per_view(tmp_path, mode):
    from mwr_dask.files.mrc import write_volume
    from mwr_dask.inspection import inspect_folder

    scheme = read_tilt_file(TS01)
    weighted = source(32, scheme, mode=mode)
    plain = NoiseSource(32, mode=mode, seed=3, voxel_size=VOXEL, tilt_schemes=(scheme,))
    for honest in (True, False):
        folder = tmp_path / f"noise{honest}"
        folder.mkdir()
        (tmp_path / "tmp").mkdir(exist_ok=True)
        for i in range(12):
            data = weighted[i] if honest else plain[i]  # labels that say weighted, either way
            write_volume(
                folder / f"n_{i:05d}.mrc", data, VOXEL, weighted.labels(i), tmp_path / "tmp"
            )
        report = inspect_folder(folder)
        found = report.summary["dose_weighting"]
        problems = [p for p in report.problems if "dose weighting" in p]
        if honest:
            assert found["agrees"] and abs(found["slope"] - 1) < 0.2, found
            assert report.summary["spectrum"]["looks_like_mode"] == mode
            assert report.summary["spectrum"]["tilt_range_agrees"]
            assert problems == []
        else:
            assert not found["agrees"] and found["slope"] < 0.5, found
            assert len(problems) == 1
