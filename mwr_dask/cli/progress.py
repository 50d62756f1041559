"""Progress reports: a ``rich`` bar on a terminal, plain periodic log lines in batch logs."""

from __future__ import annotations

import atexit
import sys
import time
from typing import Any, TextIO


def _duration(seconds: float) -> str:
    if seconds == float("inf"):
        return "?"
    seconds = round(seconds)
    h, rest = divmod(seconds, 3600)
    m, s = divmod(rest, 60)
    return f"{h}:{m:02d}:{s:02d}" if h else f"{m}:{s:02d}"


class Progress:
    """Report volumes done out of ``total`` with rate and ETA.

    On a terminal, a :mod:`rich.progress` bar redrawn at each update; otherwise (batch logs) a
    plain line with a timestamp every ``every`` seconds and at the end. Nothing when ``quiet``.

    The rate is the volumes accounted for (written, skipped or failed) per second since the
    report was created, which the command does once the cluster is up: the speed of the work
    itself, without the cluster's start and stop. :attr:`elapsed` is that time at the latest
    update, so that a closing summary can quote the very rate the last line showed.
    """

    def __init__(
        self, total: int, *, quiet: bool = False, every: float = 10.0, stream: TextIO | None = None
    ) -> None:
        self.total = total
        self.quiet = quiet
        self.stream = stream or sys.stdout
        self.every = every
        self.t0 = time.perf_counter()
        self.last = float("-inf")
        self.updated: float | None = None  # time of the latest update
        self.bar: Any = None
        if not quiet and self.stream.isatty():
            self.bar = _terminal_bar(self.stream)
            atexit.register(self.close)  # a run that stops early: the cursor comes back

    @property
    def elapsed(self) -> float | None:
        """Seconds from the start of the report to its latest update (None before any)."""
        return None if self.updated is None else self.updated - self.t0

    def line(self, done: int, failed: int = 0, now: float | None = None) -> str:
        """Return the progress text for ``done`` volumes of the total at time ``now``."""
        elapsed = (time.perf_counter() if now is None else now) - self.t0
        rate = done / elapsed if elapsed > 0 else 0.0
        eta = (self.total - done) / rate if rate > 0 else float("inf")
        pct = 100.0 * done / self.total if self.total else 100.0
        text = (
            f"{done}/{self.total} volumes ({pct:.0f}%) {rate:.1f} vol/s"
            f" elapsed {_duration(elapsed)} ETA {_duration(eta)}"
        )
        return f"{text}, {failed} failed" if failed else text

    def update(self, done: int, failed: int = 0) -> None:
        """Report that ``done`` volumes are accounted for."""
        now = time.perf_counter()
        self.updated = now
        if self.quiet:
            return
        finished = done >= self.total
        if self.bar is not None:
            task = self.bar.task_ids[0]
            text = self.line(done, failed, now)
            self.bar.update(task, total=self.total, completed=done, text=text, refresh=True)
            if finished:
                self.close()
        elif finished or now - self.last >= self.every:
            stamp = time.strftime("%Y-%m-%d %H:%M:%S")
            self.stream.write(f"{stamp} {self.line(done, failed, now)}\n")
            self.stream.flush()
            self.last = now

    def close(self) -> None:
        """Stop the terminal bar (the last state stays on screen); nothing otherwise."""
        if self.bar is not None:
            self.bar.stop()


def _terminal_bar(stream: TextIO) -> Any:
    """Start a :class:`rich.progress.Progress` of one task: a bar and :meth:`Progress.line`."""
    from rich.console import Console
    from rich.progress import BarColumn, TextColumn
    from rich.progress import Progress as RichProgress

    bar = RichProgress(
        BarColumn(),
        TextColumn("{task.fields[text]}"),
        console=Console(file=stream, force_terminal=True),
        auto_refresh=False,
    )
    bar.add_task("volumes", text="")
    bar.start()
    return bar
