"""Opening a project's store for reading, and running user SQL read-only.

Every read entry point (Python API, CLI, UI) goes through ``open_store``, which first ingests the
journals of crashed runs, so users never see half-recorded runs as still running.
"""

from __future__ import annotations

import sqlite3
import threading
from pathlib import Path
from typing import Any

import pandas as pd
from sqlalchemy import text

from ..project import Project, find_project
from ..record.journal import recover_orphans
from ..store import Store

_stores: dict[str, Store] = {}
_stores_lock = threading.Lock()


class QueryError(ValueError):
    """User SQL was rejected or failed; the message says why."""


def resolve_project(project: Project | str | Path | None) -> Project:
    if isinstance(project, Project):
        return project
    return find_project(Path(project) if project is not None else Path.cwd())


def open_store(project: Project | str | Path | None = None, recover: bool = True) -> Store:
    """The store of ``project`` (default: the one around the cwd), after crash recovery."""
    proj = resolve_project(project)
    with _stores_lock:
        store = _stores.get(proj.db_url)
        if store is None:
            store = Store(proj.db_url)
            _stores[proj.db_url] = store
    if recover:
        recover_orphans(proj.journal_dir, store)
    return store


# SQLite authorizer action codes that a read-only query may use.
_ALLOWED_ACTIONS = {
    sqlite3.SQLITE_SELECT,
    sqlite3.SQLITE_READ,
    sqlite3.SQLITE_FUNCTION,
    getattr(sqlite3, "SQLITE_RECURSIVE", 33),
}
_DENIED_FUNCTIONS = {"load_extension", "readfile", "writefile", "edit", "fts3_tokenizer"}


def _authorize(
    action: int, arg1: str | None, arg2: str | None, _db: str | None, _trigger: str | None
) -> int:
    if action not in _ALLOWED_ACTIONS:
        return sqlite3.SQLITE_DENY
    if action == sqlite3.SQLITE_FUNCTION and (arg2 or "").lower() in _DENIED_FUNCTIONS:
        return sqlite3.SQLITE_DENY
    return sqlite3.SQLITE_OK


def read_only_sqlite(path: Path | str) -> sqlite3.Connection:
    """A connection that can only read: opened ``mode=ro``, ``query_only`` and an authorizer
    that denies every action but SELECT/READ/FUNCTION (so no ATTACH, PRAGMA or writes)."""
    uri = Path(path).resolve().as_uri() + "?mode=ro"
    conn = sqlite3.connect(uri, uri=True, check_same_thread=False)
    conn.execute("PRAGMA query_only=1")
    conn.set_authorizer(_authorize)
    return conn


def run_sql(
    store: Store, sql: str, params: dict[str, Any] | list[Any] | None = None
) -> pd.DataFrame:
    """Run one user SELECT read-only and return its result as a DataFrame."""
    if not sql.strip():
        raise QueryError("empty query")
    try:
        if store.is_sqlite:
            assert store.path is not None
            conn = read_only_sqlite(store.path)
            try:
                return pd.read_sql_query(sql, conn, params=params)
            finally:
                conn.close()
        with store.reader.connect() as sa_conn:
            sa_conn.exec_driver_sql("SET TRANSACTION READ ONLY")
            result = sa_conn.execute(text(sql), params or {})
            return pd.DataFrame(result.fetchall(), columns=list(result.keys()))
    except (sqlite3.Error, pd.errors.DatabaseError) as exc:
        raise QueryError(_explain(exc)) from None
    except Exception as exc:
        if type(exc).__module__.startswith("sqlalchemy"):
            raise QueryError(str(exc).splitlines()[0]) from None
        raise


def _explain(exc: Exception) -> str:
    message = str(exc)
    if "not authorized" in message:
        return f"{message}: queries are read-only (SELECT only; no ATTACH, PRAGMA or writes)"
    return message


def filter_frame(frame: pd.DataFrame, where: str) -> pd.DataFrame:
    """Rows of ``frame`` matching an SQL WHERE clause, evaluated read-only on an in-memory copy."""
    if not where or not where.strip():
        return frame
    conn = sqlite3.connect(":memory:")
    try:
        copy = frame.reset_index(drop=True).copy()
        for column in copy.columns:
            if pd.api.types.is_datetime64_any_dtype(copy[column]):
                copy[column] = copy[column].astype("int64") / 1e9
            elif copy[column].dtype == object:
                copy[column] = copy[column].map(_sql_scalar)
        copy["__row__"] = range(len(copy))
        copy.to_sql("frame", conn, index=False)
        conn.set_authorizer(_authorize)
        try:
            rows = [r[0] for r in conn.execute(f"SELECT __row__ FROM frame WHERE {where}")]
        except sqlite3.Error as exc:
            raise QueryError(f"bad --where {where!r}: {_explain(exc)}") from None
    finally:
        conn.close()
    return frame.iloc[rows]


def _sql_scalar(value: Any) -> Any:
    if value is None or isinstance(value, (int, float, str, bytes)):
        return value
    return str(value)
