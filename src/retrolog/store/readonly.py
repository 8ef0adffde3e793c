"""The one read-only policy for SQL that users write (``retrolog.query``, ``--where``), for SQLite.

An authorizer that allows only what a SELECT needs: reading, functions (minus those that touch
files or load code) and recursive CTEs. No writes, ATTACH, PRAGMA or schema changes. Kept free of
pandas and SQLAlchemy so the replay coordinator can use it without their import cost (the
non-SQLite branch of ``read_only_fetch`` imports SQLAlchemy's ``text`` when it runs). The UI's
reads go through ``read_only_fetch``.
"""

from __future__ import annotations

import sqlite3
from collections.abc import Iterator, Mapping
from contextlib import contextmanager
from pathlib import Path
from typing import Any

from .limits import QueryLimit, bound_sqlite, current_limit

ALLOWED_ACTIONS = frozenset(
    {
        sqlite3.SQLITE_SELECT,
        sqlite3.SQLITE_READ,
        sqlite3.SQLITE_FUNCTION,
        getattr(sqlite3, "SQLITE_RECURSIVE", 33),
    }
)
DENIED_FUNCTIONS = frozenset({"load_extension", "readfile", "writefile", "edit", "fts3_tokenizer"})


def authorize_read_only(
    action: int, arg1: str | None, arg2: str | None, _db: str | None, _trigger: str | None
) -> int:
    """``sqlite3.Connection.set_authorizer`` callback: deny everything a SELECT does not need."""
    if action not in ALLOWED_ACTIONS:
        return sqlite3.SQLITE_DENY
    if action == sqlite3.SQLITE_FUNCTION and (arg2 or "").lower() in DENIED_FUNCTIONS:
        return sqlite3.SQLITE_DENY
    return sqlite3.SQLITE_OK


def read_only_sqlite(path: Path | str, limit: QueryLimit | None = None) -> sqlite3.Connection:
    """A connection that can only read: opened ``mode=ro``, ``query_only`` and the authorizer
    above (so no ATTACH, PRAGMA or writes); its statements stop when ``limit`` (default: the
    current surface's, ``store.limits``) expires."""
    uri = Path(path).resolve().as_uri() + "?mode=ro"
    conn = sqlite3.connect(uri, uri=True, check_same_thread=False)
    conn.execute("PRAGMA query_only=1")
    conn.set_authorizer(authorize_read_only)
    bound_sqlite(conn, limit or current_limit())
    return conn


@contextmanager
def read_only_connection(store: Any) -> Iterator[Any]:
    """A read-only connection to the SQLAlchemy ``store``: on SQLite a DB-API connection from
    :func:`read_only_sqlite`; elsewhere a SQLAlchemy connection in a ``READ ONLY`` transaction,
    on PostgreSQL with the current query limit as its ``statement_timeout``."""
    if store.is_sqlite:
        assert store.path is not None
        conn = read_only_sqlite(store.path)
        try:
            yield conn
        finally:
            conn.close()
        return
    with store.reader.connect() as sa_conn:
        sa_conn.exec_driver_sql("SET TRANSACTION READ ONLY")
        remaining = current_limit().remaining_ms() if store.is_postgres else None
        if remaining is not None:  # the query's time limit (store/limits.py); an int of ours
            sa_conn.exec_driver_sql(f"SET LOCAL statement_timeout = {remaining}")
        yield sa_conn


def read_only_fetch(
    store: Any, sql: str, params: Mapping[str, Any] | None = None
) -> list[tuple[Any, ...]]:
    """Rows of one SELECT of ours (``:name`` parameters) through :func:`read_only_connection`."""
    with read_only_connection(store) as conn:
        if store.is_sqlite:
            return list(conn.execute(sql, dict(params or {})).fetchall())
        from sqlalchemy import text

        return [tuple(r) for r in conn.execute(text(sql), dict(params or {})).all()]
