"""Shared fixtures: a real multi-process local Dask cluster on 127.0.0.1; a real SLURM.

The fast loop (``-m "not slow"``) starts no Dask cluster: :func:`no_cluster_unless_slow`
fails a test that is not marked slow and starts one anyway (in this process or in a
subprocess: any Dask scheduler runs ``tests/cluster_guard.py`` as a preload).
"""

from __future__ import annotations

import logging
import os
import subprocess
from pathlib import Path
from shutil import which

import dask
import pytest
from distributed import Client, LocalCluster

GUARD = str(Path(__file__).with_name("cluster_guard.py"))
#: Fixtures that start a cluster: a test asking for one must be marked slow.
CLUSTER_FIXTURES = ("client", "dask_cluster")


@pytest.fixture(autouse=True)
def no_cluster_unless_slow(request, tmp_path_factory, monkeypatch):
    """Fail a test that starts a Dask cluster without the ``slow`` marker."""
    if request.node.get_closest_marker("slow"):
        yield
        return
    asked = [name for name in CLUSTER_FIXTURES if name in request.fixturenames]
    if asked:
        pytest.fail(f"uses the cluster fixture {asked[0]!r}: mark it @pytest.mark.slow")
    marks = tmp_path_factory.mktemp("cluster-marks")
    monkeypatch.setenv("MWR_DASK_TEST_CLUSTER_MARKS", str(marks))
    monkeypatch.setenv("DASK_DISTRIBUTED__SCHEDULER__PRELOAD", GUARD)  # subprocesses
    with dask.config.set({"distributed.scheduler.preload": [GUARD]}):
        yield
    if any(marks.iterdir()):
        pytest.fail("started a Dask cluster: mark it @pytest.mark.slow (the fast loop starts none)")


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
