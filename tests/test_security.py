"""Who can reach a run's cluster, and scheduler addresses that are not Dask schedulers.

Local clusters run over TLS with keys made for the run: another local user (``nobody``) and
even root without the keys cannot talk to the scheduler, let alone run code in the workers.
"""

from __future__ import annotations

import contextlib
import os
import re
import shlex
import shutil
import signal
import socket
import subprocess
import sys
import threading
import time
from http.server import BaseHTTPRequestHandler, HTTPServer

import mrcfile
import pytest

from mwr_dask.noise.source import NoiseSource
from mwr_dask.parallel.clusters import UsageError, make_cluster
from mwr_dask.parallel.clusters.checks import memory_fraction, memory_problems, worker_memory
from mwr_dask.parallel.clusters.dashboard import dashboard_address, dashboard_link, tunnel_hint

from .conftest import skip_or_fail
from .daskprocs import DaskProcesses
from .helpers import assert_only_volumes, cli

NOBODY_CONNECT = r"""
import socket, ssl, sys
host, port = sys.argv[1], int(sys.argv[2])
# a plain Dask client speaks first: send a handshake-sized message, expect no Dask reply
try:
    with socket.create_connection((host, port), timeout=2) as s:
        s.settimeout(1)
        s.sendall(b"\x01" + b"\x00" * 15)
        data = s.recv(64)
except OSError:  # refused, reset, or closed since it was listed
    data = b""
# TLS without the run's client certificate: the scheduler requires one
ctx = ssl.create_default_context()
ctx.check_hostname = False
ctx.verify_mode = ssl.CERT_NONE
try:
    with socket.create_connection((host, port), timeout=2) as s:
        with ctx.wrap_socket(s, server_hostname=host) as t:
            t.settimeout(1)
            t.sendall(b"\x00" * 16)
            got = t.recv(64)
    print("TLS-ACCEPTED", len(got))
except (ssl.SSLError, OSError) as err:
    print("TLS-REFUSED", type(err).__name__)
print("PLAIN", len(data))
"""


def start_run(folder, *args):
    return subprocess.Popen(
        [sys.executable, "-m", "mwr_dask", "generate-noise", str(folder), *args],
        stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, start_new_session=True,
    )  # fmt: skip


def wait_for_line(proc, prefix):
    for line in proc.stdout:
        if line.startswith(prefix):
            return line
    raise AssertionError(f"no line {prefix!r}: {proc.stderr.read()}")


@contextlib.contextmanager
def run_on_dask_processes(tmp_path, count: int, *flags: str, files: int = 1):
    """Yield a run of ``count`` 40^3 volumes on a scheduler and a worker started as processes.

    Yields (the processes, the worker, the run, its folder) once ``files`` volumes are there.
    """
    procs = DaskProcesses(tmp_path)
    try:
        procs.start_scheduler()
        worker = procs.start_worker()
        procs.wait_for_workers(1)
        out = tmp_path / "noise"
        run = start_run(out, str(count), "40", "--seed", "3", "--scheduler", procs.address,
                        *flags)  # fmt: skip
        deadline = time.monotonic() + 120
        while time.monotonic() < deadline and not (out.is_dir() and len(os.listdir(out)) >= files):
            time.sleep(0.05)
        yield procs, worker, run, out
    finally:
        procs.close()


@pytest.mark.slow
def test_nobody_and_root_without_the_keys_cannot_use_a_local_run(tmp_path):
    # 32^3 volumes over 601 tilts on one worker: small files, work that outlasts the probes
    run = start_run(tmp_path / "noise", "800", "32", "--anglestep", "0.2", "--ncpus", "1",
                    "--no-dashboard", "--seed", "1")  # fmt: skip
    try:
        line = wait_for_line(run, "Local cluster: ")
        address = line.split()[2].rstrip(",")
        assert address.startswith("tls://127.0.0.1:"), line
        host, port = address[len("tls://") :].rsplit(":", 1)
        if os.geteuid() != 0 or not shutil.which("runuser"):
            skip_or_fail("needs root and runuser to act as nobody")
        # another local user, at every port the run listens on: scheduler, nannies, workers
        import psutil

        procs = [psutil.Process(run.pid), *psutil.Process(run.pid).children(recursive=True)]
        ports = {port}
        for proc in procs:
            with contextlib.suppress(psutil.Error):
                ports |= {str(c.laddr.port) for c in proc.net_connections("tcp")
                          if c.status == psutil.CONN_LISTEN and c.laddr.ip == host}  # fmt: skip
        assert len(ports) >= 3, ports  # scheduler, nanny, worker (and the HTTP server)
        for each in sorted(ports, key=lambda p: p != port):  # the scheduler first
            nobody = subprocess.run(
                ["runuser", "-u", "nobody", "--", "/usr/bin/python3", "-c", NOBODY_CONNECT,
                 host, each], capture_output=True, text=True, timeout=60,
            )  # fmt: skip
            assert nobody.returncode == 0, nobody.stderr
            assert "PLAIN 0" in nobody.stdout, (each, nobody.stdout)
            if each == port:
                assert "TLS-REFUSED" in nobody.stdout, nobody.stdout
        assert run.poll() is None, "the run ended before every port was tried"
        # root, with distributed but without the run's keys: plain tcp and a TLS of its own
        from distributed import Client
        from distributed.security import Security

        for attempt in (
            lambda: Client(f"tcp://{host}:{port}", timeout="2s"),
            lambda: Client(address, timeout="2s", security=Security.temporary()),
        ):
            with pytest.raises((OSError, TimeoutError)):
                attempt().run(os.getpid)
        assert run.poll() is None, "the run ended before root tried"
    finally:
        _, err = run.communicate(timeout=300)
    assert run.returncode == 0, err
    assert_only_volumes(tmp_path / "noise", range(800))


@pytest.mark.slow
def test_the_batch_credentials_folder_is_private_or_refused(tmp_path):
    from mwr_dask.parallel.clusters import ClusterError
    from mwr_dask.parallel.clusters.batch import private_folder

    made = private_folder(tmp_path / "sibling" / "tls")
    assert made.is_dir() and (made.stat().st_mode & 0o777) == 0o700
    (tmp_path / "loose").mkdir(mode=0o755)
    assert (private_folder(tmp_path / "loose").stat().st_mode & 0o777) == 0o700
    target = tmp_path / "theirs"
    target.mkdir()
    (tmp_path / "planted").symlink_to(target)  # another user's link where the keys would go
    with pytest.raises(ClusterError, match="not a folder of yours"):
        private_folder(tmp_path / "planted")
    if os.geteuid() == 0:
        other = tmp_path / "other"
        other.mkdir()
        os.chown(other, 65534, 65534)  # nobody's
        with pytest.raises(ClusterError, match="not a folder of yours"):
            private_folder(other)


@pytest.mark.slow
def test_a_bare_dashboard_port_stays_on_loopback(tmp_path):
    assert dashboard_address("8788") == "127.0.0.1:8788"
    assert dashboard_address(":8788") == "127.0.0.1:8788"
    assert dashboard_address("0.0.0.0:8788") == "0.0.0.0:8788"
    assert dashboard_address(None) is None
    run = cli("generate-noise", str(tmp_path / "n"), "2", "16", "--ncpus", "1",
              "--dashboard-address", "0")  # fmt: skip
    assert run.returncode == 0, run.stderr
    link = re.search(r"Dashboard: (\S+)", run.stdout)
    assert link and link.group(1).startswith("http://127.0.0.1:"), run.stdout


def test_batch_dashboard_link_names_where_it_listens():
    assert dashboard_link("127.0.0.1:8787", 40123) == "http://127.0.0.1:40123/status"
    assert dashboard_link("0.0.0.0:8787", 8787) == f"http://{socket.gethostname()}:8787/status"
    hint = tunnel_hint("http://127.0.0.1:40123/status", served_here=True)
    assert hint.startswith(f"ssh -N -L 40123:localhost:40123 {socket.gethostname()}")
    assert tunnel_hint("http://127.0.0.1:40123/status") is None


class Silent(threading.Thread):
    """A TCP server that accepts and never says a word."""

    def __init__(self):
        super().__init__(daemon=True)
        self.sock = socket.create_server(("127.0.0.1", 0))
        self.port = self.sock.getsockname()[1]
        self.conns = []

    def run(self):
        with contextlib.suppress(OSError):
            while True:
                self.conns.append(self.sock.accept()[0])


class Http400(BaseHTTPRequestHandler):
    def do_GET(self):
        self.send_error(400)

    def log_message(self, *args):
        pass


@pytest.fixture
def http_server():
    server = HTTPServer(("127.0.0.1", 0), Http400)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    yield server.server_address[1]
    server.shutdown()


@pytest.fixture
def silent_server():
    server = Silent()
    server.start()
    yield server.port
    server.sock.close()


@pytest.mark.slow
def test_a_port_that_is_not_a_dask_scheduler_is_named_within_the_timeout(
    tmp_path, http_server, silent_server
):
    for port, said in ((http_server, "an HTTP server answered"),
                       (silent_server, "does not answer like a Dask scheduler")):  # fmt: skip
        run = cli("generate-noise", str(tmp_path / "n"), "2", "16", "--connect-timeout", "2",
                  "--scheduler", f"tcp://127.0.0.1:{port}", timeout=60)  # fmt: skip
        assert run.returncode == 1, run.stderr
        assert said in run.stderr and "Traceback" not in run.stderr, run.stderr
        assert run.stderr.count("\n") == 1
        assert not (tmp_path / "n").exists()


@pytest.mark.parametrize(
    ("address", "said"),
    [
        ("http://127.0.0.1:8787/status", "is a web address"),
        ("tls://127.0.0.1:8786", "needs TLS credentials"),
        ("ws://127.0.0.1:8786", "connects over tcp:// or tls://"),
        ("tcp://127.0.0.1:99999", "is not a scheduler address"),
    ],
)
def test_scheduler_addresses_that_cannot_work_are_usage_errors(tmp_path, address, said):
    with pytest.raises(UsageError, match=re.escape(said)):
        make_cluster(scheduler=address)
    run = cli("generate-noise", str(tmp_path / "n"), "2", "16", "--scheduler", address)
    assert run.returncode == 2 and said in run.stderr and "Traceback" not in run.stderr
    assert run.stderr.count("\n") == 1


def test_plain_tcp_to_another_host_is_warned_once(tmp_path):
    # nothing listens at this documentation address: the warning comes before the attempt
    run = cli("generate-noise", str(tmp_path / "n"), "2", "16", "--connect-timeout", "1",
              "--scheduler", "tcp://192.0.2.1:8786", timeout=60)  # fmt: skip
    assert run.returncode == 1
    warnings = [ln for ln in run.stderr.splitlines() if "warning" in ln]
    assert len(warnings) == 1 and "plain tcp://" in warnings[0], run.stderr


@pytest.mark.slow
def test_the_memory_check_counts_dasks_thresholds(tmp_path):
    share, name = memory_fraction()
    assert (share, name) == (0.8, "pause")  # distributed's defaults
    assert memory_fraction({"pause": False, "terminate": 0.95}) == (0.95, "terminate")
    assert memory_fraction({"pause": False, "terminate": False}) == (1.0, "")
    # a cube between 80% and 100% of a local worker's limit: accepted before, refused now
    from mwr_dask.parallel.cores import usable_cores

    ncpus = usable_cores()  # more would be capped to the usable cores
    limit = worker_memory(ncpus)
    n = next(
        n for n in range(64, 4096, 4)
        if 0.8 * limit < NoiseSource(cubesize=n, mode=2, seed=1).peak_bytes() <= limit
    )  # fmt: skip
    params = NoiseSource(cubesize=n, mode=2, seed=1)
    assert memory_problems(params, limit, (1.0, "")) == []
    (problem,) = memory_problems(params, limit)
    assert "memory pause threshold is 80%" in problem
    run = cli("generate-noise", str(tmp_path / "n"), "2", str(n), "--mode", "2",
              "--ncpus", str(ncpus), "--dry-run")  # fmt: skip
    assert run.returncode == 2 and "pause threshold" in run.stderr, run.stderr


@pytest.mark.slow
def test_ctrl_c_during_cluster_start_prints_one_line(tmp_path):
    run = start_run(tmp_path / "n", "2000", "16", "--ncpus", "2", "--no-dashboard")
    import psutil

    # the moment the first worker process exists: the cluster is starting
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline and run.poll() is None:
        with contextlib.suppress(psutil.Error):
            if psutil.Process(run.pid).children():
                break
        time.sleep(0.002)
    assert run.poll() is None, "the run ended before its cluster started"
    assert not os.listdir(tmp_path / "n"), "volumes were written: the cluster had started"
    os.killpg(run.pid, signal.SIGINT)  # as a terminal's Ctrl-C: the whole process group
    _, err = run.communicate(timeout=120)
    assert run.returncode == 130, err
    assert "Traceback" not in err and "KeyboardInterrupt" not in err, err
    assert err.count("\n") == 1, err


@pytest.mark.slow
def test_a_worker_that_joins_mid_run_is_checked_before_it_writes(tmp_path):
    """A worker of another mwr-dask version joins after the start-up checks."""
    real = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
    other = tmp_path / "other" / "mwr_dask"
    other.mkdir(parents=True)
    # the real code under another version number: it would write volumes if it were let
    (other / "__init__.py").write_text(
        f"__path__ = [{os.path.join(real, 'mwr_dask')!r}]\n__version__ = '0.0.0-other'\n"
    )
    with run_on_dask_processes(tmp_path, 600, "--anglestep", "0.5") as (procs, _, run, out):
        env = {**os.environ, "PYTHONPATH": str(tmp_path / "other")}
        other = procs.start_worker(env=env)
        other.wait(timeout=120)  # refused: it closes, with its nanny
        # the run goes on long enough after the refusal for its warning to reach it
        assert run.poll() is None, "the run ended before the other worker was refused"
        _, stderr = run.communicate(timeout=600)
        assert run.returncode == 0, stderr + procs.log_text()
        assert re.search(r"worker tcp://\S+ is not used: it has mwr_dask 0\.0\.0-other", stderr)
        assert_only_volumes(out, range(600))
        for name in os.listdir(out):
            with mrcfile.open(out / name) as m:
                assert b"0.0.0-other" not in m.header.label.tobytes()


@pytest.mark.slow
def test_a_scheduler_that_dies_mid_run_is_one_sentence_with_what_is_on_disk(tmp_path):
    with run_on_dask_processes(tmp_path, 300, "--retries", "0", files=5) as (procs, _, run, out):
        procs.kill(procs.scheduler)
        _, stderr = run.communicate(timeout=300)
        on_disk = len(os.listdir(out))
        assert run.returncode == 1, stderr
        assert "Traceback" not in stderr and stderr.count("\n") == 1, stderr
        said = re.search(r"lost the Dask scheduler .*: (\d+) of 300 volumes are complete", stderr)
        # counted on disk when the run ended (the orphaned worker may finish its volume)
        assert said and 5 <= int(said.group(1)) <= on_disk, stderr
        assert_only_volumes(out, sorted(int(n[2:7]) for n in os.listdir(out)))


@pytest.mark.slow
def test_a_checked_worker_that_joins_mid_run_is_given_work(tmp_path):
    """The only worker dies; the one that replaces it passes the check and finishes the run."""
    with run_on_dask_processes(tmp_path, 200, files=10) as (procs, first, run, out):
        procs.kill(first)
        assert run.poll() is None, "the run ended before its worker could be replaced"
        procs.start_worker()
        _, stderr = run.communicate(timeout=300)
        assert run.returncode == 0, stderr + procs.log_text()
        assert "is not used" not in stderr
        assert_only_volumes(out, range(200))


@pytest.mark.slow
def test_a_tls_scheduler_is_reached_with_the_users_dask_security_settings(tmp_path):
    procs = DaskProcesses(tmp_path, tls=True)
    try:
        procs.start_scheduler()
        procs.start_worker()
        assert procs.address.startswith("tls://")
        procs.wait_for_workers(1)
        env = {**os.environ, **procs.tls_env}
        run = cli("generate-noise", str(tmp_path / "noise"), "4", "16", "--seed", "1",
                  "--scheduler", procs.address, env=env)  # fmt: skip
        assert run.returncode == 0, run.stderr + procs.log_text()
        assert "warning" not in run.stderr
        assert_only_volumes(tmp_path / "noise", range(4))
        # without the settings: one sentence, exit 2, before anything is contacted
        bare = {k: v for k, v in os.environ.items() if not k.startswith("DASK_")}
        run = cli("generate-noise", str(tmp_path / "other"), "4", "16",
                  "--scheduler", procs.address, env=bare)  # fmt: skip
        assert run.returncode == 2 and "needs TLS credentials" in run.stderr
    finally:
        procs.close()


PLANTED = "open({marker!r}, 'w').write('imported {name}')\nraise ImportError('planted')\n"


@contextlib.contextmanager
def shared_tmp_with_planted_scratch():
    """A /tmp-like folder (1777) where ``nobody`` made Dask's default scratch folder first.

    The scratch folder ``dask-scratch-space`` holds ``mrcfile.py``, ``scipy.py`` and
    ``distributed.py`` of nobody's: imported, each writes a marker beside the folder.
    """
    if os.geteuid() != 0 or not shutil.which("runuser"):
        skip_or_fail("needs root and runuser to act as nobody")
    import tempfile

    base = tempfile.mkdtemp(prefix="shared-tmp-", dir="/tmp")
    try:
        os.chmod(base, 0o1777)
        scratch = os.path.join(base, "dask-scratch-space")
        plant = [f"mkdir -m 0777 {scratch}"]
        for name in ("mrcfile", "scipy", "distributed"):
            code = PLANTED.format(marker=os.path.join(base, f"marker-{name}"), name=name)
            plant.append(f"printf %s {shlex.quote(code)} > {scratch}/{name}.py")
        subprocess.run(["runuser", "-u", "nobody", "--", "sh", "-c", " && ".join(plant)],
                       check=True)  # fmt: skip
        assert os.stat(scratch).st_uid != 0
        yield base
    finally:
        shutil.rmtree(base, ignore_errors=True)


def markers(base) -> list[str]:
    return sorted(n for n in os.listdir(base) if n.startswith("marker-"))


@pytest.mark.slow
def test_another_users_dask_scratch_folder_is_never_imported(tmp_path):
    """Issue 21.1: nobody plants modules in $TMPDIR/dask-scratch-space before our runs."""
    with shared_tmp_with_planted_scratch() as base:
        env = {**os.environ, "TMPDIR": base}
        out = tmp_path / "noise"
        run = cli("generate-noise", str(out), "4", "16", "--ncpus", "2", "--no-dashboard",
                  env=env)  # fmt: skip
        assert markers(base) == [], run.stderr
        assert run.returncode == 0, run.stderr
        assert_only_volumes(out, range(4))
        seen = cli("inspect", str(out), "--ncpus", "2", env=env)
        assert markers(base) == [], seen.stderr
        assert seen.returncode in (0, 1), seen.stderr  # 4 volumes: too few for IsoNet
        # the runs' own scratch folders were private and are gone
        assert sorted(os.listdir(base)) == ["dask-scratch-space"]


def test_a_temporary_folder_others_can_take_over_is_refused(tmp_path):
    import dask

    from mwr_dask.parallel.clusters import ClusterError
    from mwr_dask.parallel.clusters.local import private_scratch

    loose = tmp_path / "loose"
    loose.mkdir()
    os.chmod(loose, 0o777)  # world-writable, not sticky: another user could swap our folder
    with (
        dask.config.set({"temporary-directory": str(loose)}),
        pytest.raises(ClusterError, match="can be written by other users and is not sticky"),
        private_scratch(),
    ):
        pass
    os.chmod(loose, 0o1777)  # as /tmp: fine, and the folder is private and goes afterwards
    with dask.config.set({"temporary-directory": str(loose)}), private_scratch() as scratch:
        assert (os.stat(scratch).st_mode & 0o777) == 0o700
        assert dask.config.get("temporary-directory") == scratch
    assert os.listdir(loose) == []
    if os.geteuid() == 0:
        theirs = tmp_path / "theirs"
        theirs.mkdir()
        os.chown(theirs, 65534, 65534)
        with (
            dask.config.set({"temporary-directory": str(theirs)}),
            pytest.raises(ClusterError, match="belongs to another user"),
            private_scratch(),
        ):
            pass
