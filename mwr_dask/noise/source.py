"""The noise as a library: :class:`NoiseSource`, the one parameter object of every run.

``source[i]`` is exactly the data ``generate-noise`` writes to ``n_<i>.mrc``, on any machine.
The source pickles to a few hundred bytes; its generators are built and cached once per
process (:mod:`mwr_dask.noise.generators`), never pickled. numpy and scipy are imported on
first use only, so that the command line validates its options at once.
"""

from __future__ import annotations

import functools
import math
import numbers
import operator
import os
import re
import secrets
import struct
from collections.abc import Iterator, Sequence
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any, overload

from mwr_dask import __version__
from mwr_dask.noise.exactmath import shortest
from mwr_dask.noise.filters import FilterSpec, filter_problems, make_filter

if TYPE_CHECKING:
    import numpy as np

    from mwr_dask.noise.schemes import TiltScheme

MODES = {1: "back-projection", 2: "wedge filter", 3: "measured spectrum"}
#: Names of output volumes; nothing else is ever written to the output folder.
NAME_PATTERN = re.compile(r"^n_(\d{5,})\.mrc$")
#: Seeds are below 2^128 (what ``SeedSequence().entropy`` draws): the label keeps 80 characters.
SEED_LIMIT = 2**128
#: Most tilts of a regular range in mode 1 (a 0.012 degree step over 120 degrees); real series
#: have ~60 (tilt files: :data:`mwr_dask.noise.schemes.MAX_VIEWS` views per file).
MAX_TILTS = 10_000
#: Longest MRC header label, characters (the format's fixed field).
LABEL_CHARS = 80
#: Smallest normal and largest float32 (the MRC header's cell sizes are float32).
F32_TINY, F32_MAX = 2.0**-126, (2 - 2.0**-23) * 2.0**127
#: Tolerance of :func:`mwr_dask.noise.geometry.tilt_angles` on the last tilt, degrees.
_TILT_EPS = 1e-6


@functools.lru_cache(maxsize=1)
def numerics_label() -> str:
    """MRC label with the numpy and scipy versions (read from metadata): they fix the bytes."""
    from importlib.metadata import version

    return f"numpy={version('numpy')} scipy={version('scipy')}"


def fresh_seed() -> int:
    """Draw a new random root seed: 128 bits from the operating system."""
    return secrets.randbits(128)


def volume_name(index: int) -> str:
    """File name of volume ``index``: ``n_{index:05d}.mrc``."""
    return f"n_{index:05d}.mrc"


@dataclass(frozen=True)
class NoiseSource:
    """Everything that defines a set of noise volumes; volume i is a pure function of it and i.

    Parameters
    ----------
    cubesize : int
        Cube side, voxels.
    mode : int
        1 = back-projection of 2-D white-noise images over the tilts, 2 = 3-D white noise
        through the binary missing-wedge filter; 3 (set by ``spectrum``) = measured spectrum.
    minangle, maxangle, anglestep : float
        Tilt range and step, degrees (the step matters for mode 1 only).
    seed : int or None
        Root seed; volume i draws from ``SeedSequence(seed, spawn_key=(i,))``. None draws a
        fresh 128-bit seed, kept as ``source.seed``.
    voxel_size : float
        Header voxel size, angstroms (changes the data only through dose weighting).
    tilt_schemes : tuple of TiltScheme
        Replace the regular range: volume i uses scheme ``i mod len(tilt_schemes)`` and is
        byte-identical to volume i of a source with that scheme alone and the same seed.
    spectrum : SpectrumNoise, path or None
        A ``measure-noise`` spectrum; ``cubesize`` must equal its cube.
    filter, radial, sirt_iterations
        Mode 1's reconstruction filter (:mod:`mwr_dask.noise.filters`); ``radial`` is the
        cutoff and Gaussian fall-off, cycles/pixel; None takes IMOD's defaults.
    dose_weighting, voltage, doses
        ``none``, ``grant-grigorieff`` or ``bfactor`` (:mod:`mwr_dask.noise.dose`); kV (300,
        200 or 100); the regular range's pre-exposure per tilt, ascending angle, e/A^2 (tilt
        schemes carry their own).

    Integer fields refuse ``bool`` and floats such as ``16.0``. Invalid parameters raise
    ValueError, one sentence per problem, named after the command-line options.

    Examples
    --------
    >>> from mwr_dask import NoiseSource
    >>> source = NoiseSource(32, mode=2, minangle=-50, maxangle=50, seed=7)
    >>> v = source[3]
    >>> v.shape, v.dtype.name
    ((32, 32, 32), 'float32')
    >>> round(float(v.std()), 3)
    1.0
    """

    cubesize: int
    mode: int = 1
    minangle: float = -60.0
    maxangle: float = 60.0
    anglestep: float = 2.0
    seed: int | None = None
    voxel_size: float = 1.0
    tilt_schemes: tuple[TiltScheme, ...] = ()
    spectrum: Any = None
    filter: str = "none"
    radial: tuple[float, float] | None = None
    sirt_iterations: int | None = None
    dose_weighting: str = "none"
    voltage: float = 300.0
    doses: tuple[float, ...] | None = None

    def __post_init__(self) -> None:
        set_field = functools.partial(object.__setattr__, self)
        for name, value in _typed_fields(self).items():
            set_field(name, value)
        if self.seed is None:
            set_field("seed", fresh_seed())
        if self.spectrum is not None:
            from mwr_dask.noise.measured import SpectrumNoise, spectrum_noise

            if not isinstance(self.spectrum, SpectrumNoise):
                set_field("spectrum", spectrum_noise(Path(self.spectrum)))
            set_field("mode", 3)
        problems = self.problems()
        if problems:
            raise ValueError(" ".join(problems))
        if self.filter != "none":  # record the defaults the filter takes
            spec = self.filter_spec
            if spec.cutoff is not None:
                set_field("radial", (spec.cutoff, spec.falloff))
            set_field("sirt_iterations", spec.sirt_iterations)

    # ------------------------------------------------------------------ validation

    def problems(self) -> list[str]:
        """Why these parameters cannot make volumes, one sentence each (empty when they can)."""
        errors = []
        if self.cubesize < 2:
            errors.append(f"CUBESIZE must be at least 2 voxels, not {self.cubesize}.")
        if self.spectrum is not None:
            if self.tilt_schemes:
                errors.append("a measured spectrum (mode 3) takes no tilt schemes.")
            if self.spectrum.path and self.spectrum.n != self.cubesize:
                errors.append(
                    f"CUBESIZE ({self.cubesize}) must equal the cube of the spectrum"
                    f" {self.spectrum.path} ({self.spectrum.n})."
                )
        elif self.mode not in (1, 2):
            errors.append(
                f"--mode must be 1 (back-projection) or 2 (wedge filter), not {self.mode}."
            )
        errors += _range_problems(self.minangle, self.maxangle, self.anglestep, self.mode)
        errors += _voxel_problems(self.voxel_size, self.cubesize)
        if not 0 <= self.seed < SEED_LIMIT:
            errors.append(f"--seed must be 0 or more and less than 2^128, not {self.seed}.")
        errors += filter_problems(self.filter, self.radial, self.sirt_iterations, self.mode)
        errors += self._dose_problems()
        if not errors:  # the labels of a valid source only: their numbers are all sane by now
            errors += self.label_problems(0)
        return errors

    def run_problems(self, count: int, start: int = 0) -> list[str]:
        """Why volumes ``start .. start + count - 1`` cannot be written, one sentence each."""
        errors = []
        for name, value, least in (("NUMBER_VOLUME", count, "at least 1"), ("--start", start,
                                   "0 or more")):  # fmt: skip
            if not _is_int(value):
                errors.append(f"{name} must be a whole number, not {value!r}.")
            elif value < (1 if name == "NUMBER_VOLUME" else 0):
                errors.append(f"{name} must be {least}, not {value}.")
        return errors or self._range_dose_problems() or self.label_problems(start + count - 1)

    def label_problems(self, last_index: int) -> list[str]:
        """Labels the header cannot hold; the last index's with the largest seed are the longest."""
        for label in self._labels(last_index, SEED_LIMIT - 1):
            if len(label) > LABEL_CHARS or not (label.isascii() and label.isprintable()):
                return [
                    f"the header label {label[:100]!r} of volume {last_index} is {len(label)}"
                    f" characters, more than the {LABEL_CHARS} an MRC header holds: give the"
                    " angles and the voxel size with fewer digits, or a smaller --start."
                ]
        return []

    def _dose_problems(self) -> list[str]:
        """Problems of the dose weighting, one sentence each (the range's: on use)."""
        if self.dose_weighting == "none":
            return [] if self.doses is None else ["doses apply with --dose-weighting."]
        from mwr_dask.noise import dose

        if self.dose_weighting not in dose.MODELS:
            return [f"--dose-weighting must be one of {', '.join(dose.MODELS)}, not"
                    f" {self.dose_weighting!r}."]  # fmt: skip
        if self.spectrum is not None:
            return [
                "--dose-weighting does not apply to a measured spectrum (mode 3): the dose"
                " weighting of the tomograms it was measured from is already in it."
            ]
        errors = []
        if self.dose_weighting == "grant-grigorieff" and self.voltage not in dose.CRITICAL_SCALE:
            errors.append(
                f"--voltage must be 300, 200 or 100 kV (RELION scales the critical exposure by"
                f" 0.8 at 200 kV and 0.64 at 100 kV), not {self.voltage:g}."
            )
        if self.tilt_schemes:
            if self.doses is not None:
                errors.append("doses apply to the regular range; tilt schemes carry their own.")
            for scheme in self.tilt_schemes:
                why = next((n for n in scheme.notes if "<Dose>" in n), "")
                where = f"Tilt file {scheme.source}"
                errors += dose.dose_problems(dose.file_doses(scheme), where, why)
        elif self.doses is not None:
            errors += dose.dose_problems(self.doses, f"The range {self.tilt}")
        return errors

    def _range_dose_problems(self) -> list[str]:
        """Why the range's doses cannot weight its tilts (not on creation: labels lack them)."""
        if self.dose_weighting == "none" or self.tilt_schemes or self.spectrum is not None:
            return []
        if self.doses is None:
            return [
                "dose weighting of the regular tilt range needs each tilt's pre-exposure: give"
                " --dose-per-tilt and --acquisition (or a --tilt-file)."
            ]
        tilts = len(self.tilts(0))
        if len(self.doses) != tilts:
            return [f"doses: {len(self.doses)} values for the {tilts} tilts of {self.tilt}."]
        return []

    # ------------------------------------------------------------------ description

    @property
    def filter_spec(self) -> FilterSpec:
        """The reconstruction filter as a :class:`mwr_dask.noise.filters.FilterSpec`."""
        return make_filter(self.filter, self.radial, self.sirt_iterations)

    @property
    def dose_label(self) -> str:
        """The dose weighting as its label writes it: ``dose=grant-grigorieff kv=300``."""
        if self.dose_weighting in ("none", "bfactor"):
            return f"dose={self.dose_weighting}"
        return f"dose={self.dose_weighting} kv={shortest(self.voltage)}"

    @property
    def volume_bytes(self) -> int:
        """Bytes of one volume file (1024-byte header + float32 data)."""
        return 1024 + 4 * self.cubesize**3

    @property
    def tilt(self) -> str:
        """Tilt range as ``min:max:step``, degrees."""
        return f"{shortest(self.minangle)}:{shortest(self.maxangle)}:{shortest(self.anglestep)}"

    @property
    def schemes_record(self) -> str:
        """``K:digest`` of the tilt schemes (and their doses if dose-weighted), '' if none."""
        return self.mixture_record(self.dose_weighting != "none")

    def mixture_record(self, doses: bool) -> str:
        """``K:digest`` of the schemes' angle lists, and of their doses if ``doses``."""
        if not self.tilt_schemes:
            return ""
        import hashlib

        if doses:
            from mwr_dask.noise.dose import dose_digest, file_doses

            parts = [f"{s.digest}/{dose_digest(file_doses(s) or ())}" for s in self.tilt_schemes]
        else:
            parts = [s.digest for s in self.tilt_schemes]
        joined = ",".join(parts)
        return f"{len(self.tilt_schemes)}:{hashlib.sha256(joined.encode()).hexdigest()[:12]}"

    def dose_weights(self, index: int):
        """Return the :class:`~mwr_dask.noise.dose.DoseWeights` of volume ``index`` (or None)."""
        if self.dose_weighting == "none":
            return None
        from mwr_dask.noise.dose import DoseWeights, file_doses

        problems = self._range_dose_problems()
        if problems:
            raise ValueError(problems[0])
        scheme = self.scheme_of(index)
        doses = self.doses if scheme is None else file_doses(scheme)
        return DoseWeights(
            self.dose_weighting, self.voltage, self.voxel_size, self.tilts(index), doses
        )

    def scheme_of(self, index: int) -> TiltScheme | None:
        """Tilt scheme of volume ``index`` (``index mod K``), or None for the regular range."""
        if not self.tilt_schemes:
            return None
        return self.tilt_schemes[index % len(self.tilt_schemes)]

    def tilts(self, index: int) -> tuple[float, ...]:
        """Tilt angles of volume ``index``, degrees, ascending: its scheme's, or the range's."""
        scheme = self.scheme_of(index)
        if scheme is not None:
            return scheme.angle_tuple
        return _range_tilts(self.minangle, self.maxangle, self.anglestep)

    def wedge(self, index: int) -> tuple[float, float]:
        """Tilt range of volume ``index``'s continuous wedge (mode 2), degrees."""
        scheme = self.scheme_of(index)
        if scheme is not None:
            return scheme.minangle, scheme.maxangle
        return self.minangle, self.maxangle

    def labels(self, index: int) -> list[str]:
        """MRC header labels recording the provenance of volume ``index`` (<= 80 chars each).

        Without a filter or dose weighting they are those of folders made before either
        existed; dose weighting records the doses to 0.25 e/A^2 (``dq1=`` .. ``dq4=``).
        """
        return self._labels(index, self.seed)

    def _labels(self, index: int, seed: int) -> list[str]:
        head = f"mwr-dask {__version__} mode={self.mode} cube={self.cubesize}"
        second = f"seed={seed} voxel={shortest(self.voxel_size)}"
        if self.spectrum is not None:
            name = Path(self.spectrum.path).name if self.spectrum.path else "?"
            return [
                f"{head} spectrum={self.spectrum.digest} index={index}",
                second,
                numerics_label(),
                f"spectrum-file={name}"[:80],
            ]
        if not self.tilt_schemes:
            labels = [f"{head} tilt={self.tilt} index={index}", second, numerics_label()]
        else:
            k = len(self.tilt_schemes)
            labels = [
                f"{head} schemes={self.schemes_record} index={index}",
                second,
                f"scheme={index % k + 1}/{k} {self.scheme_of(index).label}",
                numerics_label(),
            ]
        if self.filter != "none":
            labels.append(self.filter_spec.label())
        if self.dose_weighting != "none" and self._range_dose_problems():
            labels.append(self.dose_label)  # a range without doses: made no volume
        elif self.dose_weighting != "none":
            from mwr_dask.noise.dose import dose_digest, profile_labels

            doses = self.dose_weights(index).doses
            labels += [f"{self.dose_label} dsha={dose_digest(doses)}", *profile_labels(doses)]
        return labels

    def describe(self, seed: str | None = None) -> str:
        """One line for people; ``seed`` replaces the seed's number (``--dry-run``, fresh seed)."""
        seed = str(self.seed) if seed is None else seed
        if self.spectrum is not None:
            name = f" {Path(self.spectrum.path).name}" if self.spectrum.path else ""
            return (
                f"mode 3 (measured spectrum{name}, digest {self.spectrum.digest}),"
                f" {self.cubesize}^3 voxels, seed {seed}"
            )
        if self.tilt_schemes:
            k = len(self.tilt_schemes)
            tilts = f"{k} tilt scheme{'s' * (k != 1)} ({self.schemes_record})"
        else:
            tilts = f"tilts {self.tilt} deg"
        text = (
            f"mode {self.mode} ({MODES[self.mode]}), {self.cubesize}^3 voxels, {tilts}, seed {seed}"
        )
        if self.filter != "none":
            text += f", {self.filter_spec.describe()}"
        if self.dose_weighting != "none":
            kv = f" at {shortest(self.voltage)} kV" if self.dose_weighting != "bfactor" else ""
            text += f", {self.dose_weighting} dose weighting{kv}"
        return text

    def as_dict(self) -> dict:
        """Plain dictionary of the fields."""
        return asdict(self)

    # ------------------------------------------------------------------ memory

    def _generator_bytes(self) -> list[tuple[int, int]]:
        """(kept, in-flight) bytes of each distinct generator of this source."""
        from mwr_dask.noise.generators import generator_bytes

        n = self.cubesize
        if self.spectrum is not None:
            return [generator_bytes(3, n)]
        count, dosed = max(len(self.tilt_schemes), 1), self.dose_weighting != "none"
        if self.mode == 2:
            wedges = {(self.wedge(i), self.dose_weights(i)) for i in range(count)}
            return [generator_bytes(2, n, w, dosed=dosed) for w, _ in wedges]
        filtered = self.filter != "none"
        tilts = {(self.tilts(i), self.dose_weights(i)) for i in range(count)}
        return [generator_bytes(1, n, t, filtered=filtered, dosed=dosed) for t, _ in tilts]

    def cached_bytes(self) -> int:
        """Bytes a worker keeps for this source's generators (one per distinct geometry)."""
        return sum(kept for kept, _ in self._generator_bytes())

    def peak_bytes(self) -> int:
        """Estimated peak memory of a worker making and writing volumes of this source, bytes."""
        from mwr_dask.noise.generators import peak_bytes

        sizes = self._generator_bytes()
        kept = sum(k for k, _ in sizes)
        return peak_bytes(kept, max(f for _, f in sizes), self.cubesize)

    # ------------------------------------------------------------------ volumes

    def generator(self, index: int):
        """Return the generator of volume ``index`` (built once per process, on first use)."""
        if self.spectrum is not None:
            return self.spectrum  # its amplitude is read once per process and cached
        from mwr_dask.noise.generators import backprojection, wedge_filter

        dose = self.dose_weights(index)
        if self.mode == 2:
            return wedge_filter(self.cubesize, *self.wedge(index), dose)
        return backprojection(self.cubesize, self.tilts(index), self.filter_spec, dose)

    def volume(self, index: int) -> np.ndarray:
        """Volume ``index``: float32, axes (z, y, x), mean 0 and standard deviation 1.

        Exactly the data ``generate-noise`` writes to ``n_<index>.mrc`` with these parameters.
        """
        index = operator.index(index)
        if index < 0:
            raise IndexError(f"volume indices start at 0, not {index}")
        from mwr_dask.noise.normals import volume_rng

        return self.generator(index)(volume_rng(self.seed, index))

    def __getitem__(self, index: int) -> np.ndarray:
        """``source[i]`` is ``source.volume(i)``."""
        return self.volume(index)

    def take(self, count: int, start: int = 0) -> NoiseVolumes:
        """Volumes ``start .. start + count - 1``, lazily: a map-style dataset for PyTorch."""
        return NoiseVolumes(self, operator.index(count), operator.index(start))


class NoiseVolumes(Sequence):
    """Volumes ``start .. start + count - 1`` of a source, computed on access (a Sequence)."""

    def __init__(self, source: NoiseSource, count: int, start: int = 0) -> None:
        if count < 0 or start < 0:
            raise ValueError(f"count and start must be 0 or more, not {count} and {start}")
        self.source, self.count, self.start = source, count, start

    def __len__(self) -> int:
        return self.count

    @overload
    def __getitem__(self, k: int) -> np.ndarray: ...
    @overload
    def __getitem__(self, k: slice) -> NoiseVolumes: ...
    def __getitem__(self, k):
        """Volume ``start + k``, or a slice of the sequence (step 1 only)."""
        if isinstance(k, slice):
            lo, hi, step = k.indices(self.count)
            if step != 1:
                raise ValueError("NoiseVolumes slices take step 1 only")
            return NoiseVolumes(self.source, max(hi - lo, 0), self.start + lo)
        k = operator.index(k)
        if k < 0:
            k += self.count
        if not 0 <= k < self.count:
            raise IndexError(f"index out of range for {self.count} volumes")
        return self.source.volume(self.start + k)

    def __iter__(self) -> Iterator[np.ndarray]:
        for k in range(self.count):
            yield self.source.volume(self.start + k)

    def __repr__(self) -> str:
        return f"NoiseVolumes({self.source!r}, count={self.count}, start={self.start})"


# -------------------------------------------------------------------- fields and their checks


def _is_int(value) -> bool:
    return isinstance(value, numbers.Integral) and not isinstance(value, bool)


def _is_real(value) -> bool:
    return isinstance(value, numbers.Real) and not isinstance(value, bool)


def _typed_fields(source: NoiseSource) -> dict[str, Any]:
    """Return the fields of ``source`` as Python ints, floats, tuples; ValueError if mistyped."""
    out: dict[str, Any] = {}
    errors = []
    for name in ("cubesize", "mode", "seed", "sirt_iterations"):
        value = getattr(source, name)
        if value is None and name in ("seed", "sirt_iterations"):
            continue
        if _is_int(value):
            out[name] = int(value)
        else:
            errors.append(f"{name} must be a whole number, not {value!r}.")
    for name in ("minangle", "maxangle", "anglestep", "voxel_size"):
        value = getattr(source, name)
        if _is_real(value):
            out[name] = float(value)
        else:
            errors.append(f"{name} must be a number, not {value!r}.")
    if not isinstance(source.filter, str):
        errors.append(f"filter must be a name such as 'ramp', not {source.filter!r}.")
    if not isinstance(source.dose_weighting, str):
        errors.append(
            f"dose_weighting must be a name such as 'bfactor', not {source.dose_weighting!r}."
        )
    if _is_real(source.voltage):
        out["voltage"] = float(source.voltage)
    else:
        errors.append(f"voltage must be a number of kV, not {source.voltage!r}.")
    if source.doses is not None:
        doses = tuple(source.doses) if isinstance(source.doses, Sequence) else (None,)
        if all(_is_real(d) for d in doses):
            out["doses"] = tuple(float(d) for d in doses)
        else:
            errors.append(f"doses must be numbers (e/A^2), not {source.doses!r}.")
    if source.radial is not None:
        pair = tuple(source.radial) if isinstance(source.radial, Sequence) else ()
        if len(pair) == 2 and all(_is_real(v) for v in pair):
            out["radial"] = tuple(float(v) for v in pair)
        else:
            errors.append(f"radial must be two numbers (cutoff, falloff), not {source.radial!r}.")
    schemes = source.tilt_schemes
    if schemes:
        from mwr_dask.noise.schemes import TiltScheme

        if isinstance(schemes, TiltScheme) or not all(isinstance(s, TiltScheme) for s in schemes):
            errors.append("tilt_schemes must hold TiltScheme objects (read_tilt_file).")
        else:
            out["tilt_schemes"] = tuple(schemes)
    spectrum = source.spectrum
    if spectrum is not None and not isinstance(spectrum, str | os.PathLike):
        from mwr_dask.noise.measured import SpectrumNoise

        if not isinstance(spectrum, SpectrumNoise):
            errors.append(f"spectrum must be a spectrum file, not {spectrum!r}.")
    if errors:
        raise ValueError(" ".join(errors))
    return out


def _range_problems(lo: float, hi: float, step: float, mode: int) -> list[str]:
    """Problems of the regular tilt range, one sentence each."""
    errors = []
    for name, value in (("--minangle", lo), ("--maxangle", hi)):
        if not -90.0 < value < 90.0:
            errors.append(f"{name} must lie strictly between -90 and 90 degrees, not {value:g}.")
    if lo >= hi:
        errors.append(f"--minangle ({lo:g}) must be smaller than --maxangle ({hi:g}).")
    elif not (math.isfinite(step) and step > 0):
        errors.append(f"--anglestep must be positive and finite, not {step:g}.")
    elif mode == 1 and step > hi - lo:
        errors.append(
            f"--anglestep ({step:g}) is wider than the tilt range {lo:g}..{hi:g}:"
            " back-projection needs at least two tilts."
        )
    elif mode == 1 and (hi - lo) / step + _TILT_EPS >= MAX_TILTS:  # floor(...) + 1 tilts
        errors.append(
            f"--anglestep {step:g} makes more than {MAX_TILTS:,} tilts over {lo:g}..{hi:g};"
            " give a coarser step."
        )
    return errors


def _voxel_problems(voxel: float, n: int) -> list[str]:
    """Why the header cannot store the voxel size (float32 cell of ``n`` voxels), if it cannot."""
    if not (math.isfinite(voxel) and voxel > 0):
        return [f"--voxel-size must be positive and finite, not {voxel:g}."]
    cell = _float32(voxel * max(n, 1))
    if not (F32_TINY <= cell < math.inf and _float32(cell / max(n, 1)) > 0):
        return [
            f"--voxel-size {voxel:g} cannot be stored in the MRC header (float32: the cell of"
            f" {n} voxels must lie between {F32_TINY:.3g} and {F32_MAX:.3g} angstroms)."
        ]
    return []


def _float32(value: float) -> float:
    """``value`` rounded to float32 (inf beyond its range), without numpy."""
    try:
        return struct.unpack("<f", struct.pack("<f", value))[0]
    except OverflowError:
        return math.copysign(math.inf, value)


@functools.lru_cache(maxsize=64)
def _range_tilts(lo: float, hi: float, step: float) -> tuple[float, ...]:
    from mwr_dask.noise.geometry import tilt_angles

    return tuple(tilt_angles(lo, hi, step).tolist())


def tilts_of(source: NoiseSource) -> np.ndarray:
    """Tilt angles of ``source``, degrees; with tilt schemes, those of every scheme together."""
    import numpy as np

    count = max(len(source.tilt_schemes), 1)
    unique = dict.fromkeys(source.tilts(i) for i in range(count))
    return np.concatenate([np.asarray(t, dtype=np.float64) for t in unique])


# -------------------------------------------------------------------- reading labels back


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


def source_from_labels(labels: list[str]) -> NoiseSource | None:
    """Rebuild the parameters recorded in a volume's labels, or None if they are not there.

    A tilt scheme's volume comes back as its range and mean step (labels hold no angles), a
    spectrum as its digest only, doses to 0.25 e/A^2.
    """
    kv = parse_labels(labels)
    try:
        common = {
            "cubesize": int(kv["cube"]),
            "seed": int(kv["seed"]),
            "voxel_size": float(kv.get("voxel", "1")),
        }
        if "spectrum" in kv:
            from mwr_dask.noise.measured import SpectrumNoise

            return NoiseSource(**common, spectrum=SpectrumNoise("", kv["spectrum"]))
        radial = None
        if "radial" in kv:
            cutoff, falloff = (float(v) for v in kv["radial"].split(","))
            radial = (cutoff, falloff)
        if "schemes" in kv and "tilt" not in kv:
            lo, hi = (float(v) for v in kv["tilts"].split(".."))
            step = (hi - lo) / max(int(kv["n"]) - 1, 1)
        else:
            lo, hi, step = (float(v) for v in kv["tilt"].split(":"))
        dose = {}
        if "dose" in kv:
            from mwr_dask.noise.dose import profile_doses

            dose = {"dose_weighting": kv["dose"], "voltage": float(kv.get("kv", "300"))}
            dose["doses"] = profile_doses(kv)
        return NoiseSource(
            **common,
            mode=int(kv["mode"]),
            minangle=lo,
            maxangle=hi,
            anglestep=step,
            filter=kv.get("filter", "none"),
            radial=radial,
            sirt_iterations=int(kv["sirt"]) if "sirt" in kv else None,
            **dose,
        )
    except (KeyError, ValueError):
        return None
