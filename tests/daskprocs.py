"""Real ``dask scheduler`` / ``dask worker`` processes on 127.0.0.1 for the tests."""

from __future__ import annotations

import contextlib
import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

from distributed import Client


class DaskProcesses:
    """A scheduler and workers started as subprocesses, each in its own process group."""

    def __init__(self, workdir: Path) -> None:
        self.workdir = workdir
        self.scheduler_file = workdir / "scheduler.json"
        self.scheduler: subprocess.Popen | None = None
        self.workers: list[subprocess.Popen] = []
        self.logs: list = []

    def _spawn(self, args, *, env=None, prefix=()) -> subprocess.Popen:
        log = open(self.workdir / f"proc-{len(self.logs)}.log", "wb")  # noqa: SIM115
        self.logs.append(log)
        return subprocess.Popen(
            [*prefix, sys.executable, "-m", "dask", *args],
            stdout=log,
            stderr=subprocess.STDOUT,
            start_new_session=True,
            cwd=self.workdir,
            env=env,
        )

    def start_scheduler(self, timeout: float = 60) -> str:
        self.scheduler = self._spawn(
            [
                "scheduler",
                "--host", "127.0.0.1",
                "--port", "0",
                "--dashboard-address", "127.0.0.1:0",
                "--scheduler-file", str(self.scheduler_file),
            ]
        )  # fmt: skip
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.scheduler_file.exists():
                try:
                    return json.loads(self.scheduler_file.read_text())["address"]
                except (ValueError, KeyError):
                    pass
            if self.scheduler.poll() is not None:
                raise RuntimeError(f"dask scheduler exited: {self.log_text()}")
            time.sleep(0.1)
        raise RuntimeError("dask scheduler did not write its scheduler file")

    @property
    def address(self) -> str:
        return json.loads(self.scheduler_file.read_text())["address"]

    def start_worker(self, *, env=None, prefix=(), nanny: bool = True) -> subprocess.Popen:
        args = [
            "worker", self.address,
            "--nthreads", "1",
            "--host", "127.0.0.1",
            "--no-dashboard",
            "--memory-limit", "2GiB",
        ]  # fmt: skip
        if not nanny:
            args.append("--no-nanny")
        proc = self._spawn(args, env=env, prefix=prefix)
        self.workers.append(proc)
        return proc

    def wait_for_workers(self, count: int, timeout: float = 60) -> None:
        with Client(self.address, timeout="20s") as c:
            c.wait_for_workers(count, timeout=timeout)

    def kill(self, proc: subprocess.Popen, sig=signal.SIGKILL) -> None:
        with contextlib.suppress(ProcessLookupError):
            os.killpg(proc.pid, sig)
        proc.wait(timeout=30)

    def log_text(self) -> str:
        return "\n".join(
            p.read_text(errors="replace")[-2000:] for p in sorted(self.workdir.glob("proc-*.log"))
        )

    def close(self) -> None:
        for proc in [*self.workers, self.scheduler]:
            if proc is not None and proc.poll() is None:
                self.kill(proc, signal.SIGTERM)
        for log in self.logs:
            log.close()
