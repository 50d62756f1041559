"""Open files: the limit of the processes a run starts here, and the noise of running out."""

from __future__ import annotations

import contextlib
import errno
import logging
import resource
from collections.abc import Callable, Iterator

#: The soft limit used where the hard limit is infinite (Linux refuses infinity for it).
MOST_OPEN_FILES = 1 << 20
#: The job scripts' line for the same: the workers of a job inherit the job shell's limit.
RAISE_IN_SHELL = 'ulimit -n "$(ulimit -Hn)" 2>/dev/null || true'
#: Errors of a process that has no file descriptor left.
OUT_OF_FILES = {errno.EMFILE, errno.ENFILE}


@contextlib.contextmanager
def open_files_raised(warn: Callable[[str], None] | None = None) -> Iterator[None]:
    """Raise this process's soft limit of open files to its hard limit in the block.

    Every connection to a port of the run holds a descriptor in the process that listens,
    until its TLS handshake ends, which Dask does not time out: anyone on the machine who
    opens connections and sends nothing holds them (docs/reliability.md). The scheduler runs
    in this process, and local worker processes started in the block inherit its limit.
    The limit is restored when the block ends.

    A listener out of descriptors makes asyncio log a traceback at each turn of the event
    loop; here those records are dropped and counted, and ``warn`` is told once at the end.
    """
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    want = MOST_OPEN_FILES if hard == resource.RLIM_INFINITY else hard
    raised = soft != resource.RLIM_INFINITY and soft < want
    if raised:
        try:
            resource.setrlimit(resource.RLIMIT_NOFILE, (want, hard))
        except (ValueError, OSError):  # not allowed here: keep the limit as it is
            raised = False
    dropped = []

    def out_of_files(record: logging.LogRecord) -> bool:
        err = record.exc_info[1] if record.exc_info else None
        if isinstance(err, OSError) and err.errno in OUT_OF_FILES:
            dropped.append(err)
            return False
        return True

    log = logging.getLogger("asyncio")
    log.addFilter(out_of_files)
    try:
        yield
    finally:
        log.removeFilter(out_of_files)
        if raised:
            with contextlib.suppress(ValueError, OSError):
                resource.setrlimit(resource.RLIMIT_NOFILE, (soft, hard))
        if dropped and warn is not None:
            warn(
                f"this process ran out of open files {len(dropped)} times (limit"
                f" {want if raised else soft}): connections to the run's"
                " ports that never authenticate hold one each."
            )
