"""Dashboard addresses, links and SSH tunnel hints (no Dask import)."""

from __future__ import annotations

import socket
from urllib.parse import urlparse

LOOPBACK = "127.0.0.1"
#: Hosts that mean "every interface".
WILDCARDS = ("", "0.0.0.0", "::", "[::]", "*")


def dashboard_address(text: str | None) -> str | None:
    """``host:port`` of a dashboard; a bare port (``8788``, ``:8788``) stays on 127.0.0.1.

    Dask binds a bare port on every interface; a dashboard shows what runs and is served
    without authentication, so it is offered to other hosts only when a host is named.
    """
    if text is None:
        return None
    text = text.strip()
    if text.isdigit():
        return f"{LOOPBACK}:{text}"
    if text.startswith(":") and text[1:].isdigit():
        return f"{LOOPBACK}{text}"
    return text


def dashboard_link(address: str, port: int) -> str:
    """Link to a dashboard bound at ``address`` (``host:port``) that listens on ``port``.

    A wildcard host is shown as this host's name; the port is the one bound (a taken port
    is replaced by a free one).
    """
    host = address.rpartition(":")[0].strip("[]")
    if host in WILDCARDS:
        host = socket.gethostname()
    if ":" in host:
        host = f"[{host}]"
    return f"http://{host}:{port}/status"


def tunnel_hint(link: str, *, served_here: bool = False) -> str | None:
    """Return an SSH tunnel command for a dashboard on another host, or None if it is local.

    With ``served_here`` (a batch cluster's scheduler runs in this process, typically on a
    login node), a dashboard on this host's loopback gets a tunnel to this host.
    """
    url = urlparse(link)
    host, port, login = url.hostname, url.port or 8787, "<login-node>"
    if host in (None, "localhost", "127.0.0.1", "::1"):
        if not served_here:
            return None
        host, login = "localhost", socket.gethostname()
    return f"ssh -N -L {port}:{host}:{port} {login}, then open http://localhost:{port}{url.path}"
