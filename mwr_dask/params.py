"""Run parameters, their validation, and their record in MRC header labels."""

from __future__ import annotations

import re
from dataclasses import asdict, dataclass

from mwr_dask import __version__
from mwr_dask.geometry import tilt_angles

MODES = {1: "back-projection", 2: "wedge filter"}
#: Names of output volumes; nothing else is ever written to the output folder.
NAME_PATTERN = re.compile(r"^n_(\d{5,})\.mrc$")


def volume_name(index: int) -> str:
    """File name of volume ``index``: ``n_{index:05d}.mrc``."""
    return f"n_{index:05d}.mrc"


def _num(value: float) -> str:
    """Shortest text that reads back as exactly ``value`` (integers without a point)."""
    value = float(value)
    return str(int(value)) if value.is_integer() else repr(value)


@dataclass(frozen=True)
class NoiseParams:
    """What defines a noise volume: with the index, these make it a pure function.

    Attributes
    ----------
    cubesize : int
        Cube side, voxels.
    mode : int
        1 = back-projection of 2-D white noise, 2 = 3-D white noise through a wedge filter.
    minangle, maxangle, anglestep : float
        Tilt range and step, degrees (the step matters for mode 1 only).
    seed : int
        Root seed; volume i draws from ``SeedSequence(seed, spawn_key=(i,))``.
    voxel_size : float
        Voxel size written to the header, angstroms.
    """

    cubesize: int
    mode: int = 1
    minangle: float = -60.0
    maxangle: float = 60.0
    anglestep: float = 2.0
    seed: int = 0
    voxel_size: float = 1.0

    @property
    def volume_bytes(self) -> int:
        """Bytes of one volume file (1024-byte header + float32 data)."""
        return 1024 + 4 * self.cubesize**3

    @property
    def tilt(self) -> str:
        """Tilt range as ``min:max:step``, degrees."""
        return f"{_num(self.minangle)}:{_num(self.maxangle)}:{_num(self.anglestep)}"

    def labels(self, index: int) -> list[str]:
        """MRC header labels recording the provenance of volume ``index`` (<= 80 chars each)."""
        from mwr_dask.generators import numerics_label  # numpy and scipy versions

        return [
            f"mwr-dask {__version__} mode={self.mode} cube={self.cubesize} tilt={self.tilt}"
            f" index={index}",
            f"seed={self.seed} voxel={_num(self.voxel_size)}",
            numerics_label(),
        ]

    def describe(self) -> str:
        """One line for people: mode, cube, tilts, seed."""
        return (
            f"mode {self.mode} ({MODES.get(self.mode, '?')}), {self.cubesize}^3 voxels,"
            f" tilts {self.tilt} deg, seed {self.seed}"
        )

    def as_dict(self) -> dict:
        """Plain dictionary of the fields."""
        return asdict(self)


def parse_labels(labels: list[str]) -> dict[str, str]:
    """Key/value pairs of mwr-dask labels (``{}`` for files that mwr-dask did not write)."""
    ours = [label for label in labels if label.startswith("mwr-dask ")]
    if not ours:
        return {}
    out = {"version": ours[0].split()[1]}
    for label in labels:
        for token in label.split():
            key, sep, value = token.partition("=")
            if sep:
                out[key] = value
    return out


def params_from_labels(labels: list[str]) -> NoiseParams | None:
    """Rebuild the parameters recorded in a volume's labels, or None if they are not there."""
    kv = parse_labels(labels)
    try:
        lo, hi, step = (float(v) for v in kv["tilt"].split(":"))
        return NoiseParams(
            cubesize=int(kv["cube"]),
            mode=int(kv["mode"]),
            minangle=lo,
            maxangle=hi,
            anglestep=step,
            seed=int(kv["seed"]),
            voxel_size=float(kv.get("voxel", "1")),
        )
    except (KeyError, ValueError):
        return None


def validate(params: NoiseParams, number_volume: int, start: int) -> list[str]:
    """Problems with the requested run, one sentence each (empty when all is well)."""
    p = params
    errors = []
    if number_volume < 1:
        errors.append(f"NUMBER_VOLUME must be at least 1, not {number_volume}.")
    if p.cubesize < 2:
        errors.append(f"CUBESIZE must be at least 2 voxels, not {p.cubesize}.")
    if start < 0:
        errors.append(f"--start must be 0 or more, not {start}.")
    if p.mode not in MODES:
        errors.append(f"--mode must be 1 (back-projection) or 2 (wedge filter), not {p.mode}.")
    for name, value in (("--minangle", p.minangle), ("--maxangle", p.maxangle)):
        if not -90.0 < value < 90.0:
            errors.append(f"{name} must lie strictly between -90 and 90 degrees, not {value:g}.")
    if p.minangle >= p.maxangle:
        errors.append(
            f"--minangle ({p.minangle:g}) must be smaller than --maxangle ({p.maxangle:g})."
        )
    elif p.anglestep <= 0:
        errors.append(f"--anglestep must be positive, not {p.anglestep:g}.")
    elif p.anglestep > p.maxangle - p.minangle:
        errors.append(
            f"--anglestep ({p.anglestep:g}) is wider than the tilt range"
            f" {p.minangle:g}..{p.maxangle:g}: back-projection needs at least two tilts."
        )
    if not p.voxel_size > 0:
        errors.append(f"--voxel-size must be positive, not {p.voxel_size:g}.")
    if p.seed < 0:
        errors.append(f"--seed must be 0 or more, not {p.seed}.")
    return errors


def tilts_of(params: NoiseParams):
    """Tilt angles of ``params``, degrees."""
    return tilt_angles(params.minangle, params.maxangle, params.anglestep)
