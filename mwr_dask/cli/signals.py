"""SIGINT and SIGTERM as an exception, so that a run stops cleanly in batch jobs."""

from __future__ import annotations

import signal
from collections.abc import Iterator
from contextlib import contextmanager


class Interrupted(Exception):  # noqa: N818 - it is a stop request, not an error
    """The process received SIGINT or SIGTERM."""

    def __init__(self, signum: int) -> None:
        super().__init__(signal.Signals(signum).name)
        self.signum = signum

    @property
    def exit_code(self) -> int:
        """The shell convention: 128 + the signal number (130 for SIGINT, 143 for SIGTERM)."""
        return 128 + self.signum


@contextmanager
def signals_raise() -> Iterator[None]:
    """Turn the first SIGINT or SIGTERM into :class:`Interrupted`; later ones are ignored.

    Ignoring repeats lets the clean-up (cancel tasks, close the cluster, cancel batch jobs)
    finish when a scheduler or an impatient user sends the signal again.
    """

    def handler(signum, frame):
        for sig in (signal.SIGINT, signal.SIGTERM):
            signal.signal(sig, signal.SIG_IGN)
        raise Interrupted(signum)

    previous = {sig: signal.signal(sig, handler) for sig in (signal.SIGINT, signal.SIGTERM)}
    try:
        yield
    finally:
        for sig, old in previous.items():
            signal.signal(sig, old)
