"""Progress reports: a bar on a terminal, plain periodic log lines in batch logs."""

from __future__ import annotations

import sys
import time
from typing import TextIO


def _duration(seconds: float) -> str:
    if seconds == float("inf"):
        return "?"
    seconds = round(seconds)
    h, rest = divmod(seconds, 3600)
    m, s = divmod(rest, 60)
    return f"{h}:{m:02d}:{s:02d}" if h else f"{m}:{s:02d}"


class Progress:
    """Report volumes done out of ``total`` with rate and ETA.

    On a terminal, one line redrawn in place with a bar; otherwise (batch logs) a plain line
    every ``every`` seconds and at the end. Nothing when ``quiet``.

    The rate is the volumes accounted for (written, skipped or failed) per second since the
    report was created, which the command does once the cluster is up: the speed of the work
    itself, without the cluster's start and stop. :attr:`elapsed` is that time at the latest
    update, so that a closing summary can quote the very rate the last line showed.
    """

    def __init__(
        self,
        total: int,
        *,
        quiet: bool = False,
        every: float = 10.0,
        stream: TextIO | None = None,
        width: int = 30,
    ) -> None:
        self.total = total
        self.quiet = quiet
        self.stream = stream or sys.stdout
        self.tty = self.stream.isatty()
        self.every = every
        self.width = width
        self.t0 = time.perf_counter()
        self.last = float("-inf")
        self.updated: float | None = None  # time of the latest update
        self.done = 0

    @property
    def elapsed(self) -> float | None:
        """Seconds from the start of the report to its latest update (None before any)."""
        return None if self.updated is None else self.updated - self.t0

    def rate(self) -> float | None:
        """Volumes accounted for per second at the latest update (None before any)."""
        elapsed = self.elapsed
        return None if elapsed is None else (self.done / elapsed if elapsed > 0 else 0.0)

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
        if failed:
            text += f", {failed} failed"
        if self.tty:
            filled = int(self.width * done / self.total) if self.total else self.width
            text = f"[{'#' * filled}{'.' * (self.width - filled)}] {text}"
        return text

    def update(self, done: int, failed: int = 0) -> None:
        """Report that ``done`` volumes are accounted for."""
        now = time.perf_counter()
        self.updated, self.done = now, done
        if self.quiet:
            return
        finished = done >= self.total
        if self.tty:
            end = "\n" if finished else ""
            self.stream.write(f"\r{self.line(done, failed, now)}\033[K{end}")
        elif finished or now - self.last >= self.every:
            stamp = time.strftime("%Y-%m-%d %H:%M:%S")
            self.stream.write(f"{stamp} {self.line(done, failed, now)}\n")
        else:
            return
        self.last = now
        self.stream.flush()
