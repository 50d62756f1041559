"""Allow ``python -m mwr_dask``."""

from mwr_dask.cli import main

main()
