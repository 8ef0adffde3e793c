"""Read-only access to a project's store for the UI.

Every query the UI runs goes through ``Reader.rows``: on SQLite it opens the database file
``mode=ro`` with ``query_only`` and the relational layer's authorizer (SELECT/READ/FUNCTION only),
so nothing the UI does can write, attach or change settings; on other databases the transaction is
``READ ONLY``. Values are always bound parameters (``:name``), never formatted into the SQL.
Every query runs under the UI's time limit (``store.limits``; the request guard cancels it when
the client disconnects on SQLite).
"""

from __future__ import annotations

import os
import threading
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
from pathlib import Path
from typing import Any, TypeVar

from sqlalchemy import text

from ..project import Project
from ..relational import open_store
from ..relational.access import read_only_sqlite, resolve_project
from ..store import Store
from ..store.limits import current_limit

T = TypeVar("T")


def bind_list(prefix: str, items: Sequence[Any]) -> tuple[str, dict[str, Any]]:
    """``(":p0, :p1", {"p0": a, "p1": b})`` for an ``IN (...)`` list of bound values."""
    if not items:
        return "NULL", {}
    names = [f"{prefix}{i}" for i in range(len(items))]
    return ", ".join(":" + n for n in names), dict(zip(names, items))


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
        return tuple(
            self.rows(
                "SELECT (SELECT count(*) FROM runs), (SELECT sum(last_seq) FROM runs), "
                "(SELECT count(*) FROM replays), (SELECT max(created) FROM replays), "
                "(SELECT sum(stored) FROM replay_runs)"
            )[0]
        )

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

    @contextmanager
    def connect(self) -> Iterator[Any]:
        """A read-only DB-API connection (SQLite) or SQLAlchemy connection (others)."""
        if self.store.is_sqlite:
            assert self.store.path is not None
            conn = read_only_sqlite(self.store.path)
            try:
                yield conn
            finally:
                conn.close()
        else:
            with self.store.reader.connect() as sa_conn:
                sa_conn.exec_driver_sql("SET TRANSACTION READ ONLY")
                remaining = current_limit().remaining_ms() if self.store.is_postgres else None
                if remaining is not None:  # the UI's time limit (store/limits.py); an int of ours
                    sa_conn.exec_driver_sql(f"SET LOCAL statement_timeout = {remaining}")
                yield sa_conn

    def rows(self, sql: str, params: dict[str, Any] | None = None) -> list[tuple[Any, ...]]:
        """Run one of the UI's own SELECTs (``:name`` parameters) and return its rows."""
        with self.connect() as conn:
            if self.store.is_sqlite:
                return list(conn.execute(sql, params or {}).fetchall())
            return [tuple(r) for r in conn.execute(text(sql), params or {}).all()]

    def rows_in(
        self,
        sql: str,
        column_values: Sequence[Any],
        params: dict[str, Any] | None = None,
        chunk: int = 500,
    ) -> list[tuple[Any, ...]]:
        """``sql`` holds ``{in}`` where a bound ``IN`` list goes; runs it in chunks of values."""
        out: list[tuple[Any, ...]] = []
        values = list(column_values)
        for start in range(0, len(values), chunk):
            binds, bound = bind_list("v", values[start : start + chunk])
            out.extend(self.rows(sql.replace("{in}", binds), {**(params or {}), **bound}))
        return out
