"""Noise volumes as a lazy dask array (for Dask, Zarr, xarray): :func:`to_dask`."""

from __future__ import annotations

import operator

import dask.array as da
import numpy as np
from dask.base import tokenize

from mwr_dask.noise.source import NoiseSource

#: Most chunks of one array. Dask keeps one size per chunk (its ``chunks`` tuple, built in
#: Python): 10^6 chunks take about 1 s and 100 MB; 10^8 took 25 s and 5.7 GB (issue 21.8).
MAX_CHUNKS = 10**6


def to_dask(
    source: NoiseSource, count: int, start: int = 0, *, volumes_per_chunk: int = 1
) -> da.Array:
    """Volumes ``start .. start + count - 1`` of ``source`` as a lazy dask array.

    Parameters
    ----------
    source : NoiseSource
        What defines the volumes.
    count, start : int
        Number of volumes and index of the first.
    volumes_per_chunk : int
        Volumes in each chunk along the first axis (the last chunk may hold fewer).

    Returns
    -------
    dask.array.Array
        float32, shape (count, n, n, n), axes (volume, z, y, x); chunk k holds volumes
        ``start + k * volumes_per_chunk ...``, each ``source[i]``. The graph is one blockwise
        layer whose size does not depend on ``count``; the array keeps one number per chunk
        (at most :data:`MAX_CHUNKS` chunks).

    Raises
    ------
    ValueError
        Counts below 1, a negative start, or more than :data:`MAX_CHUNKS` chunks.
    """
    count, start = operator.index(count), operator.index(start)
    per = operator.index(volumes_per_chunk)
    if count < 1 or start < 0 or per < 1:
        raise ValueError("count and volumes_per_chunk must be at least 1, start at least 0")
    full, rest = divmod(count, per)
    if full + bool(rest) > MAX_CHUNKS:
        raise ValueError(
            f"{count} volumes in chunks of {per} are more than {MAX_CHUNKS:,} chunks: give"
            f" volumes_per_chunk={-(-count // MAX_CHUNKS)} or more, or split the range."
        )
    n = source.cubesize
    chunks = ((per,) * full + ((rest,) if rest else ()), (n,), (n,), (n,))
    return da.map_blocks(
        _block,
        source,
        start,
        per,
        count,
        chunks=chunks,
        dtype=np.float32,
        meta=np.empty((0, 0, 0, 0), dtype=np.float32),
        name=f"mwr-dask-noise-{tokenize(source, start, count, per)}",
    )


def _block(source: NoiseSource, start: int, per: int, count: int, block_id=None) -> np.ndarray:
    """Block ``block_id`` of :func:`to_dask`: a stack of consecutive volumes."""
    first = start + block_id[0] * per
    last = min(first + per, start + count)
    return np.stack([source.volume(i) for i in range(first, last)])
