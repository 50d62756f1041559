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
    interpolation along t, about the cube centre ``(n - 1) / 2``.

Mode 2, wedge filter
    3-D white Gaussian noise, Fourier transformed, multiplied by the binary missing-wedge mask,
    transformed back. The mask does not depend on ky, so the filter acts on each y-slice with a
    2-D mask; the noise is drawn directly in Fourier space where the mask is 1, with exactly the
    distribution of the Fourier transform of real white noise (real and imaginary parts
    independent, the self-conjugate planes kx = 0 and kx = n/2 handled by the inverse real FFT).

Gaussian numbers come from :func:`standard_normal`: float32 uniforms of the volume's stream
through the Box-Muller transform, which is exact and, with numpy's vectorised log, sin and cos,
2-3 times faster than numpy's float32 ziggurat.
"""

from __future__ import annotations

import functools
import threading
from dataclasses import dataclass

import numpy as np
import scipy.fft
import scipy.sparse

from mwr_dask.filters import NO_FILTER, FilterSpec, response
from mwr_dask.geometry import measured_2d, tilt_angles

#: The bit generator behind every volume; changing it changes every volume of every seed.
BIT_GENERATOR = np.random.SFC64


def volume_rng(seed: int, index: int) -> np.random.Generator:
    """Random generator of volume ``index`` under ``seed``.

    The stream is ``SFC64(SeedSequence(seed, spawn_key=(index,)))``: a pure function of
    (seed, index), independent of workers, partitions and runs, and statistically independent
    between indices.
    """
    return np.random.Generator(BIT_GENERATOR(np.random.SeedSequence(seed, spawn_key=(index,))))


def standard_normal(rng: np.random.Generator, out: np.ndarray) -> np.ndarray:
    """Fill ``out`` with independent standard normal numbers (Box-Muller transform).

    ``out`` is filled with float32 uniforms u of ``rng``; its first half a and second half b
    become ``r cos(phi)`` and ``r sin(phi)`` with ``r = sqrt(-2 log(1 - a))`` and
    ``phi = 2 pi b``: two independent N(0, 1) numbers per pair of uniforms.

    Parameters
    ----------
    rng : numpy.random.Generator
        Source of the uniforms.
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
    rng.random(dtype=np.float32, out=flat)
    a, b = flat[:half], flat[half:]
    np.subtract(np.float32(1.0), a, out=a)  # (0, 1]: exact on the float32 grid of the uniforms
    np.log(a, out=a)
    a *= np.float32(-2.0)
    np.sqrt(a, out=a)  # radius
    b *= np.float32(2.0 * np.pi)  # angle
    cos = np.cos(b)
    np.sin(b, out=b)
    b *= a
    a *= cos
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

    Returns
    -------
    tuple of float
        The mean and standard deviation before normalisation.
    """
    flat = volume.reshape(-1)
    mean = float(flat.sum(dtype=np.float64)) / flat.size
    flat -= np.float32(mean)
    std = float(np.sqrt(np.dot(flat, flat) / flat.size))
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
    for theta in np.radians(np.asarray(angles, dtype=np.float64)):
        cos, sin = np.cos(theta), np.sin(theta)
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
    return op, widths


@dataclass(frozen=True)
class BackProjection:
    """Mode 1 generator for one geometry; call it with a random generator.

    With a ``filter`` other than ``none`` (:mod:`mwr_dask.filters`), every projection is
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
        Reconstruction filter of mode 1 (:mod:`mwr_dask.filters`); mode 2 takes none.
    """
    if mode == 1:
        angles = tuple(tilt_angles(minangle, maxangle, anglestep).tolist())
        return BackProjection(n, angles, filter)
    if mode == 2:
        return WedgeFilter(n, minangle, maxangle)
    raise ValueError(f"mode must be 1 or 2, not {mode}")


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
