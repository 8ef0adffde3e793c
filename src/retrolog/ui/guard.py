"""Per-request protection of the UI: other origins are refused, and a request whose client has
gone stops its query.

**Other origins.** Any web page the user visits can make the browser send requests to
``127.0.0.1:<port>`` (an ``<img>``, a ``fetch`` in ``no-cors`` mode, a hidden frame); the answer
is unreadable to that page, but the query it asks for still runs. Browsers label every request
with ``Sec-Fetch-Site`` (and requests from scripts with ``Origin``), so a request is refused with
403 when either says it comes from another site. Allowed: same-origin requests, what the user
typed or bookmarked (``Sec-Fetch-Site: none``), tools that send neither header (curl, scripts),
and a top-level navigation from another site to a page without a query string (a link to a run's
page), which runs no user-written SQL.

**Disconnects.** The request's ``receive`` channel is watched; when the client disconnects, the
event that ``store.limits.query_context`` handed to the request's queries is set and the query
stops (SQLite's progress handler, a PostgreSQL cancel request). Queries run under the UI's time
limit (``store.limits``).
"""

from __future__ import annotations

import asyncio
import threading
from typing import Any
from urllib.parse import urlsplit

from ..store.limits import query_context

Scope = dict[str, Any]
Message = dict[str, Any]
_REFUSED = b"retrolog ui: requests from other web sites are refused\n"


def foreign_origin(headers: dict[bytes, bytes], query_string: bytes, method: str) -> bool:
    """Whether a request comes from a page of another origin (see the module docstring)."""
    site = headers.get(b"sec-fetch-site", b"").decode("latin-1").lower()
    origin = headers.get(b"origin", b"").decode("latin-1")
    host = headers.get(b"host", b"").decode("latin-1").lower()
    if origin and origin != "null":
        parts = urlsplit(origin)
        if (parts.netloc or "").lower() != host:
            return True
    elif origin == "null":  # sandboxed frames, data: URLs, file: pages
        return True
    if site in ("cross-site", "same-site"):
        navigate = headers.get(b"sec-fetch-mode", b"") == b"navigate"
        document = headers.get(b"sec-fetch-dest", b"document") == b"document"
        return not (navigate and document and method in ("GET", "HEAD") and not query_string)
    return False


class RequestGuard:
    """Pure ASGI middleware: refuse foreign origins, cancel the queries of vanished clients."""

    def __init__(self, app: Any) -> None:
        self.app = app

    async def __call__(self, scope: Scope, receive: Any, send: Any) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        headers = dict(scope.get("headers") or [])
        if foreign_origin(headers, scope.get("query_string", b""), scope.get("method", "GET")):
            await send(
                {
                    "type": "http.response.start",
                    "status": 403,
                    "headers": [(b"content-type", b"text/plain; charset=utf-8")],
                }
            )
            await send({"type": "http.response.body", "body": _REFUSED})
            return
        cancel = threading.Event()
        inbox: asyncio.Queue[Message] = asyncio.Queue()

        async def watch() -> None:
            while True:
                message = await receive()
                await inbox.put(message)
                if message["type"] == "http.disconnect":
                    cancel.set()
                    return

        watcher = asyncio.ensure_future(watch())
        try:
            with query_context("ui", cancel):
                await self.app(scope, inbox.get, send)
        finally:
            watcher.cancel()
