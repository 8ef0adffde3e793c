"""``serve()``: run the UI on a local port with uvicorn."""

from __future__ import annotations

import ipaddress
import socket
import sys
import threading
import webbrowser
from pathlib import Path

from ..project import Project

LOOPBACK_NAMES = {"localhost", "ip6-localhost"}


def is_loopback(host: str) -> bool:
    """Whether ``host`` only accepts connections from this machine."""
    if host in LOOPBACK_NAMES:
        return True
    try:
        return ipaddress.ip_address(host.strip("[]")).is_loopback
    except ValueError:
        return False


def bind_socket(host: str, port: int | None) -> socket.socket:
    """A listening TCP socket on ``host``: ``port``, or a free port chosen by the OS when None."""
    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    sock = socket.socket(family, socket.SOCK_STREAM)
    try:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        sock.bind((host.strip("[]"), port or 0))
        sock.listen(128)
    except BaseException:
        sock.close()  # a taken port or unknown host is a one-line error, not also a leaked socket
        raise
    return sock


def url_for(host: str, port: int) -> str:
    shown = f"[{host.strip('[]')}]" if ":" in host else host
    return f"http://{shown}:{port}/"


def serve(
    project: Project | str | Path | None = None,
    host: str = "127.0.0.1",
    port: int | None = None,
    open_browser: bool = False,
) -> None:
    """Serve the UI until interrupted: picks a free port when ``port`` is None and prints the URL.

    Binding anything but a loopback address prints a warning on stderr: the UI has no
    authentication and shows your runs, arguments and code to whoever can reach the port.
    """
    import uvicorn

    from .app import LOOPBACK_HOSTS, create_app

    loopback = is_loopback(host)
    if not loopback:
        print(
            f"retrolog ui: warning: serving on {host}, which is not a loopback address; the UI has "
            "no authentication and anyone who can reach this port can read your runs and code",
            file=sys.stderr,
        )
    app = create_app(project, allowed_hosts=LOOPBACK_HOSTS if loopback else ["*"])
    sock = bind_socket(host, port)
    url = url_for(host, sock.getsockname()[1])
    print(f"retrolog ui: serving {app.state.reader.project.root} at {url}  (Ctrl-C to stop)")
    sys.stdout.flush()
    if open_browser:
        threading.Timer(0.5, webbrowser.open, args=(url,)).start()
    config = uvicorn.Config(app, log_level="warning", access_log=False)
    server = uvicorn.Server(config)
    try:
        server.run(sockets=[sock])
    finally:
        sock.close()
