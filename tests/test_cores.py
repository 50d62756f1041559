"""A local cluster never gets more workers than the cores this process may use."""

from __future__ import annotations

import os
import subprocess
import sys

import pytest

from mwr_dask.parallel.cores import local_workers
from tests.helpers import read_all


def test_local_workers_is_the_smaller_of_requested_and_usable():
    for usable in range(1, 17):
        assert local_workers(None, usable) == (usable, None)
        for requested in range(1, 41):
            workers, warning = local_workers(requested, usable)
            assert workers == min(requested, usable)
            assert (warning is None) == (requested <= usable)
            if warning:
                assert f"--ncpus {requested} " in warning and f" {usable} cores" in warning
                assert "\n" not in warning
    # invalid values pass through, for the caller's own error message
    assert local_workers(0, 4) == (0, None)
    assert local_workers(-3, 4) == (-3, None)


def _pinned(cores: set[int]):
    return lambda: os.sched_setaffinity(0, cores)


def test_usable_cores_follows_the_affinity_mask():
    """A process pinned to one core (as taskset or a batch job pins it) counts one, not all."""
    if (os.cpu_count() or 1) < 2:
        pytest.skip("needs two cores to tell the affinity mask from the machine's count")
    code = "from mwr_dask.parallel.cores import usable_cores; print(usable_cores())"
    out = subprocess.run(
        [sys.executable, "-c", code],
        capture_output=True,
        text=True,
        check=True,
        preexec_fn=_pinned({min(os.sched_getaffinity(0))}),
    )
    assert out.stdout.strip() == "1"


@pytest.mark.slow
def test_ncpus_beyond_the_cores_warns_and_writes_the_same_volumes(tmp_path):
    """The seed's `--ncpus 20` on a machine with fewer cores: one line, usable cores, same data."""
    cores = set(sorted(os.sched_getaffinity(0))[:2])
    command = [sys.executable, "-m", "mwr_dask", "generate-noise"]
    flags = ["6", "24", "--seed", "4", "--no-dashboard", "--anglestep", "6"]
    runs = {}
    for ncpus in ("20", str(len(cores))):
        out = tmp_path / f"n{ncpus}"
        proc = subprocess.run(
            [*command, str(out), *flags, "--ncpus", ncpus],
            capture_output=True,
            text=True,
            timeout=240,
            preexec_fn=_pinned(cores),
        )
        assert proc.returncode == 0, proc.stderr
        runs[ncpus] = (proc, read_all(out))
    proc, data = runs["20"]
    warnings = [line for line in proc.stderr.splitlines() if "--ncpus 20" in line]
    assert len(warnings) == 1 and f"{len(cores)} cores" in warnings[0]
    assert f"{len(cores)} worker threads" in proc.stdout
    plain, same = runs[str(len(cores))]
    assert "--ncpus" not in plain.stderr
    assert data.keys() == same.keys() and len(data) == 6
    assert all((data[name] == same[name]).all() for name in data)
