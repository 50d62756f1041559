"""``inspect`` on a Dask client: list the folder, read the volumes on the workers, apply rules.

Data flow: :func:`scan_folder` (here) names the ``n_*.mrc`` regular files and every other
entry; lists of paths go to the workers (:func:`~.reading.inspect_partition`), which send
back records and summed spectra, which become :class:`~.rules.Facts` for the
:data:`~.rules.RULES`. Only the near-duplicate confirmation reads two files here.
The only module of ``inspection`` that uses distributed (the client it is given).
"""

from __future__ import annotations

import errno
import math
import os
from collections.abc import Callable
from pathlib import Path

import numpy as np

from mwr_dask.files.mrc import file_kind
from mwr_dask.inspection.reading import full_correlation, inspect_partition
from mwr_dask.inspection.records import FolderReport
from mwr_dask.inspection.rules import RULES, Facts, Rule, evaluate
from mwr_dask.noise.source import NAME_PATTERN

#: Partitions per worker at least (load balance at the end), and bytes of files per
#: partition at most (steady progress), as for writing.
PARTS_PER_WORKER = 4
PART_BYTES = 64 * 2**20


def entry_kind(entry: os.DirEntry) -> str | None:
    """None for a regular file; else what the entry is, in words (``a FIFO``).

    Symbolic links are never followed (as by ``generate-noise``): a link is ``a symbolic
    link``, ``a symbolic link loop`` or ``a dangling symbolic link``. Never raises.
    """
    try:
        kind = file_kind(entry.stat(follow_symlinks=False).st_mode)
        if kind == "a symbolic link":
            os.stat(entry.path)
    except OSError as err:
        if err.errno == errno.ELOOP:
            return "a symbolic link loop"
        if err.errno == errno.ENOENT and entry.is_symlink():
            return "a dangling symbolic link"
        return f"unreadable: {err.strerror or err}"
    return None if kind == "file" else kind


def scan_folder(folder: Path) -> tuple[list[str], list[str], dict[str, str]]:
    """Sorted names of the ``n_*.mrc`` regular files of ``folder`` and of every other entry.

    And {name: what it is} (``a FIFO``, ``a symbolic link loop``) for ``n_*.mrc`` entries that
    are not regular files and for other entries that are neither regular files nor folders.
    """
    volumes, others, kinds = [], [], {}
    with os.scandir(folder) as it:
        for entry in it:
            kind = entry_kind(entry)
            if kind is None and NAME_PATTERN.match(entry.name):
                volumes.append(entry.name)
                continue
            others.append(entry.name)
            if kind is not None and (kind != "a folder" or NAME_PATTERN.match(entry.name)):
                kinds[entry.name] = kind
    return sorted(volumes), sorted(others), kinds


def _sees(folder: str) -> bool:
    return os.path.isdir(folder) and os.access(folder, os.R_OK | os.X_OK)


def workers_missing_folder(client, folder: Path) -> list[str]:
    """One sentence per worker of ``client`` that cannot read ``folder``."""
    answers = client.run(_sees, str(folder))
    return [f"worker {w} cannot read {folder}" for w, ok in sorted(answers.items()) if not ok]


def inspect_folder(
    folder: Path,
    client=None,
    *,
    workers: int | None = None,
    on_progress: Callable[[int, int], None] | None = None,
    inputs: dict | None = None,
    rules: tuple[Rule, ...] = RULES,
) -> FolderReport:
    """Inspect every volume of ``folder`` on ``client``'s cluster (None: in this process).

    ``workers``: threads to plan partitions for (default: the cluster's); ``on_progress``:
    called with (files done, files), once with 0 before reading, then after each partition;
    ``inputs``: for rules that compare the folder with something (``Facts.inputs``).
    """
    folder = Path(folder).absolute()
    names, others, kinds = scan_folder(folder)
    paths = [str(folder / n) for n in names]
    progress = on_progress or (lambda done, total: None)
    progress(0, len(paths))
    results = []
    if paths and client is None:
        results = [inspect_partition(paths)]
        progress(len(paths), len(paths))
    elif paths:
        from distributed import as_completed

        futures = client.map(
            inspect_partition, _chunks(paths, workers or sum(client.nthreads().values()) or 1),
            memory=_memory_limit(client), pure=False,
        )  # fmt: skip
        for future in as_completed(futures):
            results.append(future.result())
            future.release()
            progress(sum(len(part["records"]) for part in results), len(paths))
    records, spectra, schemes = [], {}, {}
    for part in results:
        records.extend(part["records"])
        _add_spectra(spectra, part["spectra"])
        _add_spectra(schemes, part["scheme_spectra"])
    facts = Facts(
        folder=folder,
        records=records,
        others=others,
        spectra=spectra,
        scheme_spectra=schemes,
        kinds=kinds,
        correlate=lambda a, b: full_correlation(str(folder / a), str(folder / b)),
        inputs=inputs or {},
    )
    return evaluate(facts, rules)


def _chunks(paths: list[str], workers: int) -> list[list[str]]:
    """Split ``paths`` into contiguous chunks, never empty.

    ``PARTS_PER_WORKER`` per worker at least, at most ``PART_BYTES`` of files each (by the
    median size of a sample).
    """
    sizes = [_size(p) for p in paths[:: max(1, len(paths) // 50)]]
    total = int(np.median(sizes)) * len(paths)
    k = min(len(paths), max(PARTS_PER_WORKER * workers, math.ceil(total / PART_BYTES)))
    return [paths[i * len(paths) // k : (i + 1) * len(paths) // k] for i in range(k)]


def _memory_limit(client) -> int | None:
    """Return the smallest memory limit of the client's workers, bytes (None: no limit)."""
    workers = client.scheduler_info()["workers"].values()
    limits = [w.get("memory_limit") or 0 for w in workers]
    return min((x for x in limits if x > 0), default=None)


def _add_spectra(into: dict, part: dict) -> None:
    """Add one partition's {key: [summed spectra, count]} into ``into``."""
    for key, (total, count) in part.items():
        acc = into.setdefault(key, [np.zeros_like(total), 0])
        acc[0] += total
        acc[1] += count


def _size(path: str) -> int:
    """Size of a file for planning partitions (0 if it vanished)."""
    try:
        return os.lstat(path).st_size
    except OSError:
        return 0
