"""The fast loop starts no Dask cluster: the guard of tests/conftest.py fails a test that does."""

from __future__ import annotations

import os
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]

CASES = textwrap.dedent(
    """
    import subprocess, sys
    import pytest
    from distributed import LocalCluster

    START = "from distributed import LocalCluster as L; L(n_workers=0, processes=False).close()"

    def test_starts_a_cluster_here():
        with LocalCluster(n_workers=0, processes=False, dashboard_address=None):
            pass

    def test_starts_a_cluster_in_a_subprocess():
        subprocess.run([sys.executable, "-c", START], check=True)

    def test_asks_for_the_client_fixture(client):
        pass

    @pytest.mark.slow
    def test_slow_may_start_one():
        with LocalCluster(n_workers=0, processes=False, dashboard_address=None):
            pass

    def test_starts_none():
        pass
    """
)


@pytest.mark.slow  # it starts clusters, in the pytest it runs
def test_a_fast_test_that_starts_a_cluster_fails(tmp_path):
    (tmp_path / "test_cases.py").write_text(CASES)
    path = os.pathsep.join(filter(None, [str(ROOT), os.environ.get("PYTHONPATH")]))
    run = subprocess.run(
        [sys.executable, "-m", "pytest", "-p", "tests.conftest", "-c", str(ROOT / "pyproject.toml"),
         "--rootdir", str(tmp_path), "-p", "no:cacheprovider", "-rA", "test_cases.py"],
        capture_output=True, text=True, cwd=tmp_path, timeout=300,
        env={**os.environ, "PYTHONPATH": path},
    )  # fmt: skip
    out = run.stdout
    assert run.returncode == 1, out + run.stderr
    summary = out[out.index("short test summary info") :]
    for name in ("here", "in_a_subprocess"):
        assert f"ERROR test_cases.py::test_starts_a_cluster_{name}" in summary, out
    errors = out[: out.index("short test summary info")]  # the summary is not cut under CI
    assert errors.count("Failed: started a Dask cluster: mark it @pytest.mark.slow") == 2, out
    assert "ERROR test_cases.py::test_asks_for_the_client_fixture" in summary
    assert "Failed: uses the cluster fixture 'client': mark it @pytest.mark.slow" in out
    assert "PASSED test_cases.py::test_slow_may_start_one" in summary
    assert "PASSED test_cases.py::test_starts_none" in summary
    assert "3 errors" in summary
