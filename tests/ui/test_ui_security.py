"""The UI bounds its queries, stops those of vanished clients, and refuses other web sites.

A real ``retrolog ui`` process over a recorded project; Debian's Chromium (Playwright) visits a
page served from another origin that tries the endless ``WITH RECURSIVE`` query against it.
"""

from __future__ import annotations

import http.server
import re
import socket
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from functools import partial
from pathlib import Path
from typing import Any
from urllib.parse import quote

import httpx
import pytest
from tests.conftest import SIMPLE_TRAIN, git, run_python, script_env, write_script

ENDLESS = "WITH RECURSIVE c(x) AS (SELECT 1 UNION ALL SELECT x + 1 FROM c) SELECT count(*) FROM c"
WHERE = quote(f"1 IN ({ENDLESS})")
CHROMIUM = Path("/usr/bin/chromium")
URL = re.compile(r"http://(\S+?):(\d+)/")


@pytest.fixture
def recorded(project: Path) -> Path:
    write_script(project, SIMPLE_TRAIN)
    git(project, "add", "train.py")
    git(project, "commit", "-q", "-m", "train")
    run_python(project, "train.py")
    return project


@pytest.fixture
def ui(recorded: Path) -> Iterator[tuple[subprocess.Popen[str], str]]:
    """``retrolog ui`` on a free loopback port with a 20 s query limit; (process, base URL)."""
    proc = subprocess.Popen(
        [sys.executable, "-m", "retrolog", "ui"],
        cwd=recorded,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        env=script_env(RETROLOG_QUERY_TIMEOUT="20"),
    )
    try:
        assert proc.stdout is not None
        match = URL.search(proc.stdout.readline())
        assert match, "retrolog ui printed no URL"
        base = f"http://127.0.0.1:{match.group(2)}"
        deadline = time.time() + 20
        while True:
            try:
                httpx.get(base + "/api/names", timeout=5)
                break
            except httpx.ConnectError:
                assert time.time() < deadline
                time.sleep(0.1)
        yield proc, base
    finally:
        proc.terminate()
        proc.wait(timeout=10)


def cpu_seconds(pid: int) -> float:
    """User + system CPU time of a process so far (Linux /proc)."""
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / 100.0


def test_endless_filter_over_http_ends_with_the_timeout_error(recorded: Path) -> None:
    proc = subprocess.Popen(
        [sys.executable, "-m", "retrolog", "ui"],
        cwd=recorded,
        stdout=subprocess.PIPE,
        text=True,
        env=script_env(RETROLOG_QUERY_TIMEOUT="1"),
    )
    try:
        assert proc.stdout is not None
        match = URL.search(proc.stdout.readline())
        assert match
        base = f"http://127.0.0.1:{match.group(2)}"
        response = httpx.get(f"{base}/api/runs?where={WHERE}", timeout=60)
        assert response.status_code == 400
        assert "time limit of 1 s" in response.json()["detail"]
        assert (
            httpx.get(f"{base}/api/runs?where=status%3D'finished'", timeout=30).json()["count"] == 1
        )
    finally:
        proc.terminate()
        proc.wait(timeout=10)


def test_a_query_stops_when_its_client_disconnects(
    ui: tuple[subprocess.Popen[str], str],
) -> None:
    proc, base = ui
    port = int(base.rsplit(":", 1)[1])
    with socket.create_connection(("127.0.0.1", port)) as sock:
        sock.sendall(
            f"GET /api/runs?where={WHERE} HTTP/1.1\r\nHost: 127.0.0.1:{port}\r\n\r\n".encode()
        )
        time.sleep(1.0)  # the query is running (20 s limit)
    time.sleep(1.0)  # the disconnect is noticed and the query interrupted
    before = cpu_seconds(proc.pid)
    time.sleep(3.0)
    spent = cpu_seconds(proc.pid) - before
    # An endless query left running would use most of a core for these 3 s.
    assert spent < 0.6, f"the server kept working after its client left ({spent:.2f} s CPU)"
    assert httpx.get(base + "/api/runs", timeout=30).json()["count"] == 1


def test_requests_labelled_as_another_site_are_refused(
    ui: tuple[subprocess.Popen[str], str],
) -> None:
    _, base = ui
    url = f"{base}/api/runs?where={WHERE}"
    assert httpx.get(url, headers={"Origin": "http://evil.example"}, timeout=10).status_code == 403
    for site in ("cross-site", "same-site"):
        refused = httpx.get(url, headers={"Sec-Fetch-Site": site}, timeout=10)
        assert refused.status_code == 403
    # a link from another site to a page (no query string) still opens
    link = {
        "Sec-Fetch-Site": "cross-site",
        "Sec-Fetch-Mode": "navigate",
        "Sec-Fetch-Dest": "document",
    }
    assert httpx.get(base + "/runs", headers=link, timeout=10).status_code == 200
    same = {"Sec-Fetch-Site": "same-origin", "Origin": base}
    assert httpx.get(base + "/api/runs", headers=same, timeout=10).status_code == 200


EVIL_PAGE = """<!doctype html><html><body><h1>cat pictures</h1>
<img id="img" src="{url}">
<script>
fetch("{url}&via=fetch", {{mode: "no-cors"}}).catch(() => {{}});
fetch("{url}&via=cors").catch(() => {{}});
</script></body></html>"""


@pytest.mark.browser
def test_a_page_on_another_origin_cannot_run_the_endless_query(
    ui: tuple[subprocess.Popen[str], str], tmp_path: Path
) -> None:
    proc, base = ui
    if not CHROMIUM.exists():
        pytest.fail("browser tests need Debian's Chromium at /usr/bin/chromium")
    from playwright.sync_api import sync_playwright

    site = tmp_path / "evil"
    site.mkdir()
    target = f"{base}/api/runs?where={WHERE}"
    (site / "index.html").write_text(EVIL_PAGE.format(url=target))
    handler = partial(http.server.SimpleHTTPRequestHandler, directory=str(site))
    evil = http.server.ThreadingHTTPServer(("127.0.0.1", 0), handler)
    threading.Thread(target=evil.serve_forever, daemon=True).start()
    # "localhost" is another site than "127.0.0.1" for the browser
    evil_url = f"http://localhost:{evil.server_address[1]}/index.html"
    statuses: dict[str, int] = {}
    try:
        with sync_playwright() as pw:
            browser = pw.chromium.launch(
                executable_path=str(CHROMIUM), args=["--headless", "--no-sandbox"]
            )
            page = browser.new_page()

            def seen(response: Any) -> None:
                if "/api/runs" in response.url:
                    via = "fetch" if "via=fetch" in response.url else "cors"
                    statuses["img" if "via=" not in response.url else via] = response.status

            page.on("response", seen)
            # A CORS request the server answers without CORS headers fails in the browser before
            # Playwright reports a response: then only the server's CPU time below tells.
            page.on(
                "requestfailed",
                lambda r: statuses.setdefault("cors", 0) if "via=cors" in r.url else None,
            )
            before = cpu_seconds(proc.pid)
            started = time.monotonic()
            page.goto(evil_url)
            deadline = time.monotonic() + 15
            while len(statuses) < 3 and time.monotonic() < deadline:
                page.wait_for_timeout(100)
            answered = time.monotonic() - started
            browser.close()
        assert statuses["img"] == statuses["fetch"] == 403, statuses
        assert statuses["cors"] in (0, 403), statuses
        assert answered < 10  # refused at once, not after the 20 s query limit
        time.sleep(1.0)
        assert cpu_seconds(proc.pid) - before < 1.0  # no query ran for them
    finally:
        evil.shutdown()
