"""Noise generators: pure numpy/scipy functions, no Dask.

Both generators return float32 cubes of axes (z, y, x) with mean 0 and standard deviation 1.
What depends only on the geometry (the back-projection operator, the wedge mask) is built
once per process and cached (:func:`backprojection`, :func:`wedge_filter`); a volume then
costs one draw of random numbers and one linear map. Scratch arrays (the projections, the
spectrum) are kept per thread and reused, so that a volume allocates little more than the
array it returns.

Mode 1 back-projects 2-D white-noise images, ``v(z, y, x) = sum_theta p_theta(y, x cos theta -
z sin theta)`` with linear interpolation along t about the centre ``(n - 1) / 2`` (the geometry:
docs/concepts.md). Mode 2 draws white noise directly in Fourier space where the wedge mask is 1,
with the distribution of the transform of real white noise (the self-conjugate planes kx = 0
and n/2 are left to the inverse real FFT).

Gaussian numbers come from :func:`mwr_dask.noise.normals.standard_normal`. Every step
(normals, normalisation by pairwise sums, tilt cosines by
:func:`mwr_dask.noise.exactmath.cos_sin_degrees`, scipy's sparse product and FFT) gives the
same bits on every x86-64 CPU for the same numpy and scipy versions: no numpy log, sin or cos
(SIMD code chosen per CPU), no libm, no BLAS.
"""

from __future__ import annotations

import functools
import threading
from dataclasses import dataclass

import numpy as np
import scipy.fft
import scipy.sparse

from mwr_dask.noise.dose import DoseWeights, projection_weights, wedge_weights
from mwr_dask.noise.exactmath import cos_sin_degrees
from mwr_dask.noise.filters import NO_FILTER, FilterSpec, response
from mwr_dask.noise.geometry import measured_2d
from mwr_dask.noise.normals import normalize, scratch, standard_normal


def backprojection_operator(n: int, angles: np.ndarray) -> tuple[scipy.sparse.csr_array, list]:
    """Sparse linear map from the stacked projections to the back-projected volume.

    float32 (n * n, n_bins): row ``z * n + x``, column ``offset_k + u`` (bin u of tilt k), and
    each tilt's bins ``2 * ceil(R_k) + 2``, ``R_k = (n - 1) / 2 * (|cos| + |sin|)``.
    """
    c = (n - 1) / 2.0
    z, x = np.meshgrid(np.arange(n) - c, np.arange(n) - c, indexing="ij")
    z, x = z.ravel(), x.ravel()
    angles = np.asarray(angles, dtype=np.float64).tolist()
    widths = detector_widths(n, angles)
    rows, cols, vals = [], [], []
    offset = 0
    row_index = np.arange(n * n)
    for angle, width in zip(angles, widths, strict=True):
        cos, sin = cos_sin_degrees(angle)
        half = (width - 2) // 2
        t = x * cos - z * sin + half  # in [0, 2 * half]
        u0 = np.clip(np.floor(t).astype(np.int64), 0, 2 * half)
        w = t - u0
        rows += [row_index, row_index]
        cols += [offset + u0, offset + u0 + 1]
        vals += [1.0 - w, w]
        offset += width
    op = scipy.sparse.coo_array(
        (np.concatenate(vals).astype(np.float32), (np.concatenate(rows), np.concatenate(cols))),
        shape=(n * n, offset),
    ).tocsr()
    op.sum_duplicates()
    op.sort_indices()
    if op.nnz < 2**31 and offset < 2**31:
        # scipy keeps int64 indices from the COO input: int32 takes a third less memory (the
        # operator is 8 bytes per tap, as generator_bytes counts) and gives the same products
        op.indices = op.indices.astype(np.int32)
        op.indptr = op.indptr.astype(np.int32)
    return op, widths


@dataclass(frozen=True)
class BackProjection:
    """Mode 1 generator for one geometry; call it with a random generator.

    ``padded_length`` is at least twice the widest projection, so the filter along t is linear,
    not circular; with ``dose`` the filtering is 2-D (``padded_rows`` >= 2 n), W_v(f_t) D_v(|f|).
    """

    n: int
    angles: tuple[float, ...]
    filter: FilterSpec = NO_FILTER
    dose: DoseWeights | None = None

    def __post_init__(self) -> None:
        op, widths = backprojection_operator(self.n, np.asarray(self.angles))
        object.__setattr__(self, "_op", op)
        object.__setattr__(self, "_bins", int(sum(widths)))
        object.__setattr__(self, "_local", threading.local())
        if not self.filter.is_none or self.dose is not None:
            length = padded_length(widths)
            starts = np.arange(len(widths)) * length
            # column of the padded (n, n_views * length) buffer that holds each stacked bin
            cols = np.concatenate([s + np.arange(w) for s, w in zip(starts, widths, strict=True)])
            freqs = np.arange(length // 2 + 1) / length
            weights = response(self.filter, freqs, np.asarray(self.angles), length=length)
            if self.dose is not None:
                if self.dose.angles != self.angles:
                    raise ValueError("the dose weights are for other angles than the generator")
                rows = padded_rows(self.n)
                weights = weights[None] * projection_weights(self.dose, rows, length)
                object.__setattr__(self, "padded_rows", rows)
            object.__setattr__(self, "padded_length", int(length))
            object.__setattr__(self, "_cols", cols)
            object.__setattr__(self, "_weights", weights.astype(np.complex64))

    def filter_projections(self, stacked: np.ndarray) -> np.ndarray:
        """Filter stacked projections (n_bins, n) along t in place; returns ``stacked``.

        The padded buffer is laid out (y, view, t): transforms along contiguous memory are
        about twice as fast as along the stacked layout's first axis.
        """
        n, views, length = self.n, len(self.angles), self.padded_length
        # pad columns are zeros that are never written, so the buffer is reused as it is
        padded = scratch(self._local, "padded", (n, views * length), np.float32, zero=True)
        padded[:, self._cols] = stacked.T
        spec = scipy.fft.rfft(padded.reshape(n, views, length), axis=-1, workers=1)
        if self.dose is None:
            spec *= self._weights  # complex64 x complex64: no casting in the loop
        else:
            spec = scipy.fft.fft(spec, n=self.padded_rows, axis=0, workers=1, overwrite_x=True)
            spec *= self._weights
            spec = scipy.fft.ifft(spec, axis=0, workers=1, overwrite_x=True)[:n]
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
        stacked = scratch(self._local, "stacked", (self._bins, self.n), np.float32)
        self.projections(rng, stacked)
        if not self.filter.is_none or self.dose is not None:
            self.filter_projections(stacked)
        volume = self.backproject(stacked)
        normalize(volume)
        return volume


@dataclass(frozen=True)
class WedgeFilter:
    """Mode 2 generator for one geometry; call it with a random generator.

    With ``dose`` (:class:`~mwr_dask.noise.dose.DoseWeights` of the scheme's views) the drawn
    spectrum is transformed along y and multiplied by :func:`~mwr_dask.noise.dose.wedge_weights`.
    """

    n: int
    minangle: float
    maxangle: float
    dose: DoseWeights | None = None

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
        if self.dose is not None:
            weights = wedge_weights(self.dose, n).astype(np.complex64)
            object.__setattr__(self, "_weights", weights)

    def __call__(self, rng: np.random.Generator) -> np.ndarray:
        """One normalised noise volume, float32 (z, y, x)."""
        n = self.n
        # zeros where the mask is 0 are never written, so the spectrum is reused as it is
        spec = scratch(self._local, "spec", self._mask.shape, np.complex64, zero=True)
        draws = scratch(self._local, "draws", (self._measured, 2), np.float32)
        spec[self._mask] = standard_normal(rng, draws).view(np.complex64)[:, 0]
        spec[:, :, self._self_conjugate] *= np.float32(np.sqrt(2.0))
        if self.dose is None:
            volume = scipy.fft.irfftn(spec, s=(n, n), axes=(0, 2), workers=1)  # spec is kept
        else:
            full = scipy.fft.fft(spec, axis=1, workers=1)  # (kz, ky, kx); spec is kept
            full *= self._weights
            volume = scipy.fft.irfftn(full, s=(n, n, n), workers=1, overwrite_x=True)
        normalize(volume)
        return volume


@functools.cache
def backprojection(
    n: int, angles: tuple[float, ...], filter: FilterSpec = NO_FILTER, dose=None
) -> BackProjection:
    """Return the mode-1 generator of ``angles`` (degrees), built once per process and cached.

    The cache is unbounded, so that a mixture of schemes used in turn never rebuilds an
    operator (its memory: :func:`generator_bytes` per distinct angle list and doses).
    """
    return BackProjection(n, angles, filter, dose)


@functools.cache
def wedge_filter(n: int, minangle: float, maxangle: float, dose=None) -> WedgeFilter:
    """Return the mode-2 generator of the range [minangle, maxangle], cached per process."""
    return WedgeFilter(n, minangle, maxangle, dose)


def detector_widths(n: int, angles) -> list[int]:
    """Detector bins of each tilt's projection for cubes of side ``n`` (see the operator)."""
    c = (n - 1) / 2.0
    widths = []
    for angle in angles:
        cos, sin = cos_sin_degrees(float(angle))
        widths.append(2 * int(np.ceil(c * (abs(cos) + abs(sin)) - 1e-9)) + 2)
    return widths


def padded_length(widths: list[int]) -> int:
    """FFT length of a filtered mode 1: at least twice the widest projection, fast for scipy."""
    return scipy.fft.next_fast_len(2 * max(widths), real=True)


def padded_rows(n: int) -> int:
    """FFT length along y of a dose-weighted mode 1: at least ``2 n``, fast for scipy."""
    return scipy.fft.next_fast_len(2 * n)


def generator_bytes(
    mode: int, n: int, angles=(), *, filtered: bool = False, dosed: bool = False
) -> tuple[int, int]:
    """Memory of one cached generator: what it keeps, and what one volume adds while made.

    ``angles``: mode 1's tilts or mode 2's range. The arrays counted are those the generator
    classes allocate; a volume's own 3 float32 cubes are :func:`peak_bytes`'s.
    """
    half = n * n * (n // 2 + 1)
    if mode == 2:
        measured = int(measured_2d(n, angles[0], angles[-1])[:, : n // 2 + 1].sum()) * n
        return half * (1 + 8 + 8 * dosed) + 8 * measured, 16 * half * dosed
    if mode != 1:
        return half * (4 + 8), 0
    widths = detector_widths(n, angles)
    bins, views = sum(widths), len(widths)
    kept = 2 * views * n * n * 8 + (n * n + 1) * 4 + 4 * bins * n
    if not (filtered or dosed):
        return kept, 0
    length = padded_length(widths)
    spectrum = views * (length // 2 + 1)
    rows = padded_rows(n) if dosed else 1
    kept += 4 * n * views * length + 8 * bins + 8 * rows * spectrum
    return kept, 8 * (n + 2 * (rows if dosed else 0)) * spectrum + 4 * n * views * length


#: Memory of a worker process itself (Python, numpy, scipy, Dask), bytes.
PROCESS_BYTES = 200 * 2**20


def peak_bytes(kept: int, in_flight: int, n: int) -> int:
    """Peak memory of a worker whose generators keep ``kept`` bytes, making one volume, bytes.

    Adds the process, ``in_flight`` and the volume's 3 float32 cubes.
    """
    return PROCESS_BYTES + kept + in_flight + 3 * 4 * n**3


def cost_note(cubesize: int, mode: int) -> str | None:
    """One line on the extra cost of a cube side that the FFT handles slowly, else None.

    Mode 2 transforms along axes of length ``cubesize``; scipy's FFT is fastest for lengths
    of small prime factors (:func:`scipy.fft.next_fast_len`). Measured per voxel against
    neighbouring fast lengths (docs/usage.md): a prime side about 2.2-2.4 times, a factor of
    29-53 about 1.4-1.7 times, factors of 13-17 within 5 %. Mode 1 transforms (with a filter)
    only at a fast padded length.
    """
    if mode != 2 or scipy.fft.next_fast_len(cubesize) == cubesize:
        return None
    below = scipy.fft.prev_fast_len(cubesize)
    above = scipy.fft.next_fast_len(cubesize)
    return (
        f"Note: {cubesize} is not a fast length for the FFT of mode 2: expect up to about 2.4"
        f" times the time per voxel of {below}^3 or {above}^3 (fast lengths; measured: a prime"
        " side 2.2-2.4 times, a factor of 29-53 1.4-1.7 times)."
    )
