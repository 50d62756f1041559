"""``inspect`` on a Dask client: list the folder, read the volumes on the workers, apply rules.

Data flow: :func:`list_folder` (here) names the ``n_*.mrc`` regular files and every other
entry; partitions of paths go to the workers (:func:`~.reading.inspect_chunks`), which send
back records and summed spectra; :func:`reduce_folder` turns them into :class:`~.rules.Facts`
and runs the :data:`~.rules.RULES`. Only the near-duplicate confirmation reads two files here.
"""

from __future__ import annotations

import errno
import os
import stat
from collections.abc import Callable
from pathlib import Path

import numpy as np

from mwr_dask.inspection.reading import file_kind, full_correlation, inspect_chunks
from mwr_dask.inspection.reading import inspect_partition as inspect_partition
from mwr_dask.inspection.records import FileRecord, FolderReport
from mwr_dask.inspection.rules import RULES, Facts, Rule, evaluate
from mwr_dask.noise.source import NAME_PATTERN


def entry_kind(entry: os.DirEntry) -> str | None:
    """None for a regular file (a symlink to one included); else what the entry is.

    Never raises: a symbolic link loop, a dangling link or an entry that vanished is
    described in words.
    """
    try:
        st = entry.stat()  # follows symlinks
    except OSError as err:
        if err.errno == errno.ELOOP:
            return "a symbolic link loop"
        if err.errno == errno.ENOENT and entry.is_symlink():
            return "a dangling symbolic link"
        return f"unreadable: {err.strerror or err}"
    return None if stat.S_ISREG(st.st_mode) else file_kind(st.st_mode)


def list_folder(folder: Path) -> tuple[list[str], list[str]]:
    """Names of the ``n_*.mrc`` regular files of ``folder`` and of every other entry, sorted."""
    volumes, others, _ = scan_folder(folder)
    return volumes, others


def scan_folder(folder: Path) -> tuple[list[str], list[str], dict[str, str]]:
    """Like :func:`list_folder`, with what each odd entry is.

    Returns
    -------
    volumes, others : list of str
        Sorted names.
    kinds : dict
        {name: what it is} for ``n_*.mrc`` entries that are not regular files and for other
        entries that are neither regular files nor folders (``a FIFO``, ``a symbolic link
        loop``).
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


def reduce_folder(
    folder: Path,
    records: list[FileRecord],
    others: list[str],
    spectra: dict[int, list],
    *,
    scheme_spectra: dict[tuple[int, str], list] | None = None,
    kinds: dict[str, str] | None = None,
    inputs: dict | None = None,
    rules: tuple[Rule, ...] = RULES,
    correlate: Callable[[str, str], float | None] | None = None,
) -> FolderReport:
    """Turn the workers' records and spectra into a :class:`~.records.FolderReport`.

    Parameters
    ----------
    folder : pathlib.Path
        The folder inspected.
    records : list of FileRecord
        One per ``n_*.mrc`` file.
    others : list of str
        Entries that are not ``n_*.mrc`` files.
    spectra : dict
        {cube side: [summed slice spectra, count]} over all partitions.
    scheme_spectra : dict, optional
        {(cube side, scheme label): [summed slice spectra, count]} over the volumes that name
        their tilt scheme (see :func:`~.records.scheme_key`).
    kinds : dict, optional
        What the odd entries are (see :func:`scan_folder`).
    inputs : dict, optional
        Inputs for rules that compare the folder with something (``Facts.inputs``).
    rules : tuple of Rule
        The rules to apply, in order.
    correlate : callable, optional
        Whole-volume correlation of two names; default: read both files of ``folder``.
    """
    folder = Path(folder)
    if correlate is None:

        def correlate(a: str, b: str) -> float | None:
            return full_correlation(str(folder / a), str(folder / b))

    facts = Facts(
        folder=folder,
        records=records,
        others=others,
        spectra=spectra,
        scheme_spectra=scheme_spectra or {},
        kinds=kinds or {},
        correlate=correlate,
        inputs=inputs or {},
    )
    return evaluate(facts, rules)


def inspect_folder(
    folder: Path,
    client=None,
    *,
    workers: int | None = None,
    on_progress: Callable[[int, int], None] | None = None,
    inputs: dict | None = None,
    rules: tuple[Rule, ...] = RULES,
) -> FolderReport:
    """Inspect every volume of ``folder`` on ``client``'s cluster (or in this process).

    Parameters
    ----------
    folder : pathlib.Path
        A noise folder.
    client : distributed.Client, optional
        Connected client; None computes in this process (no Dask).
    workers : int, optional
        Worker threads to plan partitions for; default: the cluster's total.
    on_progress : callable, optional
        Called with (files done, files) after each partition.
    inputs : dict, optional
        Inputs for rules that compare the folder with something (``Facts.inputs``).
    rules : tuple of Rule
        The rules to apply, in order (default :data:`~.rules.RULES`).
    """
    from mwr_dask.parallel.pipeline import partition_ranges

    folder = Path(folder).absolute()
    names, others, kinds = scan_folder(folder)
    paths = [str(folder / n) for n in names]
    results = []
    if paths and client is None:
        results = [inspect_partition(paths)]
    elif paths:
        import dask.bag as db
        from distributed import as_completed

        if workers is None:
            workers = sum(client.nthreads().values()) or 1
        probe = paths[:: max(1, len(paths) // 50)]
        size = max(1, int(np.median([_size(p) for p in probe])))
        ranges = partition_ranges(0, len(paths), workers, size)
        chunks = [paths[r.start : r.stop] for r in ranges]
        bag = db.from_sequence(chunks, npartitions=len(chunks)).map_partitions(inspect_chunks)
        futures = client.compute(bag.to_delayed())
        done = 0
        for future in as_completed(futures):
            (part,) = future.result()
            results.append(part)
            done += len(part["records"])
            future.release()
            if on_progress is not None:
                on_progress(done, len(paths))
    records, spectra, schemes = [], {}, {}
    for part in results:
        records.extend(part["records"])
        _add_spectra(spectra, part["spectra"])
        _add_spectra(schemes, part.get("scheme_spectra", {}))
    return reduce_folder(
        folder,
        records,
        others,
        spectra,
        scheme_spectra=schemes,
        kinds=kinds,
        inputs=inputs,
        rules=rules,
    )


def _add_spectra(into: dict, part: dict) -> None:
    """Add one partition's {key: [summed spectra, count]} into ``into``."""
    for key, (total, count) in part.items():
        acc = into.setdefault(key, [np.zeros_like(total), 0])
        acc[0] += total
        acc[1] += count


def _size(path: str) -> int:
    """Size of a file for planning partitions (0 if it vanished)."""
    try:
        return os.stat(path).st_size
    except OSError:
        return 0
