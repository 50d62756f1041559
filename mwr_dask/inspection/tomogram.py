"""Tilt range of one tomogram from its spectrum, to check the side of its wedge against noise.

A tomogram (an MRC file read as IsoNet reads it: numpy (z, y, x), the beam along z, the tilt
axis along y) is cut into blocks of n x ny_block x n voxels (n the smaller of its z and x sides,
at most :data:`MAX_SIDE`), each tapered by a Hann window in z and x (so that the borders of the
block do not spread power along the kx and kz axes), and the (kz, kx) power of every y-slice is
averaged (:func:`~.spectrum.slice_power`). The missing wedge does not depend on ky, so blocks of
any height in y add up. Blocks holding NaN or infinite values, or one value only, are left out.
:func:`~.spectrum.analyse` then estimates the tilt range in the geometry of docs/concepts.md:
the range a tilt scheme of this tomogram should have (``TiltScheme.minangle`` ..
``maxangle``). Pure numpy: no Dask.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import numpy as np

from mwr_dask.inspection.spectrum import SpectrumAnalysis, analyse, edge_offsets, slice_power
from mwr_dask.inspection.words import plural
from mwr_dask.noise.measured import MeasureError, open_volume

#: Largest block side (Fourier grid) used: enough angular resolution, bounded cost.
MAX_SIDE = 256
#: y-slices per block (bounds the memory of one FFT).
BLOCK_HEIGHT = 32


@dataclass
class TomogramSpectrum:
    """One tomogram's spectrum: ``side`` of the (kz, kx) grid, blocks averaged and left out."""

    path: str
    shape: tuple[int, int, int]
    side: int
    blocks: int
    analysis: SpectrumAnalysis
    left_out: str | None = None


def block_origins(size: int, side: int) -> list[int]:
    """Return the starts of the non-overlapping blocks of ``side`` along ``size``, centred."""
    count = size // side
    first = (size - count * side) // 2
    return [first + k * side for k in range(count)]


def tomogram_spectrum(path: Path | str, max_blocks: int = 256) -> TomogramSpectrum:
    """Estimate the tilt range of the tomogram in ``path`` from at most ``max_blocks`` blocks.

    Raises :class:`MeasureError` (``it is ...``: the caller names the file) for a file that is
    not a readable 3-D MRC volume or is thinner than 8 voxels along z or x.
    """
    data, _, _ = open_volume(Path(path), "")
    nz, ny, nx = (int(s) for s in data.shape)
    side = min(nz, nx, MAX_SIDE) // 2 * 2
    if side < 8:
        raise MeasureError(
            f"it is {nz} x {ny} x {nx} voxels (z, y, x), too thin along z or x for a spectrum"
            " (8 at least)."
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
    total, used = np.zeros((side, side // 2 + 1)), 0
    skipped = {"NaN or infinite values": 0, "one value only": 0}  # blocks left out, by why
    for z, y, x in starts:
        block = np.asarray(data[z : z + side, y : y + BLOCK_HEIGHT, x : x + side], np.float32)
        with np.errstate(invalid="ignore", over="ignore"):
            block = block - np.float32(block.mean(dtype=np.float64))
        if not np.isfinite(block).all():
            skipped["NaN or infinite values"] += 1
        elif not block.any():
            skipped["one value only"] += 1
        else:
            total += slice_power(block * taper)
            used += 1
    left_out = _left_out(skipped, len(starts))
    a = analyse(total, side, used)
    if not used:
        a.limit = f"no block of the tomogram can be analysed: {left_out}"
    return TomogramSpectrum(str(path), (nz, ny, nx), side, used, a, left_out)


def _left_out(skipped: dict[str, int], blocks: int) -> str | None:
    """``3 of 40 blocks left out: 3 hold NaN or infinite values`` (None when none was)."""
    reasons = [f"{plural(count, 'holds', 'hold')} {why}" for why, count in skipped.items() if count]
    if not reasons:
        return None
    return f"{sum(skipped.values())} of {blocks} blocks left out: {', '.join(reasons)}"


def scheme_edges(angles: np.ndarray) -> tuple[tuple[float, float], tuple[float, float]]:
    """Where the edges of a reconstruction from tilts ``angles`` (ascending) may lie, degrees.

    As for mode 1 (:func:`~.spectrum.expected_tilt_edges`): between the outermost tilt and
    half its step to the next one beyond it.
    """
    a = np.asarray(angles, dtype=np.float64)
    return (a[0] - (a[1] - a[0]) / 2, a[0]), (a[-1], a[-1] + (a[-1] - a[-2]) / 2)


def compare_with_scheme(analysis: SpectrumAnalysis, scheme) -> dict:
    """How a tomogram's estimated tilt range compares with a tilt scheme and its inverse.

    Each matches when both estimated edges lie within their resolution + 1.5 degrees of
    where the scheme puts them (:func:`scheme_edges`, :func:`~.spectrum.edge_offsets`).
    Returns the (min, max) of ``scheme`` and ``inverted``, degrees; ``off`` and
    ``off_inverted``, the summed distances of the estimated edges from them; ``better``, the
    closer one, and ``matches``, the first that matches (``"as read"``, ``"inverted"``, None).
    """
    (lo, hi), resolution = analysis.tilt_range, analysis.tilt_uncertainty
    angles = np.asarray(scheme.angles, dtype=np.float64)
    both = (angles, -angles[::-1])  # as read, inverted
    off = [round(abs(lo - a[0]) + abs(hi - a[-1]), 2) for a in both]
    agrees = [edge_offsets((lo, hi), resolution, scheme_edges(a))[0] for a in both]
    return {
        "scheme": [float(angles[0]), float(angles[-1])],
        "inverted": [float(both[1][0]), float(both[1][-1])],
        "off": off[0],
        "off_inverted": off[1],
        "better": "as read" if off[0] <= off[1] else "inverted",
        "matches": "as read" if agrees[0] else "inverted" if agrees[1] else None,
    }
