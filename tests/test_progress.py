"""The progress line's rate and the closing summary's rate are the same measurement."""

from __future__ import annotations

import io
import re
import time
import types
from pathlib import Path

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

import mwr_dask.cli.progress as progress_module
from mwr_dask.cli.generate import summarize
from mwr_dask.cli.progress import Progress
from mwr_dask.noise.source import NoiseSource
from mwr_dask.parallel.pipeline import RunResult
from mwr_dask.parallel.run import Generated
from tests.helpers import cli

RATE = re.compile(r"([0-9.]+) vol/s")
PARAMS = NoiseSource(
    cubesize=16, mode=2, minangle=-60.0, maxangle=60.0, anglestep=2.0, seed=1, voxel_size=1.0
)


@settings(max_examples=60, deadline=None)
@given(
    total=st.integers(1, 5000),
    startup=st.floats(0.0, 30.0),
    steps=st.lists(st.floats(1e-3, 5.0), min_size=1, max_size=8),
    skipped_share=st.floats(0.0, 1.0),
    teardown=st.floats(0.0, 10.0),
)
def test_summary_rate_is_the_rate_of_the_last_progress_line(
    total, startup, steps, skipped_share, teardown
):
    now = [100.0]
    clock = types.SimpleNamespace(perf_counter=lambda: now[0], strftime=time.strftime)
    with pytest.MonkeyPatch.context() as patch:
        patch.setattr(progress_module, "time", clock)
        _run_and_compare(now, total, startup, steps, skipped_share, teardown)


def _run_and_compare(now, total, startup, steps, skipped_share, teardown):
    t0 = now[0]  # the command's clock starts before the cluster
    now[0] += startup  # cluster start
    stream = io.StringIO()
    bar = Progress(total, stream=stream, every=0.0)
    skipped = int(total * skipped_share)
    result = RunResult(requested=total, skipped=skipped)
    for k, step in enumerate(steps, 1):
        now[0] += step
        result.written = (total - skipped) * k // len(steps)
        bar.update(result.done, result.failed)
    now[0] += teardown  # cluster stop
    said = []
    done = Generated(PARAMS, Path("."), 0, total, result, seconds=now[0] - t0)
    summarize(done, said.append, bar.elapsed)
    last_line = stream.getvalue().splitlines()[-1]
    assert RATE.search(last_line).group(1) == RATE.search(said[0]).group(1)
    assert f"in {now[0] - t0:.1f} s" in said[0]
    assert bar.elapsed == pytest.approx(sum(steps))


def test_without_a_progress_report_the_summary_rate_is_over_the_whole_run():
    said = []
    done = Generated(PARAMS, Path("."), 0, 10, RunResult(requested=10, written=10), seconds=4.0)
    summarize(done, said.append, None)
    assert "(2.5 vol/s" in said[0]


def test_quiet_progress_still_times_the_work(monkeypatch):
    now = [5.0]
    monkeypatch.setattr(progress_module, "time", types.SimpleNamespace(perf_counter=lambda: now[0]))
    bar = Progress(8, quiet=True, stream=io.StringIO())
    assert bar.elapsed is None and bar.rate() is None
    now[0] = 7.0
    bar.update(8)
    assert bar.elapsed == 2.0 and bar.rate() == 4.0


@pytest.mark.slow
def test_the_command_prints_one_rate_on_its_last_line_and_in_its_summary(tmp_path):
    proc = cli(
        "generate-noise", str(tmp_path / "out"), "40", "16", "--ncpus", "2", "--no-dashboard"
    )
    assert proc.returncode == 0, proc.stderr
    lines = proc.stdout.splitlines()
    progress_lines = [line for line in lines if "volumes (" in line and "vol/s" in line]
    done = [line for line in lines if line.startswith("Done:")]
    assert progress_lines and len(done) == 1
    assert "40/40 volumes" in progress_lines[-1]
    assert RATE.search(progress_lines[-1]).group(1) == RATE.search(done[0]).group(1)
