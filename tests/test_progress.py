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
from mwr_dask.cli.progress import Progress
from mwr_dask.cli.running import summarize
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
    assert bar.elapsed is None
    now[0] = 7.0
    bar.update(8)
    assert bar.elapsed == 2.0


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


class Stream(io.StringIO):
    def __init__(self, tty):
        super().__init__()
        self.tty = tty

    def isatty(self):
        return self.tty


def test_a_rich_bar_on_a_terminal_and_log_lines_otherwise():
    tty = Stream(True)
    p = Progress(100, stream=tty)
    p.update(50)
    drawn = tty.getvalue()
    assert "\x1b[?25l" in drawn and "━" in drawn  # the cursor hidden, a bar drawn
    assert "50/100 volumes (50%)" in drawn and " vol/s elapsed 0:00 ETA " in drawn
    p.update(100)
    text = tty.getvalue()
    assert "100/100 volumes (100%)" in text.splitlines()[-2]  # the last line drawn
    assert text.endswith("\n\x1b[?25h")  # the last state stays, the cursor is back
    log = Stream(False)
    p = Progress(100, stream=log, every=3600)
    for done in (10, 20, 30, 100):
        p.update(done)
    lines = log.getvalue().splitlines()
    assert len(lines) == 2  # the first report, then none until the end
    assert "\x1b" not in log.getvalue() and "━" not in log.getvalue()
    assert re.fullmatch(
        r"\d{4}-\d\d-\d\d \d\d:\d\d:\d\d 100/100 volumes \(100%\) [0-9.]+ vol/s elapsed 0:00"
        r" ETA 0:00",
        lines[-1],
    )
    for stream in (Stream(False), Stream(True)):
        Progress(100, stream=stream, quiet=True).update(100)
        assert stream.getvalue() == ""


def test_a_run_that_stops_early_gives_the_terminal_its_cursor_back():
    tty = Stream(True)
    p = Progress(100, stream=tty)
    p.update(30, failed=2)
    assert "30/100 volumes (30%)" in tty.getvalue() and ", 2 failed" in tty.getvalue()
    assert not tty.getvalue().endswith("\x1b[?25h")
    p.close()  # what the end of the process does (atexit) if the command does not
    assert tty.getvalue().endswith("\x1b[?25h")
    p.close()
    assert tty.getvalue().count("\x1b[?25h") == 1
