"""What an output folder already holds, and what may be added to it."""

from __future__ import annotations

import contextlib
import fcntl
import os
import socket
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field, replace
from pathlib import Path

from mwr_dask.mrcio import read_header, state_dir
from mwr_dask.params import NAME_PATTERN, NoiseParams, params_from_labels, parse_labels


@dataclass
class FolderState:
    """Contents of an output folder.

    Attributes
    ----------
    indices : list of int
        Indices of the ``n_*.mrc`` entries, ascending.
    others : list of str
        Entries that are not ``n_*.mrc`` (IsoNet would open them as volumes).
    recorded : NoiseParams or None
        Parameters recorded in the labels of the first readable mwr-dask volume.
    cubesizes : set of int
        Cube sides seen in the headers that were read.
    recorded_schemes : str
        ``K:digest`` of the tilt schemes that volume records (``schemes=``), '' for a range.
    """

    indices: list[int] = field(default_factory=list)
    others: list[str] = field(default_factory=list)
    recorded: NoiseParams | None = None
    cubesizes: set[int] = field(default_factory=set)
    recorded_schemes: str = ""


def scan(folder: Path, *, headers: int = 3) -> FolderState:
    """List ``folder`` and read the headers of up to ``headers`` of its volumes.

    The first, the last and the middle volume are read: enough to learn the recorded
    parameters without opening thousands of files.
    """
    state = FolderState()
    if not folder.is_dir():
        return state
    for entry in sorted(folder.iterdir()):
        match = NAME_PATTERN.match(entry.name)
        if match and entry.is_file():
            state.indices.append(int(match.group(1)))
        else:
            state.others.append(entry.name)
    state.indices.sort()
    if state.indices:
        k = len(state.indices)
        picks = sorted({0, k // 2, k - 1})[:headers]
        for pick in picks:
            path = folder / f"n_{state.indices[pick]:05d}.mrc"
            try:
                header = read_header(path)
            except (OSError, ValueError):
                continue
            state.cubesizes.add(header.shape[-1])
            if state.recorded is None:
                state.recorded = params_from_labels(header.labels)
                if state.recorded is not None:
                    state.recorded_schemes = parse_labels(header.labels).get("schemes", "")
    return state


def conflicts(recorded: NoiseParams, wanted: NoiseParams, recorded_schemes: str = "") -> list[str]:
    """Differences between the parameters a folder records and those of a new run.

    ``recorded_schemes`` is the folder's ``schemes=K:digest`` label ('' for a range): tilt
    schemes are compared by the digest of their ordered angle lists.
    """
    out = []
    if recorded.cubesize != wanted.cubesize:
        out.append(f"cube size {wanted.cubesize} (folder has {recorded.cubesize})")
    if recorded.mode != wanted.mode:
        out.append(f"mode {wanted.mode} (folder has {recorded.mode})")
    spectra = [p.spectrum.digest if p.spectrum is not None else None for p in (recorded, wanted)]
    if recorded.mode == wanted.mode == 3 and spectra[0] != spectra[1]:
        out.append(f"spectrum {spectra[1]} (folder has {spectra[0]})")
    wanted_schemes = getattr(wanted, "schemes_record", "")
    if recorded.mode == 3 or wanted.mode == 3:
        pass  # a measured spectrum has no tilts
    elif recorded_schemes or wanted_schemes:
        if recorded_schemes != wanted_schemes:
            mine = f"tilt schemes {wanted_schemes}" if wanted_schemes else f"tilts {wanted.tilt}"
            theirs = f"tilt schemes {recorded_schemes}" if recorded_schemes else recorded.tilt
            out.append(f"{mine} (folder has {theirs})")
    elif recorded.mode == wanted.mode and recorded.tilt != wanted.tilt:
        # The step only matters for mode 1; mode 2 records it but does not use it.
        same_range = (recorded.minangle, recorded.maxangle) == (wanted.minangle, wanted.maxangle)
        if wanted.mode == 1 or not same_range:
            out.append(f"tilts {wanted.tilt} (folder has {recorded.tilt})")
    if recorded.seed != wanted.seed:
        out.append(f"seed {wanted.seed} (folder has {recorded.seed})")
    if recorded.voxel_size != wanted.voxel_size:
        out.append(f"voxel size {wanted.voxel_size:g} (folder has {recorded.voxel_size:g})")
    if recorded.filter_spec != wanted.filter_spec:
        out.append(f"{wanted.filter_spec.label()} (folder has {recorded.filter_spec.label()})")
    return out


class FolderError(RuntimeError):
    """The output folder cannot be used as asked; the message is one sentence."""


def resolve_params(
    folder: Path, wanted: NoiseParams, *, seed_given: bool, force: bool, fresh_seed: int
) -> tuple[NoiseParams, FolderState]:
    """Parameters of the run: the folder's recorded seed unless one is given, checked for conflicts.

    Parameters
    ----------
    folder : pathlib.Path
        Output folder (may not exist yet).
    wanted : NoiseParams
        Parameters asked for; its seed counts only if ``seed_given``.
    seed_given : bool
        Whether the user gave a seed.
    force : bool
        Accept parameters that conflict with the folder's volumes.
    fresh_seed : int
        Seed to use when none is given and the folder records none.

    Raises
    ------
    FolderError
        The folder's volumes record other parameters (each conflict named), unless ``force``.
    """
    state = scan(folder)
    seed = wanted.seed
    if not seed_given:
        seed = state.recorded.seed if state.recorded is not None else fresh_seed
    params = replace(wanted, seed=seed)
    if not force:
        problems = []
        if state.recorded is not None:
            problems = conflicts(state.recorded, params, state.recorded_schemes)
        elif state.cubesizes and state.cubesizes != {params.cubesize}:
            sizes = ", ".join(str(s) for s in sorted(state.cubesizes))
            problems = [f"cube size {params.cubesize} (folder has {sizes})"]
        if problems:
            raise FolderError(
                f"{folder} holds volumes made with other parameters: "
                + "; ".join(problems)
                + ". Use another folder, or --force to mix them."
            )
    return params, state


def missing_count(state: FolderState, start: int, count: int) -> int:
    """Volumes of ``start .. start + count - 1`` that have no file yet."""
    have = {i for i in state.indices if start <= i < start + count}
    return count - len(have)


@contextmanager
def folder_lock(folder: Path) -> Iterator[Path]:
    """Hold the run lock of ``folder`` and yield the folder for temporaries.

    The lock is an ``flock`` on ``<state dir>/lock``, outside the output folder, released by
    the kernel when the process dies (even by SIGKILL). Temporaries left by an earlier run
    that was killed are removed once the lock is held.

    Raises
    ------
    FolderError
        Another run holds the lock.
    """
    state = state_dir(folder)
    tmp = state / "tmp"
    try:
        tmp.mkdir(parents=True, exist_ok=True)
        handle = open(state / "lock", "a+")  # noqa: SIM115 - held for the whole run
    except OSError as err:
        raise FolderError(f"cannot create {err.filename}: {err.strerror}.") from None
    try:
        try:
            fcntl.flock(handle, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except OSError:
            handle.seek(0)
            holder = handle.read().strip() or "another process"
            raise FolderError(
                f"another mwr-dask run ({holder}) is writing to {folder}; wait for it to"
                " finish, or stop it."
            ) from None
        handle.seek(0)
        handle.truncate()
        since = time.strftime("%Y-%m-%d %H:%M:%S")
        handle.write(f"pid {os.getpid()} on {socket.gethostname()} since {since}")
        handle.flush()
        for leftover in tmp.iterdir():
            leftover.unlink(missing_ok=True)
        try:
            yield tmp
        finally:
            # leave nothing beside the folder (temporaries of killed workers excepted, which
            # the next run removes); the lock file is removed while still held, so a run that
            # opened it earlier still fails to lock it
            with contextlib.suppress(OSError):
                tmp.rmdir()
                (state / "lock").unlink()
                state.rmdir()
    finally:
        handle.close()
