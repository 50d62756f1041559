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

    def __init__(self, workdir: Path, *, tls: bool = False) -> None:
        self.workdir = workdir
        self.tls_args: list[str] = []
        self.tls_env: dict[str, str] = {}
        if tls:
            self._write_keys()
        self.scheduler_file = workdir / "scheduler.json"
        self.scheduler: subprocess.Popen | None = None
        self.workers: list[subprocess.Popen] = []
        self.logs: list = []

    def _write_keys(self) -> None:
        """Keys of a CA, one certificate for every role; the scheduler and workers use TLS."""
        from distributed.security import Security

        keys = Security.temporary()
        files = {}
        for name, text in (("ca.pem", keys.tls_ca_file), ("cert.pem", keys.tls_client_cert),
                           ("key.pem", keys.tls_client_key)):  # fmt: skip
            path = self.workdir / name
            path.write_text(text)
            path.chmod(0o600)
            files[name] = str(path)
        self.tls_args = ["--tls-ca-file", files["ca.pem"], "--tls-cert", files["cert.pem"],
                         "--tls-key", files["key.pem"]]  # fmt: skip
        # what a user puts in their dask configuration, as environment variables
        self.tls_env = {
            "DASK_DISTRIBUTED__COMM__TLS__CA_FILE": files["ca.pem"],
            "DASK_DISTRIBUTED__COMM__TLS__CLIENT__CERT": files["cert.pem"],
            "DASK_DISTRIBUTED__COMM__TLS__CLIENT__KEY": files["key.pem"],
        }

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
                *(["--protocol", "tls", *self.tls_args] if self.tls_args else []),
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
        args += self.tls_args
        proc = self._spawn(args, env=env, prefix=prefix)
        self.workers.append(proc)
        return proc

    def wait_for_workers(self, count: int, timeout: float = 60) -> None:
        security = None
        if self.tls_args:
            from distributed.security import Security

            ca, cert, key = self.tls_args[1::2]
            security = Security(tls_ca_file=ca, tls_client_cert=cert, tls_client_key=key,
                                require_encryption=True)  # fmt: skip
        with Client(self.address, timeout="20s", security=security) as c:
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
