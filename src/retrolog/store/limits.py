"""Time limits for the queries users write, per surface, and their cancellation.

Every read of user SQL (``retrolog sql``, ``--where`` filters, ``retrolog.query``, the UI's
filters) runs under a :class:`QueryLimit`: a number of seconds and, in the UI, an event that its
server sets when the client disconnects. SQLite enforces it with a progress handler (checked every
few thousand virtual-machine instructions, so an endless ``WITH RECURSIVE`` stops within
milliseconds of its limit); PostgreSQL with ``SET LOCAL statement_timeout`` and a cancel request.

The default depends on the surface that runs the query (``DEFAULTS``);
``RETROLOG_QUERY_TIMEOUT`` (seconds, ``0`` for no limit) overrides every surface's default.
Kept free of pandas and SQLAlchemy: the UI's and the replay coordinator's reads use it too.
"""

from __future__ import annotations

import sqlite3
import threading
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from contextvars import ContextVar
from dataclasses import dataclass, field

from ..errors import QueryTimeout
from ..settings import QUERY_TIMEOUT

ENV = QUERY_TIMEOUT.name
# Seconds. The UI answers many people and pages: a short limit. The CLI: a person waiting.
# The Python API: analyses in notebooks and scripts, which may legitimately scan a large store.
DEFAULTS = {"ui": 10.0, "cli": 120.0, "api": 600.0}
_NAMES = {"ui": "the UI's", "cli": "the command line's", "api": "the Python API's"}
PROGRESS_STEPS = 4_000  # SQLite VM instructions between two checks (~0.1 ms of work)

_surface: ContextVar[str | None] = ContextVar("retrolog_query_surface", default=None)
_cancel: ContextVar[threading.Event | None] = ContextVar("retrolog_query_cancel", default=None)
_default_surface = "api"


def set_default_surface(surface: str) -> None:
    """The surface of this process's queries when no ``query_context`` says otherwise (the CLI
    calls this once at start)."""
    global _default_surface
    if surface not in DEFAULTS:
        raise ValueError(f"unknown query surface {surface!r}")
    _default_surface = surface


@contextmanager
def query_context(surface: str, cancel: threading.Event | None = None) -> Iterator[None]:
    """Queries run inside belong to ``surface`` and stop when ``cancel`` is set (the UI sets it
    when the client of a request disconnects). Context variables: threads started through
    ``contextvars.copy_context`` (as Starlette's thread pool does) inherit them."""
    surface_token = _surface.set(surface)
    cancel_token = _cancel.set(cancel)
    try:
        yield
    finally:
        _surface.reset(surface_token)
        _cancel.reset(cancel_token)


def configured_seconds(surface: str) -> tuple[float | None, str]:
    """(seconds or None for no limit, where the number comes from) for ``surface``."""
    value = QUERY_TIMEOUT.get()
    if value is not None:
        return (value or None), ENV
    return DEFAULTS[surface], f"{_NAMES[surface]} default; set {ENV} to change it"


@dataclass
class QueryLimit:
    """The limit of one query: a deadline, a cancel event, and what fired (for the message)."""

    seconds: float | None
    source: str
    cancel: threading.Event | None = None
    started: float = field(default_factory=time.monotonic)
    fired: str | None = None  # "timeout" | "cancelled"

    @property
    def deadline(self) -> float | None:
        return None if self.seconds is None else self.started + self.seconds

    def expired(self) -> bool:
        """True (and remembered) once the deadline passed or the client went away."""
        if self.cancel is not None and self.cancel.is_set():
            self.fired = "cancelled"
            return True
        deadline = self.deadline
        if deadline is not None and time.monotonic() > deadline:
            self.fired = "timeout"
            return True
        return False

    def error(self) -> QueryTimeout:
        """The one-line error for a query this limit stopped."""
        if self.fired == "cancelled":
            return QueryTimeout("query cancelled: its client disconnected")
        return QueryTimeout(
            f"query stopped after its time limit of {_seconds(self.seconds)} ({self.source})"
        )

    def remaining_ms(self) -> int | None:
        """Milliseconds left, at least 1 (for PostgreSQL's ``statement_timeout``); None: no limit."""
        deadline = self.deadline
        if deadline is None:
            return None
        return max(1, int((deadline - time.monotonic()) * 1000))


def current_limit(surface: str | None = None) -> QueryLimit:
    """A fresh limit for one query on ``surface`` (default: the context's, else the process's)."""
    surface = surface or _surface.get() or _default_surface
    seconds, source = configured_seconds(surface)
    return QueryLimit(seconds, source, _cancel.get())


def bound_sqlite(conn: sqlite3.Connection, limit: QueryLimit) -> None:
    """Make every statement of ``conn`` stop (``sqlite3.OperationalError: interrupted``) once
    ``limit`` expires; check ``limit.fired`` to tell that apart from other errors."""
    check: Callable[[], bool] = limit.expired
    conn.set_progress_handler(lambda: 1 if check() else 0, PROGRESS_STEPS)


def _seconds(value: float | None) -> str:
    if value is None:
        return "none"
    return f"{value:g} s"


__all__ = [
    "DEFAULTS",
    "ENV",
    "QueryLimit",
    "bound_sqlite",
    "configured_seconds",
    "current_limit",
    "query_context",
    "set_default_surface",
]
