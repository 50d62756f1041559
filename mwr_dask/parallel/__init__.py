"""The Dask run: the pipeline of volumes, the run sequence, the plan, and the clusters."""
