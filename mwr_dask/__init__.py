"""mwr-dask: missing-wedge noise volumes for IsoNet/MWR training, generated with Dask."""

__version__ = "0.1.0"
