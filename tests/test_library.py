"""The library API: NoiseSource, take(), to_dask(), generate(), and the docs' examples."""

from __future__ import annotations

import importlib.util
import pickle
import re
import subprocess
import sys
import warnings
from pathlib import Path

import mrcfile
import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

import mwr_dask
from mwr_dask import NoiseSource, generate, to_dask
from mwr_dask.files.folder import FolderError
from mwr_dask.parallel.run import MwrDaskWarning

from .conftest import skip_or_fail
from .helpers import assert_only_volumes, cli, read_all

ROOT = Path(__file__).resolve().parents[1]


@pytest.mark.slow
def test_source_volume_equals_the_cli_files(tmp_path):
    """source.volume(i) is exactly the data of n_<i>.mrc written by the console script."""
    for mode in (1, 2):
        out = tmp_path / f"m{mode}"
        args = ["--mode", str(mode), "--minangle", "-48", "--maxangle", "57", "--anglestep", "5"]
        proc = cli("generate-noise", str(out), "4", "20", "--start", "3", "--seed", "11",
                   "--ncpus", "1", "--no-dashboard", *args)  # fmt: skip
        assert proc.returncode == 0, proc.stderr
        source = NoiseSource(20, mode=mode, minangle=-48, maxangle=57, anglestep=5, seed=11)
        files = read_all(out)
        for i in range(3, 7):
            assert np.array_equal(files[f"n_{i:05d}.mrc"], source[i])
            with mrcfile.open(out / f"n_{i:05d}.mrc", header_only=True) as m:
                labels = [lab.decode() for lab in m.header.label[: m.header.nlabl]]
            assert labels == source.labels(i)


def test_fresh_seed_is_kept_and_small_pickle():
    a, b = NoiseSource(16), NoiseSource(16)
    assert isinstance(a.seed, int) and a.seed != b.seed and 0 <= a.seed < 2**128
    blob = pickle.dumps(a)
    assert len(blob) < 400  # no operator, no array inside
    again = pickle.loads(blob)
    assert again == a and np.array_equal(again[2], a[2])
    a[0]  # operators are cached per process, outside the source
    assert len(pickle.dumps(a)) == len(blob)


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [
        ({"cubesize": 1}, "CUBESIZE must be at least 2"),
        ({"cubesize": 8, "mode": 3}, "--mode must be 1"),
        ({"cubesize": 8, "minangle": 10, "maxangle": 5}, "must be smaller than --maxangle"),
        ({"cubesize": 8, "seed": -1}, "--seed must be 0 or more"),
    ],
)
def test_bad_sources_raise_one_sentence(kwargs, message):
    with pytest.raises(ValueError, match=re.escape(message)):
        NoiseSource(**kwargs)


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [
        ({"cubesize": 16.0}, "cubesize must be a whole number, not 16.0"),
        ({"cubesize": 16.5}, "cubesize must be a whole number, not 16.5"),
        ({"cubesize": 16, "seed": 5.0}, "seed must be a whole number, not 5.0"),
        ({"cubesize": 16, "seed": True}, "seed must be a whole number, not True"),
        ({"cubesize": 16, "mode": True}, "mode must be a whole number, not True"),
        ({"cubesize": 16, "minangle": "-60"}, "minangle must be a number, not '-60'"),
        ({"cubesize": 16, "voxel_size": False}, "voxel_size must be a number, not False"),
    ],
)
def test_mistyped_sources_raise_at_construction(kwargs, message):
    """Issue 21.13: these constructed, then failed later or wrote labels like ``seed=True``.

    A bool is not a number here and an integral float is not a whole number (refused, not
    normalised: ``16.0`` is more likely a mistake than a choice); numpy integers are accepted.
    """
    with pytest.raises(ValueError, match=re.escape(message)):
        NoiseSource(**kwargs)
    assert NoiseSource(np.int64(16), seed=np.uint8(5)).labels(0) == NoiseSource(16, seed=5).labels(
        0
    )


@pytest.mark.parametrize(
    ("count", "start", "message"),
    [
        (-2, 0, "NUMBER_VOLUME must be at least 1, not -2"),
        (0, 0, "NUMBER_VOLUME must be at least 1, not 0"),
        (2.5, 0, "NUMBER_VOLUME must be a whole number"),
        (True, 0, "NUMBER_VOLUME must be a whole number"),
        (2, -3, "--start must be 0 or more, not -3"),
        (2, "1", "--start must be a whole number"),
        (2, 10**80, "characters, more than the 80 an MRC header holds"),
    ],
)
def test_generate_refuses_a_bad_range_before_the_folder_exists(tmp_path, count, start, message):
    """Issue 21.13: checked before any folder or cluster exists (no cluster is started)."""
    folder = tmp_path / "n"
    with pytest.raises(ValueError, match=re.escape(message)):
        generate(folder, count, NoiseSource(16, seed=1), start, cluster=Unstartable())
    assert not folder.exists()


class Unstartable:
    """A cluster that fails the test if anything uses it."""

    def __getattr__(self, name):
        raise AssertionError(f"the cluster was used ({name}) before the range was checked")


def test_volume_index_checks():
    source = NoiseSource(8, mode=2, seed=1)
    with pytest.raises(IndexError):
        source.volume(-1)
    with pytest.raises(TypeError):
        source.volume(1.5)
    assert np.array_equal(source[np.int64(3)], source[3])


@settings(max_examples=25, deadline=None)
@given(
    count=st.integers(0, 9),
    start=st.integers(0, 50),
    k=st.integers(-12, 12),
    lo=st.integers(-3, 12),
    hi=st.integers(-3, 12),
)
def test_take_is_a_sequence(count, start, k, lo, hi):
    """take(count, start) indexes and slices like range(start, start + count)."""
    source = NoiseSource(4, mode=2, seed=5)
    volumes = source.take(count, start)
    model = range(start, start + count)
    assert len(volumes) == len(model)
    if -count <= k < count:
        assert np.array_equal(volumes[k], source[model[k]])
    else:
        with pytest.raises(IndexError):
            volumes[k]
    part = volumes[lo:hi]
    assert len(part) == len(model[lo:hi])
    if len(part):
        assert np.array_equal(part[0], source[model[lo:hi][0]])


def test_take_pickles_and_iterates():
    volumes = NoiseSource(8, seed=3, anglestep=10).take(3, start=5)
    back = pickle.loads(pickle.dumps(volumes))
    assert len(pickle.dumps(volumes)) < 500
    assert all(np.array_equal(a, b) for a, b in zip(back, volumes, strict=True))
    assert len(list(volumes)) == 3


@pytest.mark.parametrize("per", [1, 2, 3])
def test_to_dask_equals_volumes(per):
    source = NoiseSource(12, mode=1, anglestep=15, seed=9)
    array = to_dask(source, 5, start=7, volumes_per_chunk=per)
    assert array.shape == (5, 12, 12, 12) and array.dtype == np.float32
    assert array.chunks[0] == tuple([per] * (5 // per) + ([5 % per] if 5 % per else []))
    graph = array.__dask_graph__()
    assert len(graph.layers) == 1  # one blockwise layer, whatever the count
    # no task per volume until computed: the chunk sizes (a few bytes per volume) and one layer
    assert len(pickle.dumps(to_dask(source, 100_000).__dask_graph__())) < 3 * 100_000 + 4000
    data = array.compute(scheduler="sync")
    for k in range(5):
        assert np.array_equal(data[k], source[7 + k])
    assert np.array_equal(array[3, 2].compute(scheduler="sync"), source[10][2])


def test_to_dask_of_a_huge_count_is_bounded():
    """Issue 21.8: 10^8 volumes take little time and memory, or one sentence (a subprocess
    under a 2 GB address-space limit; the unbounded array took 25 s and 5.7 GB)."""
    code = """if True:
        import resource, numpy as np
        from mwr_dask import NoiseSource, to_dask
        resource.setrlimit(resource.RLIMIT_AS, (2 * 2**30, resource.RLIM_INFINITY))
        source = NoiseSource(16, seed=1)
        try:
            to_dask(source, 10**8)
        except ValueError as err:
            print(err)
        a = to_dask(source, 10**8, volumes_per_chunk=100)
        print(a.numblocks[0], np.array_equal(a[12345678].compute(), source[12345678]))
    """
    run = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=60)
    assert run.returncode == 0, run.stderr[-2000:]
    assert run.stdout.splitlines() == [
        "100000000 volumes in chunks of 1 are more than 1,000,000 chunks: give"
        " volumes_per_chunk=100 or more, or split the range.",
        "1000000 True",
    ]


@pytest.mark.slow
def test_to_dask_to_zarr_on_a_distributed_client(tmp_path, client):
    if importlib.util.find_spec("zarr") is None:
        skip_or_fail("zarr is not installed (the test extra installs it)")
    import zarr

    source = NoiseSource(10, mode=2, seed=4)
    to_dask(source, 4, start=2).to_zarr(str(tmp_path / "noise.zarr"))
    stored = zarr.open(str(tmp_path / "noise.zarr"), mode="r")
    for k in range(4):
        assert np.array_equal(stored[k], source[2 + k])


@pytest.mark.slow
def test_generate_with_the_callers_client(tmp_path, client):
    """generate() uses a client it is given, leaves it open, and writes the CLI's files."""
    source = NoiseSource(16, mode=2, seed=21)
    seen = []
    done = generate(tmp_path / "out", 9, source, start=2, client=client, on_progress=seen.append)
    assert done.ok and done.result.written == 9 and done.source == source
    assert_only_volumes(tmp_path / "out", range(2, 11))
    assert seen and seen[-1].done == 9
    files = read_all(tmp_path / "out")
    assert all(np.array_equal(files[f"n_{i:05d}.mrc"], source[i]) for i in range(2, 11))
    assert client.status == "running"
    again = generate(tmp_path / "out", 9, source, start=2, client=client)
    assert again.result.skipped == 9 and again.result.written == 0


@pytest.mark.slow
def test_generate_with_a_threaded_client(tmp_path):
    from distributed import Client

    source = NoiseSource(12, mode=1, anglestep=20, seed=2)
    with Client(processes=False, n_workers=1, threads_per_worker=2, dashboard_address=":0") as c:
        done = generate(tmp_path / "t", 5, source, client=c)
    assert done.ok
    files = read_all(tmp_path / "t")
    assert all(np.array_equal(files[f"n_{i:05d}.mrc"], source[i]) for i in range(5))


@pytest.mark.slow
def test_generate_starts_a_local_cluster(tmp_path):
    source = NoiseSource(12, mode=2, seed=8)
    done = generate(tmp_path / "l", 4, source)
    assert done.ok and done.result.written == 4
    assert_only_volumes(tmp_path / "l", range(4))


@pytest.mark.slow
def test_generate_folder_guard_and_adopted_seed(tmp_path, client):
    first = NoiseSource(8, mode=2, seed=100)
    generate(tmp_path / "g", 2, first, client=client)
    other = NoiseSource(8, mode=2, seed=200)
    with pytest.raises(FolderError, match="seed 200 \\(folder has 100\\)"):
        generate(tmp_path / "g", 2, other, start=2, client=client)
    done = generate(tmp_path / "g", 2, other, start=2, client=client, adopt_seed=True)
    assert done.source.seed == 100
    (tmp_path / "g" / "notes.txt").write_text("x")
    with pytest.warns(MwrDaskWarning, match="1 entry that"):
        generate(tmp_path / "g", 1, first, start=4, client=client)


@pytest.mark.slow
def test_lazy_imports_keep_usage_errors_light():
    """--version, --help and usage errors import neither numpy nor Dask nor scipy."""
    code = (
        "import sys\n"
        "from mwr_dask.cli import _command\n"  # main() without its fast exit
        "sys.argv = ['mwr-dask'] + sys.argv[1:]\n"
        "try:\n    _command()\nexcept SystemExit:\n    pass\n"
        "heavy = sorted(m for m in ('numpy', 'dask', 'distributed', 'scipy', 'mrcfile')"
        " if m in sys.modules)\n"
        "print('HEAVY', heavy)\n"
    )
    cases = [
        ["--version"],
        ["--help"],
        ["generate-noise", "x", "0", "8"],
        ["generate-noise", "x", "3", "8", "--mode", "7"],
        ["inspect", "--help"],
    ]
    for args in cases:
        proc = subprocess.run(
            [sys.executable, "-c", code, *args], capture_output=True, text=True, timeout=60
        )
        assert "HEAVY []" in proc.stdout, (args, proc.stdout, proc.stderr)
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        assert mwr_dask.__version__


@pytest.mark.slow
def test_api_doc_examples_run(tmp_path):
    """Every ```python block of docs/api.md runs as a user runs it: saved as a script."""
    text = (ROOT / "docs" / "api.md").read_text()
    blocks = re.findall(r"```python\n(.*?)```", text, flags=re.S)
    assert len(blocks) >= 4
    for k, block in enumerate(blocks):
        if "import torch" in block and importlib.util.find_spec("torch") is None:
            skip_or_fail("torch is not installed (pip install -e '.[torch]')")
        script = tmp_path / f"example_{k}.py"
        script.write_text(block)
        proc = subprocess.run(
            [sys.executable, str(script)], capture_output=True, text=True, cwd=tmp_path,
            timeout=300,
        )  # fmt: skip
        assert proc.returncode == 0, f"{block}\n{proc.stderr}"
        # no warning but Dask's note that another program holds the dashboard's port 8787
        warned = re.findall(r"\w+Warning: .*", proc.stderr)
        assert [w for w in warned if "is already in use" not in w] == [], proc.stderr
