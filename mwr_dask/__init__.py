"""mwr-dask: missing-wedge noise volumes for IsoNet/MWR training, generated with Dask.

The library: :class:`NoiseSource` (volume i as a pure function, sequences), :func:`to_dask`
(a lazy dask array of volumes) and :func:`generate` (the run behind ``mwr-dask
generate-noise``). They are imported on first use, so that ``import mwr_dask`` (and the
command line's ``--help``) stays fast.
"""

from __future__ import annotations

__version__ = "0.1.0"

__all__ = [
    "ClusterOptions",
    "Generated",
    "NoiseSource",
    "NoiseVolumes",
    "__version__",
    "generate",
    "read_tilt_file",
    "to_dask",
]

_LAZY = {
    "NoiseSource": "mwr_dask.noise.source",
    "NoiseVolumes": "mwr_dask.noise.source",
    "generate": "mwr_dask.parallel.run",
    "Generated": "mwr_dask.parallel.run",
    "ClusterOptions": "mwr_dask.parallel.clusters",
    "to_dask": "mwr_dask.parallel.arrays",
    "read_tilt_file": "mwr_dask.noise.tiltfiles",
}


def __getattr__(name: str):
    if name in _LAZY:
        import importlib

        return getattr(importlib.import_module(_LAZY[name]), name)
    raise AttributeError(f"module 'mwr_dask' has no attribute {name!r}")
