"""Opening a project's store for reading, and running user SQL read-only.

Every read entry point (Python API, CLI, UI) goes through ``open_store``, which first ingests the
journals of crashed runs, so users never see half-recorded runs as still running. Every user query
runs under a time limit (``store.limits``): a per-surface default, ``RETROLOG_QUERY_TIMEOUT``
overriding all of them; a query that runs out raises ``QueryTimedOut`` naming the limit.
"""

from __future__ import annotations

import sqlite3
from pathlib import Path
from typing import Any

import pandas as pd

from ..project import Project, open_project_db, resolve_project
from ..store import Store
from ..store.limits import QueryLimit, current_limit
from ..store.lite import as_store_error, is_damage
from ..store.readonly import read_only_sqlite
from ..store.usersql import explain_postgres, run_generic, run_postgres
from ..store.where import QueryError, QueryTimedOut
from ..store.where import explain as _explain


def _timed_out(limit: QueryLimit) -> QueryTimedOut:
    return QueryTimedOut(str(limit.error()))


def open_store(project: Project | str | Path | None = None, recover: bool = True) -> Store:
    """The SQLAlchemy store of ``project`` (default: the one around the cwd), after crash
    recovery (``project.open_project_db``)."""
    store = open_project_db(resolve_project(project), full=True, recover=recover)
    assert isinstance(store, Store)
    return store


def run_sql(
    store: Store, sql: str, params: dict[str, Any] | list[Any] | None = None
) -> pd.DataFrame:
    """Run one user SELECT read-only and return its result as a DataFrame."""
    if not sql.strip():
        raise QueryError("empty query")
    limit = current_limit()
    try:
        if store.is_sqlite:
            assert store.path is not None
            conn = read_only_sqlite(store.path, limit)
            try:
                return pd.read_sql_query(sql, conn, params=params)
            finally:
                conn.close()
        if store.is_postgres:
            columns, rows = run_postgres(store, sql, params, limit)
        else:  # other SQLAlchemy databases: no time limit is enforced (docs/reliability.md)
            columns, rows = run_generic(store, sql, params)
        return pd.DataFrame(rows, columns=columns)
    except (sqlite3.Error, pd.errors.DatabaseError) as exc:
        if limit.fired:
            raise _timed_out(limit) from None
        if is_damage(exc):
            raise as_store_error(store.url, exc) from None
        raise QueryError(_explain(exc)) from None
    except QueryError:
        raise
    except Exception as exc:
        if type(exc).__module__.startswith(("sqlalchemy", "psycopg")):
            raise QueryError(explain_postgres(exc)) from None
        raise


__all__ = ["QueryError", "QueryTimedOut", "open_store", "read_only_sqlite", "run_sql"]
