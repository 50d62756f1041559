"""Tilt schemes read from real-format tilt files (tests/tiltfixtures.py writes them)."""

from __future__ import annotations

import json
import pickle
import threading
from pathlib import Path

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from mwr_dask.files.folder import conflicts
from mwr_dask.noise.generators import BackProjection
from mwr_dask.noise.geometry import tilt_angles
from mwr_dask.noise.normals import volume_rng
from mwr_dask.noise.schemes import (
    EXCLUDED_BY_USER,
    EXCLUDED_DARK,
    EXCLUDED_USETILT,
    TiltScheme,
    TiltSchemeError,
    View,
    format_view_list,
    parse_exclude,
)
from mwr_dask.noise.source import NoiseSource, parse_labels, source_from_labels
from mwr_dask.noise.tiltfiles import SIGNS, detect_format, read_tilt_file
from tests import tiltfixtures as tf
from tests.helpers import assert_only_volumes, cli, read_all
from tests.spectra import kxkz_power, polar

from .helpers import range_generator, regular_scheme, scheme_generator

SHOTS = tf.acquisition()
USED = tf.used_angles(SHOTS)  # the 38 angles left after the dark views, as the files write them


@pytest.fixture
def files(tmp_path: Path) -> dict[str, Path]:
    """Every format describing the same acquisition (dark views 1-3)."""
    return {
        "tlt": tf.write_tlt(tmp_path / "TS_01.tlt", [s.angle for s in SHOTS]),
        "rawtlt": tf.write_tlt(
            tmp_path / "TS_01.rawtlt", [s.angle for s in SHOTS], [s.pre_dose for s in SHOTS]
        ),
        "aln": tf.write_aln(tmp_path / "TS_01.aln", SHOTS),
        "aln-local": tf.write_aln(tmp_path / "TS_01_local.aln", SHOTS, patches=4),
        "mdoc": tf.write_mdoc(tmp_path / "TS_01.mrc.mdoc", SHOTS),
        "star": tf.write_relion_star(tmp_path / "TS_01.star", SHOTS),
        "star-nominal": tf.write_relion_star(tmp_path / "TS_02.star", SHOTS, refined=False),
        "tomostar": tf.write_tomostar(tmp_path / "TS_01.tomostar", SHOTS),
        "xml": tf.write_warp_xml(tmp_path / "TS_01.xml", SHOTS),
    }


def mdoc_dark_numbers() -> str:
    """The dark views' numbers in the mdoc's own order (ZValue = acquisition order)."""
    return format_view_list(SHOTS[i].order for i in tf.DARK)


def read_same_views(files: dict[str, Path]) -> dict[str, TiltScheme]:
    """Each file read so that the dark views are left out."""
    out = {}
    for key, path in files.items():
        exclude = {"tlt": "1-3", "rawtlt": "1-3", "mdoc": mdoc_dark_numbers()}.get(key)
        out[key] = read_tilt_file(path, exclude=exclude)
    return out


# --------------------------------------------------------------------------- formats


def test_every_format_gives_the_same_used_views(files):
    """One physical tilt series, as each program writes it, gives one wedge (one digest)."""
    schemes = read_same_views(files)
    expected_formats = {
        "tlt": "imod",
        "rawtlt": "imod",
        "aln": "aretomo",
        "aln-local": "aretomo",
        "mdoc": "serialem",
        "star": "relion5",
        "star-nominal": "relion5",
        "tomostar": "warp-tomostar",
        "xml": "warp-xml",
    }
    warp = {"tomostar", "xml"}  # WarpTools writes the negated stage angles
    for key, scheme in schemes.items():
        assert scheme.format == expected_formats[key], key
        file_angles = sorted(v.angle for v in scheme.used)
        assert file_angles == (sorted(-a + 0.0 for a in USED) if key in warp else USED), key
        assert scheme.sign == SIGNS[scheme.format] == (1 if key in warp else -1), key
        np.testing.assert_array_equal(scheme.angles, np.sort(-np.array(USED)) + 0.0)
        assert scheme.angles.dtype == np.float64
    assert len({s.digest for s in schemes.values()}) == 1
    # inverting any of them mirrors the wedge: another digest, the stage angles as used
    inverted = read_tilt_file(files["aln"], invert=True)
    assert inverted.digest != schemes["aln"].digest
    np.testing.assert_array_equal(inverted.angles, np.array(USED))


def test_tlt_with_exclude_equals_the_aln_whose_dark_frames_drop_the_same_views(files):
    tlt = read_tilt_file(files["tlt"], exclude="1-3")
    aln = read_tilt_file(files["aln"])
    assert [v.number for v in tlt.excluded] == [v.number for v in aln.excluded] == [1, 2, 3]
    assert {v.excluded for v in tlt.excluded} == {EXCLUDED_BY_USER}
    assert {v.excluded for v in aln.excluded} == {EXCLUDED_DARK}
    assert [v.angle for v in tlt.views] == [v.angle for v in aln.views]
    # AreTomo writes the numbers of IMOD's .tlt (CSaveTilts): the same operator and volumes
    assert aln.angle_tuple == tlt.angle_tuple and aln.sign == tlt.sign == -1
    a = BackProjection(16, tlt.angle_tuple)(volume_rng(7, 3))
    b = BackProjection(16, aln.angle_tuple)(volume_rng(7, 3))
    assert a.tobytes() == b.tobytes()


def test_warp_xml_usetilt_false_views_are_excluded(files, tmp_path):
    scheme = read_tilt_file(files["xml"])
    assert [v.number for v in scheme.excluded] == [1, 2, 3]
    assert {v.excluded for v in scheme.excluded} == {EXCLUDED_USETILT}
    assert [v.dose for v in scheme.views] == [s.pre_dose for s in SHOTS]
    assert [v.order for v in scheme.views] == [s.order for s in SHOTS]
    flagged = read_tilt_file(tf.write_warp_xml(tmp_path / "inv.xml", SHOTS, inverted=True))
    assert flagged.angle_tuple == scheme.angle_tuple  # a defocus handedness, not geometry
    assert any("AreAnglesInverted" in note for note in flagged.notes)
    assert "AreAnglesInverted" in flagged.describe()


def test_mdoc_keeps_acquisition_order_and_accumulated_dose(files):
    scheme = read_tilt_file(files["mdoc"])
    by_order = sorted(SHOTS, key=lambda s: s.order)
    assert [v.angle for v in scheme.views] == [s.angle for s in by_order]  # ZValue order
    assert [v.order for v in scheme.views] == list(range(1, len(SHOTS) + 1))
    assert [v.dose for v in scheme.views] == [s.pre_dose for s in by_order]


def test_relion_prefers_refined_ytilt_and_keeps_pre_exposure(files, tmp_path):
    star = read_tilt_file(files["star"])
    assert [v.dose for v in star.views] == sorted(s.pre_dose for s in SHOTS if s.angle in USED)
    text = files["star"].read_text().splitlines()
    # refine one view: YTilt differs from the nominal angle, and YTilt is what is read
    row = next(i for i, line in enumerate(text) if line.startswith("frames/"))
    fields = text[row].split()
    fields[8] = "6.400000"
    text[row] = " ".join(fields)
    refined = tmp_path / "refined.star"
    refined.write_text("\n".join(text) + "\n")
    assert 6.4 in [v.angle for v in read_tilt_file(refined).views]
    nominal = read_tilt_file(files["star-nominal"])
    assert nominal.angle_tuple == star.angle_tuple


def test_tomostar_dose_gives_the_acquisition_order(files):
    scheme = read_tilt_file(files["tomostar"])
    doses = [v.dose for v in scheme.views]
    assert [v.order for v in scheme.views] == [sorted(doses).index(d) + 1 for d in doses]


def test_format_is_recognised_from_content_without_a_known_extension(files, tmp_path):
    for key in ("tlt", "aln", "mdoc", "star", "tomostar", "xml"):
        renamed = tmp_path / f"{key}.txt"
        renamed.write_bytes(files[key].read_bytes())
        assert read_tilt_file(renamed).format == read_tilt_file(files[key]).format, key
    star_named_tomostar = tmp_path / "warp.star"
    star_named_tomostar.write_bytes(files["tomostar"].read_bytes())
    assert detect_format(star_named_tomostar, star_named_tomostar.read_text()) == ("warp-tomostar")


def test_invert_negates_the_used_angles(files):
    plain = read_tilt_file(files["xml"])
    inverted = read_tilt_file(files["xml"], invert=True)
    np.testing.assert_array_equal(inverted.angles, np.sort(-plain.angles))
    assert inverted.inverted and inverted.sign == -plain.sign
    assert "--invert-tilts" in inverted.describe()


# --------------------------------------------------------------------------- descriptions


def test_describe_names_source_views_range_steps_and_gap(files):
    scheme = read_tilt_file(files["tlt"], exclude="20-24")
    text = scheme.describe()
    assert str(files["tlt"]) in text
    assert "41 in file, 36 used, 5 excluded" in text
    assert "views 20-24" in text
    assert "largest gap 18 deg" in text  # 5 excluded views leave 6 steps of 3 degrees
    assert scheme.gap_note is not None and "mode 2" in scheme.gap_note
    assert read_tilt_file(files["tlt"]).gap_note is None
    assert scheme.label in text
    assert len(scheme.label) <= 60


def test_label_stays_short_in_the_worst_case():
    views = tuple(
        View(i + 1, -89.99 + 0.179 * i, excluded="" if i % 2 else "x") for i in range(999)
    )
    scheme = TiltScheme(views=views, source="x.tlt", format="imod", sign=-1)
    assert len(scheme.label) <= 60
    assert scheme.label.startswith("tilts=-88.47..89.81 n=499 excl=500 sha=")


# --------------------------------------------------------------------------- errors


def one_sentence(exc: pytest.ExceptionInfo, path: Path, line: int | None = None) -> str:
    message = str(exc.value)
    assert "\n" not in message
    assert message.endswith(".")
    assert str(path) in message
    if line is not None:
        assert f"line {line}" in message
    return message


@pytest.mark.parametrize(
    ("content", "line", "words"),
    [
        ("-60\n-57\nabc\n", 3, "not a tilt angle"),
        ("-60\n95\n", 2, "outside (-90, 90)"),
        ("-60 0\n-60 3\n", 2, "repeated"),
        ("-60 0\n-57\n", 2, "1 number here and 2 on line 1"),
        ("-60 -57\n-54 -51\n", None, "column 2 holds -57, neither a dose nor"),
        ("-60 0\n-57 x3\n", 2, "'x3' is not a number"),
        ("12.5\n", None, "at least 2"),
        ("", None, "no tilt angles"),
    ],
)
def test_tlt_errors_name_file_and_line(tmp_path, content, line, words):
    path = tmp_path / "bad.tlt"
    path.write_text(content)
    with pytest.raises(TiltSchemeError) as exc:
        read_tilt_file(path)
    assert words in one_sentence(exc, path, line)


def test_exclude_errors(files):
    path = files["tlt"]
    with pytest.raises(TiltSchemeError) as exc:
        read_tilt_file(path, exclude="40-42")
    assert "view 42" in one_sentence(exc, path) and "41 views" in str(exc.value)
    for bad in ("0", "5-3", "a", ",", "1-"):
        with pytest.raises(TiltSchemeError) as exc:
            read_tilt_file(path, exclude=bad)
        one_sentence(exc, path)
    with pytest.raises(TiltSchemeError) as exc:
        read_tilt_file(path, exclude="2-41")
    assert "at least 2" in one_sentence(exc, path)


def test_unknown_unreadable_and_malformed_files(tmp_path, files):
    cases = {
        "notes.txt": "these are my notes\n",
        "broken.xml": "<TiltSeries><Angles>1\n2</TiltSeries>",
        "noangles.xml": "<TiltSeries><Dose>1 2</Dose></TiltSeries>",
        "empty.aln": "# AreTomo Alignment / Priims bprmMn\n# RawSize = 1 1 1\n",
        "sections.mdoc": "PixelSpacing = 1.9\n",
        "global.star": "data_global\n\nloop_\n_rlnTomoName #1\n_rlnTomoTiltSeriesStarFile #2\n"
        "TS_01 tilt_series/TS_01.star\n",
    }
    for name, content in cases.items():
        path = tmp_path / name
        path.write_text(content)
        with pytest.raises(TiltSchemeError) as exc:
            read_tilt_file(path)
        one_sentence(exc, path)
    missing = tmp_path / "missing.tlt"
    with pytest.raises(TiltSchemeError) as exc:
        read_tilt_file(missing)
    assert "cannot be read" in one_sentence(exc, missing)
    usetilt = tmp_path / "usetilt.xml"
    usetilt.write_text(
        "<TiltSeries><Angles>1\n2\n3</Angles><UseTilt>True\nFalse</UseTilt></TiltSeries>"
    )
    with pytest.raises(TiltSchemeError) as exc:
        read_tilt_file(usetilt)
    assert "<UseTilt>" in one_sentence(exc, usetilt)


def test_mdoc_angle_error_names_the_section_line(tmp_path):
    path = tf.write_mdoc(tmp_path / "TS.mdoc", SHOTS[:4])
    lines = path.read_text().splitlines()
    k = [i for i, line in enumerate(lines) if line.startswith("TiltAngle")][2]
    lines[k] = "TiltAngle = 91.0"
    path.write_text("\n".join(lines) + "\n")
    section_line = max(i for i in range(k) if lines[i].startswith("[ZValue")) + 1
    with pytest.raises(TiltSchemeError) as exc:
        read_tilt_file(path)
    assert "outside" in one_sentence(exc, path, section_line)


# --------------------------------------------------------------------------- regular range


@pytest.mark.parametrize(("lo", "hi", "step"), [(-60, 60, 2), (-40, 56, 7), (-48, 66, 3)])
def test_a_scheme_of_the_ranges_angles_is_the_range(lo, hi, step):
    """Mode 1: one generator (one cache entry) for a range and a file of the same angles."""
    scheme = regular_scheme(lo, hi, step)
    assert scheme.angle_tuple == tuple(tilt_angles(lo, hi, step).tolist())
    assert scheme_generator(1, 16, scheme) is range_generator(1, 16, lo, hi, step)
    made = BackProjection(16, scheme.angle_tuple)(volume_rng(11, 5))
    today = range_generator(1, 16, float(lo), float(hi), float(step))(volume_rng(11, 5))
    assert made.tobytes() == today.tobytes()


def test_schemes_are_frozen_hashable_and_picklable(files):
    a = read_tilt_file(files["aln"])
    b = read_tilt_file(files["aln"])
    assert a == b and hash(a) == hash(b) and len({a, b}) == 1
    with pytest.raises(AttributeError):
        a.sign = -1  # type: ignore[misc]
    c = pickle.loads(pickle.dumps(a))
    assert c == a and c.digest == a.digest and c.angle_tuple == a.angle_tuple


# --------------------------------------------------------------------------- properties


@given(st.sets(st.integers(1, 400), min_size=1, max_size=60))
def test_exclude_list_round_trips(numbers):
    text = format_view_list(numbers)
    assert parse_exclude(text, 400) == tuple(sorted(numbers))
    assert parse_exclude(text.replace(",", " "), 400) == tuple(sorted(numbers))
    if max(numbers) > 1:  # one view fewer in the file: the highest number is named
        with pytest.raises(ValueError, match=f"names view {max(numbers)}, but the file has"):
            parse_exclude(text, max(numbers) - 1)


@given(st.lists(st.tuples(st.integers(1, 200), st.integers(0, 20)), min_size=1, max_size=20))
def test_exclude_ranges_cover_exactly_their_views(pairs):
    text = ",".join(f"{a}-{a + d}" if d else str(a) for a, d in pairs)
    expected = sorted({v for a, d in pairs for v in range(a, a + d + 1)})
    assert list(parse_exclude(text, 220)) == expected


angle_sets = st.lists(
    st.floats(-89.9, 89.9, allow_nan=False).map(lambda a: round(a, 2)),
    min_size=2,
    max_size=80,
    unique=True,
)


@settings(max_examples=60, deadline=None)
@given(angle_sets, st.randoms(use_true_random=False), st.sampled_from([1, -1]))
def test_scheme_invariants(angles, rnd, sign):
    views = [View(i + 1, a) for i, a in enumerate(angles)]
    scheme = TiltScheme(views=tuple(views), source="s.tlt", format="imod", sign=sign)
    got = scheme.angles
    assert np.all(np.diff(got) > 0)
    assert got[0] == scheme.minangle and got[-1] == scheme.maxangle
    assert scheme.largest_gap >= scheme.median_step > 0
    assert len(scheme.steps) == len(angles) - 1
    assert len(scheme.label) <= 60
    assert not any(a == 0 and np.signbit(a) for a in got)  # no -0.0
    shuffled = list(views)
    rnd.shuffle(shuffled)
    again = TiltScheme(views=tuple(shuffled), source="other.tlt", format="imod", sign=sign)
    assert again.digest == scheme.digest  # the digest is of the angle list, not the file
    flipped = TiltScheme(views=tuple(views), source="s.tlt", format="imod", sign=-sign)
    np.testing.assert_array_equal(flipped.angles, np.sort(-got) + 0.0)


# --------------------------------------------------------------------------- physics


def averaged_spectrum(scheme: TiltScheme, n: int = 48, volumes: int = 6) -> np.ndarray:
    """Mode-1 kx-kz power of ``volumes`` volumes of a source with the scheme alone."""
    source = NoiseSource(n, mode=1, seed=2024, tilt_schemes=(scheme,))
    return kxkz_power([source[i] for i in range(volumes)])


def test_five_excluded_views_leave_a_gap_at_high_radius(files):
    n = 48
    full = read_tilt_file(files["tlt"])
    gapped = read_tilt_file(files["tlt"], exclude="20-24")  # file angles 3 .. 15
    assert gapped.largest_gap == 18.0
    # used angles (negated, IMOD) run to -18 .. 0 around the gap; measured folded directions
    # are minus the used angles, so the gap is the directions 0 .. 18 degrees
    r, phi = polar(n)
    ring = (r > 0.3 * n) & (r < 0.45 * n)
    in_gap = ring & (phi > 4) & (phi < 14)
    beside = ring & (((phi > 24) & (phi < 40)) | ((phi > -22) & (phi < -6)))
    p_full, p_gap = averaged_spectrum(full, n), averaged_spectrum(gapped, n)
    assert p_gap[in_gap].mean() < 0.3 * p_gap[beside].mean()
    assert p_full[in_gap].mean() > 0.8 * p_full[beside].mean()


@pytest.mark.parametrize("invert", [False, True])
def test_asymmetric_scheme_puts_the_wedge_on_the_stated_side(files, invert):
    # The .aln holds -45 .. 66, negated (AreTomo with -FlipVol 1, as IMOD): used -66 .. 45;
    # measured directions of the geometry are minus the used angles, folded: [-45, 66].
    # Inverted: used -45 .. 66, measured [-66, 45].
    scheme = read_tilt_file(files["aln"], invert=invert)
    n = 48
    r, phi = polar(n)
    band = (r > 4) & (r < 0.42 * n)
    p = averaged_spectrum(scheme, n, volumes=4)
    lo, hi = -scheme.maxangle, -scheme.minangle  # measured folded directions
    assert (lo, hi) == ((-66.0, 45.0) if invert else (-45.0, 66.0))
    measured_only_here = band & (np.abs(phi - (hi + lo) / 2) < 5)
    side_measured = band & (np.abs(phi - (60 if not invert else -60)) < 3)
    side_missing = band & (np.abs(phi - (-60 if not invert else 60)) < 3)
    assert p[side_missing].mean() < 0.1 * p[side_measured].mean()
    assert p[measured_only_here].mean() > 0.5 * p[side_measured].mean()


# --------------------------------------------------------------------------- generators


def test_generator_for_scheme_is_cached_per_scheme_and_matches_todays_range(files):
    aln = read_tilt_file(files["aln"])
    again = read_tilt_file(files["aln"])
    assert scheme_generator(1, 16, aln) is scheme_generator(1, 16, again)
    assert scheme_generator(1, 16, aln) is not scheme_generator(2, 16, aln)
    # mode 2 of a file: the continuous wedge of the used views
    wedge = scheme_generator(2, 16, aln)
    assert (wedge.minangle, wedge.maxangle) == (aln.minangle, aln.maxangle) == (-66.0, 45.0)
    # mode 2 of a range keeps its whole [minangle, maxangle], a scheme its used views' range
    scheme = regular_scheme(-40, 56, 7)  # views -40 .. 51
    assert scheme.maxangle == 51.0
    assert scheme_generator(2, 16, scheme) is range_generator(2, 16, -40.0, 51.0, 7.0)
    wide = range_generator(2, 16, -40.0, 56.0, 7.0)
    assert (wide.minangle, wide.maxangle) == (-40.0, 56.0)


def test_mixture_volumes_are_those_of_each_scheme_alone(files):
    # volume i of a mixture uses scheme i mod k; its random stream depends on (seed, i) only,
    # so it is byte-identical to volume i of a run with that scheme alone
    schemes = [read_tilt_file(files[k]) for k in ("tlt", "aln", "xml")]
    seed = 99
    for i in range(6):
        scheme = schemes[i % 3]
        mixed = scheme_generator(1, 16, scheme)(volume_rng(seed, i))
        alone = BackProjection(16, scheme.angle_tuple)(volume_rng(seed, i))
        assert mixed.tobytes() == alone.tobytes()


@pytest.mark.parametrize(("mode", "filtering"), [(1, {}), (1, {"filter": "ramp"}), (2, {})])
def test_cached_bytes_count_what_the_generator_holds(files, mode, filtering):
    scheme = read_tilt_file(files["aln"])
    source = NoiseSource(24, mode=mode, tilt_schemes=(scheme,), seed=1, **filtering)
    g = source.generator(0)
    g(volume_rng(1, 0))  # its scratch arrays exist once a volume is made
    arrays = [v for v in vars(g).values() if isinstance(v, np.ndarray)]
    for local in [v for v in vars(g).values() if isinstance(v, threading.local)]:
        arrays += [a for a in vars(local).values() if isinstance(a, np.ndarray)]
    op = getattr(g, "_op", None)
    held = sum(a.nbytes for a in arrays)
    if op is not None:
        held += op.data.nbytes + op.indices.nbytes + op.indptr.nbytes
    assert held <= source.cached_bytes() <= 1.1 * held
    # a mixture counts each distinct scheme once
    twice = NoiseSource(24, mode=mode, tilt_schemes=(scheme, scheme), seed=1, **filtering)
    assert twice.cached_bytes() == source.cached_bytes()


# --------------------------------------------------------------------------- wiring


def test_noise_source_mixture_volume_i_is_that_of_its_scheme_alone(files):
    schemes = tuple(read_tilt_file(files[k]) for k in ("tlt", "aln", "mdoc"))
    mixture = NoiseSource(16, mode=1, seed=21, tilt_schemes=schemes)
    for i in range(7):
        alone = NoiseSource(16, mode=1, seed=21, tilt_schemes=(schemes[i % 3],))
        assert mixture[i].tobytes() == alone[i].tobytes()
        labels = mixture.labels(i)
        assert all(len(label) <= 80 for label in labels)
        assert labels[2] == f"scheme={i % 3 + 1}/3 {schemes[i % 3].label}"
    big = NoiseSource(512, mode=1, seed=2**128 - 1, voxel_size=13.125, tilt_schemes=schemes)
    assert all(len(label) <= 80 for label in big.labels(99_999_999))
    # mode 2: the continuous wedge of the used views
    m2 = NoiseSource(16, mode=2, seed=3, tilt_schemes=(schemes[1],))
    wedge = NoiseSource(16, mode=2, seed=3, minangle=-66, maxangle=45)
    assert m2[0].tobytes() == wedge[0].tobytes()
    # a source with schemes pickles small (no operator) and back to an equal source
    blob = pickle.dumps(mixture)
    assert pickle.loads(blob) == mixture and len(blob) < 40_000


def test_labels_of_a_scheme_volume_read_back(files):
    scheme = read_tilt_file(files["aln"])
    source = NoiseSource(16, mode=1, seed=8, tilt_schemes=(scheme,))
    labels = source.labels(5)
    kv = parse_labels(labels)
    assert kv["schemes"] == source.schemes_record and kv["sha"] == scheme.digest
    back = source_from_labels(labels)
    assert (back.minangle, back.maxangle, back.seed) == (-66.0, 45.0, 8)
    assert back.anglestep == pytest.approx(3.0)
    # a regular source keeps today's labels
    assert NoiseSource(16, seed=8).labels(5)[0].endswith("tilt=-60:60:2 index=5")


def test_folder_guard_compares_schemes(files):
    a = NoiseSource(16, seed=1, tilt_schemes=(read_tilt_file(files["aln"]),))
    b = NoiseSource(16, seed=1, tilt_schemes=(read_tilt_file(files["tlt"]),))  # no dark views
    same = NoiseSource(16, seed=1, tilt_schemes=(read_tilt_file(files["xml"]),))  # same angles
    recorded = source_from_labels(a.labels(0))
    assert conflicts(recorded, same, a.schemes_record) == []
    assert "tilt schemes" in conflicts(recorded, b, a.schemes_record)[0]
    assert "tilts -60:60:2" in conflicts(recorded, NoiseSource(16, seed=1), a.schemes_record)[0]
    plain = NoiseSource(16, seed=1)
    assert "folder has -60:60:2" in conflicts(plain, a)[0]


@pytest.mark.slow
@pytest.mark.parametrize(
    ("args", "words"),
    [
        (["--tilt-file", "{tlt}", "--minangle", "-50"], "not both"),
        (["--tilt-file", "{tlt}", "--tilt-file", "{aln}", "--exclude", "1"], "single --tilt-file"),
        (["--exclude", "1-3"], "--exclude needs --tilt-file"),
        (["--invert-tilts"], "--invert-tilts needs --tilt-file"),
        (["--tilt-file", "{tlt}", "--exclude", "40-45"], "view 42"),
        (["--tilt-file", "{missing}"], "cannot be read"),
    ],
)
def test_cli_usage_errors_one_sentence_exit_2_nothing_written(tmp_path, files, args, words):
    names = {"tlt": files["tlt"], "aln": files["aln"], "missing": tmp_path / "no.tlt"}
    out = tmp_path / "out"
    proc = cli("generate-noise", str(out), "2", "16", *[a.format(**names) for a in args])
    assert proc.returncode == 2, proc.stderr
    assert words in proc.stderr and "Traceback" not in proc.stderr
    assert len(proc.stderr.strip().splitlines()) == 1
    assert not out.exists()


@pytest.mark.slow
def test_cli_dry_run_prints_each_scheme_and_the_cached_memory(tmp_path, files):
    proc = cli("generate-noise", str(tmp_path / "out"), "6", "32", "--dry-run", "--ncpus", "1",
               "--tilt-file", str(files["tlt"]), "--tilt-file", str(files["aln"]))  # fmt: skip
    assert proc.returncode == 0, proc.stderr
    assert proc.stdout.count("tilt scheme: ") == 2
    assert "excluded (DarkFrame): views 1-3" in proc.stdout
    assert "Cached per worker:" in proc.stdout and "2 schemes" in proc.stdout
    assert not (tmp_path / "out").exists()


@pytest.mark.slow
def test_cli_mixture_writes_each_schemes_volumes_and_guards_the_folder(tmp_path, files):
    out = tmp_path / "out"
    mix = ["--tilt-file", str(files["tlt"]), "--tilt-file", str(files["aln"]),
           "--tilt-file", str(files["xml"])]  # fmt: skip
    proc = cli("generate-noise", str(out), "5", "16", "--seed", "4", "--ncpus", "1",
               "--no-dashboard", *mix)  # fmt: skip
    assert proc.returncode == 0, proc.stderr
    assert_only_volumes(out, range(5))
    data = read_all(out)
    schemes = [read_tilt_file(files[k]) for k in ("tlt", "aln", "xml")]
    for i in range(5):
        alone = NoiseSource(16, seed=4, tilt_schemes=(schemes[i % 3],))
        assert np.array_equal(data[f"n_{i:05d}.mrc"], alone[i])
    # appending with another scheme is a conflict; the same mixture appends with its seed
    other = cli("generate-noise", str(out), "2", "16", "--start", "5", "--ncpus", "1",
                "--no-dashboard", "--tilt-file", str(files["tlt"]))  # fmt: skip
    assert other.returncode == 2 and "tilt schemes" in other.stderr
    same = cli("generate-noise", str(out), "2", "16", "--start", "5", "--ncpus", "1",
               "--no-dashboard", "-q", *mix)  # fmt: skip
    assert same.returncode == 0, same.stderr
    data = read_all(out)
    mixture = NoiseSource(16, seed=4, tilt_schemes=tuple(schemes))
    assert np.array_equal(data["n_00006.mrc"], mixture[6])


@settings(max_examples=40, deadline=None)
@given(
    angle_sets,
    st.sampled_from(["none", "dose", "index", "order"]),
    st.sets(st.integers(1, 80), max_size=10),
    st.booleans(),
    st.randoms(use_true_random=False),
)
def test_tlt_files_read_back_their_angles_and_exclusions(angles, extra, drop, invert, rnd):
    """The first number of a line is the angle; a second column is read as what it holds."""
    import tempfile

    n = len(angles)
    order = list(range(1, n + 1))
    rnd.shuffle(order)
    column = {
        "none": [],
        "dose": [[round(rnd.uniform(0, 200), 2) for _ in angles]],
        "index": [list(range(n))],  # pytom's "angle index"
        "order": [order],  # AreTomo's -AngFile order
    }[extra]
    drop = {k for k in drop if k <= n}
    kept = [a for i, a in enumerate(angles) if i + 1 not in drop]
    with tempfile.TemporaryDirectory() as tmp:
        path = tf.write_tlt(Path(tmp) / "r.rawtlt", angles, *column)
        exclude = format_view_list(drop) if drop else None
        if len(kept) < 2:
            with pytest.raises(TiltSchemeError):
                read_tilt_file(path, exclude=exclude, invert=invert)
            return
        scheme = read_tilt_file(path, exclude=exclude, invert=invert)
    assert [v.angle for v in scheme.views] == [float(f"{a:7.2f}") for a in angles]
    assert [v.number for v in scheme.excluded] == sorted(drop)
    sign = -SIGNS["imod"] if invert else SIGNS["imod"]
    expected = sorted(sign * float(f"{a:7.2f}") + 0.0 for a in kept)
    assert list(scheme.angle_tuple) == expected
    doses = [v.dose for v in scheme.views]
    orders = [v.order for v in scheme.views]
    if extra == "dose":
        assert doses == column[0] and "dose" in scheme.notes[0]
    elif extra == "order" and order != list(range(1, n + 1)):
        assert orders == order and doses == [None] * n and "order" in scheme.notes[0]
    else:
        assert doses == [None] * n and orders == [None] * n


# --------------------------------------------------------------------------- inspect


def write_folder(folder: Path, source: NoiseSource, count: int, seeds=None) -> None:
    """Write volumes 0..count-1 of ``source`` as generate-noise would (labels included)."""
    from dataclasses import replace

    from mwr_dask.files.mrc import write_volume

    folder.mkdir()
    tmp = folder.parent / f".{folder.name}.tmp"
    tmp.mkdir()
    for i in range(count):
        src = replace(source, seed=seeds[i]) if seeds else source
        write_volume(folder / f"n_{i:05d}.mrc", src[i], 1.0, src.labels(i), tmp)


@pytest.mark.slow
def test_inspect_accepts_a_mixture_and_reports_its_schemes(tmp_path, files):
    from mwr_dask.inspection import inspect_folder

    schemes = (read_tilt_file(files["tlt"]), read_tilt_file(files["aln"], invert=True))
    source = NoiseSource(32, mode=1, seed=3, tilt_schemes=schemes)
    write_folder(tmp_path / "mix", source, 12)
    report = inspect_folder(tmp_path / "mix")
    assert report.problems == []
    groups = report.summary["tilt_schemes"]["groups"]
    assert [(g["minangle"], g["maxangle"], g["volumes"]) for g in groups] == [
        (-66.0, 54.0, 6),
        (-45.0, 66.0, 6),
    ]
    assert any("tilt-file mixture" in w for w in report.warnings)
    assert report.summary["spectrum"]["tilt_range_agrees"] is None  # not compared
    # a volume with another seed in the mixture is a problem, as in any folder
    write_folder(tmp_path / "odd", source, 6, seeds=[3, 3, 3, 3, 3, 4])
    odd = inspect_folder(tmp_path / "odd")
    assert any("seed" in p for p in odd.problems)
    # one tilt file: its range is compared with the spectrum, as for a regular range
    one = NoiseSource(32, mode=1, seed=3, tilt_schemes=(schemes[1],))
    write_folder(tmp_path / "one", one, 12)
    single = inspect_folder(tmp_path / "one")
    assert single.problems == [] and single.summary["spectrum"]["tilt_range_agrees"] is True


def write_tomogram(path: Path, scheme: TiltScheme) -> Path:
    """A 48 x 96 x 144 (z, y, x) 'tomogram' of noise with the scheme's wedge (tilt axis y)."""
    import mrcfile

    source = NoiseSource(48, mode=1, seed=1, tilt_schemes=(scheme,))
    vol = np.zeros((48, 96, 144), np.float32)
    for k in range(6):
        y, x = divmod(k, 3)
        vol[:, 48 * y : 48 * (y + 1), 48 * x : 48 * (x + 1)] = source[k]
    with mrcfile.new(str(path)) as m:
        m.set_data(vol)
    return path


@pytest.mark.slow
def test_inspect_one_tomogram_says_which_side_its_wedge_is_on(tmp_path, files):
    aln = read_tilt_file(files["aln"])  # file -45 .. 66, used -66 .. 45
    tomo = write_tomogram(tmp_path / "TS_01_rec.mrc", aln)
    proc = cli("inspect", str(tomo), "--tilt-file", str(files["aln"]))
    assert proc.returncode == 0, proc.stdout + proc.stderr
    assert "OK: the tilt file as read" in proc.stdout
    # Warp's file of the same views made with ts_import --dont_invert (the stage angles, not
    # negated) maps to the other side: the check says so
    dont_invert = tf.write_warp_xml(tmp_path / "TS_01.xml", SHOTS, negate=False)
    wrong = cli("inspect", str(tomo), "--tilt-file", str(dont_invert), "--json")
    assert wrong.returncode == 1
    report = json.loads(wrong.stdout)
    lo, hi = report["spectrum"]["tilt_range"]
    assert abs(lo + 66) < 3 and abs(hi - 45) < 3
    assert report["tilt_file"]["better"] == "inverted" and report["ok"] is False
    # no tilt file: the estimate alone; a folder does not take --tilt-file
    alone = cli("inspect", str(tomo))
    assert alone.returncode == 0 and "tilt range" in alone.stdout
    folder = cli("inspect", str(tmp_path), "--tilt-file", str(files["aln"]))
    assert folder.returncode == 2 and "applies to a tomogram" in folder.stderr


@pytest.mark.parametrize("angles", [(-89.996, 0.0, 89.996), (0.001, 0.004), (-0.004, -0.001)])
def test_labels_of_edge_schemes_read_back_as_their_folder(tmp_path, angles):
    """Issue 21.12: a folder of such a scheme is resumed, not taken for foreign volumes."""
    from mwr_dask.files.folder import resolve_params
    from mwr_dask.files.mrc import write_volume

    path = tmp_path / "edge.tlt"
    path.write_text("\n".join(str(a) for a in angles) + "\n")
    scheme = read_tilt_file(path)
    source = NoiseSource(8, mode=2, tilt_schemes=(scheme,), seed=3)
    recorded = source_from_labels(source.labels(0))
    assert recorded is not None
    assert recorded.minangle == scheme.minangle and recorded.maxangle == scheme.maxangle
    folder = tmp_path / "noise"
    folder.mkdir()
    write_volume(folder / "n_00000.mrc", source[0], 1.0, source.labels(0), folder)
    again = NoiseSource(8, mode=2, tilt_schemes=(read_tilt_file(path),), seed=99)
    used, state = resolve_params(folder, again, seed_given=False, force=False, fresh_seed=99)
    assert state.unlabelled == [] and used.seed == 3
