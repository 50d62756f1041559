"""Run parameters, their validation, and their record in MRC header labels."""

from __future__ import annotations

import re

from mwr_dask.source import MODES, NoiseSource  # noqa: F401 - MODES re-exported

#: Names of output volumes; nothing else is ever written to the output folder.
NAME_PATTERN = re.compile(r"^n_(\d{5,})\.mrc$")
#: The definition of a set of volumes; the name used inside the package before the library API.
NoiseParams = NoiseSource


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
    from mwr_dask.measured import SpectrumNoise

    try:
        return NoiseParams(
            cubesize=int(kv["cube"]),
            seed=int(kv["seed"]),
            voxel_size=float(kv.get("voxel", "1")),
            spectrum=SpectrumNoise("", kv["spectrum"]),
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
    from mwr_dask.filters import filter_problems

    errors += filter_problems(
        getattr(p, "filter", "none"),
        getattr(p, "radial", None),
        getattr(p, "sirt_iterations", None),
        3 if spectrum is not None else p.mode,
    )
    return errors


def source_problems(source) -> list[str]:
    """Problems with the parameters of a source alone (no count or start), one sentence each."""
    return validate(source, 1, 0)


def tilts_of(params: NoiseParams):
    """Tilt angles of ``params``, degrees; with tilt schemes, those of every scheme together.

    (What a worker's cached mode-1 operators hold: one per scheme.)
    """
    from mwr_dask.geometry import tilt_angles

    schemes = getattr(params, "tilt_schemes", ())
    if schemes:
        import numpy as np

        unique = {s.angle_tuple: s for s in schemes}.values()  # equal schemes share one
        return np.concatenate([s.angles for s in unique])
    return tilt_angles(params.minangle, params.maxangle, params.anglestep)
