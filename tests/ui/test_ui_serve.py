"""``retrolog.ui.serve``: a real server process on a free port, loopback by default."""

from __future__ import annotations

import re
import select
import socket
import subprocess
import sys
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import httpx
import pytest
from tests.conftest import script_env

from retrolog.ui.server import is_loopback

URL = re.compile(r"http://(\S+?):(\d+)/")


@contextmanager
def serving(project: Path, **kwargs: object) -> Iterator[tuple[subprocess.Popen[str], str]]:
    """Run ``serve(project, **kwargs)`` in a subprocess; yield it and its first stdout line."""
    code = f"import sys; from retrolog.ui import serve; serve(sys.argv[1], **{kwargs!r})"
    proc = subprocess.Popen(
        [sys.executable, "-c", code, str(project)],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        env=script_env(),
    )
    try:
        assert proc.stdout is not None
        poller = select.poll()  # not select(): the test process may hold fds above 1024
        poller.register(proc.stdout, select.POLLIN)
        ready = poller.poll(30_000)
        assert ready, "serve() printed nothing within 30 s"
        yield proc, proc.stdout.readline()
    finally:
        proc.terminate()
        proc.wait(timeout=10)


def _get(url: str, **kwargs: object) -> httpx.Response:
    deadline = time.time() + 15
    while True:
        try:
            return httpx.get(url, timeout=5, **kwargs)  # type: ignore[arg-type]
        except httpx.ConnectError:
            if time.time() > deadline:
                raise
            time.sleep(0.1)


def test_serve_picks_a_free_port_and_prints_the_url(project: Path) -> None:
    with serving(project) as (proc, line):
        match = URL.search(line)
        assert match and match.group(1) == "127.0.0.1", line
        assert str(project) in line
        response = _get(match.group(0) + "api/versions")
        assert response.status_code == 200 and response.json() == {"versions": []}
        assert _get(match.group(0) + "runs").status_code == 200
        assert proc.poll() is None
    assert proc.stderr is not None and "warning" not in proc.stderr.read()


def test_serve_on_a_given_port_warns_when_not_on_loopback(
    project: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    import uvicorn

    from retrolog.ui import serve

    seen: dict[str, object] = {}

    def fake_run(self: uvicorn.Server, sockets: list[socket.socket]) -> None:
        seen["app"] = self.config.app
        seen["address"] = sockets[0].getsockname()

    monkeypatch.setattr(uvicorn.Server, "run", fake_run)
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
    serve(project, host="0.0.0.0", port=port)
    out, err = capsys.readouterr()
    assert f"http://0.0.0.0:{port}/" in out and seen["address"] == ("0.0.0.0", port)
    assert "not a loopback address" in err and "no authentication" in err
    serve(project, port=port)  # loopback: no warning
    out, err = capsys.readouterr()
    assert f"http://127.0.0.1:{port}/" in out and err == ""


@pytest.mark.parametrize(
    ("host", "expected"),
    [
        ("127.0.0.1", True),
        ("127.0.0.2", True),
        ("::1", True),
        ("[::1]", True),
        ("localhost", True),
        ("0.0.0.0", False),
        ("192.168.1.5", False),
        ("::", False),
        ("example.com", False),
    ],
)
def test_is_loopback(host: str, expected: bool) -> None:
    assert is_loopback(host) is expected
