"""Real files from IMOD, SerialEM, AreTomo, RELION 5, Warp, pytom and TomoBabel (tests/data).

Every file is read exactly as its program wrote it, or refused in one sentence that says what
it is; the derived variants (byte-order mark, CRLF, shuffled mdoc sections, the headers of
older AreTomo versions, an empty value) are made here from the real files.
"""

from __future__ import annotations

import re
from pathlib import Path

import numpy as np
import pytest
import starfile

from mwr_dask.noise.schemes import EXCLUDED_ABSENT, EXCLUDED_BY_USER, TiltSchemeError
from mwr_dask.noise.tiltfiles import SIGNS, read_tilt_file

DATA = Path(__file__).parent / "data"
RELION = DATA / "relion5_project"
NAMES = ("TS_01", "TS_03", "TS_43", "TS_45", "TS_54")

#: Every real tilt file and what it must read as: (format, views in file, views used).
ACCEPTED = {
    **{
        f"relion5_project/Denoise/job007/tilt_series/{n}.star": ("relion5", None, None)
        for n in NAMES
    },
    "relion5_project/Import/job001/tilt_series/TS_01.star": ("relion5", 41, 41),
    "relion5_project/ExcludeTiltImages/job004/tilt_series/TS_54.star": ("relion5", 41, 41),
    "relion5_project/AlignTiltSeries/job005/tilt_series/TS_54.star": ("relion5", 41, 41),
    "pytom/relion5_project_example/Tomograms/job009/tilt_series/tomo200528_107.star": (
        "relion5",
        None,
        None,
    ),
    "pytom/test_angles.rawtlt": ("imod", 35, 35),
    "pytom/test_angles_multi_column.rawtlt": ("imod", 35, 35),
    "warp/gs04_ts_003.xml": ("warp-xml", 47, 47),
    "mdocfile/tilt_series.mdoc": ("serialem", 41, 41),
    "alnfile/test_data_no_local.aln": ("aretomo", 61, 61),
    "alnfile/test_data_no_local.tlt": ("imod", 61, 61),
    "cets-imod/TS_03.tlt": ("imod", 40, 40),
}
#: Files that are not one tilt series' views, and the words that say what they are.
REFUSED = {
    "mdocfile/montage_section.mdoc": "mdoc of a montage",
    "mdocfile/frame_set_single.mdoc": "mdoc of one movie's frames",
    "starfile/rln3.1_data_style.star": "STAR file of particles",
    "relion5_project/Denoise/job007/tomograms.star": "give it to --tomograms",
    "relion5_project/Import/job001/tilt_series.star": "give it to --tomograms",
    "isonet2/tomograms.star": "IsoNet tomograms.star",
}


def one_sentence(exc: pytest.ExceptionInfo, path: Path) -> str:
    message = str(exc.value)
    assert "\n" not in message and message.endswith(".") and str(path) in message
    assert "validation error" not in message and "Traceback" not in message
    return message


def star_column(path: Path, name: str) -> list[float]:
    return [float(v) for v in starfile.read(path)[name]]


@pytest.mark.parametrize("name", sorted(ACCEPTED))
def test_every_real_file_is_read_as_written(name):
    path = DATA / name
    fmt, total, used = ACCEPTED[name]
    scheme = read_tilt_file(path)
    assert scheme.format == fmt and scheme.sign == SIGNS[fmt]
    if total is not None:
        assert (len(scheme.views), len(scheme.used)) == (total, used)
    # the angles are the file's numbers (first number of each line, the right column)
    text = path.read_text(encoding="utf-8-sig")
    if fmt == "imod":
        expected = [float(line.split()[0]) for line in text.splitlines() if line.strip()]
    elif fmt == "relion5":
        column = "rlnTomoYTilt" if "_rlnTomoYTilt" in text else "rlnTomoNominalStageTiltAngle"
        expected = star_column(path, column)
        assert column in scheme.notes[0]
    elif fmt == "aretomo":
        expected = [float(line.split()[-1]) for line in text.splitlines() if line[:1] == " "]
    elif fmt == "warp-xml":
        expected = [float(v) for v in re.search(r"<Angles>(.*?)</Angles>", text, re.S)[1].split()]
    else:
        expected = [float(v) for v in re.findall(r"^TiltAngle = (\S+)", text, re.M)]
    assert sorted(v.angle for v in scheme.views) == sorted(expected)


@pytest.mark.parametrize("name", sorted(REFUSED))
def test_files_that_are_not_a_tilt_series_are_refused_in_one_sentence(name):
    path = DATA / name
    with pytest.raises(TiltSchemeError) as exc:
        read_tilt_file(path)
    assert REFUSED[name] in one_sentence(exc, path)


@pytest.mark.parametrize("name", sorted(ACCEPTED))
def test_byte_order_mark_and_crlf_change_nothing(tmp_path, name):
    path = DATA / name
    text = path.read_text(encoding="utf-8-sig")
    want = read_tilt_file(path)
    for variant, data in (("bom", "\ufeff" + text), ("crlf", text.replace("\n", "\r\n"))):
        copy = tmp_path / variant / path.name
        copy.parent.mkdir()
        copy.write_bytes(data.encode())
        got = read_tilt_file(copy)
        assert (got.views, got.angle_tuple, got.format) == (
            want.views,
            want.angle_tuple,
            want.format,
        ), variant


def test_aretomo_aln_and_the_tlt_aretomo_wrote_give_one_wedge():
    """AreTomo writes the same numbers into its .tlt (CSaveTilts): the same scheme, both signs."""
    aln = read_tilt_file(DATA / "alnfile/test_data_no_local.aln")
    tlt = read_tilt_file(DATA / "alnfile/test_data_no_local.tlt")
    assert [v.angle for v in aln.views] == [v.angle for v in tlt.views]
    assert aln.angle_tuple == tlt.angle_tuple and aln.sign == tlt.sign == -1


def test_older_aretomo_headers_are_read_line_by_line(tmp_path):
    from alnfile.data_model import AlnData

    real = DATA / "alnfile/test_data_no_local.aln"
    want = read_tilt_file(real)
    lines = real.read_text().splitlines(keepends=True)
    # AreTomo2 1.0.0 (CSaveAlignFile.cpp of that release) writes no AlphaOffset/BetaOffset;
    # AreTomo 1.x no RawSize/NumPatches either
    aretomo2 = [
        ln for ln in lines if not ln.startswith(("# AlphaOffset", "# BetaOffset", "# Thickness"))
    ]
    aretomo1 = [ln for ln in aretomo2 if not ln.startswith(("# RawSize", "# NumPatches"))]
    for name, variant in (("aretomo2_1.0.aln", aretomo2), ("aretomo1.aln", aretomo1)):
        path = tmp_path / name
        path.write_text("".join(variant))
        with pytest.raises(ValueError):  # the library's model alone refuses them
            AlnData.from_string(path.read_text())
        got = read_tilt_file(path)
        assert got.views == want.views and got.angle_tuple == want.angle_tuple
        assert any("AreTomo 1.x" in note for note in got.notes)
    broken = tmp_path / "broken.aln"
    broken.write_text("".join(aretomo1).replace("    -63.20", "   x63.20"))
    with pytest.raises(TiltSchemeError) as exc:
        read_tilt_file(broken)
    assert "line 3" in one_sentence(exc, broken)  # header, "# SEC", then the row


def test_tlt_second_column_is_what_it_holds():
    plain = read_tilt_file(DATA / "pytom/test_angles.rawtlt")
    index = read_tilt_file(DATA / "pytom/test_angles_multi_column.rawtlt")
    assert index.views == plain.views  # pytom's "angle index" carries nothing
    assert "numbers the lines" in index.notes[0]
    dosed = read_tilt_file(DATA / "cets-imod/TS_03.tlt")
    lines = (DATA / "cets-imod/TS_03.tlt").read_text().split()
    assert [v.dose for v in dosed.views] == [float(x) for x in lines[1::2]]
    assert [v.angle for v in dosed.views] == [float(x) for x in lines[::2]]
    doses = [float(x) for x in lines[1::2]]
    assert [v.order for v in dosed.views] == [sorted(doses).index(d) + 1 for d in doses]
    assert "accumulated dose" in dosed.notes[0]


def test_mdoc_views_and_exclude_follow_zvalue_whatever_the_section_order(tmp_path):
    real = DATA / "mdocfile/tilt_series.mdoc"
    text = real.read_text()
    head, *sections = re.split(r"(?=^\[ZValue)", text, flags=re.M)
    shuffled = tmp_path / "shuffled.mdoc"
    rng = np.random.default_rng(3)
    shuffled.write_text(head + "".join(sections[i] for i in rng.permutation(len(sections))))
    a = read_tilt_file(real, exclude="1")
    b = read_tilt_file(shuffled, exclude="1")
    assert a.views == b.views
    zvalue0 = float(re.search(r"\[ZValue = 0\]\s*TiltAngle = (\S+)", text)[1])
    assert [v.angle for v in b.excluded] == [zvalue0] and b.excluded[0].excluded == EXCLUDED_BY_USER
    # an empty value is named with its line and its key
    lines = shuffled.read_text().splitlines()
    k = next(i for i, line in enumerate(lines) if line.startswith("TiltAngle"))
    lines[k] = "TiltAngle = "
    empty = tmp_path / "empty.mdoc"
    empty.write_text("\n".join(lines) + "\n")
    with pytest.raises(TiltSchemeError) as exc:
        read_tilt_file(empty)
    assert f"line {k + 1}: TiltAngle has no value" in one_sentence(exc, empty)


def test_warp_numbers_are_the_negated_mdoc_angles_and_give_the_mdoc_wedge(tmp_path):
    """WarpTools ts_import negates the mdoc angles: its movie names keep the stage angle."""
    xml = DATA / "warp/gs04_ts_003.xml"
    scheme = read_tilt_file(xml)
    text = xml.read_text(encoding="utf-8-sig")
    movies = re.search(r"<MoviePath>(.*?)</MoviePath>", text, re.S)[1].split()
    stage = [float(re.search(r"_(-?\d+\.\d)_\d", m)[1]) for m in movies]
    assert all(abs(v.angle + s) < 0.05 for v, s in zip(scheme.views, stage, strict=True))
    # an mdoc of those stage angles (SerialEM's numbers) gives the same wedge
    mdoc = tmp_path / "gs04_ts_003.mdoc"
    mdoc.write_text(
        "PixelSpacing = 0.73\n\n"
        + "".join(
            f"[ZValue = {z}]\nTiltAngle = {-v.angle:.2f}\n\n" for z, v in enumerate(scheme.views)
        )
    )
    assert read_tilt_file(mdoc).angle_tuple == scheme.angle_tuple
    assert scheme.notes == ()
    # ts_autolevel's level angles rotate Warp's volume: named, not modelled
    leveled = tmp_path / "leveled.xml"
    leveled.write_text(
        text.replace(
            'AreAnglesInverted="False"',
            'AreAnglesInverted="False" LevelAngleX="10.2" LevelAngleY="-3.5"',
        )
    )
    (note,) = read_tilt_file(leveled).notes
    assert "LevelAngleX=10.2 LevelAngleY=-3.5" in note and "not modelled" in note


def test_views_relion_dropped_are_excluded_when_the_full_series_is_given():
    denoise = RELION / "Denoise/job007/tilt_series/TS_01.star"
    imported = RELION / "Import/job001/tilt_series/TS_01.star"
    alone = read_tilt_file(denoise)
    assert (len(alone.views), len(alone.excluded)) == (40, 0)  # absent rows: nothing to see
    full = read_tilt_file(denoise, all_views=imported)
    assert (len(full.views), len(full.used)) == (41, 40)
    (dropped,) = full.excluded
    assert dropped.excluded == EXCLUDED_ABSENT
    movies = starfile.read(imported)["rlnMicrographMovieName"].tolist()
    assert movies[dropped.number - 1] == "frames/TS_01_039_-60.0.mrc"  # Import's numbering
    assert full.angle_tuple == alone.angle_tuple  # the used views are the refined ones
    assert "excluded (absent from the file): views 40" in full.describe()
    # mdocfile's test mdoc is this very series (EMPIAR-10164 TS_01, EMBL 30-Nov-15): matched
    # by movie name, in ZValue order, the same view is missing
    mdoc = read_tilt_file(denoise, all_views=DATA / "mdocfile/tilt_series.mdoc")
    assert [v.angle for v in mdoc.excluded] == [-59.9986]  # ZValue 39's TiltAngle
    assert mdoc.angle_tuple == full.angle_tuple and len(mdoc.views) == 41
    # the Import file of another series is not the full series of this one
    other = RELION / "Import/job001/tilt_series/TS_03.star"
    with pytest.raises(TiltSchemeError) as exc:
        read_tilt_file(denoise, all_views=other)
    assert "not the same tilt series" in one_sentence(exc, denoise)
