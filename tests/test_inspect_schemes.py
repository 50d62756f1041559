"""`inspect` of a tilt-file mixture: each scheme's own averaged spectrum against its own labels.

The workers sum the slice spectra per cube side and per scheme label (``scheme=j/K tilts=..
sha=..``); the rules compare each scheme's estimate with its range. Hand-made records with
spectra of real volumes first (no file, no cluster), then real folders: a 2-scheme mixture
passes, and the same folder with the volumes of the two schemes swapped fails naming both.
"""

import json
import shutil
from dataclasses import replace
from pathlib import Path

import mrcfile
import numpy as np
import pytest

from mwr_dask.files.mrc import write_volume
from mwr_dask.inspection import Facts, FileRecord, evaluate, render_json, render_text
from mwr_dask.inspection import rules as R  # noqa: N812
from mwr_dask.inspection.reading import inspect_partition
from mwr_dask.inspection.records import scheme_key
from mwr_dask.inspection.spectrum import slice_power
from mwr_dask.noise.source import NoiseSource
from mwr_dask.noise.tiltfiles import read_tilt_file

from .helpers import cli, regular_scheme

HERE = Path("/nonexistent/noise")
N = 24


def source(*ranges, mode=2, n=N, step=4):
    """A mixture of regular schemes (lo, hi) every ``step`` degrees."""
    schemes = tuple(regular_scheme(lo, hi, step) for lo, hi in ranges)
    return NoiseSource(n, mode=mode, seed=11, tilt_schemes=schemes)


def record(src, i):
    """A healthy record of volume ``i`` of ``src``, labelled as generate-noise labels it."""
    n = src.cubesize
    return FileRecord(
        name=f"n_{i:05d}.mrc",
        index=i,
        shape=(n, n, n),
        dtype="float32",
        mrc_mode=2,
        voxel_size=1.0,
        labels=src.labels(i),
        digest=f"d{i}",
        count=n**3,
        mean=0.0,
        m2=float(n**3),
    )


def mixture_facts(src, count, volumes_of=None):
    """Facts of ``count`` volumes of ``src``; ``volumes_of(i)``: whose data volume i holds."""
    volumes_of = volumes_of or (lambda i: i)
    n = src.cubesize
    spectra = {n: [np.zeros((n, n // 2 + 1)), 0]}
    schemes = {}
    for i in range(count):
        power = slice_power(src[volumes_of(i)])
        key = (n, scheme_key(src.labels(i)))
        for acc in (spectra[n], schemes.setdefault(key, [np.zeros_like(power), 0])):
            acc[0] += power
            acc[1] += 1
    records = [record(src, i) for i in range(count)]
    return Facts(folder=HERE, records=records, spectra=spectra, scheme_spectra=schemes)


MIX = source((-60, 40), (-40, 60))


@pytest.fixture(scope="module")
def good():
    return mixture_facts(MIX, 40)


def test_scheme_key_is_the_label_of_the_volumes_own_scheme():
    key = scheme_key(MIX.labels(3))
    assert key.startswith("scheme=2/2 tilts=-40..60 n=26 excl=0 sha=")
    assert scheme_key(replace(MIX, tilt_schemes=()).labels(3)) is None
    assert scheme_key([]) is None


def test_each_scheme_of_a_mixture_is_compared_with_its_own_range(good):
    found = R.spectrum(good)
    assert found.problems == []
    entries = found.summary["scheme_spectra"]
    assert [(g["scheme"], g["minangle"], g["maxangle"], g["volumes"]) for g in entries] == [
        ("1/2", -60, 40, 20),
        ("2/2", -40, 60, 20),
    ]
    for g in entries:
        assert g["spectrum"]["tilt_range_agrees"] is True
        assert g["spectrum"]["mode_agrees"] is True
        lo, hi = g["spectrum"]["tilt_range"]
        assert abs(lo - g["minangle"]) < 2 and abs(hi - g["maxangle"]) < 2
    # the averaged spectrum of both mixes the ranges: neither range nor mode compared on it
    union = found.summary["spectrum"]
    assert union["tilt_range_agrees"] is None and "mode_agrees" not in union


def test_volumes_swapped_between_the_schemes_fail_naming_each_scheme():
    # the same labels; volume i holds the data of volume i ^ 1 (the other scheme, same seed)
    swapped = mixture_facts(MIX, 40, lambda i: i ^ 1)
    report = evaluate(swapped)
    assert len(report.problems) == 2, report.problems
    assert report.problems[0].startswith("scheme 1/2 (tilts -60..40): the spectrum's tilt range")
    assert report.problems[1].startswith("scheme 2/2 (tilts -40..60): the spectrum's tilt range")
    assert all("disagrees with the labels' " in p for p in report.problems)
    # today's check of the averaged spectrum alone cannot tell: it is the same spectrum
    assert np.allclose(swapped.spectra[N][0], mixture_facts(MIX, 40).spectra[N][0])
    text = render_text(report)
    assert "  scheme 1/2     " in text and text.count("DISAGREES") == 2
    data = json.loads(render_json(report))
    assert [g["spectrum"]["tilt_range_agrees"] for g in data["scheme_spectra"]] == [False] * 2


def test_labels_of_one_scheme_rewritten_to_another_range_fail_naming_it(good):
    # volumes of scheme 2 (-40..60) relabelled as a third range: only that scheme disagrees
    other = source((-60, 40), (-20, 60))
    records = [record(MIX, i) for i in range(40)]
    for r in records[1::2]:
        r.labels[2] = other.labels(r.index)[2]  # scheme=2/2 tilts=-20..60 n=21 excl=0 sha=..
    key = {scheme_key(MIX.labels(1)): scheme_key(other.labels(1))}
    schemes = {(n, key.get(k, k)): v for (n, k), v in good.scheme_spectra.items()}
    facts = Facts(folder=HERE, records=records, spectra=good.spectra, scheme_spectra=schemes)
    found = R.spectrum(facts)
    assert len(found.problems) == 1
    assert found.problems[0].startswith("scheme 2/2 (tilts -20..60): the spectrum's tilt range")


def test_a_scheme_with_too_few_volumes_is_a_warning_not_a_problem():
    count = 2 * R.MIN_SCHEME_VOLUMES - 2  # 19 volumes of each scheme
    facts = mixture_facts(MIX, count, lambda i: i ^ 1)  # swapped: not detectable so
    found = R.spectrum(facts)
    assert found.problems == []
    assert found.warnings == [
        f"scheme {j}/2 (tilts {r}): 19 readable volumes, fewer than the 20 a spectral"
        " estimate of its own needs; its tilt range and mode are not compared with the spectrum."
        for j, r in ((1, "-60..40"), (2, "-40..60"))
    ]
    assert [g["spectrum"] for g in found.summary["scheme_spectra"]] == [None, None]
    # nor is the mode compared on the averaged spectrum, where mode 2's wedge is partly filled
    assert "mode_agrees" not in found.summary["spectrum"]
    assert "19 volumes, too few  labels -60..40  not compared" in render_text(evaluate(facts))


def test_coarse_tilts_of_one_scheme_are_a_warning_not_a_problem():
    # mode 1 every 30 degrees at 16^3: separate lines, not an arc (as for a single range)
    src = source((-60, 60), (-30, 60), mode=1, n=16, step=30)
    facts = mixture_facts(src, 40)
    found = R.spectrum(facts)
    assert not any("tilt range" in p for p in found.problems)
    lines = [w for w in found.warnings if "separate lines" in w and w.startswith("scheme")]
    assert [w.split(":")[0] for w in lines] == [
        "scheme 1/2 (tilts -60..60)",
        "scheme 2/2 (tilts -30..60)",
    ]


def test_a_mixture_is_described_by_its_schemes_not_an_averaged_grid(good):
    """Issue 19: the Labels line of a mixture read ``tilts -60:60:2.926829268292683 deg``, the
    union of its ranges on an averaged grid, which none of its schemes has."""
    report = evaluate(good)
    line = next(x for x in render_text(report).splitlines() if x.startswith("Labels"))
    assert "tilt-file mixture of 2 schemes (tilts -60..40, -40..60 deg)" in line, line
    assert "tilts -60:60" not in line and line.endswith("(40 of 40 volumes)")


def test_folders_that_are_not_mixtures_report_as_before():
    # one tilt file: its scheme spectra (summed by the workers) change nothing in the report
    one = source((-40, 60))
    facts = mixture_facts(one, 20)
    bare = Facts(folder=HERE, records=facts.records, spectra=facts.spectra)
    assert render_text(evaluate(facts)) == render_text(evaluate(bare))
    assert render_json(evaluate(facts)) == render_json(evaluate(bare))
    assert "scheme_spectra" not in evaluate(facts).summary


# ----------------------------------------------------------------------------- real folders


def write_folder(folder: Path, src: NoiseSource, count: int, volumes_of=lambda i: i) -> Path:
    """Volumes 0..count-1 of ``src`` as generate-noise writes them (labels of volume i)."""
    folder.mkdir()
    tmp = folder.parent / f".{folder.name}.tmp"
    tmp.mkdir()
    for i in range(count):
        write_volume(folder / f"n_{i:05d}.mrc", src[volumes_of(i)], 1.0, src.labels(i), tmp)
    shutil.rmtree(tmp)
    return folder


@pytest.fixture(scope="module")
def tilt_mixture(tmp_path_factory):
    root = tmp_path_factory.mktemp("mix")
    (root / "a.tlt").write_text("\n".join(f"{a:.2f}" for a in range(-40, 61, 4)) + "\n")
    (root / "b.tlt").write_text("\n".join(f"{a:.2f}" for a in range(-60, 41, 4)) + "\n")
    schemes = (read_tilt_file(root / "a.tlt"), read_tilt_file(root / "b.tlt"))
    return root, NoiseSource(32, mode=1, seed=7, tilt_schemes=schemes)


def test_workers_sum_the_spectra_of_each_scheme(tmp_path, tilt_mixture):
    _, src = tilt_mixture
    folder = write_folder(tmp_path / "mix", replace(src, cubesize=16), 5)
    part = inspect_partition(sorted(str(p) for p in folder.iterdir()))
    total, count = part["spectra"][16]
    groups = part["scheme_spectra"]
    assert sorted((n, c) for (n, _), (_, c) in groups.items()) == [(16, 2), (16, 3)]
    assert count == 5 and np.allclose(sum(t for t, _ in groups.values()), total)
    small = replace(src, cubesize=16)
    assert groups[(16, scheme_key(small.labels(1)))][1] == 2
    # a folder made without tilt files: no scheme spectra
    plain = write_folder(tmp_path / "plain", replace(small, tilt_schemes=()), 2)
    assert inspect_partition(sorted(str(p) for p in plain.iterdir()))["scheme_spectra"] == {}


@pytest.mark.slow
def test_a_real_mixture_passes_and_its_swapped_volumes_fail(tmp_path, tilt_mixture):
    from mwr_dask.inspection import inspect_folder

    _, src = tilt_mixture
    ok = write_folder(tmp_path / "ok", src, 60)
    report = inspect_folder(ok)
    assert report.problems == [], report.problems
    entries = report.summary["scheme_spectra"]
    assert [(g["minangle"], g["maxangle"], g["volumes"]) for g in entries] == [
        (-60, 40, 30),  # a.tlt, IMOD angles negated (docs/tilt-schemes.md)
        (-40, 60, 30),
    ]
    assert all(g["spectrum"]["tilt_range_agrees"] for g in entries)
    # the volumes of the two schemes swapped, labels kept: the console script fails, naming each
    bad = write_folder(tmp_path / "bad", src, 60, lambda i: i ^ 1)
    with mrcfile.open(bad / "n_00000.mrc") as m:
        assert m.header.label[2].decode().startswith("scheme=1/2 tilts=-60..40")
    proc = cli("inspect", str(bad), "--ncpus", "1", "--json")
    assert proc.returncode == 1, proc.stdout + proc.stderr
    data = json.loads(proc.stdout)
    assert [p.split(":")[0] for p in data["problems"]] == [
        "scheme 1/2 (tilts -60..40)",
        "scheme 2/2 (tilts -40..60)",
    ]
    assert [g["spectrum"]["tilt_range_agrees"] for g in data["scheme_spectra"]] == [False] * 2
