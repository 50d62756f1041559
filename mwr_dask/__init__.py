"""mwr-dask: missing-wedge noise volumes for IsoNet/MWR training, generated with Dask.

The library: :class:`NoiseSource` (volume i as a pure function, sequences, dask arrays) and
:func:`generate` (the run behind ``mwr-dask generate-noise``). They are imported on first
use, so that ``import mwr_dask`` (and the command line's ``--help``) stays fast.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

__version__ = "0.1.0"

__all__ = ["ClusterOptions", "Generated", "NoiseSource", "NoiseVolumes", "__version__", "generate"]

_LAZY = {
    "NoiseSource": "mwr_dask.noise.source",
    "NoiseVolumes": "mwr_dask.noise.source",
    "generate": "mwr_dask.parallel.run",
    "Generated": "mwr_dask.parallel.run",
    "ClusterOptions": "mwr_dask.parallel.clusters",
}

if TYPE_CHECKING:
    from mwr_dask.noise.source import NoiseSource, NoiseVolumes
    from mwr_dask.parallel.clusters import ClusterOptions
    from mwr_dask.parallel.run import Generated, generate


def __getattr__(name: str):
    if name in _LAZY:
        import importlib

        return getattr(importlib.import_module(_LAZY[name]), name)
    raise AttributeError(f"module 'mwr_dask' has no attribute {name!r}")
