"""`inspect`'s folder rules on hand-made records: no file, no cluster.

Each rule of :data:`mwr_dask.inspection.rules.RULES` is a function of plain records; these
tests build the records by hand (or, for the spectrum, from real volumes of the numpy
generators) and check the findings, their wording in the singular and the plural, and that
the JSON report is strict JSON whatever the numbers.
"""

import json
import math
import re
from pathlib import Path

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from mwr_dask.inspection import (
    RULES,
    Facts,
    FileRecord,
    Found,
    Rule,
    evaluate,
    render_json,
    render_text,
)
from mwr_dask.inspection import rules as R  # noqa: N812
from mwr_dask.inspection.spectrum import analyse, slice_power
from mwr_dask.inspection.words import plural
from mwr_dask.noise.normals import volume_rng
from mwr_dask.noise.source import NoiseSource

from .helpers import range_generator

P = NoiseSource(cubesize=16, mode=2, minangle=-60, maxangle=60, seed=3)
HERE = Path("/nonexistent/noise")


def record(index, params=P, **kw):
    """A healthy record of volume ``index`` labelled with ``params`` (None: no labels)."""
    base = dict(
        shape=(16, 16, 16),
        dtype="float32",
        mrc_mode=2,
        voxel_size=1.0,
        labels=params.labels(index) if params else [],
        digest=f"d{index}",
        count=16**3,
        mean=0.0,
        m2=16.0**3,
    )
    return FileRecord(**{"name": f"n_{index:05d}.mrc", "index": index, **base, **kw})


def facts(records, others=(), **kw):
    return Facts(folder=HERE, records=list(records), others=list(others), **kw)


def strict_json(text: str):
    """json.loads that refuses NaN, Infinity and -Infinity (not JSON)."""

    def refuse(name):
        raise ValueError(f"not JSON: {name}")

    return json.loads(text, parse_constant=refuse)


# ----------------------------------------------------------------------------- each rule


def test_other_entries_are_named_with_what_they_are():
    one = R.other_entries(facts([record(0)], ["notes.txt"]))
    assert one.problems == [
        "1 entry is not an n_*.mrc volume, and IsoNet opens every entry of the folder as one:"
        " notes.txt."
    ]
    kinds = {"n_00003.mrc": "a FIFO", "loop": "a symbolic link loop"}
    two = R.other_entries(facts([], ["loop", "n_00003.mrc"], kinds=kinds))
    assert "2 entries are not n_*.mrc volumes" in two.problems[0]
    assert "loop (a symbolic link loop), n_00003.mrc (a FIFO)" in two.problems[0]
    assert R.other_entries(facts([record(0)])).problems == []


def test_an_empty_folder_runs_only_the_folder_rules():
    report = evaluate(facts([], ["x"]))
    assert report.summary == {"count": 0, "others": ["x"]}
    assert report.problems[1] == "the folder holds no n_*.mrc volumes."
    assert report.spectrum is None and report.expected is None


def test_indices_gaps_and_repeats():
    found = R.indices(facts([record(i) for i in (0, 1, 2, 5, 7)]))
    assert found.summary == {"index_range": [0, 7], "gaps": [[3, 4], [6, 6]]}
    assert found.warnings == ["3 indices are missing between the first and the last: 3..4, 6."]
    assert R.indices(facts([record(0), record(2)])).warnings[0].startswith("1 index is missing")
    assert R.indices(facts([record(0), record(1)])).warnings == []
    twin = record(1, name="n_000001.mrc")
    assert R.repeated_indices(facts([record(1), twin])).warnings == [
        "1 index has more than one file: n_000001.mrc, n_00001.mrc."
    ]


@pytest.mark.parametrize(("entries", "text"), [(1, "1 entry:"), (2, "2 entries:")])
def test_fewer_than_1000_entries_is_a_warning(entries, text):
    found = R.enough_entries(facts([record(i) for i in range(entries)]))
    assert found.warnings[0].startswith(f"{text} IsoNet's refine regenerates")
    assert R.enough_entries(facts([record(0)], [str(i) for i in range(999)])).warnings == []


def test_labels_one_parameter_set_by_the_rules_of_appending():
    step = NoiseSource(**{**P.as_dict(), "anglestep": 3.0})
    assert R.labels(facts([record(0), record(1, step)])).problems == []  # mode 2: no step
    seed = NoiseSource(**{**P.as_dict(), "seed": 4})
    mixed = R.labels(facts([record(0), record(1), record(2, seed)]))
    assert mixed.summary["labels_agreeing"] == 2 and mixed.summary["labels"]["seed"] == 3
    assert mixed.problems == [
        "1 volume records other parameters than the other 2: seed 4 (the others have 3)."
    ]
    seeds = R.labels(facts([record(0), record(1), record(2), record(3, seed), record(4, seed)]))
    assert seeds.problems[0].startswith("2 volumes record other parameters than the other 3")
    one = R.labels(facts([record(0), record(1, None)]))
    assert one.problems == ["1 volume carries no mwr-dask labels: n_00001.mrc."]
    two = R.labels(facts([record(0), record(1, None), record(2, None)]))
    assert two.problems == ["2 volumes carry no mwr-dask labels: n_00001.mrc, n_00002.mrc."]
    none = R.labels(facts([record(0, None)]))
    assert none.summary["labels"] is None and "no volume carries" in none.warnings[0]


def test_nan_and_constant_volumes_are_broken():
    recs = [
        record(0),
        record(1, nonfinite=7, count=16**3 - 7),
        record(2, nonfinite=1, count=16**3 - 1),
        record(3, m2=0.0),
        record(4, nonfinite=16**3, count=0, m2=0.0),
    ]
    f = facts(recs)
    found = R.broken_files(f)
    assert found.summary["broken"] == {
        "n_00001.mrc": "7 NaN or infinite values",
        "n_00002.mrc": "1 NaN or infinite value",
        "n_00003.mrc": "constant data",
        "n_00004.mrc": "4096 NaN or infinite values",
    }
    assert found.problems[2] == "n_00003.mrc: constant data."
    moments = R.moments(f)
    assert moments.summary["good"] == 1 and moments.summary["volume_std_range"] == [1.0, 1.0]


def test_shape_dtype_voxel_size_and_labels_of_each_file():
    recs = [
        record(0),
        record(1, shape=(16, 16, 12)),
        record(2, voxel_size=2.0),
        record(3, dtype="float16", mrc_mode=12),
        record(4, labels=P.labels(9)),
        record(5, error="truncated: 5000 of 17408 bytes"),
        record(6, invalid=["File is larger than expected."]),
    ]
    f = facts(recs)
    broken = R.broken_files(f).summary["broken"]
    assert broken["n_00001.mrc"] == "shape 16x16x12, not 16x16x16"
    assert "its labels say voxel size 1, the header 2" in broken["n_00002.mrc"]
    assert broken["n_00003.mrc"] == "dtype float16 (MRC mode 12), not float32"
    assert broken["n_00004.mrc"] == "its labels say index 9 (a copy?)"
    assert broken["n_00005.mrc"] == "truncated: 5000 of 17408 bytes"
    assert broken["n_00006.mrc"] == "fails mrcfile.validate: File is larger than expected."
    assert R.voxel_sizes(f).problems == ["the headers give 2 voxel sizes: [1.0, 2.0]."]
    assert R.shapes(f).summary["cube"] == [16, 16, 16]
    many = R.broken_files(facts([record(i, m2=0.0) for i in range(R.LIST_BROKEN + 1)]))
    assert many.problems[-1] == "... and 1 more broken file."


def test_moments_pool_the_good_volumes():
    a = FileRecord("a", 0, count=4, mean=1.0, m2=2.0)
    b = FileRecord("b", 1, count=4, mean=3.0, m2=2.0)
    mean, std = R.pooled_moments([a, b])
    assert mean == pytest.approx(2.0) and std == pytest.approx(np.sqrt((4 + 8) / 8))
    assert all(math.isnan(x) for x in R.pooled_moments([]))


def test_exact_and_near_duplicates():
    rng = np.random.default_rng(0)
    samples = rng.standard_normal((4, 512)).astype(np.float32)
    samples[3] = samples[1] + 0.1 * rng.standard_normal(512)
    recs = [record(i, sample=s) for i, s in enumerate(samples)]
    recs.append(record(4, digest="d0"))
    recs.append(record(5, digest="d0"))
    f = facts(recs, correlate=lambda a, b: 0.987)
    exact = R.exact_duplicates(f)
    assert exact.problems == ["n_00000.mrc = n_00004.mrc = n_00005.mrc: identical data (3 pairs)."]
    assert len(exact.summary["duplicate_pairs"]) == 3
    near = R.near_duplicate_volumes(f)
    assert [e["pair"] for e in near.summary["near_duplicates"]] == [["n_00001.mrc", "n_00003.mrc"]]
    assert near.summary["near_duplicates"][0]["correlation"] == 0.987
    assert near.warnings == ["n_00001.mrc and n_00003.mrc are near-duplicates (correlation 0.99)."]


# ----------------------------------------------------------------------------- the spectrum


def spectrum_of(mode, n, lo, hi, step, count=8):
    """Real slice spectra of ``count`` volumes of the numpy generator, summed."""
    g = range_generator(mode, n, lo, hi, step)
    return analyse(sum(slice_power(g(volume_rng(1, i))) for i in range(count)), n, count)


@pytest.mark.parametrize("n", range(2, 8))
def test_cubes_2_to_7_are_too_small_for_the_spectrum_not_an_error(n):
    sp = analyse(np.ones((n, n // 2 + 1)), n, 1)
    assert sp.limit is not None and f"{n}^3 is too small" in sp.limit
    found = R.spectrum_findings(sp, NoiseSource(cubesize=n, mode=1))
    assert found.problems == [] and "too small for the spectral checks" in found.warnings[0]
    assert strict_json(json.dumps(sp.summary()))["limit"] == sp.limit


def test_coarse_tilt_steps_are_not_a_false_failure():
    """-60:60:30 at 32^3: five lines, not an arc; the range is not compared (a warning)."""
    sp = spectrum_of(1, 32, -60, 60, 30)
    out = {}
    found = R.spectrum_findings(sp, NoiseSource(cubesize=32, mode=1, anglestep=30.0), out)
    assert found.problems == []
    assert "separate lines" in found.warnings[0]
    assert out["tilt_range_agrees"] is None and out["mode_agrees"]
    # a step the grid still fills as an arc is compared as before
    out = {}
    sp = spectrum_of(1, 32, -60, 60, 20)
    assert R.spectrum_findings(sp, NoiseSource(cubesize=32, mode=1, anglestep=20.0), out) == Found()
    assert out["tilt_range_agrees"] is True


@pytest.mark.parametrize("mode", [1, 2])
def test_a_wedge_narrower_than_the_grid_is_not_a_false_failure(mode):
    """-89:89:1 at 32^3: mode 1 leaves a wedge of 1 degree, 0.2 Fourier pixel wide."""
    sp = spectrum_of(mode, 32, -89, 89, 1)
    labels = NoiseSource(cubesize=32, mode=mode, minangle=-89, maxangle=89, anglestep=1.0)
    out = {}
    found = R.spectrum_findings(sp, labels, out)
    assert found.problems == [], found.problems
    assert out["mode_agrees"] and out["looks_like_mode"] == mode
    if not sp.wedge_found:
        assert "narrower than the grid resolves" in found.warnings[0]


def test_a_missing_wedge_that_should_show_is_still_a_problem():
    """White noise labelled -60:60: the grid resolves that wedge, so its absence is a problem."""
    vols = np.random.default_rng(3).standard_normal((4, 24, 24, 24)).astype(np.float32)
    sp = analyse(sum(slice_power(v) for v in vols), 24, 4)
    found = R.spectrum_findings(sp, NoiseSource(cubesize=24, mode=2))
    assert any("no missing wedge" in p for p in found.problems)


# ----------------------------------------------------------------------------- the report


ANY_FLOAT = st.floats(allow_nan=True, allow_infinity=True)


@settings(max_examples=40, deadline=None)
@given(
    mean=ANY_FLOAT,
    m2=st.floats(min_value=0.0) | st.just(math.nan),  # a sum of squares
    voxel=ANY_FLOAT,
    count=st.integers(0, 5),
)
def test_the_json_report_is_strict_json_whatever_the_numbers(mean, m2, voxel, count):
    recs = [record(i, mean=mean, m2=m2, voxel_size=voxel) for i in range(count)]
    report = evaluate(facts(recs))
    text = render_json(report, seconds=float("nan"), plot=None)
    loaded = strict_json(text)
    assert loaded["count"] == count and loaded["seconds"] is None
    if count and not math.isfinite(mean):
        assert loaded["mean"] is None
    render_text(report)  # and the text report never fails on them either


SINGULAR_PLURAL = re.compile(
    r"\b1 (volumes|entries|indices|problems|warnings|pairs|groups|files|values|threads)\b"
    r"|\b1 of 1 volumes\b|\b1 (volume|entry|index) (are|have|record|carry)\b"
)


def test_no_message_says_1_volumes_or_1_entries():
    seed = NoiseSource(**{**P.as_dict(), "seed": 4})
    cases = [
        [record(0)],
        [record(0), record(2, nonfinite=1, count=4095), record(3, None), record(4, seed)],
        [record(0), record(1, digest="d0"), record(3, m2=0.0)],
    ]
    for recs in cases:
        report = evaluate(facts(recs, ["x"]))
        text = render_text(report, "1 volume read in 1.0 s by 1 worker thread")
        assert not SINGULAR_PLURAL.search(text), text
    assert [plural(1, "entry"), plural(2, "entry"), plural(1, "volume")] == [
        "1 entry",
        "2 entries",
        "1 volume",
    ]


def test_adding_a_rule_is_one_function_and_one_line():
    def scheme(f: Facts) -> Found:
        """A rule comparing the folder with an input (as a tilt-scheme rule would)."""
        wanted = f.inputs.get("scheme")
        if wanted is None or f.expected is None or f.expected.tilt == wanted:
            return Found(summary={"scheme_agrees": wanted is not None})
        return Found(problems=[f"the labels say tilts {f.expected.tilt}, not {wanted}."])

    rules = (*RULES, Rule(scheme))
    f = facts([record(0)], inputs={"scheme": "-50:50:2"})
    report = evaluate(f, rules)
    assert report.problems == ["the labels say tilts -60:60:2, not -50:50:2."]
    ok = evaluate(facts([record(0)], inputs={"scheme": "-60:60:2"}), rules)
    assert ok.ok and ok.summary["scheme_agrees"] is True
