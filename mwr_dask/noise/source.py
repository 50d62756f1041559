"""The noise as a library: :class:`NoiseSource`, a pure function from an index to a volume.

A :class:`NoiseSource` holds everything that defines the noise (cube size, mode, tilts, seed,
voxel size). ``source.volume(i)`` (or ``source[i]``) returns exactly the data that
``mwr-dask generate-noise`` writes to ``n_<i>.mrc`` with the same parameters, on any machine,
in any process. The source is a small frozen dataclass: it pickles to a few hundred bytes, so
it travels cheaply to Dask workers and to PyTorch ``DataLoader`` workers; the operators a
volume needs (the back-projection matrix, the wedge mask) are built once per process, on
first use, and cached there (:func:`mwr_dask.noise.generators.generator_for`), never pickled.

Views of a source:

- :meth:`NoiseSource.take`: a sequence of ``count`` volumes (``len``, indexing, slicing), a
  map-style dataset for PyTorch without importing torch;
- :func:`mwr_dask.to_dask` (the Dask layer, :mod:`mwr_dask.parallel.arrays`): a lazy
  ``dask.array`` of shape (count, n, n, n).

Nothing here imports Dask, numpy or scipy at import time: they are imported when a volume or
an array is first asked for.
"""

from __future__ import annotations

import functools
import math
import re
import secrets
import struct
from collections.abc import Iterator, Sequence
from dataclasses import MISSING, asdict, dataclass, fields
from pathlib import Path
from typing import TYPE_CHECKING, Any, overload

from mwr_dask import __version__

if TYPE_CHECKING:
    import numpy as np

    from mwr_dask.noise.schemes import TiltScheme

MODES = {1: "back-projection", 2: "wedge filter", 3: "measured spectrum"}


@functools.lru_cache(maxsize=1)
def numerics_label() -> str:
    """MRC label with the numpy and scipy versions: with mwr-dask's, they fix the bytes.

    Read from the installed packages' metadata, so that numpy and scipy are not imported.
    """
    from importlib.metadata import version

    return f"numpy={version('numpy')} scipy={version('scipy')}"


def _num(value: float) -> str:
    """Shortest text that reads back as exactly ``value`` (integers without a point)."""
    value = float(value)
    return str(int(value)) if value.is_integer() else repr(value)


def fresh_seed() -> int:
    """Draw a new random root seed: 128 bits from the operating system."""
    return secrets.randbits(128)


@dataclass(frozen=True)
class NoiseSource:
    """Everything that defines a set of noise volumes; volume i is a pure function of it and i.

    Parameters
    ----------
    cubesize : int
        Cube side, voxels (the training ``--cube_size``).
    mode : int
        1 = back-projection of 2-D white-noise images over the tilts, 2 = 3-D white noise
        through the binary missing-wedge filter.
    minangle, maxangle, anglestep : float
        Tilt range and step, degrees (the step matters for mode 1 only).
    seed : int or None
        Root seed; volume i draws from ``SeedSequence(seed, spawn_key=(i,))``. None draws a
        fresh 128-bit seed, kept as ``source.seed``.
    voxel_size : float
        Voxel size written to the MRC header, angstroms (it does not change the data).
    tilt_schemes : tuple of TiltScheme
        Tilt schemes read from the dataset's tilt files (:mod:`mwr_dask.noise.schemes`). Empty:
        the regular range above. Otherwise they replace it: volume i uses scheme
        ``i mod len(tilt_schemes)`` and is byte-identical to volume i of a source with that
        scheme alone and the same seed (mode 1 back-projects exactly its used angles, mode 2
        uses the wedge of their continuous range).
    spectrum : SpectrumNoise, path or None
        A measured noise spectrum (``mwr-dask measure-noise``): its file, or the small
        reference (path + digest) :class:`mwr_dask.noise.measured.SpectrumNoise`. Volume i is then
        Gaussian noise with exactly that spectrum, the mode is 3 and the tilt fields are not
        used; ``cubesize`` must equal the spectrum's cube. The array is read once per
        process, never pickled with the source.
    filter : str
        Mode 1's reconstruction filter (:mod:`mwr_dask.noise.filters`): ``none`` (the unfiltered
        back-projection), ``ramp``, ``shepp-logan``, ``cosine``, ``hamming``, ``hann``,
        ``imod``, ``sirt-like``, ``aretomo``.
    radial : tuple of float or None
        ``imod`` and ``sirt-like`` only: radial cutoff and Gaussian sigma of the fall-off,
        cycles/pixel; None takes IMOD's default (0.35, 0.035), recorded as such.
    sirt_iterations : int or None
        ``sirt-like`` only: IMOD's ``FakeSIRTiterations``; None takes 10, recorded as such.

    Raises
    ------
    ValueError
        Parameters that cannot make a volume, one sentence per problem, named after the
        command-line options.

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

    def __post_init__(self) -> None:
        if self.seed is None:
            object.__setattr__(self, "seed", fresh_seed())
        if self.tilt_schemes:
            from mwr_dask.noise.schemes import TiltScheme

            schemes = tuple(self.tilt_schemes)
            if not all(isinstance(s, TiltScheme) for s in schemes):
                raise ValueError("tilt_schemes must hold TiltScheme objects (read_tilt_file).")
            object.__setattr__(self, "tilt_schemes", schemes)
        if self.spectrum is not None:
            from mwr_dask.noise.measured import SpectrumNoise, spectrum_noise

            if self.tilt_schemes:
                raise ValueError("a measured spectrum (mode 3) takes no tilt schemes.")
            if not isinstance(self.spectrum, SpectrumNoise):
                object.__setattr__(self, "spectrum", spectrum_noise(Path(self.spectrum)))
            object.__setattr__(self, "mode", 3)
        problems = source_problems(self)
        if problems:
            raise ValueError(" ".join(problems))
        if self.filter != "none":  # record the defaults the filter takes
            spec = self.filter_spec
            if spec.cutoff is not None:
                object.__setattr__(self, "radial", (spec.cutoff, spec.falloff))
            object.__setattr__(self, "sirt_iterations", spec.sirt_iterations)

    @property
    def filter_spec(self):
        """The reconstruction filter as a :class:`mwr_dask.noise.filters.FilterSpec`."""
        from mwr_dask.noise.filters import make_filter

        radial = None if self.radial is None else tuple(float(v) for v in self.radial)
        return make_filter(self.filter, radial, self.sirt_iterations)

    # ------------------------------------------------------------------ description

    @property
    def volume_bytes(self) -> int:
        """Bytes of one volume file (1024-byte header + float32 data)."""
        return 1024 + 4 * self.cubesize**3

    def peak_bytes(self) -> int:
        """Estimated peak memory of a worker making and writing volumes of this source, bytes.

        See :func:`mwr_dask.noise.generators.peak_bytes` (mode 3: that of mode 2's arrays).
        """
        from mwr_dask.noise.generators import peak_bytes

        filtered = self.filter != "none"
        return peak_bytes(self.mode, self.cubesize, tilt_count(self), filtered=filtered)

    @property
    def tilt(self) -> str:
        """Tilt range as ``min:max:step``, degrees."""
        return f"{_num(self.minangle)}:{_num(self.maxangle)}:{_num(self.anglestep)}"

    @property
    def schemes_record(self) -> str:
        """``K:digest`` of the tilt schemes (digest of their ordered angle lists), '' if none."""
        if not self.tilt_schemes:
            return ""
        import hashlib

        joined = ",".join(s.digest for s in self.tilt_schemes)
        return f"{len(self.tilt_schemes)}:{hashlib.sha256(joined.encode()).hexdigest()[:12]}"

    def scheme_of(self, index: int) -> TiltScheme | None:
        """Tilt scheme of volume ``index`` (``index mod K``), or None for the regular range."""
        if not self.tilt_schemes:
            return None
        return self.tilt_schemes[index % len(self.tilt_schemes)]

    def labels(self, index: int) -> list[str]:
        """MRC header labels recording the provenance of volume ``index`` (<= 80 chars each).

        With tilt schemes, ``tilt=`` gives way to ``schemes=K:digest`` (the whole mixture, for
        the folder guard) and a third label describes the volume's own scheme; a measured
        spectrum (mode 3) is named by its digest instead of tilts. A reconstruction filter
        adds a last label, e.g. ``filter=imod radial=0.35,0.035``; without one the labels are
        those of folders made before filters existed.
        """
        if self.spectrum is not None:
            name = Path(self.spectrum.path).name if self.spectrum.path else "?"
            return [
                f"mwr-dask {__version__} mode=3 cube={self.cubesize}"
                f" spectrum={self.spectrum.digest} index={index}",
                f"seed={self.seed} voxel={_num(self.voxel_size)}",
                numerics_label(),
                f"spectrum-file={name}"[:80],
            ]
        if not self.tilt_schemes:
            labels = [
                f"mwr-dask {__version__} mode={self.mode} cube={self.cubesize} tilt={self.tilt}"
                f" index={index}",
                f"seed={self.seed} voxel={_num(self.voxel_size)}",
                numerics_label(),
            ]
        else:
            k = len(self.tilt_schemes)
            labels = [
                f"mwr-dask {__version__} mode={self.mode} cube={self.cubesize}"
                f" schemes={self.schemes_record} index={index}",
                f"seed={self.seed} voxel={_num(self.voxel_size)}",
                f"scheme={index % k + 1}/{k} {self.scheme_of(index).label}",
                numerics_label(),
            ]
        if self.filter != "none":
            labels.append(self.filter_spec.label())
        return labels

    def describe(self, seed: str | None = None) -> str:
        """One line for people: mode, cube, tilts (or spectrum), seed, filter if any.

        ``seed`` replaces the seed's number in the text (``--dry-run`` of a fresh seed).
        """
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
            f"mode {self.mode} ({MODES.get(self.mode, '?')}), {self.cubesize}^3 voxels,"
            f" {tilts}, seed {seed}"
        )
        if self.filter != "none":
            text += f", {self.filter_spec.describe()}"
        return text

    def as_dict(self) -> dict:
        """Plain dictionary of the fields."""
        return asdict(self)

    # ------------------------------------------------------------------ volumes

    def generator(self, index: int):
        """Return the generator of volume ``index`` (built once per process, on first use).

        It is called with the volume's random generator and returns the volume.
        """
        if self.spectrum is not None:
            return self.spectrum  # its amplitude is read once per process and cached
        if self.tilt_schemes:
            from mwr_dask.noise.schemes import generator_for_scheme

            scheme = self.scheme_of(index)
            if self.filter == "none":
                return generator_for_scheme(self.mode, self.cubesize, scheme)
            return generator_for_scheme(self.mode, self.cubesize, scheme, self.filter_spec)
        from mwr_dask.noise.generators import generator_for

        args = (self.mode, self.cubesize, self.minangle, self.maxangle, self.anglestep)
        if self.filter == "none":
            return generator_for(*args)
        return generator_for(*args, self.filter_spec)

    def volume(self, index: int) -> np.ndarray:
        """Volume ``index``: float32, axes (z, y, x), mean 0 and standard deviation 1.

        Exactly the data ``generate-noise`` writes to ``n_<index>.mrc`` with these parameters.

        Raises
        ------
        IndexError
            ``index`` is negative.
        TypeError
            ``index`` is not an integer.
        """
        index = _as_index(index)
        if index < 0:
            raise IndexError(f"volume indices start at 0, not {index}")
        from mwr_dask.noise.generators import volume_rng

        return self.generator(index)(volume_rng(self.seed, index))

    def __getitem__(self, index: int) -> np.ndarray:
        """``source[i]`` is ``source.volume(i)``."""
        return self.volume(index)

    def take(self, count: int, start: int = 0) -> NoiseVolumes:
        """Return volumes ``start .. start + count - 1`` as a sequence (``len``, indexing).

        Item k is ``source.volume(start + k)``, computed when asked for. A PyTorch
        ``DataLoader`` accepts it as a map-style dataset.
        """
        return NoiseVolumes(self, _as_index(count), _as_index(start))


def _as_index(value) -> int:
    """``value`` as a Python int (numpy integers included); TypeError otherwise."""
    import operator

    return operator.index(value)


class NoiseVolumes(Sequence):
    """Volumes ``start .. start + count - 1`` of a source, computed on access.

    A read-only sequence: ``len``, ``volumes[k]`` (negative k counts from the end), slices
    (another :class:`NoiseVolumes`), iteration. It pickles as its source and two integers.
    """

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
        k = _as_index(k)
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


# ---------------------------------------------------------------- validation and labels

#: Names of output volumes; nothing else is ever written to the output folder.
NAME_PATTERN = re.compile(r"^n_(\d{5,})\.mrc$")
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


def source_from_labels(labels: list[str]) -> NoiseSource | None:
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
            return NoiseSource(
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
        return NoiseSource(
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


def _measured_from_labels(kv: dict[str, str]) -> NoiseSource | None:
    """Rebuild a mode-3 source from its labels: the spectrum known by its digest (no path)."""
    from mwr_dask.noise.measured import SpectrumNoise

    try:
        return NoiseSource(
            cubesize=int(kv["cube"]),
            seed=int(kv["seed"]),
            voxel_size=float(kv.get("voxel", "1")),
            spectrum=SpectrumNoise("", kv["spectrum"]),
        )
    except (KeyError, ValueError):
        return None


def tilt_count(params: NoiseSource) -> int:
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


def _cell_problem(p: NoiseSource) -> str | None:
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


def label_problems(params: NoiseSource, last_index: int) -> list[str]:
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


def validate(params: NoiseSource, number_volume: int, start: int) -> list[str]:
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


def tilts_of(params: NoiseSource):
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
