"""Noise measured from the user's even/odd half tomograms (pure numpy/scipy, no Dask).

Two half tomograms reconstructed from the even and the odd movie frames hold the same signal
and independent noise of the same statistics, so their difference ``ODD - EVEN`` holds noise
alone, with its real spectrum: detector MTF, dose weighting, binning, reconstruction filter,
the exact tilts and their missing wedge. This module estimates its 3-D power spectrum on the
grid of an N^3 cube (Hann-tapered cubes of stride N/2, Welch: a correlation of 0.17 per
overlapping axis, K_eff about K / 1.1), stores it as an MRC file and generates Gaussian noise
with that spectrum (:class:`SpectrumNoise`). The cubes, the taper, the variance of the
estimate, the file layout and the generation: docs/measured-noise.md. Arrays are (z, y, x),
Fourier arrays (kz, ky, kx).
"""

from __future__ import annotations

import functools
import hashlib
import io
import itertools
import math
import os
import stat
import threading
import warnings
from dataclasses import dataclass, field
from pathlib import Path

import mrcfile
import numpy as np
import scipy.fft
from mrcfile.dtypes import HEADER_DTYPE
from mrcfile.mrcinterpreter import MrcInterpreter

from mwr_dask import __version__
from mwr_dask.noise.inputs import read_regular
from mwr_dask.noise.normals import normalize, standard_normal

#: Most cubes used by default, and fewest accepted (relative error per Fourier pixel 5 %, 25 %).
MAX_CUBES = 400
MIN_CUBES = 16
#: Smallest cube side worth measuring.
MIN_CUBESIZE = 8
#: Fraction of each axis left out at each border.
BORDER_FRACTION = 0.05
#: A cube's octants need at least this fraction of the median variance of the difference.
MIN_VARIANCE_FRACTION = 0.25
#: Blocks of about 4^3 voxels need at least this fraction of the median difference variance.
FINE_FRACTION = 0.02
#: Blocks of about 4^3 voxels where more voxels than this equal their x neighbour are padding.
FLAT_FRACTION = 0.2
#: Above this rank correlation of local variances the difference holds signal (a warning).
STRUCTURE_WARNING = 0.2
MIN_STRUCTURE_BLOCKS = 200
#: Below this fraction of the median variance a region is taken as constant (padding).
CONSTANT_FRACTION = 1e-6
TAPERS = ("hann", "none")
#: Cubes Fourier transformed together.
BATCH = 8


#: Largest spectrum file read, bytes (a 512^3 float32 cube and its header).
SPECTRUM_BYTES = 4 * 512**3 + 2**20
#: Mean power a spectrum may have (measure-noise writes 1; float32 carries these through).
SPECTRUM_MEAN = (1e-6, 1e6)


class MeasureError(ValueError):
    """The halves, the mask or the request cannot give a spectrum; the message is one sentence."""


@dataclass(frozen=True)
class HalfInfo:
    """A half tomogram (or mask) in the labels: shape (z, y, x), voxel size (x, y, z) angstroms."""

    name: str
    shape: tuple[int, int, int]
    voxel_size: tuple[float, float, float]

    def describe(self) -> str:
        """``name`` with its size as x*y*z and voxel size, e.g. ``even.mrc 500x500x200 @5.4``."""
        z, y, x = self.shape
        return f"{self.name} {x}x{y}x{z} @{_num(self.voxel_size[0])}"


@dataclass(frozen=True)
class Measurement:
    """A measured noise spectrum and how it was made.

    ``spectrum``: float32 (N, N, N), axes (kz, ky, kx), fftshifted, mean 1, DC 0; ``positions``:
    (K, 3) (z, y, x) cube corners; ``usable``: cubes that fit (K of them used); ``variance``:
    mean variance of the difference in the cubes, ``signal_variance`` of (EVEN + ODD) / 2.
    """

    spectrum: np.ndarray = field(repr=False)
    positions: np.ndarray = field(repr=False)
    usable: int
    even: HalfInfo
    odd: HalfInfo
    mask: str | None
    seed: int
    variance: float
    signal_variance: float
    warnings: tuple[str, ...] = ()

    @property
    def cubesize(self) -> int:
        """N."""
        return int(self.spectrum.shape[0])

    @property
    def cubes(self) -> int:
        """K, the number of cubes averaged."""
        return len(self.positions)

    @property
    def voxel_size(self) -> float:
        """Voxel size of the halves (x), angstroms."""
        return self.even.voxel_size[0]

    @property
    def noise_ratio(self) -> float:
        """Noise std of (EVEN + ODD) / 2 (a quarter of ODD - EVEN's variance) over its std."""
        return math.sqrt(self.variance / 4 / self.signal_variance) if self.signal_variance else 0

    def labels(self) -> list[str]:
        """MRC labels (<= 80 printable ASCII characters each) recording the provenance."""
        return spectrum_labels(self.cubesize, self.cubes, self.even, self.odd, self.mask, self.seed)


def _num(value: float) -> str:
    value = float(value)
    return str(int(value)) if value.is_integer() else f"{value:.6g}"


def _fit(text: str, width: int = 80) -> str:
    """Printable ASCII of at most ``width`` characters (long names keep their end)."""
    text = "".join(c if c.isascii() and c.isprintable() else "?" for c in text)
    return text if len(text) <= width else "..." + text[-(width - 3) :]


def spectrum_labels(
    n: int, cubes: int, even: HalfInfo, odd: HalfInfo, mask: str | None, seed: int
) -> list[str]:
    """Labels of a spectrum file: tool and version, layout, the two halves, mask and seed."""
    return [
        f"mwr-dask {__version__} measured noise spectrum cube={n} cubes={cubes} taper=hann",
        "layout=fftshift axes=kz,ky,kx mean=1 dc=0 source=ODD-EVEN",
        _fit(f"even={even.describe()}"),
        _fit(f"odd={odd.describe()}"),
        _fit(f"mask={mask or 'none'} seed={seed}"),
    ]


# ---------------------------------------------------------------------------------------------
# reading


def mrc_extent(shape: tuple[int, ...], mode: int, nsymbt: int) -> int:
    """Bytes of an MRC file whose header gives ``shape``, ``mode`` and ``nsymbt``.

    Compare it with the file's size before mrcfile reads anything: mrcfile allocates the
    extended header a header claims (2 GiB for a corrupt one) before it looks at the file.
    """
    if min(shape) < 0 or nsymbt < 0:
        raise ValueError("the header gives negative sizes")
    try:
        itemsize = mrcfile.utils.dtype_from_mode(mode).itemsize
    except ValueError:
        raise ValueError(f"unknown MRC data mode {mode}") from None
    return 1024 + nsymbt + math.prod(shape) * itemsize


def _header_problem(path: Path) -> str | None:
    """Why ``path`` is not a regular file whose MRC header fits its size (None: it is)."""
    try:
        if not stat.S_ISREG(os.stat(path).st_mode):
            return "is not a file"
        with open(path, "rb") as f:
            size, raw = os.fstat(f.fileno()).st_size, f.read(1024)
    except OSError as err:
        return f"cannot be read: {err.strerror or err}"
    if len(raw) < 1024:
        return f"is not an MRC file ({len(raw)} bytes, shorter than a header)"
    h = np.frombuffer(raw, HEADER_DTYPE, count=1)[0]
    try:
        order = mrcfile.utils.byte_order_from_machine_stamp(h["machst"])
    except ValueError:
        order = "<"
    h = np.frombuffer(raw, HEADER_DTYPE.newbyteorder(order), count=1)[0]
    try:
        shape = (int(h["nz"]), int(h["ny"]), int(h["nx"]))
        extent = mrc_extent(shape, int(h["mode"]), int(h["nsymbt"]))
    except ValueError as err:
        return f"is not a readable MRC file ({err})"
    if size < extent:
        return f"is not a readable MRC file (its header gives {extent} bytes, it holds {size})"
    return None


def open_volume(path: Path, what: str) -> tuple[np.ndarray, HalfInfo, list[str]]:
    """Memory-map an MRC volume read-only: (data (z, y, x), its description, warnings).

    Only a file whose header's sizes fit it is opened (:func:`mrc_extent`), so memory stays
    bounded whatever the header says; one only permissive reading accepts gives a warning.
    """
    path = Path(path)
    who = f"{what} {path}" if what else "it"
    problem = _header_problem(path)
    if problem is not None:
        raise MeasureError(f"{who} {problem}.")
    notes = []
    try:
        mrc = mrcfile.mmap(path, mode="r", permissive=False)
    except (OSError, ValueError) as strict:
        try:
            with warnings.catch_warnings():
                warnings.simplefilter("ignore")
                mrc = mrcfile.mmap(path, mode="r", permissive=True)
        except (OSError, ValueError):
            mrc = None
        if mrc is None or mrc.data is None:
            raise MeasureError(f"{who} is not a readable MRC file ({strict}).") from None
        notes.append(f"{what} {path.name} has a non-standard MRC header ({strict}); read anyway.")
    data = mrc.data
    if data.ndim != 3 or min(data.shape) < 1:
        raise MeasureError(f"{who} is not a 3-D volume (shape {data.shape}).")
    if data.dtype.kind not in "fiu":
        raise MeasureError(f"{who} holds {data.dtype} data, not real numbers.")
    vs = mrc.voxel_size
    info = HalfInfo(
        name=path.name,
        shape=tuple(int(s) for s in data.shape),
        voxel_size=(float(vs.x), float(vs.y), float(vs.z)),
    )
    return data, info, notes


# ---------------------------------------------------------------------------------------------
# choice of cubes


def _grid(length: int, n: int) -> tuple[int, int, int]:
    """Block size, number of blocks and first voxel of the block grid along one axis."""
    h = max(1, n // 2)
    border = min(math.ceil(BORDER_FRACTION * length), (length - n) // 2)
    span = length - 2 * border
    count = span // h
    return h, count, border + (span - count * h) // 2


def _block_sums(slab: np.ndarray, f: int) -> np.ndarray:
    """Sum a slab (h, ny, nx) over blocks of side f (all divisible by f), in float64."""
    h, ny, nx = slab.shape
    # outer axis first (whole planes: contiguous and fast); f values in float32, the rest float64
    s = np.add.reduce(slab.reshape(h // f, f, ny, nx), axis=1, dtype=np.float32)
    s = s.reshape(h // f, ny // f, f, nx).sum(axis=2, dtype=np.float64)
    return s.reshape(h // f, ny // f, nx // f, f).sum(axis=3)


def _fine_size(h: int) -> int:
    """Side of the fine blocks that look for padding: the smallest divisor of h from 4 on."""
    return next((f for f in range(4, h) if h % f == 0), h)


def _coarse(fine: np.ndarray, q: int, how=np.sum) -> np.ndarray:
    """Combine q x q x q fine blocks into one (sum, or ``np.all`` of booleans)."""
    a, b, c = (s // q for s in fine.shape)
    return how(fine.reshape(a, q, b, q, c, q), axis=(1, 3, 5))


@dataclass(frozen=True)
class _Blocks:
    """Statistics of the difference and the halves on a grid of blocks of side N/2."""

    grid: list  # per axis (h, count, start)
    good: np.ndarray  # bool (bz, by, bx)
    sums: dict  # block sums of d, d2, e, e2, o, o2 (float64, (bz, by, bx))
    mean_d: float
    identical: bool
    structure: float  # rank correlation of local variances of ODD - EVEN and ODD + EVEN
    constant: tuple[str, ...]  # "EVEN", "ODD": the halves holding one value on the grid
    nonfinite: bool  # NaN or infinite values on the grid (their blocks are not good)


def _fine_sums(even, odd, mask, grid: list, f: int) -> dict:
    """Sum d = odd - even, e, o, their squares, padding and mask over fine blocks of side f."""
    h = grid[0][0]
    q = h // f
    (_, bz, sz), (_, by, sy), (_, bx, sx) = grid
    keys = ("d", "d2", "e2", "e", "o", "o2", "m", "ef", "of")
    sums = {k: np.zeros((bz * q, by * q, bx * q)) for k in keys}
    ys, xs = slice(sy, sy + by * h), slice(sx, sx + bx * h)
    for jz in range(bz):
        zs = slice(sz + jz * h, sz + (jz + 1) * h)
        rows = slice(jz * q, (jz + 1) * q)
        e = np.asarray(even[zs, ys, xs], dtype=np.float32)
        o = np.asarray(odd[zs, ys, xs], dtype=np.float32)
        d = o - e
        for key, a in (("d", d), ("e", e), ("o", o)):
            sums[key][rows] = _block_sums(a, f)
        sq = np.empty_like(d)
        for key, a in (("d2", d), ("e2", e), ("o2", o)):
            np.multiply(a, a, out=sq)  # e and o may be views of the input
            sums[key][rows] = _block_sums(sq, f)
        flat = np.empty(d.shape, dtype=np.float32)
        for key, a in (("ef", e), ("of", o)):
            # padding: runs of equal neighbours along x
            np.equal(a[:, :, :-1], a[:, :, 1:], out=flat[:, :, :-1], casting="unsafe")
            flat[:, :, -1] = flat[:, :, -2]
            sums[key][rows] = _block_sums(flat, f)
        if mask is not None:
            inside = (np.asarray(mask[zs, ys, xs]) != 0).astype(np.float32)
            sums["m"][rows] = _block_sums(inside, f)
    return sums


def _blocks(even: np.ndarray, odd: np.ndarray, mask: np.ndarray | None, n: int) -> _Blocks:
    """Read the halves once, slab by slab, and judge blocks of side N/2 (docs/measured-noise.md)."""
    grid = [_grid(length, n) for length in even.shape]
    h = grid[0][0]
    f = _fine_size(h)
    q = h // f
    with np.errstate(invalid="ignore", over="ignore"):  # NaN and inf: blocks left out
        sums = _fine_sums(even, odd, mask, grid, f)
        count = float(f**3)
        var = {}
        for key in ("d", "e", "o"):
            var[key] = np.maximum(sums[f"{key}2"] / count - (sums[key] / count) ** 2, 0.0)
    finite = np.isfinite(var["d"])
    identical = bool(np.all(sums["d2"] == 0.0))
    constant = tuple(
        name
        for name, key in (("EVEN", "e"), ("ODD", "o"))
        if np.all(var[key] == 0.0) and np.ptp(sums[key]) == 0.0
    )
    inside = sums["m"] >= count if mask is not None else np.ones(finite.shape, bool)
    fine_ok = inside & (sums["ef"] <= FLAT_FRACTION * count) & (sums["of"] <= FLAT_FRACTION * count)
    for key in ("e", "o", "d"):
        positive = var[key][inside & (var[key] > 0) & finite]
        floor = CONSTANT_FRACTION * float(np.median(positive)) if positive.size else np.inf
        fine_ok &= finite & (var[key] > floor)
    typical = float(np.median(var["d"][fine_ok])) if fine_ok.any() else 0.0
    fine_ok &= var["d"] >= FINE_FRACTION * typical
    good = _coarse(fine_ok, q, np.all)

    # non-finite fine blocks count as zero: their blocks are not good, and inf - inf warns
    keys = ("d", "d2", "e", "e2", "o", "o2")
    coarse = {key: _coarse(np.where(finite, sums[key], 0.0), q) for key in keys}
    big = float(h**3)
    var_d = np.maximum(coarse["d2"] / big - (coarse["d"] / big) ** 2, 0.0)
    typical = float(np.median(var_d[good])) if good.any() else 0.0
    good &= var_d >= MIN_VARIANCE_FRACTION * typical
    total = float(coarse["d"][good].sum() / (good.sum() * big)) if good.any() else 0.0
    structure = _structure_correlation(sums, fine_ok, count)
    return _Blocks(grid, good, coarse, total, identical, structure, constant, not finite.all())


def _structure_correlation(sums: dict, used: np.ndarray, count: float) -> float:
    """Rank correlation of the local variances of ODD - EVEN and ODD + EVEN (fine blocks).

    About 0 for frame-split halves; clearly positive when the difference holds signal (halves
    split by tilt, or scaled differently). NaN below ``MIN_STRUCTURE_BLOCKS`` blocks.
    """
    if used.sum() < MIN_STRUCTURE_BLOCKS:
        return float("nan")
    from scipy.stats import spearmanr

    d, d2 = sums["d"][used], sums["d2"][used]
    total, total2 = sums["e"][used] + sums["o"][used], 2 * (sums["e2"][used] + sums["o2"][used])
    var_d = d2 / count - (d / count) ** 2
    var_s = (total2 - d2) / count - (total / count) ** 2  # (e + o)^2 = 2 e^2 + 2 o^2 - d^2
    return float(spearmanr(var_d, var_s)[0])


def _cube_corners(blocks: _Blocks, shape: tuple[int, ...], n: int) -> np.ndarray:
    """(z, y, x) corners of the cubes whose 2 x 2 x 2 blocks are all good, C order."""
    g = blocks.good
    if min(g.shape) < 2:
        return np.zeros((0, 3), dtype=np.int64)
    ok = np.ones(tuple(s - 1 for s in g.shape), bool)
    for dz, dy, dx in itertools.product((0, 1), repeat=3):
        ok &= g[dz : dz + ok.shape[0], dy : dy + ok.shape[1], dx : dx + ok.shape[2]]
    idx = np.argwhere(ok)
    h = np.array([a[0] for a in blocks.grid])
    start = np.array([a[2] for a in blocks.grid])
    corners = start + idx * h
    fits = np.all(corners + n <= np.array(shape), axis=1)  # odd n: one voxel past the blocks
    return corners[fits].astype(np.int64)


def taper_3d(n: int, taper: str = "hann") -> np.ndarray:
    """Float32 (n, n, n) periodic Hann taper ``sin^2(pi j / n)`` along each axis, or ones."""
    if taper not in TAPERS:
        raise ValueError(f"taper must be one of {TAPERS}, not {taper!r}")
    from scipy.signal.windows import hann

    w = hann(n, sym=False) if taper == "hann" else np.ones(n)
    return (w[:, None, None] * w[None, :, None] * w[None, None, :]).astype(np.float32)


# ---------------------------------------------------------------------------------------------
# estimation


def estimate_spectrum(
    even: np.ndarray,
    odd: np.ndarray,
    n: int,
    *,
    mask: np.ndarray | None = None,
    cubes: int | None = None,
    seed: int = 0,
    taper: str = "hann",
    workers: int = 1,
) -> tuple[np.ndarray, np.ndarray, dict]:
    """Estimate the noise power spectrum of ``odd - even`` (z, y, x) on the grid of an n^3 cube.

    ``cubes`` defaults to all usable cubes, at most ``MAX_CUBES``; ``seed`` picks among more.
    Returns the spectrum (float32 (n, n, n), (kz, ky, kx), fftshifted, mean 1, DC 0), the (K, 3)
    (z, y, x) cube corners and stats (``usable``, ``variance``, ``signal_variance``, ...).
    """
    if even.shape != odd.shape:
        raise MeasureError(f"the halves differ in shape: {even.shape} and {odd.shape} (z, y, x).")
    if mask is not None and mask.shape != even.shape:
        raise MeasureError(
            f"the mask's shape {mask.shape} differs from the halves' {even.shape} (z, y, x)."
        )
    if n < MIN_CUBESIZE:
        raise MeasureError(f"the cube size must be at least {MIN_CUBESIZE} voxels, not {n}.")
    if n > min(even.shape):
        raise MeasureError(
            f"the cube size {n} is larger than the volume ({even.shape[2]} x {even.shape[1]}"
            f" x {even.shape[0]} voxels, x y z)."
        )
    if cubes is not None and cubes < MIN_CUBES:
        raise MeasureError(f"at least {MIN_CUBES} cubes are needed, not {cubes}.")
    blocks = _blocks(even, odd, mask, n)
    corners, usable = _choose_cubes(blocks, even.shape, n, cubes, seed, mask is not None)
    power = _mean_power(odd, even, corners, np.float32(blocks.mean_d), n, taper, workers)
    variance, signal_variance = _cube_variances(blocks, corners)
    stats = {
        "usable": usable,
        "variance": variance,
        "signal_variance": signal_variance,
        "structure": blocks.structure,
        "nonfinite": blocks.nonfinite,
    }
    return normalise_spectrum(half_to_full(power, n)), corners, stats


def _choose_cubes(
    blocks: _Blocks, shape: tuple[int, ...], n: int, cubes: int | None, seed: int, masked: bool
) -> tuple[np.ndarray, int]:
    """(z, y, x) corners of the cubes to average (all usable ones, or a seeded choice), usable."""
    if blocks.identical:
        raise MeasureError(
            "the difference of the halves is zero (the same data twice?): give the even and"
            " the odd half tomograms."
        )
    if blocks.constant:
        raise MeasureError(
            f"{' and '.join(blocks.constant)} {'is' if len(blocks.constant) == 1 else 'are'}"
            " constant (one value away from the borders): no noise to measure."
        )
    corners = _cube_corners(blocks, shape, n)
    usable = len(corners)
    wanted = min(usable, MAX_CUBES) if cubes is None else cubes
    if usable < max(wanted, MIN_CUBES):
        where = "inside the mask, " if masked else ""
        raise MeasureError(
            f"too few usable cubes of {n}^3 voxels: {usable} fit {where}away from the borders"
            f" and from padded, constant or non-finite regions, {max(wanted, MIN_CUBES)} are"
            " needed; give a smaller --cubesize" + (" or --cubes." if cubes else ".")
        )
    if usable > wanted:
        pick = np.random.default_rng(seed).choice(usable, size=wanted, replace=False)
        corners = corners[np.sort(pick)]
    return corners, usable


def _mean_power(odd, even, corners: np.ndarray, mean, n: int, taper: str, workers: int):
    """Mean tapered power of ``odd - even - mean`` cubes, ``rfftn`` layout, white s^2 gives s^2."""
    w = taper_3d(n, taper)
    w_power = float(np.dot(w.ravel().astype(np.float64), w.ravel().astype(np.float64)))
    acc = np.zeros((n, n, n // 2 + 1), dtype=np.float64)
    batch = np.empty((min(BATCH, len(corners)), n, n, n), dtype=np.float32)
    for first in range(0, len(corners), BATCH):
        chunk = corners[first : first + BATCH]
        b = batch[: len(chunk)]
        for j, (z, y, x) in enumerate(chunk):
            sl = (slice(z, z + n), slice(y, y + n), slice(x, x + n))
            np.subtract(odd[sl], even[sl], out=b[j], dtype=np.float32, casting="unsafe")
            b[j] -= mean
            b[j] *= w
        f = scipy.fft.rfftn(b, axes=(1, 2, 3), workers=workers)
        p = np.square(f.real)
        p += np.square(f.imag)
        acc += p.sum(axis=0, dtype=np.float64)
    if not np.isfinite(acc).all():  # odd n: a voxel past the judged blocks
        raise MeasureError("the halves hold NaN or infinite values inside the cubes.")
    return acc / (len(corners) * w_power)


def _cube_variances(blocks: _Blocks, corners: np.ndarray) -> tuple[float, float]:
    """Mean variance of ODD - EVEN and (EVEN + ODD) / 2 over the cubes (odd N: a layer short)."""
    h = np.array([a[0] for a in blocks.grid])
    start = np.array([a[2] for a in blocks.grid])
    idx = (corners - start) // h
    total = dict.fromkeys(blocks.sums, 0.0)
    for dz, dy, dx in itertools.product((0, 1), repeat=3):
        at = (idx[:, 0] + dz, idx[:, 1] + dy, idx[:, 2] + dx)
        for key, value in blocks.sums.items():
            total[key] = total[key] + value[at]
    count = 8.0 * float(np.prod(h))
    var_d = total["d2"] / count - (total["d"] / count) ** 2
    # (e + o)^2 = 2 e^2 + 2 o^2 - d^2
    s2 = 2 * total["e2"] + 2 * total["o2"] - total["d2"]
    var_s = (s2 / count - ((total["e"] + total["o"]) / count) ** 2) / 4.0
    return float(np.mean(var_d)), float(np.mean(var_s))


def half_to_full(half: np.ndarray, n: int) -> np.ndarray:
    """Expand an ``rfftn`` layout power (n, n, n // 2 + 1) to the full fftshifted (n, n, n)."""
    full = np.empty((n, n, n), dtype=np.float64)
    m = n // 2 + 1
    full[:, :, :m] = half
    neg = (-np.arange(n)) % n
    cols = np.arange(m, n)
    full[:, :, m:] = half[neg][:, neg][:, :, n - cols]
    # the planes kx = 0 and kx = n/2 hold k and -k both: make them equal to the last bit
    full = 0.5 * (full + full[neg][:, neg][:, :, neg])
    return np.fft.fftshift(full)


def full_to_half(spectrum: np.ndarray) -> np.ndarray:
    """Return the ``rfftn`` layout (n, n, n // 2 + 1), unshifted, of a fftshifted spectrum."""
    n = spectrum.shape[0]
    return np.fft.ifftshift(spectrum)[:, :, : n // 2 + 1]


def normalise_spectrum(spectrum: np.ndarray) -> np.ndarray:
    """float32 copy with DC set to 0 and a mean of 1 over the grid (fftshifted input)."""
    n = spectrum.shape[0]
    out = np.array(spectrum, dtype=np.float64)
    out[n // 2, n // 2, n // 2] = 0.0
    total = out.mean()
    if not total > 0:
        raise MeasureError("the measured spectrum is zero.")
    return (out / total).astype(np.float32)


def measure_noise(
    even_path: Path,
    odd_path: Path,
    n: int,
    *,
    mask_path: Path | None = None,
    cubes: int | None = None,
    seed: int = 0,
    workers: int = 1,
) -> Measurement:
    """Measure the noise spectrum of a pair of half tomograms (MRC files); see estimate_spectrum."""
    even, e_info, notes = open_volume(even_path, "EVEN")
    odd, o_info, more = open_volume(odd_path, "ODD")
    notes += more
    if e_info.shape != o_info.shape:
        raise MeasureError(
            f"the halves differ in size: {e_info.describe()} and {o_info.describe()}"
            " (x y z voxels @ angstroms)."
        )
    if not np.allclose(e_info.voxel_size, o_info.voxel_size, rtol=1e-4, atol=0.0):
        raise MeasureError(
            f"the halves differ in voxel size: {_vs(e_info)} and {_vs(o_info)} angstroms."
        )
    mask = None
    mask_name = None
    if mask_path is not None:
        mask, m_info, more = open_volume(mask_path, "MASK")
        notes += more
        mask_name = m_info.name
        if m_info.shape != e_info.shape:
            z, y, x = m_info.shape
            ez, ey, ex = e_info.shape
            raise MeasureError(
                f"the mask is {x}x{y}x{z} voxels, the halves {ex}x{ey}x{ez} (x y z):"
                " it must match them."
            )
    spectrum, corners, stats = estimate_spectrum(
        even, odd, n, mask=mask, cubes=cubes, seed=seed, workers=workers
    )
    if stats["nonfinite"]:
        notes.append("the halves hold NaN or infinite values: the cubes around them are left out.")
    if stats["structure"] > STRUCTURE_WARNING:
        notes.append(
            "the local power of ODD - EVEN follows the structure of ODD + EVEN (rank correlation"
            f" {stats['structure']:.2f}): the difference holds signal. Were the halves split by"
            " tilt rather than by movie frames, or scaled differently? The measured noise"
            " includes that signal."
        )
    return Measurement(
        spectrum=spectrum,
        positions=corners,
        usable=stats["usable"],
        even=e_info,
        odd=o_info,
        mask=mask_name,
        seed=seed,
        variance=stats["variance"],
        signal_variance=stats["signal_variance"],
        warnings=tuple(notes),
    )


def _vs(info: HalfInfo) -> str:
    return " x ".join(_num(v) for v in info.voxel_size)


# ---------------------------------------------------------------------------------------------
# the spectrum file


def spectrum_digest(spectrum: np.ndarray) -> str:
    """SHA-256 (16 hex digits) of a spectrum's shape and little-endian float32 data."""
    data = np.ascontiguousarray(spectrum, dtype="<f4")
    h = hashlib.sha256(("x".join(map(str, data.shape)) + ":").encode())
    h.update(data.tobytes())
    return h.hexdigest()[:16]


def check_spectrum(spectrum: np.ndarray) -> None:
    """Raise :class:`MeasureError` unless ``spectrum`` can give unit-variance Gaussian noise."""
    s = np.asarray(spectrum)
    if s.ndim != 3 or len(set(s.shape)) != 1:
        raise MeasureError(f"a spectrum must be a cube, not of shape {s.shape}.")
    if s.dtype != np.float32:
        raise MeasureError(f"a spectrum holds float32 powers, not {s.dtype} data.")
    if not np.all(np.isfinite(s)) or np.any(s < 0):
        raise MeasureError("a spectrum must be finite and non-negative.")
    total = float(np.sum(s, dtype=np.float64))
    centre = s.shape[0] // 2
    if total - float(s[centre, centre, centre]) <= 0:
        raise MeasureError("the spectrum has no power away from the zero frequency.")
    mean = total / s.size
    if not SPECTRUM_MEAN[0] <= mean <= SPECTRUM_MEAN[1]:
        raise MeasureError(
            f"its mean power is {mean:.3g}; float32 noise from it would overflow or lose its"
            " precision (measure-noise writes spectra of mean 1)."
        )


def read_spectrum(path: Path) -> tuple[np.ndarray, str]:
    """Read a spectrum file (regular, at most :data:`SPECTRUM_BYTES`): (float32 array, digest)."""
    path = Path(path)
    try:
        raw = read_regular(path, SPECTRUM_BYTES)
        with MrcInterpreter(io.BytesIO(raw), permissive=False) as mrc:
            data = np.asarray(mrc.data)
    except OSError as err:
        raise MeasureError(f"cannot read the spectrum {path}: {err.strerror or err}.") from None
    except ValueError as err:
        raise MeasureError(f"the spectrum {path} {str(err).rstrip('.')}.") from None
    try:
        check_spectrum(data)
    except MeasureError as err:
        raise MeasureError(f"{path} is not a noise spectrum: {err}") from None
    return data.astype(np.float32), spectrum_digest(data)


# ---------------------------------------------------------------------------------------------
# generation


def _amplitude(path: str, digest: str) -> np.ndarray:
    """Return the cached amplitude of a spectrum file, read again if the file changed."""
    try:
        st = os.stat(path)
    except OSError as err:
        raise MeasureError(f"cannot read the spectrum {path}: {err.strerror or err}.") from None
    return _amplitude_of(path, digest, st.st_mtime_ns, st.st_size, st.st_ino)


@functools.lru_cache(maxsize=4)
def _amplitude_of(path: str, digest: str, mtime_ns: int, size: int, inode: int) -> np.ndarray:
    """Sqrt of the spectrum, ``rfftn`` layout, float32, read-only.

    The planes kx = 0 and kx = n / 2 get sqrt(2): the inverse real FFT keeps only their
    Hermitian part, which halves the power of independent coefficients there.
    """
    spectrum, found = read_spectrum(Path(path))
    if found != digest:
        raise MeasureError(f"the spectrum {path} has changed (digest {found}, expected {digest}).")
    n = spectrum.shape[0]
    amp = np.sqrt(full_to_half(spectrum).astype(np.float64))
    amp[:, :, [0, n // 2] if n % 2 == 0 else [0]] *= np.sqrt(2.0)
    amp = np.ascontiguousarray(amp, dtype=np.float32)
    amp.flags.writeable = False
    return amp


#: Scratch arrays of each thread (the draws of one volume, per cube size).
_LOCAL = threading.local()


@dataclass(frozen=True)
class SpectrumNoise:
    """Gaussian noise with a measured power spectrum; call it with a generator.

    Keyed by the spectrum file's absolute path and digest: the array is read once per process,
    never pickled, and a file changed since is an error.
    """

    path: str
    digest: str

    @property
    def n(self) -> int:
        """Cube side, voxels."""
        return int(_amplitude(self.path, self.digest).shape[0])

    def __call__(self, rng: np.random.Generator) -> np.ndarray:
        """One normalised noise volume, float32 (z, y, x)."""
        amp = _amplitude(self.path, self.digest)
        n = amp.shape[0]
        draws = getattr(_LOCAL, f"draws{n}", None)
        if draws is None:  # reused by every volume of this thread
            draws = np.empty((*amp.shape, 2), dtype=np.float32)
            setattr(_LOCAL, f"draws{n}", draws)
        spec = standard_normal(rng, draws).view(np.complex64)[..., 0]
        spec *= amp
        volume = scipy.fft.irfftn(spec, s=(n, n, n), workers=1, overwrite_x=True)
        volume = np.ascontiguousarray(volume, dtype=np.float32)
        normalize(volume)
        return volume


def spectrum_noise(path: Path) -> SpectrumNoise:
    """Return the generator of a spectrum file (read now, to know its digest)."""
    path = Path(path).absolute()
    _, digest = read_spectrum(path)
    return SpectrumNoise(str(path), digest)
