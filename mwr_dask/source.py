"""The noise as a library: :class:`NoiseSource`, a pure function from an index to a volume.

A :class:`NoiseSource` holds everything that defines the noise (cube size, mode, tilts, seed,
voxel size). ``source.volume(i)`` (or ``source[i]``) returns exactly the data that
``mwr-dask generate-noise`` writes to ``n_<i>.mrc`` with the same parameters, on any machine,
in any process. The source is a small frozen dataclass: it pickles to a few hundred bytes, so
it travels cheaply to Dask workers and to PyTorch ``DataLoader`` workers; the operators a
volume needs (the back-projection matrix, the wedge mask) are built once per process, on
first use, and cached there (:func:`mwr_dask.generators.generator_for`), never pickled.

Views of a source:

- :meth:`NoiseSource.take`: a sequence of ``count`` volumes (``len``, indexing, slicing), a
  map-style dataset for PyTorch without importing torch;
- :meth:`NoiseSource.to_dask`: a lazy ``dask.array`` of shape (count, n, n, n), one volume
  per chunk by default, from a one-layer graph.

Nothing here imports Dask, numpy or scipy at import time: they are imported when a volume or
an array is first asked for.
"""

from __future__ import annotations

import secrets
from collections.abc import Iterator, Sequence
from dataclasses import asdict, dataclass
from typing import TYPE_CHECKING, overload

from mwr_dask import __version__

if TYPE_CHECKING:
    import dask.array
    import numpy as np

MODES = {1: "back-projection", 2: "wedge filter"}


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

    def __post_init__(self) -> None:
        if self.seed is None:
            object.__setattr__(self, "seed", fresh_seed())
        from mwr_dask.params import source_problems

        problems = source_problems(self)
        if problems:
            raise ValueError(" ".join(problems))

    # ------------------------------------------------------------------ description

    @property
    def volume_bytes(self) -> int:
        """Bytes of one volume file (1024-byte header + float32 data)."""
        return 1024 + 4 * self.cubesize**3

    @property
    def tilt(self) -> str:
        """Tilt range as ``min:max:step``, degrees."""
        return f"{_num(self.minangle)}:{_num(self.maxangle)}:{_num(self.anglestep)}"

    def labels(self, index: int) -> list[str]:
        """MRC header labels recording the provenance of volume ``index`` (<= 80 chars each)."""
        return [
            f"mwr-dask {__version__} mode={self.mode} cube={self.cubesize} tilt={self.tilt}"
            f" index={index}",
            f"seed={self.seed} voxel={_num(self.voxel_size)}",
        ]

    def describe(self) -> str:
        """One line for people: mode, cube, tilts, seed."""
        return (
            f"mode {self.mode} ({MODES.get(self.mode, '?')}), {self.cubesize}^3 voxels,"
            f" tilts {self.tilt} deg, seed {self.seed}"
        )

    def as_dict(self) -> dict:
        """Plain dictionary of the fields."""
        return asdict(self)

    # ------------------------------------------------------------------ volumes

    def generator(self, index: int):
        """Return the generator of volume ``index`` (built once per process, on first use).

        It is called with the volume's random generator and returns the volume.
        """
        from mwr_dask.generators import generator_for

        return generator_for(self.mode, self.cubesize, self.minangle, self.maxangle, self.anglestep)

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
        from mwr_dask.generators import volume_rng

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

    def to_dask(
        self, count: int, start: int = 0, *, volumes_per_chunk: int = 1
    ) -> dask.array.Array:
        """Volumes ``start .. start + count - 1`` as a lazy dask array.

        Parameters
        ----------
        count, start : int
            Number of volumes and index of the first.
        volumes_per_chunk : int
            Volumes in each chunk along the first axis (the last chunk may hold fewer).

        Returns
        -------
        dask.array.Array
            float32, shape (count, n, n, n), axes (volume, z, y, x); chunk k holds volumes
            ``start + k * volumes_per_chunk ...``. The graph is one blockwise layer: its size
            does not grow with ``count`` until it is computed.
        """
        import dask.array as da
        import numpy as np
        from dask.base import tokenize

        count, start = _as_index(count), _as_index(start)
        per = _as_index(volumes_per_chunk)
        if count < 1 or start < 0 or per < 1:
            raise ValueError("count and volumes_per_chunk must be at least 1, start at least 0")
        n = self.cubesize
        full, rest = divmod(count, per)
        chunks = ((per,) * full + ((rest,) if rest else ()), (n,), (n,), (n,))
        return da.map_blocks(
            _dask_block,
            self,
            start,
            per,
            count,
            chunks=chunks,
            dtype=np.float32,
            meta=np.empty((0, 0, 0, 0), dtype=np.float32),
            name=f"mwr-dask-noise-{tokenize(self, start, count, per)}",
        )


def _dask_block(source: NoiseSource, start: int, per: int, count: int, block_id=None):
    """Block ``block_id`` of :meth:`NoiseSource.to_dask`: a stack of consecutive volumes."""
    import numpy as np

    first = start + block_id[0] * per
    last = min(first + per, start + count)
    return np.stack([source.volume(i) for i in range(first, last)])


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
