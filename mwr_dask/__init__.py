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
    "NoiseSource": "mwr_dask.source",
    "NoiseVolumes": "mwr_dask.source",
    "generate": "mwr_dask.run",
    "Generated": "mwr_dask.run",
    "ClusterOptions": "mwr_dask.cluster",
}

if TYPE_CHECKING:
    from mwr_dask.cluster import ClusterOptions
    from mwr_dask.run import Generated, generate
    from mwr_dask.source import NoiseSource, NoiseVolumes


def __getattr__(name: str):
    if name in _LAZY:
        import importlib

        return getattr(importlib.import_module(_LAZY[name]), name)
    raise AttributeError(f"module 'mwr_dask' has no attribute {name!r}")
