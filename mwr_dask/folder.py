"""What an output folder already holds, and what may be added to it."""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

from mwr_dask.mrcio import read_header
from mwr_dask.params import NAME_PATTERN, NoiseParams, params_from_labels


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
    """

    indices: list[int] = field(default_factory=list)
    others: list[str] = field(default_factory=list)
    recorded: NoiseParams | None = None
    cubesizes: set[int] = field(default_factory=set)


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
    return state


def conflicts(recorded: NoiseParams, wanted: NoiseParams) -> list[str]:
    """Differences between the parameters a folder records and those of a new run."""
    out = []
    if recorded.cubesize != wanted.cubesize:
        out.append(f"cube size {wanted.cubesize} (folder has {recorded.cubesize})")
    if recorded.mode != wanted.mode:
        out.append(f"mode {wanted.mode} (folder has {recorded.mode})")
    if recorded.mode == wanted.mode and recorded.tilt != wanted.tilt:
        # The step only matters for mode 1; mode 2 records it but does not use it.
        same_range = (recorded.minangle, recorded.maxangle) == (wanted.minangle, wanted.maxangle)
        if wanted.mode == 1 or not same_range:
            out.append(f"tilts {wanted.tilt} (folder has {recorded.tilt})")
    if recorded.seed != wanted.seed:
        out.append(f"seed {wanted.seed} (folder has {recorded.seed})")
    if recorded.voxel_size != wanted.voxel_size:
        out.append(f"voxel size {wanted.voxel_size:g} (folder has {recorded.voxel_size:g})")
    return out
