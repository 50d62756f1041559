"""Noise generators: pure numpy/scipy functions, no Dask.

Both generators return float32 cubes of axes (z, y, x) with mean 0 and standard deviation 1.
What depends only on the geometry (the back-projection operator, the wedge mask) is built
once per process and cached (:func:`generator_for`); a volume then costs one draw of random
numbers and one linear map. Scratch arrays (the projections, the spectrum) are kept per thread
and reused, so that a volume allocates little more than the array it returns.

Mode 1, back-projection
    For each tilt an independent 2-D white-noise image p(y, t), Gaussian, wide enough that every
    voxel of the cube falls inside it at every tilt. The volume is the unfiltered
    back-projection ``v(z, y, x) = sum_theta p_theta(y, x cos theta - z sin theta)`` with linear
    interpolation along t, about the cube centre ``(n - 1) / 2``. With a reconstruction filter
    (:mod:`mwr_dask.noise.filters`) each projection is first filtered along t (weighted
    back-projection).

Mode 2, wedge filter
    3-D white Gaussian noise, Fourier transformed, multiplied by the binary missing-wedge mask,
    transformed back. The mask does not depend on ky, so the filter acts on each y-slice with a
    2-D mask; the noise is drawn directly in Fourier space where the mask is 1, with exactly the
    distribution of the Fourier transform of real white noise (real and imaginary parts
    independent, the self-conjugate planes kx = 0 and kx = n/2 handled by the inverse real FFT).

Gaussian numbers come from :func:`standard_normal`: the raw words of the volume's stream
through a Box-Muller transform made only of IEEE-exact operations (polynomial logarithm and
sine), about twice as fast as numpy's float32 ziggurat. Every step (normals, normalisation by
pairwise sums, tilt cosines by :func:`cos_sin_degrees`, scipy's sparse product and FFT) gives
the same bits on every x86-64 CPU for the same numpy and scipy versions: no numpy log, sin or
cos (SIMD code chosen per CPU), no libm, no BLAS.
"""

from __future__ import annotations

import functools
import threading
from dataclasses import dataclass

import numpy as np
import scipy.fft
import scipy.sparse

from mwr_dask.noise.exactmath import cos_sin_degrees
from mwr_dask.noise.filters import NO_FILTER, FilterSpec, response
from mwr_dask.noise.geometry import measured_2d, tilt_angles

#: The bit generator behind every volume; changing it changes every volume of every seed.
BIT_GENERATOR = np.random.SFC64


def volume_rng(seed: int, index: int) -> np.random.Generator:
    """Random generator of volume ``index`` under ``seed``.

    The stream is ``SFC64(SeedSequence(seed, spawn_key=(index,)))``: a pure function of
    (seed, index), independent of workers, partitions and runs, and statistically independent
    between indices.
    """
    return np.random.Generator(BIT_GENERATOR(np.random.SeedSequence(seed, spawn_key=(index,))))


# Box-Muller from IEEE-exact operations only. Coefficients: minimax fits (relative error
# 7e-10 for atanh(s)/s on s^2 <= 0.0295, 3e-9 for sin(pi v / 4) / v on v^2 <= 1), rounded to
# float32. Integer operations, integer -> float32 conversion, +, -, *, / and sqrt are correctly
# rounded by IEEE 754 on every instruction set, so these numbers have the same bits on every
# x86-64 CPU; numpy's log, sin and cos (SIMD code chosen per CPU) and libm's do not.
_ATANH = (1.0, 0.3333340883255005, 0.1998739391565323, 0.14962923526763916)
_SIN = (0.7853981852531433, -0.08074543625116348, 0.00249000103212893, -3.59504520019982e-05)
#: Row 0: -ln(m) = s * P0(s**2), s = (m - 1) / (m + 1); row 1: sin(pi w / 2) = w * P1(w**2)
#: for w = v / 2 in [-1/2, 1/2) (the sine's coefficients times 2 * 4**i: exact).
_POLY = np.array(
    [
        [np.float32(-2.0 * c) for c in _ATANH],
        [np.float32(c) * np.float32(2 * 4**i) for i, c in enumerate(_SIN)],
    ],
    dtype=np.float32,
).T[:, :, None]
_SQRT_HALF_BITS = 0x3F3504F3  # float32 bits of sqrt(1/2), rounded down
_K = (
    np.uint32(1),
    np.uint32(31),
    np.uint32(9),
    np.uint32(0x3F800000),  # float32 bits of 1.0
    np.array(_SQRT_HALF_BITS + (32 << 23), dtype=np.int32),
    np.array(23, dtype=np.int32),
    np.array(0x7FFFFF, dtype=np.int32),
    np.array(_SQRT_HALF_BITS, dtype=np.int32),
    np.array(1.0, dtype=np.float32),
    np.array(1.5, dtype=np.float32),
    np.array(-np.log(2.0), dtype=np.float32),
)
#: Pairs of numbers transformed per step: the scratch arrays of a step stay in the L2 cache.
_CHUNK = 16384
_normal_local = threading.local()


def _scratch_views(n: int) -> tuple:
    """Scratch arrays of this thread for ``n`` pairs, with the typed views the steps use."""
    cache = getattr(_normal_local, "views", None)
    if cache is None:
        cache = _normal_local.views = {}
    views = cache.get(n)
    if views is None:
        f, g, h = (np.empty((2, n), dtype=np.float32) for _ in range(3))
        u = np.empty((2, n), dtype=np.uint32)
        views = cache[n] = (f, g, h, u, f[0].view(np.int32), u[0].view(np.int32), u[1])
    return views


def _pairs(words: np.ndarray, out: np.ndarray) -> None:
    """Turn random 32-bit words (2, n) into n normal pairs, ``out[0]`` and ``out[1]``.

    Row 0 of ``words`` gives the radius, row 1 the angle; both rows are overwritten. Radius:
    ``u = k 2**-32`` with k the odd number ``w0 | 1`` (u in (0, 1), never 0),
    ``r = sqrt(-2 ln u)``; ln u from the float32 exponent and mantissa of k and a polynomial.
    Angle: ``phi = pi/4 + pi/2 w``, w uniform on [-1/2, 1/2) from the top 23 bits of w1 (as
    the mantissa of a float in [1, 2), minus 1.5); ``(cos phi, sin phi) = (c - s, c + s) /
    sqrt(2)`` with ``s = sin(pi w / 2)`` and ``c = sqrt(1 - s**2)``: the first quadrant.
    Bit 0 of w0 (the sign of r: a half turn) and bit 0 of w1 (the sign of the first number: a
    mirror) spread the pairs over all four. Steps that both rows take are one call each.
    """
    f, g, h, u, fi0, ui0, sign_x = _scratch_views(words.shape[1])
    one_u, k31, k9, one_bits, offset, k23, mantissa_bits, sqrt_half, one, half3, minus_ln2 = _K
    w0, w1 = words
    f0, f1 = f
    np.left_shift(words, k31, u)  # the two sign bits
    # radius: k = 2**e * m with m in [sqrt(1/2), sqrt(2)); -ln u = (32 - e) ln 2 - ln m
    np.bitwise_or(w0, one_u, w0)
    np.copyto(f0, w0, casting="unsafe")  # k, correctly rounded
    i0 = w0.view(np.int32)
    np.subtract(fi0, offset, fi0)
    np.right_shift(fi0, k23, i0)  # e - 32
    np.bitwise_and(fi0, mantissa_bits, fi0)
    np.add(fi0, sqrt_half, fi0)  # m
    np.add(f0, one, g[0])
    np.subtract(f0, one, f0)
    np.divide(f0, g[0], f0)  # s = (m - 1) / (m + 1)
    # angle: w = 1.xxx - 1.5 from 23 random mantissa bits
    np.right_shift(w1, k9, w1)
    np.bitwise_or(w1, one_bits, w1)
    np.subtract(w1.view(np.float32), half3, f1)
    # both polynomials at once (Horner)
    np.multiply(f, f, g)
    np.multiply(g, _POLY[3], h)
    for i in (2, 1, 0):
        np.add(h, _POLY[i], h)
        np.multiply(h, g if i else f, h)
    h0, h1 = h  # -ln m, s
    np.copyto(f0, i0, casting="unsafe")
    np.multiply(f0, minus_ln2, f0)
    np.add(f0, h0, f0)  # -ln u = r**2 / 2
    np.multiply(h1, h1, f1)
    np.subtract(one, f1, f1)
    np.sqrt(f, f)  # r / sqrt(2); c = sqrt(1 - s**2) >= sqrt(1/2)
    np.bitwise_xor(fi0, ui0, fi0)  # r signed
    x, y = out
    np.subtract(f1, h1, x)
    np.add(f1, h1, y)
    xu = x.view(np.uint32)
    np.bitwise_xor(xu, sign_x, xu)
    np.multiply(out, f0, out)


def standard_normal(rng: np.random.Generator, out: np.ndarray) -> np.ndarray:
    """Fill ``out`` with independent standard normal numbers, the same bits on every CPU.

    Box-Muller transform of the raw output of ``rng``'s bit generator, 64 random bits per
    pair of numbers: read as ``2 * npairs`` 32-bit words, the first half give the radii and
    the second half the angles (:func:`_pairs`). Only operations that IEEE 754 rounds
    exactly are used (integer bit operations, integer to float32 conversion, +, -, *, /,
    sqrt), with polynomials for the logarithm and the sine, so the result does not depend on
    the instruction set numpy picks at run time, nor on libm. Against the exact transform of
    the same bits (float64), the numbers are within 7e-7 (a few float32 ulps above 0.5 in
    size), and within 5e-6 for the 0.1 % of pairs with ``r < 0.05``, whose uniform, close to
    1, is rounded to float32 first. The tails end at ``sqrt(2 * 32 * ln 2) = 6.66`` (32-bit
    uniforms). The first half of ``out`` holds the ``r cos(phi)`` of each pair, the second
    half the ``r sin(phi)``.

    Parameters
    ----------
    rng : numpy.random.Generator
        Source of the random words (``rng.bit_generator.random_raw``).
    out : numpy.ndarray
        C-contiguous float32 array with an even number of elements; overwritten.

    Returns
    -------
    numpy.ndarray
        ``out``.
    """
    flat = out.reshape(-1)
    half = flat.size // 2
    if flat.size != 2 * half:
        raise ValueError("standard_normal needs an even number of elements")
    words = rng.bit_generator.random_raw(half).view(np.uint32).reshape(2, half)
    pairs = flat.reshape(2, half)
    for start in range(0, half, _CHUNK):
        stop = min(start + _CHUNK, half)
        _pairs(words[:, start:stop], pairs[:, start:stop])
    return out


def _scratch(local: threading.local, name: str, shape: tuple, dtype, *, zero: bool = False):
    """Scratch array ``name`` of this thread, created on first use and reused afterwards."""
    array = getattr(local, name, None)
    if array is None:
        array = (np.zeros if zero else np.empty)(shape, dtype=dtype)
        setattr(local, name, array)
    return array


def normalize(volume: np.ndarray) -> tuple[float, float]:
    """Shift and scale ``volume`` in place to mean 0 and standard deviation 1.

    The mean is numpy's pairwise float32 sum, the sum of squares ``numpy.einsum``'s: both a
    fixed order of additions in code that numpy builds for the baseline instruction set only,
    so the same bits on every CPU (BLAS, whose kernels differ between CPUs, is not used).

    Returns
    -------
    tuple of float
        The mean and standard deviation before normalisation.
    """
    flat = volume.reshape(-1)
    mean = float(np.add.reduce(flat)) / flat.size
    flat -= np.float32(mean)
    std = float(np.sqrt(float(np.einsum("i,i->", flat, flat)) / flat.size))
    if std > 0:
        flat *= np.float32(1.0 / std)
    return mean, std


def backprojection_operator(n: int, angles: np.ndarray) -> tuple[scipy.sparse.csr_array, list]:
    """Sparse linear map from the stacked projections to the back-projected volume.

    Parameters
    ----------
    n : int
        Cube side, voxels.
    angles : numpy.ndarray
        Tilt angles, degrees.

    Returns
    -------
    operator : scipy.sparse.csr_array
        float32, shape (n * n, n_bins). Row ``z * n + x``; column ``offset_k + u`` is detector
        bin u of tilt k. ``(operator @ P)[z * n + x, y]`` is the back-projection at (z, y, x)
        when ``P[offset_k + u, y] = p_k(y, u)``.
    widths : list of int
        Detector bins of each tilt: ``2 * ceil(R_k) + 2`` with
        ``R_k = (n - 1) / 2 * (|cos| + |sin|)``, the largest |t| inside the cube.
    """
    c = (n - 1) / 2.0
    z, x = np.meshgrid(np.arange(n) - c, np.arange(n) - c, indexing="ij")
    z, x = z.ravel(), x.ravel()
    rows, cols, vals, widths = [], [], [], []
    offset = 0
    row_index = np.arange(n * n)
    for angle in np.asarray(angles, dtype=np.float64).tolist():
        cos, sin = cos_sin_degrees(angle)
        half = int(np.ceil(c * (abs(cos) + abs(sin)) - 1e-9))
        t = x * cos - z * sin + half  # in [0, 2 * half]
        u0 = np.clip(np.floor(t).astype(np.int64), 0, 2 * half)
        w = t - u0
        rows += [row_index, row_index]
        cols += [offset + u0, offset + u0 + 1]
        vals += [1.0 - w, w]
        widths.append(2 * half + 2)
        offset += 2 * half + 2
    op = scipy.sparse.coo_array(
        (np.concatenate(vals).astype(np.float32), (np.concatenate(rows), np.concatenate(cols))),
        shape=(n * n, offset),
    ).tocsr()
    op.sum_duplicates()
    op.sort_indices()
    if op.nnz < 2**31 and offset < 2**31:
        # scipy keeps int64 indices from the COO input: int32 takes a third less memory (the
        # operator is 8 bytes per tap, as peak_bytes counts) and gives the same products
        op.indices = op.indices.astype(np.int32)
        op.indptr = op.indptr.astype(np.int32)
    return op, widths


@dataclass(frozen=True)
class BackProjection:
    """Mode 1 generator for one geometry; call it with a random generator.

    With a ``filter`` other than ``none`` (:mod:`mwr_dask.noise.filters`), every projection is
    filtered along t before the back-projection: zero-padded to ``padded_length`` bins (at
    least twice the widest projection, so the filtering is linear, not circular, across the
    cube), one real FFT pair over all projections at once, multiplied by W_v(f).
    """

    n: int
    angles: tuple[float, ...]
    filter: FilterSpec = NO_FILTER

    def __post_init__(self) -> None:
        op, widths = backprojection_operator(self.n, np.asarray(self.angles))
        object.__setattr__(self, "_op", op)
        object.__setattr__(self, "_bins", int(sum(widths)))
        object.__setattr__(self, "_local", threading.local())
        if not self.filter.is_none:
            length = scipy.fft.next_fast_len(2 * max(widths), real=True)
            starts = np.arange(len(widths)) * length
            # column of the padded (n, n_views * length) buffer that holds each stacked bin
            cols = np.concatenate([s + np.arange(w) for s, w in zip(starts, widths, strict=True)])
            freqs = np.arange(length // 2 + 1) / length
            weights = response(self.filter, freqs, np.asarray(self.angles), length=length)
            object.__setattr__(self, "padded_length", int(length))
            object.__setattr__(self, "_cols", cols)
            object.__setattr__(self, "_weights", weights.astype(np.complex64))

    def filter_projections(self, stacked: np.ndarray) -> np.ndarray:
        """Filter stacked projections (n_bins, n) along t in place; returns ``stacked``.

        Each projection is zero-padded to ``padded_length`` bins, its real FFT along t is
        multiplied by W_v(f) and transformed back; the bins of the projection are kept. The
        padded buffer is laid out (y, view, t) so that the transforms run along contiguous
        memory (about twice as fast as along the stacked layout's first axis).
        """
        n, views, length = self.n, len(self.angles), self.padded_length
        # pad columns are zeros that are never written, so the buffer is reused as it is
        padded = _scratch(self._local, "padded", (n, views * length), np.float32, zero=True)
        padded[:, self._cols] = stacked.T
        spec = scipy.fft.rfft(padded.reshape(n, views, length), axis=-1, workers=1)
        spec *= self._weights  # complex64 x complex64: no casting in the loop
        out = scipy.fft.irfft(spec, n=length, axis=-1, workers=1, overwrite_x=True)
        stacked[...] = out.reshape(n, views * length)[:, self._cols].T
        return stacked

    def projections(self, rng: np.random.Generator, out: np.ndarray | None = None) -> np.ndarray:
        """Draw the stacked white-noise projections, float32 of shape (n_bins, n), axes (t, y).

        Drawn into ``out`` if given (C-contiguous float32 of that shape), else a new array.
        """
        if out is None:
            out = np.empty((self._bins, self.n), dtype=np.float32)
        return standard_normal(rng, out)

    def backproject(self, stacked: np.ndarray) -> np.ndarray:
        """Back-project stacked projections (n_bins, n) into a (z, y, x) float32 cube."""
        n = self.n
        zxy = (self._op @ stacked).reshape(n, n, n)  # (z, x, y)
        return np.ascontiguousarray(zxy.transpose(0, 2, 1), dtype=np.float32)

    def __call__(self, rng: np.random.Generator) -> np.ndarray:
        """One normalised noise volume, float32 (z, y, x)."""
        stacked = _scratch(self._local, "stacked", (self._bins, self.n), np.float32)
        self.projections(rng, stacked)
        if not self.filter.is_none:
            self.filter_projections(stacked)
        volume = self.backproject(stacked)
        normalize(volume)
        return volume


@dataclass(frozen=True)
class WedgeFilter:
    """Mode 2 generator for one geometry; call it with a random generator."""

    n: int
    minangle: float
    maxangle: float

    def __post_init__(self) -> None:
        n = self.n
        half = measured_2d(n, self.minangle, self.maxangle)[:, : n // 2 + 1]  # (kz, kx)
        mask = np.broadcast_to(half[:, None, :], (n, n, n // 2 + 1)).copy()  # (kz, y, kx)
        object.__setattr__(self, "_mask", mask)
        object.__setattr__(self, "_measured", int(np.count_nonzero(mask)))
        # Planes kx = 0 and kx = n/2 (n even): the inverse real FFT keeps only the Hermitian
        # part there, which halves the variance of independently drawn coefficients.
        object.__setattr__(self, "_self_conjugate", [0, n // 2] if n % 2 == 0 else [0])
        object.__setattr__(self, "_local", threading.local())

    def __call__(self, rng: np.random.Generator) -> np.ndarray:
        """One normalised noise volume, float32 (z, y, x)."""
        n = self.n
        # zeros where the mask is 0 are never written, so the spectrum is reused as it is
        spec = _scratch(self._local, "spec", self._mask.shape, np.complex64, zero=True)
        draws = _scratch(self._local, "draws", (self._measured, 2), np.float32)
        spec[self._mask] = standard_normal(rng, draws).view(np.complex64)[:, 0]
        spec[:, :, self._self_conjugate] *= np.float32(np.sqrt(2.0))
        volume = scipy.fft.irfftn(spec, s=(n, n), axes=(0, 2), workers=1)  # spec is kept
        normalize(volume)
        return volume


@functools.lru_cache(maxsize=8)
def generator_for(
    mode: int,
    n: int,
    minangle: float,
    maxangle: float,
    anglestep: float,
    filter: FilterSpec = NO_FILTER,
):
    """Return the cached generator of a geometry (built once per process).

    Parameters
    ----------
    mode : int
        1 = back-projection, 2 = wedge filter.
    n : int
        Cube side, voxels.
    minangle, maxangle, anglestep : float
        Tilt range and step, degrees (the step is used by mode 1 only).
    filter : FilterSpec
        Reconstruction filter of mode 1 (:mod:`mwr_dask.noise.filters`); mode 2 takes none.
    """
    if mode == 1:
        angles = tuple(tilt_angles(minangle, maxangle, anglestep).tolist())
        return BackProjection(n, angles, filter)
    if mode == 2:
        return WedgeFilter(n, minangle, maxangle)
    raise ValueError(f"mode must be 1 or 2, not {mode}")


#: Prime factors of the cube side from which scipy's FFT makes mode 2 noticeably slower.
SLOW_FFT_FACTOR = 29


def largest_prime_factor(n: int) -> int:
    """Largest prime factor of ``n >= 1`` (1 for 1, ``n`` itself when prime)."""
    factor, largest = 2, 1
    while factor * factor <= n:
        while n % factor == 0:
            largest, n = factor, n // factor
        factor += 1
    return max(largest, n)


def cost_note(cubesize: int, mode: int) -> str | None:
    """One line on the extra cost of a cube side that the FFT handles slowly, else None.

    Mode 2 transforms along axes of length ``cubesize``; scipy's FFT is fastest for sizes made
    of small primes and slower for a large prime factor (it then takes Bluestein's or a generic
    algorithm). Measured per voxel against 96³ (docs/usage.md): factors 29-53 about 1.4-1.7
    times, primes 67-127 about 2.2-2.4 times. Mode 1 transforms (with a filter) only at a fast
    padded length.
    """
    if mode != 2:
        return None
    factor = largest_prime_factor(cubesize)
    if factor < SLOW_FFT_FACTOR:
        return None
    below = next(m for m in range(cubesize - 1, 0, -1) if largest_prime_factor(m) <= 7)
    above = next(m for m in range(cubesize + 1, 2 * cubesize + 2) if largest_prime_factor(m) <= 7)
    kind = "is prime" if factor == cubesize else f"has the prime factor {factor}"
    times = "2.2-2.4" if factor >= 60 else "1.4-1.7"
    return (
        f"Note: {cubesize} {kind}, a slow length for the FFT of mode 2: expect about {times}"
        f" times the time per voxel of {below}³ or {above}³ (sizes of small prime factors)."
    )


def peak_bytes(mode: int, n: int, ntilts: int, *, filtered: bool = False) -> int:
    """Estimated peak memory of generating and writing one volume, bytes.

    Counts the arrays alive at once (geometry cached per process included) plus 200 MiB for
    the worker process itself: mode 1 holds the operator (two float32 taps and int32
    indices per tilt and voxel column), the projections, the product and its transpose;
    mode 2 the half spectrum (complex64), the draws and the output. A filtered mode 1
    (``filtered``) adds the padded projections, their spectrum and the inverse transform
    (padded length about twice the widest projection).
    """
    base = 200 * 2**20
    if mode == 1:
        operator = 2 * ntilts * n * n * 8 + 8 * n * n
        projections = ntilts * (int(1.42 * n) + 4) * n * 4
        padded = 0
        if filtered:
            length = 2 * (int(1.42 * n) + 4) + 8  # next fast length of twice the widest
            padded = ntilts * length * n * 4 * 2 + ntilts * (length // 2 + 1) * n * 8
        return base + operator + projections + padded + 3 * 4 * n**3
    return base + 8 * n * n * (n // 2 + 1) * 2 + 3 * 4 * n**3
