"""Run parameters, their validation, and their record in MRC header labels."""

from __future__ import annotations

import math
import re
import struct
from dataclasses import MISSING, fields

from mwr_dask.noise.source import MODES, NoiseSource  # noqa: F401 - MODES re-exported

#: Names of output volumes; nothing else is ever written to the output folder.
NAME_PATTERN = re.compile(r"^n_(\d{5,})\.mrc$")
#: The definition of a set of volumes; the name used inside the package before the library API.
NoiseParams = NoiseSource
#: Seeds are below 2^128 (what ``SeedSequence().entropy`` draws): the label keeps 80 characters.
SEED_LIMIT = 2**128
#: Most tilts of a mode-1 series (a 0.012 degree step over 120 degrees); real series have ~60.
MAX_TILTS = 10_000
#: Longest MRC header label, characters (the format's fixed field).
LABEL_CHARS = 80
#: Smallest normal and largest float32 (the MRC header's cell sizes are float32).
F32_TINY, F32_MAX = 2.0**-126, (2 - 2.0**-23) * 2.0**127
#: Tolerance of :func:`mwr_dask.noise.geometry.tilt_angles` on the last tilt, degrees.
_TILT_EPS = 1e-6


def volume_name(index: int) -> str:
    """File name of volume ``index``: ``n_{index:05d}.mrc``."""
    return f"n_{index:05d}.mrc"


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
    """Rebuild the parameters recorded in a volume's labels, or None if they are not there.

    A volume made from a tilt scheme records its scheme's range and number of views, not its
    angles: the source returned then has that range and the mean step (what ``inspect``
    compares with), and ``schemes`` of :func:`parse_labels` names the whole mixture.
    """
    kv = parse_labels(labels)
    if "spectrum" in kv:
        return _measured_from_labels(kv)
    try:
        radial = None
        if "radial" in kv:
            cutoff, falloff = (float(v) for v in kv["radial"].split(","))
            radial = (cutoff, falloff)
        filtering = {
            "filter": kv.get("filter", "none"),
            "radial": radial,
            "sirt_iterations": int(kv["sirt"]) if "sirt" in kv else None,
        }
        if "schemes" in kv and "tilt" not in kv:
            lo, hi = (float(v) for v in kv["tilts"].split(".."))
            views = int(kv["n"])
            return NoiseParams(
                cubesize=int(kv["cube"]),
                mode=int(kv["mode"]),
                minangle=lo,
                maxangle=hi,
                anglestep=(hi - lo) / max(views - 1, 1),
                seed=int(kv["seed"]),
                voxel_size=float(kv.get("voxel", "1")),
                **filtering,
            )
        lo, hi, step = (float(v) for v in kv["tilt"].split(":"))
        return NoiseParams(
            cubesize=int(kv["cube"]),
            mode=int(kv["mode"]),
            minangle=lo,
            maxangle=hi,
            anglestep=step,
            seed=int(kv["seed"]),
            voxel_size=float(kv.get("voxel", "1")),
            **filtering,
        )
    except (KeyError, ValueError):
        return None


def _measured_from_labels(kv: dict[str, str]) -> NoiseParams | None:
    """Rebuild a mode-3 source from its labels: the spectrum known by its digest (no path)."""
    from mwr_dask.noise.measured import SpectrumNoise

    try:
        return NoiseParams(
            cubesize=int(kv["cube"]),
            seed=int(kv["seed"]),
            voxel_size=float(kv.get("voxel", "1")),
            spectrum=SpectrumNoise("", kv["spectrum"]),
        )
    except (KeyError, ValueError):
        return None


def tilt_count(params: NoiseParams) -> int:
    """Count the tilts of ``params`` (as :func:`tilts_of` makes them) without making them.

    Returns ``MAX_TILTS + 1`` for any step so fine that the count exceeds :data:`MAX_TILTS`
    (or is not finite), so that the caller never builds such an array.
    """
    schemes = getattr(params, "tilt_schemes", ())
    if schemes:  # the views of each distinct scheme (one cached operator each)
        return sum(len(s.angles) for s in {s.angle_tuple: s for s in schemes}.values())
    span = params.maxangle - params.minangle
    ratio = span / params.anglestep if params.anglestep > 0 else math.inf  # inf on overflow
    if not math.isfinite(ratio) or ratio > MAX_TILTS:
        return MAX_TILTS + 1
    return math.floor(ratio + _TILT_EPS) + 1


def _cell_problem(p: NoiseParams) -> str | None:
    """Why the header cannot store the voxel size of ``p`` (float32 cell), or None."""
    if not (math.isfinite(p.voxel_size) and p.voxel_size > 0):
        return f"--voxel-size must be positive and finite, not {p.voxel_size:g}."
    cell = _float32(p.voxel_size * max(p.cubesize, 1))
    if not (F32_TINY <= cell < math.inf and _float32(cell / max(p.cubesize, 1)) > 0):
        return (
            f"--voxel-size {p.voxel_size:g} cannot be stored in the MRC header (float32: the"
            f" cell of {p.cubesize} voxels must lie between {F32_TINY:.3g} and"
            f" {F32_MAX:.3g} angstroms)."
        )
    return None


def _float32(value: float) -> float:
    """``value`` rounded to float32 (inf beyond its range), without numpy."""
    try:
        return struct.unpack("<f", struct.pack("<f", value))[0]
    except OverflowError:
        return math.copysign(math.inf, value)


def _unchecked(params, **changes) -> NoiseSource:
    """Make a NoiseSource of the fields of ``params`` (any object with them) and ``changes``.

    Not validated (validation itself builds it, to make the labels with NoiseSource's own
    code).
    """
    source = object.__new__(NoiseSource)
    for f in fields(NoiseSource):
        default = None if f.default is MISSING else f.default
        object.__setattr__(source, f.name, changes.get(f.name, getattr(params, f.name, default)))
    return source


def label_problems(params: NoiseParams, last_index: int) -> list[str]:
    """Labels of the run that the MRC header cannot hold (over 80 characters or not ASCII).

    The longest labels are those of the last index with the largest seed a run can get, so
    checking them checks every volume of the run.
    """
    worst = _unchecked(params, seed=SEED_LIMIT - 1)
    out = []
    for label in worst.labels(last_index):
        if len(label) > LABEL_CHARS or not (label.isascii() and label.isprintable()):
            out.append(
                f"the header label {label!r} of the last volume is {len(label)} characters,"
                f" more than the {LABEL_CHARS} an MRC header holds: give the angles and the"
                " voxel size with fewer digits, or a smaller --start."
            )
            break
    return out


def validate(params: NoiseParams, number_volume: int, start: int) -> list[str]:
    """Problems with the requested run, one sentence each (empty when all is well).

    Everything that a worker would later trip over is checked here: finite numbers, a tilt
    count that can be built, a voxel size that the float32 header stores, seeds below 2^128,
    and header labels of at most 80 characters for every index of the run.
    """
    p = params
    errors = []
    if number_volume < 1:
        errors.append(f"NUMBER_VOLUME must be at least 1, not {number_volume}.")
    if p.cubesize < 2:
        errors.append(f"CUBESIZE must be at least 2 voxels, not {p.cubesize}.")
    if start < 0:
        errors.append(f"--start must be 0 or more, not {start}.")
    spectrum = getattr(p, "spectrum", None)
    if spectrum is not None:
        if spectrum.path and spectrum.n != p.cubesize:
            errors.append(
                f"CUBESIZE ({p.cubesize}) must equal the cube of the spectrum"
                f" {spectrum.path} ({spectrum.n})."
            )
    elif p.mode not in (1, 2):
        errors.append(f"--mode must be 1 (back-projection) or 2 (wedge filter), not {p.mode}.")
    for name, value in (("--minangle", p.minangle), ("--maxangle", p.maxangle)):
        if not -90.0 < value < 90.0:
            errors.append(f"{name} must lie strictly between -90 and 90 degrees, not {value:g}.")
    if p.minangle >= p.maxangle:
        errors.append(
            f"--minangle ({p.minangle:g}) must be smaller than --maxangle ({p.maxangle:g})."
        )
    elif not (math.isfinite(p.anglestep) and p.anglestep > 0):
        errors.append(f"--anglestep must be positive and finite, not {p.anglestep:g}.")
    elif p.mode == 1 and p.anglestep > p.maxangle - p.minangle:
        errors.append(
            f"--anglestep ({p.anglestep:g}) is wider than the tilt range"
            f" {p.minangle:g}..{p.maxangle:g}: back-projection needs at least two tilts."
        )
    elif p.mode == 1 and tilt_count(p) > MAX_TILTS:
        errors.append(
            f"--anglestep {p.anglestep:g} makes more than {MAX_TILTS:,} tilts over"
            f" {p.minangle:g}..{p.maxangle:g}; give a coarser step."
        )
    problem = _cell_problem(p)
    if problem:
        errors.append(problem)
    if p.seed < 0 or p.seed >= SEED_LIMIT:
        errors.append(f"--seed must be 0 or more and less than 2^128, not {p.seed}.")
    from mwr_dask.noise.filters import filter_problems

    errors += filter_problems(
        getattr(p, "filter", "none"),
        getattr(p, "radial", None),
        getattr(p, "sirt_iterations", None),
        3 if spectrum is not None else p.mode,
    )
    if not errors:  # labels of a valid run only: their numbers are all sane by now
        errors += label_problems(p, start + number_volume - 1)
    return errors


def source_problems(source) -> list[str]:
    """Problems with the parameters of a source alone (no count or start), one sentence each."""
    return validate(source, 1, 0)


def tilts_of(params: NoiseParams):
    """Tilt angles of ``params``, degrees; with tilt schemes, those of every scheme together.

    (What a worker's cached mode-1 operators hold: one per scheme.)
    """
    from mwr_dask.noise.geometry import tilt_angles

    schemes = getattr(params, "tilt_schemes", ())
    if schemes:
        import numpy as np

        unique = {s.angle_tuple: s for s in schemes}.values()  # equal schemes share one
        return np.concatenate([s.angles for s in unique])
    return tilt_angles(params.minangle, params.maxangle, params.anglestep)
