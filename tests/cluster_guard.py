"""A Dask scheduler preload for the fast loop: every scheduler that starts leaves a mark.

tests/conftest.py names this file in ``distributed.scheduler.preload`` (and in the
environment, for subprocesses) while a test that is not marked slow runs; a mark in
``$MWR_DASK_TEST_CLUSTER_MARKS`` afterwards fails the test.
"""

import os
import pathlib


def dask_setup(scheduler) -> None:
    marks = os.environ.get("MWR_DASK_TEST_CLUSTER_MARKS")
    if marks:
        pathlib.Path(marks, f"scheduler-{os.getpid()}-{id(scheduler)}").touch()
