"""``--tomograms DATASET``: the library (read_dataset, one NoiseSource per tomogram) and the
command's bad input, on real datasets (tests/data) and variants made from them. The runs that
start a cluster are in tests/test_datasets_run.py."""

from __future__ import annotations

import re
import shutil
from pathlib import Path

import numpy as np
import pytest
from typer.testing import CliRunner

from mwr_dask.cli import app
from mwr_dask.noise import datasets as ds
from mwr_dask.noise.schemes import EXCLUDED_ABSENT, EXCLUDED_BY_USER
from mwr_dask.noise.source import NoiseSource
from mwr_dask.noise.tiltfiles import read_tilt_file
from tests import tiltfixtures as tf
from tests.spectra import kxkz_power

DATA = Path(__file__).parent / "data"
RELION = DATA / "relion5_project"
TOMOGRAMS = RELION / "Denoise/job007/tomograms.star"
NAMES = ["TS_01", "TS_03", "TS_43", "TS_45", "TS_54"]
runner = CliRunner()


def one_sentence(text: str, *words: str) -> None:
    lines = [line for line in text.strip().splitlines() if line]
    assert len(lines) == 1 and lines[0].endswith("."), text
    assert "Traceback" not in text
    for word in words:
        assert word in text, (word, text)


# --------------------------------------------------------------------------- RELION 5


def test_relion_project_gives_each_tomogram_its_tilt_series_scheme(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)  # RELION's paths resolve from the project, not from here
    dataset = ds.read_dataset(TOMOGRAMS)
    assert dataset.kind == "relion5" and [t.name for t in dataset.tomograms] == NAMES
    for t in dataset.tomograms:
        own = read_tilt_file(RELION / f"Denoise/job007/tilt_series/{t.name}.star")
        assert t.scheme == own  # exactly what --tilt-file of that tilt series reads
        assert t.voxel_size == 10.0  # 1.35 A x binning 7.407407
        assert t.halves == tuple(
            RELION / f"Tomograms/job006/tomograms/rec_{t.name}_half{k}.mrc" for k in (1, 2)
        )
    notes = " ".join(dataset.notes)
    assert f"project directory {RELION}" in notes and "_rlnTomoHand -1" in notes
    text = ds.describe_dataset(dataset, {t.name: f"OUT/{t.name}" for t in dataset.tomograms})
    assert "_rlnTomoYTilt" in text and "TS_54     tilt_series/TS_54.star  41/0" in text


def test_project_directory_is_the_one_with_default_pipeline(tmp_path):
    project = tmp_path / "project"
    shutil.copytree(RELION, project)
    (project / "default_pipeline.star").write_text("data_pipeline_general\n")
    star = project / "Denoise/job007/tomograms.star"
    folder, how = ds.project_directory(star, [])
    assert folder == project and "default_pipeline.star" in how
    assert ds.read_dataset(star).tomograms[0].source == str(
        project / "Denoise/job007/tilt_series/TS_01.star"
    )


def test_missing_tilt_series_files_are_named_with_the_project_directory():
    star = DATA / "pytom/relion5_project_example/Tomograms/job009/tomograms.star"
    with pytest.raises(ds.DatasetError) as exc:
        ds.read_dataset(star)
    one_sentence(
        str(exc.value),
        "9 of its 10 tilt-series files are missing",
        str(DATA / "pytom/relion5_project_example"),
        "tomo200528_100.star",
    )


def test_views_relion_dropped_are_excluded_with_the_import_job(tmp_path):
    dataset = ds.read_dataset(TOMOGRAMS, all_views=RELION / "Import/job001/tilt_series.star")
    by_name = {t.name: t.scheme for t in dataset.tomograms}
    assert [len(by_name[n].excluded) for n in NAMES] == [1, 1, 0, 0, 0]
    assert {v.excluded for v in by_name["TS_03"].excluded} == {EXCLUDED_ABSENT}
    assert (
        by_name["TS_01"].angle_tuple
        == read_tilt_file(RELION / "Denoise/job007/tilt_series/TS_01.star").angle_tuple
    )


# --------------------------------------------------------------------------- IsoNet


def isonet_star(tmp_path: Path, ranges) -> Path:
    """IsoNet2's tutorial tomograms.star with another rlnTiltMin/rlnTiltMax on each row."""
    lines = (DATA / "isonet2/tomograms.star").read_text().splitlines()
    rows = [i for i, line in enumerate(lines) if line[:1].isdigit()]
    for i, (lo, hi) in zip(rows, ranges, strict=True):
        fields = lines[i].split()
        fields[11], fields[12] = f"{lo:g}", f"{hi:g}"
        lines[i] = "\t".join(fields)
    path = tmp_path / "tomograms.star"
    path.write_text("\n".join(lines) + "\n")
    return path


RANGES = [(-54, 66), (-40, 50), (-60, 60), (-66, 45), (-30, 70)]


def test_isonet2_rows_give_each_tomogram_its_range(tmp_path):
    dataset = ds.read_dataset(isonet_star(tmp_path, RANGES))
    assert dataset.kind == "isonet" and [t.name for t in dataset.tomograms] == NAMES
    for t, (lo, hi) in zip(dataset.tomograms, RANGES, strict=True):
        s = t.scheme
        assert (s.format, s.sign, t.voxel_size) == ("isonet2", -1, 5.4)
        assert (s.minangle, s.maxangle) == (-hi, -lo)  # IsoNet2's mask: see the next test
        src = t.noise_source(7, {"cubesize": 16, "mode": 2})
        assert src.wedge(0) == (-hi, -lo)
    # -66 .. 45 every 2 degrees: the grid from -66, and the row's last tilt, 45
    angles = [v.angle for v in dataset.tomograms[3].scheme.views]
    assert angles == [*range(-66, 45, 2), 45]
    assert dataset.tomograms[0].halves[0] == tmp_path / "tomograms_split/EVN/TS_01_EVN.mrc"


def test_isonet_range_is_the_side_of_isonet2s_own_wedge_mask():
    """IsoNet2's mask (missing_wedge.mw2D) keeps atan(kz/kx) in (min, max): our noise too."""
    n = 48
    lo, hi = -54.0, 66.0
    scheme = ds.range_scheme(lo, hi, 2.0, "tomograms.star row 1")
    src = NoiseSource(n, mode=2, seed=3, tilt_schemes=(scheme,))
    power = kxkz_power([src[i] for i in range(3)])
    k = np.arange(n) - n // 2
    kz, kx = np.meshgrid(k, k, indexing="ij")
    with np.errstate(divide="ignore", invalid="ignore"):
        phi = np.degrees(np.arctan(kz / kx))
    band = (np.hypot(kz, kx) > 4) & (np.hypot(kz, kx) < 0.42 * n) & (kx != 0)
    kept = band & (phi > lo + 4) & (phi < hi - 4)  # IsoNet2's measured region
    missing = band & ((phi < lo - 4) | (phi > hi + 4))
    assert power[missing].mean() < 1e-6 * power[kept].mean()


def test_isonet_v1_star_without_a_range_is_refused(tmp_path):
    star = tmp_path / "tomograms.star"
    star.write_text(
        "data_\n\nloop_\n_rlnIndex #1\n_rlnMicrographName #2\n_rlnPixelSize #3\n"
        "_rlnNumberSubtomo #4\n1 tomo/TS_01.mrc 10.0 100\n"
    )
    with pytest.raises(ds.DatasetError) as exc:
        ds.read_dataset(star)
    one_sentence(str(exc.value), "row 1 has no tilt range")


# --------------------------------------------------------------------------- folders


def test_warp_aretomo3_and_imod_folders(tmp_path):
    shots = tf.acquisition()
    warp = tmp_path / "warp_tiltseries"
    warp.mkdir()
    shutil.copy(DATA / "warp/gs04_ts_003.xml", warp)
    tf.write_warp_xml(warp / "TS_01.xml", shots)
    got = ds.read_dataset(warp)
    assert got.kind == "warp" and [t.name for t in got.tomograms] == ["TS_01", "gs04_ts_003"]
    assert got.tomograms[1].scheme == read_tilt_file(warp / "gs04_ts_003.xml")
    aretomo = tmp_path / "aretomo3"
    aretomo.mkdir()
    shutil.copy(DATA / "alnfile/test_data_no_local.aln", aretomo / "TS_07.aln")
    got = ds.read_dataset(aretomo)
    assert got.kind == "aretomo3" and got.tomograms[0].name == "TS_07"
    assert got.tomograms[0].scheme.sign == -1


def imod_folder(root: Path, com: str) -> Path:
    """An etomo tilt-series folder BBa: IMOD's own tilta.com (edited by ``com``) and a .tlt."""
    folder = root / "BBa"
    folder.mkdir(parents=True)
    text = (DATA / "imod/tilta.com").read_text()
    (folder / "tilt.com").write_text(com(text))
    tf.write_tlt(folder / "BBa.tlt", [s.angle for s in tf.acquisition()])
    return folder


def test_imod_folder_takes_tilt_com_exclusions_and_filter(tmp_path):
    imod_folder(tmp_path / "etomo", lambda text: text)  # as IMOD wrote it
    (t,) = ds.read_dataset(tmp_path / "etomo").tomograms
    assert [v.number for v in t.scheme.excluded] == [1]  # EXCLUDELIST 1
    assert {v.excluded for v in t.scheme.excluded} == {EXCLUDED_BY_USER}
    # RADIAL 0.35 0.05 without FalloffIsTrueSigma: IMOD's sigma is 0.05 / sqrt(2)
    assert t.filtering == {"filter": "imod", "radial": (0.35, 0.0353553)}
    src = t.noise_source(1, {"cubesize": 16})
    assert src.filter == "imod" and src.radial == (0.35, 0.0353553)
    assert t.noise_source(1, {"cubesize": 16, "filter": "none"}).filter == "none"
    assert t.noise_source(1, {"cubesize": 16, "mode": 2}).filter == "none"
    sirt = tmp_path / "sirt"
    imod_folder(
        sirt,
        lambda text: text.replace(
            "EXCLUDELIST 1", "EXCLUDELIST 1-3,40\nFalloffIsTrueSigma 1\nFakeSIRTiterations 15"
        ),
    )
    (t,) = ds.read_dataset(sirt).tomograms
    assert [v.number for v in t.scheme.excluded] == [1, 2, 3, 40]
    assert t.filtering == {"filter": "sirt-like", "radial": (0.35, 0.05), "sirt_iterations": 15}
    dual = tmp_path / "dual"
    folder = imod_folder(dual, lambda text: text)
    (folder / "tilt.com").rename(folder / "tilta.com")
    shutil.copy(folder / "tilta.com", folder / "tiltb.com")
    with pytest.raises(ds.DatasetError) as exc:
        ds.read_dataset(dual)
    one_sentence(str(exc.value), "dual-axis")


# --------------------------------------------------------------------------- seeds, selection


def test_each_tomogram_has_its_own_seed_and_independent_noise():
    dataset = ds.read_dataset(TOMOGRAMS)
    seeds = [ds.tomogram_seed(5, t.name) for t in dataset.tomograms]
    assert len(set(seeds)) == 5 and all(0 <= s < 2**128 for s in seeds)
    assert (
        ds.tomogram_seed(5, "TS_01") == ds.tomogram_seed(5, "TS_01") != ds.tomogram_seed(6, "TS_01")
    )
    # TS_01 and TS_03 have the same angles: their volumes still share nothing
    a, b = (
        t.noise_source(ds.tomogram_seed(5, t.name), {"cubesize": 16}) for t in dataset.tomograms[:2]
    )
    assert a.tilt_schemes[0].angle_tuple == b.tilt_schemes[0].angle_tuple
    for i in range(3):
        r = np.corrcoef(a[i].ravel(), b[i].ravel())[0, 1]
        assert abs(r) < 0.08  # 4096 voxels: |r| ~ 0.016 by chance
    # a tomogram's source does not depend on the other rows
    alone = ds.read_dataset(TOMOGRAMS).select(only=["TS_03"]).tomograms[0]
    assert alone.noise_source(ds.tomogram_seed(5, "TS_03"), {"cubesize": 16}) == b


def test_mixture_volume_i_is_tomogram_i_mod_k():
    from mwr_dask.cli.dataset import _mixed

    dataset = ds.read_dataset(TOMOGRAMS)
    planned = _mixed(dataset, 9, {"cubesize": 16})
    schemes = [t.scheme for t in dataset.tomograms]
    assert planned.source == NoiseSource(16, seed=9, voxel_size=10.0, tilt_schemes=tuple(schemes))
    for i in range(6):
        alone = NoiseSource(16, seed=9, tilt_schemes=(schemes[i % 5],))
        assert planned.source[i].tobytes() == alone[i].tobytes()


def test_selection_by_name():
    dataset = ds.read_dataset(TOMOGRAMS)
    assert [t.name for t in dataset.select(["TS_43", "TS_01"]).tomograms] == ["TS_01", "TS_43"]
    assert [t.name for t in dataset.select(None, ["TS_01"]).tomograms] == NAMES[1:]
    with pytest.raises(ds.DatasetError) as exc:
        dataset.select(["TS_99"])
    one_sentence(str(exc.value), "no tomogram named TS_99")


def test_manifest_reads_back(tmp_path):
    dataset = ds.read_dataset(TOMOGRAMS)
    sources = [
        t.noise_source(ds.tomogram_seed(3, t.name), {"cubesize": 16}) for t in dataset.tomograms
    ]
    rows = [
        ds.manifest_row(t.name, t.name, s, t.source)
        for t, s in zip(dataset.tomograms, sources, strict=True)
    ]
    (tmp_path / ds.MANIFEST).write_text(ds.manifest_text(dataset, 3, 10, sources[0], rows))
    head, back = ds.read_manifest(tmp_path)
    assert head["Seed"] == 3 and head["DatasetKind"] == "relion5" and head["Volumes"] == 10
    assert [r["rlnTomoName"] for r in back] == NAMES
    assert back[0]["mwrLabel"] == f"sha={dataset.tomograms[0].scheme.digest}"
    assert int(back[4]["mwrSeed"]) == sources[4].seed
    assert all(
        r["mwrLabel"].split("=")[1] in " ".join(s.labels(0))
        for r, s in zip(back, sources, strict=True)
    )


# --------------------------------------------------------------------------- command line


def bad_datasets(tmp_path: Path) -> dict[str, tuple[Path, str]]:
    """Datasets that must be refused, each with the words of its sentence."""
    twice = tmp_path / "twice/Denoise/job007"
    shutil.copytree(RELION, tmp_path / "twice")
    text = (twice / "tomograms.star").read_text().replace("TS_03\t", "TS_01\t")
    (twice / "tomograms.star").write_text(text)
    no_range = tmp_path / "no_range.star"
    no_range.write_text(
        (DATA / "isonet2/tomograms.star").read_text().replace("-60      60", "None    None")
    )
    return {
        "missing": (
            DATA / "pytom/relion5_project_example/Tomograms/job009/tomograms.star",
            "tilt-series files are missing",
        ),
        "no tilt information": (no_range, "row 1 has no tilt range"),
        "duplicate names": (twice / "tomograms.star", "names TS_01 more than once"),
        "particles": (DATA / "starfile/rln3.1_data_style.star", "STAR file of particles"),
        "a tilt series": (RELION / "Import/job001/tilt_series/TS_01.star", "lists no tomograms"),
        "empty folder": (tmp_path, "holds no Warp .xml"),
    }


@pytest.mark.parametrize(
    "case",
    [
        "missing",
        "no tilt information",
        "duplicate names",
        "particles",
        "a tilt series",
        "empty folder",
    ],
)
def test_bad_datasets_one_sentence_exit_2_nothing_written(tmp_path, case):
    path, words = bad_datasets(tmp_path)[case]
    out = tmp_path / "out"
    result = runner.invoke(app, ["generate-noise", str(out), "2", "16", "--tomograms", str(path)])
    assert result.exit_code == 2, result.output
    one_sentence(result.output, words)
    assert not out.exists()


@pytest.mark.parametrize(
    ("args", "words"),
    [
        (["--mix"], "--mix needs --tomograms"),
        (["--tomograms", "{star}", "--tilt-file", "{tlt}"], "--tilt-file cannot be given"),
        (["--tomograms", "{star}", "--minangle", "-50"], "--minangle cannot be given"),
        (["--tomograms", "{star}", "--measured", "--mix"], "--measured makes each"),
        (["--tomograms", "{star}", "--only", "TS_9"], "no tomogram named TS_9"),
        (["--tomograms", "{star}", "--measured"], "lists no half tomograms"),
        (["--spectrum", "a.mrc", "--spectrum", "b.mrc"], "--spectrum takes one file, not 2"),
        (["--all-views", "{tlt}"], "--all-views applies to a single --tilt-file"),
    ],
)
def test_dataset_usage_errors(tmp_path, args, words):
    star = tmp_path / "tomograms.star"
    text = TOMOGRAMS.read_text().replace("_rlnTomoReconstructedTomogramHalf", "_rlnOther")
    star.write_text(text.replace("Denoise/", str(RELION / "Denoise") + "/"))
    names = {"star": star, "tlt": DATA / "cets-imod/TS_03.tlt"}
    out = tmp_path / "out"
    argv = ["generate-noise", str(out), "2", "16", *[a.format(**names) for a in args]]
    result = runner.invoke(app, argv)
    assert result.exit_code == 2, result.output
    one_sentence(result.output, words)
    assert not out.exists()


def test_dry_run_prints_the_table_and_writes_nothing(tmp_path):
    out = tmp_path / "out"
    result = runner.invoke(
        app,
        [
            "generate-noise",
            str(out),
            "4",
            "16",
            "--tomograms",
            str(TOMOGRAMS),
            "--dry-run",
            "--ncpus",
            "1",
            "--all-views",
            str(RELION / "Import/job001/tilt_series.star"),
        ],
    )
    assert result.exit_code == 0, result.output
    text = result.output
    for name in NAMES:
        assert f"{out / name}" in text
    assert "TS_01     tilt_series/TS_01.star  40/1" in text  # Import lists the dropped view
    assert "angles from _rlnTomoYTilt" in text and "project directory" in text
    assert "Volumes: 4 of 16^3 in each of 5 folder(s)" in text
    assert not out.exists()


def test_inspect_of_a_dataset_out_refuses_one_folder_options(tmp_path):
    dataset = ds.read_dataset(TOMOGRAMS)
    source = dataset.tomograms[0].noise_source(1, {"cubesize": 16})
    row = ds.manifest_row("TS_01", "TS_01", source, "x")
    (tmp_path / ds.MANIFEST).write_text(ds.manifest_text(dataset, 1, 2, source, [row]))
    result = runner.invoke(app, ["inspect", str(tmp_path), "--plot", str(tmp_path / "p.png")])
    assert result.exit_code == 2, result.output
    one_sentence(result.output, "--plot and --spectrum apply to one noise folder")
    assert sorted(p.name for p in tmp_path.iterdir()) == [ds.MANIFEST]


def test_the_python_example_of_docs_datasets_runs():
    text = (Path(__file__).parents[1] / "docs/datasets.md").read_text()
    (block,) = re.findall(r"```python\n(.*?)```", text, re.S)
    code = block.replace("Tomograms/job006/tomograms.star", str(TOMOGRAMS))
    code = code.replace('"cubesize": 64', '"cubesize": 16')
    namespace: dict = {}
    exec(compile(code, "docs/datasets.md", "exec"), namespace)
    assert namespace["v"].shape == (16, 16, 16)


def test_dose_weighting_of_a_dataset(tmp_path):
    """RELION 5 rows give their pre-exposures and voxel sizes; a Warp folder needs a voxel."""
    out = tmp_path / "out"
    argv = ["generate-noise", str(out), "2", "16", "--tomograms", str(TOMOGRAMS),
            "--dose-weighting", "grant-grigorieff", "--dry-run"]  # fmt: skip
    result = runner.invoke(app, argv)
    assert result.exit_code == 0, result.output
    assert not out.exists()
    rows = ds.read_dataset(TOMOGRAMS).tomograms
    own = rows[0].noise_source(5, {"dose_weighting": "grant-grigorieff", "cubesize": 16})
    assert own.dose_weighting == "grant-grigorieff" and own.voxel_size == rows[0].voxel_size
    assert any(label.startswith("dose=grant-grigorieff") for label in own.labels(0))
    warp = tmp_path / "warp"
    warp.mkdir()
    tf.write_warp_xml(warp / "TS_01.xml", tf.acquisition())
    argv = ["generate-noise", str(out), "2", "16", "--tomograms", str(warp),
            "--dose-weighting", "bfactor"]  # fmt: skip
    result = runner.invoke(app, argv)
    assert result.exit_code == 2, result.output
    one_sentence(result.output, "gives no voxel size for TS_01: dose weighting needs --voxel-size")
    assert not out.exists()
    measured = runner.invoke(app, [*argv[:6], "--measured", "--dose-weighting", "bfactor"])
    assert measured.exit_code == 2 and "--dose-weighting cannot be given" in measured.output
