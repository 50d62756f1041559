"""The user's input files (tilt files, spectra): regular files only, of a bounded size.

A FIFO named as a tilt file, ``/dev/zero`` as a spectrum or a 100 MB file where a few kB are
expected must not hang a command or fill its memory: files are opened without blocking
(``O_NONBLOCK``), checked to be regular files with ``fstat``, and read only up to a limit that
fits their format.
"""

from __future__ import annotations

import os
import stat
from pathlib import Path


def file_kind(mode: int) -> str:
    """``file`` for a regular file, else the kind in words: ``a FIFO``, ``a folder``, ..."""
    if stat.S_ISREG(mode):
        return "file"
    kinds = (
        (stat.S_ISLNK, "a symbolic link"),
        (stat.S_ISDIR, "a folder"),
        (stat.S_ISFIFO, "a FIFO"),
        (stat.S_ISSOCK, "a socket"),
        (stat.S_ISCHR, "a character device"),
        (stat.S_ISBLK, "a block device"),
    )
    return next((word for test, word in kinds if test(mode)), "not a regular file")


def read_regular(path: Path | str, limit: int) -> bytes:
    """Return the contents of ``path`` if it is a regular file of at most ``limit`` bytes.

    Raises
    ------
    ValueError
        It is not a regular file (the kind named), or it is larger than ``limit``: the reason
        as a phrase, e.g. ``is a FIFO, not a file``.
    OSError
        It cannot be opened or read.
    """
    fd = os.open(path, os.O_RDONLY | os.O_NONBLOCK | os.O_CLOEXEC)
    try:
        info = os.fstat(fd)
        kind = file_kind(info.st_mode)
        if kind != "file":
            raise ValueError(f"is {kind}, not a file")
        if info.st_size > limit:
            raise ValueError(f"is {info.st_size:,} bytes, more than the {limit:,} it may have")
        with os.fdopen(os.dup(fd), "rb") as f:
            return f.read(limit + 1)[:limit]
    finally:
        os.close(fd)
