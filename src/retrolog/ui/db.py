"""Read-only access to a project's store for the UI.

Every query the UI runs goes through ``Reader.fetch`` (``store.readonly.read_only_fetch``): on
SQLite it opens the database file ``mode=ro`` with ``query_only`` and the read-only authorizer
(SELECT/READ/FUNCTION only), so nothing the UI does can write, attach or change settings; on other
databases the transaction is ``READ ONLY``. The SQL itself lives in ``store/views.py`` and
``store/replays.py``; values are always bound parameters. Every query runs under the UI's time
limit (``store.limits``; the request guard cancels it when the client disconnects on SQLite).
"""

from __future__ import annotations

import os
import threading
from collections.abc import Callable, Mapping
from pathlib import Path
from typing import Any, TypeVar

from ..project import Project
from ..relational import open_store
from ..relational.access import resolve_project
from ..store import Store
from ..store.readonly import read_only_fetch
from ..store.views import content_counts

T = TypeVar("T")


class Reader:
    """The UI's read-only view of one project's store."""

    def __init__(self, project: Project | str | Path | None = None) -> None:
        self.project = resolve_project(project)
        self.store: Store = open_store(self.project)  # creates the schema on a fresh project
        self._cache: dict[str, tuple[Any, Any]] = {}
        self._lock = threading.Lock()

    @property
    def is_sqlite(self) -> bool:
        return self.store.is_sqlite

    def data_key(self) -> tuple[Any, ...]:
        """Changes whenever the store's content may have: the SQLite file and WAL's size and
        modification time (a stat, no query); elsewhere a few aggregates of runs and replays."""
        if self.store.is_sqlite and self.store.path is not None:
            key: list[Any] = []
            for suffix in ("", "-wal"):
                try:
                    st = os.stat(str(self.store.path) + suffix)
                    key += [st.st_mtime_ns, st.st_size]
                except OSError:
                    key += [None, None]
            return tuple(key)
        return content_counts(self)

    def cached(self, name: str, compute: Callable[[], T]) -> T:
        """``compute()``, reused until the store changes (see ``data_key``)."""
        key = self.data_key()
        with self._lock:
            hit = self._cache.get(name)
        if hit is not None and hit[0] == key:
            return hit[1]
        value = compute()
        with self._lock:
            self._cache[name] = (key, value)
        return value

    def recover(self) -> None:
        """Ingest the journals of crashed runs (what every read entry point does first)."""
        open_store(self.project, recover=True)

    def fetch(self, sql: str, params: Mapping[str, Any] | None = None) -> list[tuple[Any, ...]]:
        """Run one SELECT of the store's query modules (``:name`` parameters), read-only."""
        return read_only_fetch(self.store, sql, params)

    def rows(self, sql: str, params: dict[str, Any] | None = None) -> list[tuple[Any, ...]]:
        """``fetch``, under the name tests and older callers use."""
        return self.fetch(sql, params)
