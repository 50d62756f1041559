"""Tilt range of one tomogram from its spectrum, to check the side of its wedge against noise.

A tomogram (an MRC file read as IsoNet reads it: numpy (z, y, x), the beam along z, the tilt
axis along y) is cut into blocks of n x ny_block x n voxels (n the smaller of its z and x sides,
at most :data:`MAX_SIDE`), each tapered by a Hann window in z and x (so that the borders of the
block do not spread power along the kx and kz axes), and the (kz, kx) power of every y-slice is
averaged (:func:`~.spectrum.slice_power`). The missing wedge does not depend on ky, so blocks of
any height in y add up. :func:`~.spectrum.analyse` then estimates the tilt range in the
geometry of docs/concepts.md: the range a tilt scheme of this tomogram should have
(:attr:`mwr_dask.noise.schemes.TiltScheme.minangle` .. ``maxangle``). Pure numpy: no Dask.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import numpy as np

from mwr_dask.inspection.spectrum import SpectrumAnalysis, analyse, slice_power

#: Largest block side (Fourier grid) used: enough angular resolution, bounded cost.
MAX_SIDE = 256
#: y-slices per block (bounds the memory of one FFT).
BLOCK_HEIGHT = 32


@dataclass
class TomogramSpectrum:
    """The spectral analysis of one tomogram.

    Attributes
    ----------
    path : str
        The MRC file.
    shape : tuple of int
        Its (z, y, x) shape.
    side : int
        Side n of the (kz, kx) grid.
    blocks : int
        Blocks averaged.
    analysis : SpectrumAnalysis
        Tilt range (``analysis.tilt_range``), its resolution, the wedge ratio, ...
    """

    path: str
    shape: tuple[int, int, int]
    side: int
    blocks: int
    analysis: SpectrumAnalysis


def block_origins(size: int, side: int) -> list[int]:
    """Return the starts of the non-overlapping blocks of ``side`` along ``size``, centred."""
    count = size // side
    first = (size - count * side) // 2
    return [first + k * side for k in range(count)]


def tomogram_spectrum(path: Path | str, max_blocks: int = 256) -> TomogramSpectrum:
    """Estimate the tilt range of the tomogram in ``path`` from its averaged spectrum.

    Parameters
    ----------
    path : path-like
        MRC file of a tomogram (read as numpy (z, y, x), memory-mapped, permissive).
    max_blocks : int
        Most blocks averaged (spread evenly over the volume).

    Raises
    ------
    ValueError
        The file is not a 3-D MRC volume, or is thinner than 8 voxels along z or x (the
        message says which, without the path).
    """
    import warnings

    import mrcfile

    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # permissive: a bad header reads as no data
        mrc = mrcfile.mmap(str(path), mode="r", permissive=True)
    with mrc:
        data = mrc.data
        if data is None or data.ndim != 3:
            raise ValueError("not a 3-D MRC volume")
        nz, ny, nx = (int(s) for s in data.shape)
        side = min(nz, nx, MAX_SIDE) // 2 * 2
        if side < 8:
            raise ValueError(
                f"{nz} x {ny} x {nx} voxels (z, y, x), too thin along z or x for a spectrum"
                " (8 at least)"
            )
        window = np.hanning(side + 2)[1:-1].astype(np.float32)
        taper = window[:, None, None] * window[None, None, :]
        starts = [
            (z, y, x)
            for z in block_origins(nz, side)
            for y in range(0, max(ny - BLOCK_HEIGHT, 0) + 1, BLOCK_HEIGHT)
            for x in block_origins(nx, side)
        ]
        if len(starts) > max_blocks:
            pick = np.linspace(0, len(starts) - 1, max_blocks).round().astype(int)
            starts = [starts[i] for i in sorted(set(pick.tolist()))]
        total = np.zeros((side, side // 2 + 1))
        for z, y, x in starts:
            block = np.asarray(
                data[z : z + side, y : y + BLOCK_HEIGHT, x : x + side], dtype=np.float32
            )
            block = block - np.float32(block.mean(dtype=np.float64))
            total += slice_power(block * taper)
    return TomogramSpectrum(
        path=str(path),
        shape=(nz, ny, nx),
        side=side,
        blocks=len(starts),
        analysis=analyse(total, side, len(starts)),
    )


def compare_with_scheme(estimate: tuple[float, float], scheme) -> dict:
    """How a tomogram's estimated tilt range compares with a tilt scheme and its inverse.

    Returns
    -------
    dict
        ``scheme`` and ``inverted``: the (min, max) of each, degrees; ``off`` and
        ``off_inverted``: the summed distance of the two edges, degrees; ``better``:
        ``"as read"`` or ``"inverted"`` (the closer one).
    """
    lo, hi = float(estimate[0]), float(estimate[1])
    a = (scheme.minangle, scheme.maxangle)
    b = (-scheme.maxangle, -scheme.minangle)
    off = abs(lo - a[0]) + abs(hi - a[1])
    off_inv = abs(lo - b[0]) + abs(hi - b[1])
    return {
        "scheme": [a[0], a[1]],
        "inverted": [b[0], b[1]],
        "off": round(float(off), 2),
        "off_inverted": round(float(off_inv), 2),
        "better": "as read" if off <= off_inv else "inverted",
    }
