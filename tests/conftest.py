"""Shared fixtures: a real multi-process local Dask cluster on 127.0.0.1; a real SLURM."""

from __future__ import annotations

import logging
import os
import subprocess
from shutil import which

import pytest
from distributed import Client, LocalCluster


@pytest.fixture(scope="session")
def client():
    """A two-worker, one-thread-each process cluster, shared by the whole session."""
    with (
        LocalCluster(
            n_workers=2,
            threads_per_worker=1,
            processes=True,
            host="127.0.0.1",
            dashboard_address=None,
            silence_logs=logging.ERROR,
        ) as cluster,
        Client(cluster) as c,
    ):
        yield c


def _truthy(name: str) -> bool:
    return os.environ.get(name, "").strip().lower() not in ("", "0", "false", "no")


def skip_or_fail(reason: str) -> None:
    """Skip a test whose component (SLURM, root for mounts) is missing; fail instead in CI.

    ``.ci/run`` sets MWR_DASK_REQUIRE_SLURM=1 (CI runners set CI=true): there a missing
    component is an error, never a silent skip.
    """
    if _truthy("MWR_DASK_REQUIRE_SLURM") or _truthy("CI"):
        pytest.fail(f"{reason} (required: CI or MWR_DASK_REQUIRE_SLURM is set)", pytrace=False)
    pytest.skip(reason)


@pytest.fixture(scope="session")
def slurm():
    """A running SLURM with an available node (scripts/slurm-local.sh up)."""
    hint = "start one, as root, with `scripts/slurm-local.sh up`"
    missing = [c for c in ("sbatch", "squeue", "scancel", "scontrol", "sinfo") if not which(c)]
    if missing:
        skip_or_fail(f"SLURM is not installed ({', '.join(missing)} not found); {hint}")
    try:
        proc = subprocess.run(
            ["sinfo", "-h", "-o", "%T"], capture_output=True, text=True, timeout=30
        )
    except (OSError, subprocess.TimeoutExpired) as err:
        skip_or_fail(f"SLURM does not answer (sinfo: {err}); {hint}")
    states = {s.rstrip("*~#$@%!") for s in proc.stdout.split()}
    if proc.returncode != 0 or not states & {"idle", "mixed", "allocated"}:
        said = (proc.stderr or proc.stdout).strip() or "no node"
        skip_or_fail(f"SLURM is not running (sinfo: {said}); {hint}")
