"""The random numbers of every volume: one stream per (seed, index), CPU-independent normals.

Gaussian numbers come from :func:`standard_normal`: the raw words of the volume's stream
through a Box-Muller transform made only of IEEE-exact operations (polynomial logarithm and
sine), about twice as fast as numpy's float32 ziggurat, and the same bits on every x86-64 CPU
for the same numpy version; :func:`normalize` shifts and scales a volume to mean 0 and
standard deviation 1 with sums whose order does not depend on the CPU either.
"""

from __future__ import annotations

import threading

import numpy as np

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


def scratch(local: threading.local, name: str, shape: tuple, dtype, *, zero: bool = False):
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
