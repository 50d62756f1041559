"""The noise itself, pure numpy/scipy: geometry, generators, filters, tilt schemes, spectra.

Nothing here imports Dask, typer or the layers above (files, parallel, inspection, cli);
importing the package imports nothing heavy.
"""
