"""A running Dask cluster, reached by address, scheduler file or dask's configuration.

The cluster is not ours: the client is closed on exit, never the cluster. Security settings
(TLS certificates) are the user's own, from dask's configuration (``distributed.comm.tls``).
Before the Dask client connects, the address is probed with a plain socket, so that a port
where something else listens (an HTTP server, a dashboard) is named within the timeout
instead of hanging or failing with a traceback.
"""

from __future__ import annotations

import contextlib
import ipaddress
import json
import os
import socket
import ssl
import struct
import time
import warnings
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

from mwr_dask.noise.inputs import file_kind, read_regular
from mwr_dask.parallel.clusters.checks import ClusterError, UsageError, check_workers, quiet_logs
from mwr_dask.parallel.clusters.dashboard import tunnel_hint

if TYPE_CHECKING:
    from distributed import Client

    from mwr_dask.noise.source import NoiseSource
    from mwr_dask.parallel.clusters.checks import Say

#: Address schemes of a scheduler this module connects to.
SCHEMES = ("tcp", "tls")
#: Hosts that are this machine.
LOOPBACK_NAMES = ("localhost", "127.0.0.1", "::1")


def configured_scheduler() -> str | None:
    """Scheduler address from dask config ``scheduler-address`` / ``DASK_SCHEDULER_ADDRESS``."""
    import dask

    return dask.config.get("scheduler-address", None) or None


def split_address(address: str) -> tuple[str, str, int]:
    """``(scheme, host, port)`` of a scheduler address; :class:`UsageError` if it is not one."""
    text = address.strip()
    scheme, sep, rest = text.partition("://")
    if not sep:
        scheme, rest = "tcp", text
    scheme = scheme.lower()
    if scheme in ("http", "https"):
        raise UsageError(
            f"{address} is a web address (a dashboard's?); a Dask scheduler's address looks"
            " like tcp://host:8786 or tls://host:8786."
        )
    if scheme not in SCHEMES:
        raise UsageError(
            f"{address} is not a scheduler address: mwr-dask connects over tcp:// or tls://."
        )
    host, _, port = rest.rstrip("/").rpartition(":")
    host = host.strip("[]")
    if not host or not port.isdigit() or not 0 < int(port) < 65536:
        raise UsageError(
            f"{address} is not a scheduler address (tcp://host:port or tls://host:port)."
        )
    return scheme, host, int(port)


def client_tls_configured() -> bool:
    """Tell whether dask's configuration gives this client TLS credentials."""
    import dask

    # dask.config.get matches ca-file and ca_file (as DASK_* variables give it) alike
    return bool(
        dask.config.get("distributed.comm.tls.ca-file", None)
        and dask.config.get("distributed.comm.tls.client.cert", None)
    )


def is_loopback(host: str) -> bool:
    """Tell whether ``host`` is this machine's loopback."""
    if host in LOOPBACK_NAMES:
        return True
    with contextlib.suppress(ValueError):
        return ipaddress.ip_address(host).is_loopback
    return False


def address_problems(address: str) -> tuple[list[str], list[str]]:
    """Errors (one sentence each) and warnings about a scheduler address; nothing contacted."""
    try:
        scheme, host, _ = split_address(address)
    except UsageError as err:
        return [str(err)], []
    if scheme == "tls" and not client_tls_configured():
        return [
            f"{address} needs TLS credentials: set distributed.comm.tls.ca-file and"
            " distributed.comm.tls.client.cert (and .key) in your dask configuration."
        ], []
    if scheme == "tcp" and not is_loopback(host):
        return [], [
            f"{address} is plain tcp://: anyone on the network can reach this scheduler and"
            " run code in its workers; prefer tls:// (docs/reliability.md#security)."
        ]
    return [], []


#: Largest scheduler file read: ``dask scheduler`` writes a few hundred bytes.
SCHEDULER_FILE_BYTES = 2**20


def read_scheduler_file(path: Path, timeout: float) -> str:
    """Wait up to ``timeout`` seconds for a scheduler file and return its address.

    Only a regular file of at most :data:`SCHEDULER_FILE_BYTES` is read (a FIFO or a device
    is refused at once, issue 21.5); one that is not (yet) JSON with an address is read again
    until the deadline.
    """
    deadline = time.monotonic() + timeout
    while True:
        try:
            raw = read_regular(path, SCHEDULER_FILE_BYTES)
        except ValueError as err:  # not a regular file, or too big
            raise ClusterError(f"the scheduler file {path} {err}.") from None
        except FileNotFoundError:
            pass
        except OSError:
            if time.monotonic() >= deadline:
                raise ClusterError(f"cannot read the scheduler file {path}.") from None
        else:
            try:
                return str(json.loads(raw)["address"])
            except (ValueError, KeyError, TypeError):  # being written: read again until then
                if time.monotonic() >= deadline:
                    raise ClusterError(f"{path} is not a Dask scheduler file.") from None
        if time.monotonic() >= deadline:
            raise ClusterError(f"no scheduler file appeared at {path} within {timeout:g} s.")
        time.sleep(0.2)


def _what_answered(first: bytes) -> str:
    if first.startswith(b"HTTP/"):
        return "an HTTP server answered (a dashboard or web server, not a Dask scheduler)"
    shown = first[:16].decode("ascii", "backslashreplace")
    return f"something that is not a Dask scheduler answered ({shown!r})"


def probe_scheduler(address: str, timeout: float) -> None:
    """Check that a Dask scheduler listens at ``address``, within ``timeout`` seconds.

    A Dask scheduler speaks first on a new TCP connection: its handshake starts with the
    number of frames, a little-endian 64-bit integer, small. Anything else, or silence, is
    named: an HTTP server is asked ``GET /`` to be recognised.

    Raises
    ------
    ClusterError
        Nothing listens, or something else does; one sentence.
    """
    scheme, host, port = split_address(address)
    deadline = time.monotonic() + timeout
    try:
        sock = socket.create_connection((host, port), timeout=timeout)
    except OSError as err:
        reason = err.strerror or str(err) or type(err).__name__
        raise ClusterError(
            f"cannot reach the Dask scheduler at {address} within {timeout:g} s ({reason})."
        ) from None
    with sock:
        if scheme == "tls":
            context = ssl.create_default_context()
            context.check_hostname = False
            context.verify_mode = ssl.CERT_NONE
            try:
                sock.settimeout(max(0.1, deadline - time.monotonic()))
                with context.wrap_socket(sock, server_hostname=host):
                    return  # it speaks TLS; the client's certificates are checked next
            except (ssl.SSLError, OSError):
                raise ClusterError(
                    f"what listens at {address} does not speak TLS: not a Dask scheduler with TLS."
                ) from None
        first = b""
        with contextlib.suppress(OSError):
            sock.settimeout(max(0.1, min(5.0, deadline - time.monotonic())))
            first = sock.recv(64)
        if len(first) >= 8:
            (frames,) = struct.unpack("<Q", first[:8])
            if 0 < frames < 1000:
                return
        if not first:
            with contextlib.suppress(OSError):
                sock.settimeout(max(0.1, min(2.0, deadline - time.monotonic())))
                sock.sendall(b"GET / HTTP/1.0\r\n\r\n")
                first = sock.recv(64)
        if not first:
            raise ClusterError(
                f"something listens at {address} but does not answer like a Dask scheduler"
                f" within {timeout:g} s."
            )
        raise ClusterError(f"at {address}, {_what_answered(first)}.")


@dataclass(frozen=True)
class RemoteCluster:
    """A running Dask cluster: by address, by scheduler file, or from dask's configuration.

    ``scheduler_file`` (written by ``dask scheduler --scheduler-file``) is waited for, as the
    scheduler is, ``connect_timeout`` seconds.
    """

    address: str | None = None
    scheduler_file: Path | None = None
    connect_timeout: float = 10.0

    label = "remote cluster"
    remote = True
    sibling = False

    def problems(self) -> tuple[list[str], list[str]]:
        """Errors and warnings about the address, before anything is contacted.

        A scheduler file that exists already must be a regular file (it may appear later).
        """
        try:
            kind = file_kind(os.stat(self.scheduler_file).st_mode) if self.scheduler_file else ""
        except OSError:
            kind = ""
        if kind not in ("", "file"):
            return [f"--scheduler-file {self.scheduler_file} is {kind}, not a file."], []
        return ([], []) if self.address is None else address_problems(self.address)

    def planned_workers(self) -> None:
        """None: the work is planned for the workers the cluster has at run time."""
        return None

    def describe(self) -> str:
        """One line for ``--dry-run``; nothing is contacted."""
        where = self.address or self.scheduler_file or configured_scheduler()
        return f"the running Dask cluster at {where} (not contacted)"

    def script(self) -> str | None:
        """No job script."""
        return None

    def memory_problems(self, params: NoiseSource) -> list[str]:
        """Nothing known before connecting; see :meth:`check`."""
        return []

    def resolve_address(self) -> str:
        """Return the scheduler's address (waiting for the scheduler file)."""
        if self.address:
            return self.address
        if self.scheduler_file:
            return read_scheduler_file(self.scheduler_file, self.connect_timeout)
        address = configured_scheduler()
        if not address:  # pragma: no cover - make_cluster picks this class only with one
            raise ClusterError("no scheduler address is configured.")
        return address

    @contextlib.contextmanager
    def client(self, say: Say | None = None, warn: Say | None = None) -> Iterator[Client]:
        """Connect; on exit close the client only, never the cluster."""
        address = self.resolve_address()
        errors, notes = address_problems(address)
        if errors:  # from a file or the configuration: checked only now
            raise ClusterError(errors[0].rstrip("."))
        for line in notes:
            if warn is not None:
                warn(line)
        probe_scheduler(address, self.connect_timeout)
        from distributed import Client

        try:
            with warnings.catch_warnings():
                warnings.simplefilter("ignore")
                client = Client(address, timeout=f"{self.connect_timeout}s")
        except (OSError, TimeoutError, ValueError) as err:
            raise ClusterError(
                f"cannot connect to the Dask scheduler at {address} within"
                f" {self.connect_timeout:g} s ({err})."
            ) from None
        with quiet_logs(), client:
            yield client

    def check(
        self, client: Client, params: NoiseSource | None = None, folder: Path | None = None,
        tmp_dir: Path | None = None,
    ) -> None:  # fmt: skip
        """Refuse workers of other versions, with too little memory or no view of the folder."""
        check_workers(client, params, folder, tmp_dir, hint="give the workers more memory"
                      " or use a smaller CUBESIZE")  # fmt: skip

    def report(self, client: Client, threads: int, dashboard: bool = True) -> list[str]:
        """Lines on where the work runs and the dashboard (with an SSH hint if remote)."""
        lines = [f"Remote cluster: {client.scheduler.address}, {threads} worker threads"]
        if client.dashboard_link:
            lines.append(f"Dashboard: {client.dashboard_link}")
            hint = tunnel_hint(client.dashboard_link)
            if hint:
                lines.append(f"  (from your workstation: {hint})")
        return lines
