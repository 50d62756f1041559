"""Open-file limits (issue 21.2): another user's plain connections must not fail a run."""

from __future__ import annotations

import contextlib
import errno
import os
import resource
import socket
import subprocess
import sys
import time

import pytest

from mwr_dask.noise.source import NoiseSource
from mwr_dask.parallel import pipeline

from .helpers import assert_only_volumes

#: The limits the runs below start with: a low soft limit under a higher hard one.
SOFT, HARD = 256, 4096


def listening_ports(pid: int) -> set[int]:
    """Loopback ports that ``pid`` and its children listen on (scheduler, nannies, workers)."""
    import psutil

    root = psutil.Process(pid)
    ports = set()
    for proc in [root, *root.children(recursive=True)]:
        with contextlib.suppress(psutil.Error):
            ports |= {c.laddr.port for c in proc.net_connections("tcp")
                      if c.status == psutil.CONN_LISTEN and c.laddr.ip == "127.0.0.1"}  # fmt: skip
    return ports


@pytest.mark.slow
def test_plain_connections_to_every_port_do_not_fail_a_run(tmp_path):
    # 300 silent plain TCP connections to each port: each one holds a descriptor in the
    # listening process while it waits for a TLS handshake that never comes
    out = tmp_path / "noise"
    count = 1500
    run = subprocess.Popen(
        ["prlimit", f"--nofile={SOFT}:{HARD}", sys.executable, "-m", "mwr_dask",
         "generate-noise", str(out), str(count), "24", "--mode", "2", "--ncpus", "2",
         "--no-dashboard", "--seed", "2"],
        stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, start_new_session=True,
    )  # fmt: skip
    held: list[socket.socket] = []
    try:
        for line in run.stdout:
            if line.startswith("Local cluster: "):
                break
        deadline = time.monotonic() + 30
        while len(ports := listening_ports(run.pid)) < 5 and time.monotonic() < deadline:
            time.sleep(0.05)  # scheduler, its HTTP server, 2 nannies, 2 workers
        assert len(ports) >= 5, ports
        for port in sorted(ports):
            for _ in range(300):  # not waiting for each: a full backlog drops the SYN
                sock = socket.socket()
                sock.setblocking(False)
                sock.connect_ex(("127.0.0.1", port))
                held.append(sock)
        assert run.poll() is None, "the run ended before the connections were made"
        _, err = run.communicate(timeout=300)
    finally:
        for sock in held:
            sock.close()
        if run.poll() is None:
            run.kill()
    assert run.returncode == 0, err[-3000:]
    assert "Traceback" not in err, err[-3000:]
    assert len(err) < 2000, err[-3000:]
    assert_only_volumes(out, range(count))


def test_the_soft_limit_is_raised_to_the_hard_one_and_restored(tmp_path):
    code = (
        "import resource\n"
        "from mwr_dask.parallel.clusters.limits import open_files_raised\n"
        "with open_files_raised():\n"
        "    print(*resource.getrlimit(resource.RLIMIT_NOFILE))\n"
        "print(*resource.getrlimit(resource.RLIMIT_NOFILE))\n"
    )
    child = subprocess.run(
        ["prlimit", f"--nofile={SOFT}:{HARD}", sys.executable, "-c", code],
        capture_output=True, text=True, timeout=60, env={**os.environ, "PYTHONPATH": os.getcwd()},
    )  # fmt: skip
    assert child.returncode == 0, child.stderr
    assert child.stdout.split("\n")[:2] == [f"{HARD} {HARD}", f"{SOFT} {HARD}"]


def test_an_infinite_hard_limit_is_capped(monkeypatch):
    from mwr_dask.parallel.clusters import limits

    calls = []
    monkeypatch.setattr(resource, "getrlimit", lambda _: (SOFT, resource.RLIM_INFINITY))
    monkeypatch.setattr(resource, "setrlimit", lambda _, value: calls.append(value))
    with limits.open_files_raised():
        pass
    assert calls == [(limits.MOST_OPEN_FILES, resource.RLIM_INFINITY),
                     (SOFT, resource.RLIM_INFINITY)]  # fmt: skip


@pytest.mark.parametrize("failures, status", [(2, "written"), (99, "failed")])
def test_too_many_open_files_is_retried_then_one_sentence(tmp_path, monkeypatch, failures, status):
    real, tries = pipeline.write_volume, []

    def flaky(*args, **kwargs):
        tries.append(1)
        if len(tries) <= failures:
            raise OSError(errno.EMFILE, os.strerror(errno.EMFILE))
        return real(*args, **kwargs)

    monkeypatch.setattr(pipeline, "write_volume", flaky)
    monkeypatch.setattr(pipeline, "RETRY_PAUSE", 0.001)
    source = NoiseSource(8, mode=2, seed=1)
    rec = pipeline.write_one(0, source, str(tmp_path), str(tmp_path), False, False)
    assert rec["status"] == status
    if status == "written":
        assert len(tries) == 3
        assert_only_volumes(tmp_path, [0])
    else:
        assert len(tries) == pipeline.OPEN_FILE_TRIES
        assert rec["error"].endswith(f"Too many open files ({pipeline.OPEN_FILE_TRIES} tries)")
        assert "\n" not in rec["error"] and os.listdir(tmp_path) == []


def test_a_worker_out_of_files_when_it_first_opens_the_folder_retries(tmp_path, monkeypatch):
    """The folder's descriptor is opened at a worker's first volume: EMFILE there is retried."""
    real, tries = pipeline.opened_folder, []

    def flaky(*args, **kwargs):
        tries.append(1)
        if len(tries) <= 2:
            raise OSError(errno.EMFILE, os.strerror(errno.EMFILE))
        return real(*args, **kwargs)

    monkeypatch.setattr(pipeline, "opened_folder", flaky)
    monkeypatch.setattr(pipeline, "RETRY_PAUSE", 0.001)
    rec = pipeline.write_one(0, NoiseSource(8, mode=2, seed=1), str(tmp_path), str(tmp_path),
                             False, False)  # fmt: skip
    assert rec["status"] == "written", rec
    assert_only_volumes(tmp_path, [0])
