"""Opening a project's store for reading, and running user SQL read-only.

Every read entry point (Python API, CLI, UI) goes through ``open_store``, which first ingests the
journals of crashed runs, so users never see half-recorded runs as still running. Every user query
runs under a time limit (``store.limits``): a per-surface default, ``RETROLOG_QUERY_TIMEOUT``
overriding all of them; a query that runs out raises ``QueryTimedOut`` naming the limit.
"""

from __future__ import annotations

import re
import sqlite3
import threading
from collections.abc import Iterator, Mapping
from contextlib import contextmanager, suppress
from pathlib import Path
from typing import Any

import pandas as pd
from sqlalchemy import text

from ..project import Project, open_project_db, resolve_project
from ..store import Store
from ..store.limits import QueryLimit, bound_sqlite, current_limit
from ..store.lite import as_store_error, is_damage
from ..store.readonly import authorize_read_only
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


def read_only_sqlite(path: Path | str, limit: QueryLimit | None = None) -> sqlite3.Connection:
    """A connection that can only read: opened ``mode=ro``, ``query_only`` and an authorizer
    that denies every action but SELECT/READ/FUNCTION (so no ATTACH, PRAGMA or writes); its
    statements stop when ``limit`` (default: the current surface's) expires."""
    uri = Path(path).resolve().as_uri() + "?mode=ro"
    conn = sqlite3.connect(uri, uri=True, check_same_thread=False)
    conn.execute("PRAGMA query_only=1")
    conn.set_authorizer(authorize_read_only)
    bound_sqlite(conn, limit or current_limit())
    return conn


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
            return _run_sql_postgres(store, sql, params, limit)
        # Other SQLAlchemy databases: no time limit is enforced (docs/reliability.md).
        with store.reader.connect() as sa_conn:
            sa_conn.exec_driver_sql("SET TRANSACTION READ ONLY")
            result = sa_conn.execute(text(sql), params or {})
            return pd.DataFrame(result.fetchall(), columns=list(result.keys()))
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
            raise QueryError(_explain_postgres(exc)) from None
        raise


_READ_ONLY = "queries are read-only (one SELECT; no writes, DDL, COPY, SET or transaction control)"
# Leading comments, whitespace and parentheses, then the statement's first keyword.
_FIRST_WORD = re.compile(r"(?:\s+|--[^\n]*(?:\n|$)|/\*.*?\*/|\()*(\w+)", re.S)
_QUERY_WORDS = {"select", "with", "values", "table"}
# SQLSTATEs that mean "this tried to write or to leave the read-only transaction".
_WRITE_STATES = {"25006", "25001", "25P01", "2D000", "0A000"}


def _run_sql_postgres(
    store: Store, sql: str, params: dict[str, Any] | list[Any] | None, limit: QueryLimit
) -> pd.DataFrame:
    """One user query on PostgreSQL, with three independent guards:

    - only a query expression runs: the text must start with SELECT/WITH/VALUES/TABLE and is
      wrapped as ``SELECT * FROM (<sql>) AS retrolog_query``, so COPY, SET, DO, CALL,
      transaction control and data-modifying WITH (only legal at top level) cannot parse;
    - it is sent as one prepared statement (extended protocol), which PostgreSQL refuses to hold
      more than one command, so closing the parenthesis to append ``; DROP ...`` fails;
    - it runs in a transaction that is ``READ ONLY`` from its start and always rolled back (a
      write, ``nextval``, ``SELECT ... FOR UPDATE`` or switching to READ WRITE mid-query fail).

    Functions the database role may call (server files for superusers, signalling backends) are
    the role's privileges; give readers a role with SELECT only. Values are always bound.
    ``limit`` becomes the transaction's ``statement_timeout``; its cancel event, a cancel request.
    """
    if isinstance(params, (list, tuple)):
        raise QueryError("on PostgreSQL, bind parameters by name (:name) with a dict")
    body = sql.strip()
    while body.endswith(";"):
        body = body[:-1].rstrip()
    first = _FIRST_WORD.match(body)
    word = first.group(1).lower() if first else ""
    if word not in _QUERY_WORDS:
        raise QueryError(f"{word.upper() or 'this'} is not allowed: {_READ_ONLY}")
    # newline before ")" so a trailing -- comment cannot swallow it
    compiled = text(f"SELECT * FROM (\n{body}\n) AS retrolog_query").compile(
        dialect=store.reader.dialect
    )
    bound = compiled.construct_params(params or {})
    try:
        return _read_only_prepared(store, compiled.string, bound, limit)
    except Exception as exc:
        if type(exc).__module__.startswith("psycopg"):
            if getattr(exc, "sqlstate", None) == _CANCELED:
                if limit.fired is None:
                    limit.fired = "timeout"
                raise _timed_out(limit) from None
            raise QueryError(_explain_postgres(exc, several=";" in body)) from None
        raise


_CANCELED = "57014"  # query_canceled: statement_timeout or a cancel request


def _read_only_prepared(
    store: Store, sql: str, params: Mapping[str, Any], limit: QueryLimit
) -> pd.DataFrame:
    raw = store.reader.raw_connection()
    try:
        cur: Any = raw.cursor()  # psycopg's own cursor: execute(..., prepare=True)
        try:
            raw.rollback()  # start from a clean state: the next statement opens the transaction
            cur.execute("SET TRANSACTION READ ONLY")
            remaining = limit.remaining_ms()
            if remaining is not None:  # an int of ours, not user input
                cur.execute(f"SET LOCAL statement_timeout = {remaining}")
            with _cancel_on(limit, raw.driver_connection):
                cur.execute(sql, params, prepare=True)
                columns = [d[0] for d in cur.description or ()]
                rows = cur.fetchall()
        finally:
            cur.close()
            raw.rollback()
    finally:
        raw.close()
    return pd.DataFrame(rows, columns=columns)


@contextmanager
def _cancel_on(limit: QueryLimit, connection: Any) -> Iterator[None]:
    """Send PostgreSQL a cancel request for ``connection`` if ``limit``'s cancel event is set
    (its client went away) while the block runs."""
    if limit.cancel is None:
        yield
        return
    done = threading.Event()
    cancel = limit.cancel

    def watch() -> None:
        while not done.wait(0.05):
            if cancel.is_set():
                limit.fired = "cancelled"
                with suppress(Exception):  # the query may have just ended
                    connection.cancel()
                return

    watcher = threading.Thread(target=watch, name="retrolog-query-cancel", daemon=True)
    watcher.start()
    try:
        yield
    finally:
        done.set()
        watcher.join()


def _explain_postgres(exc: Exception, several: bool = False) -> str:
    orig = getattr(exc, "orig", exc)
    message = (str(orig).strip() or type(orig).__name__).splitlines()[0]
    state = getattr(orig, "sqlstate", None)
    syntax = state == "42601" and (several or "INTO" in message)
    if state in _WRITE_STATES or syntax or "multiple commands" in message:
        return f"{message}: {_READ_ONLY}"
    return message
