"""Running one user query read-only on a server database (PostgreSQL, or another database
SQLAlchemy reaches); SQLite's read-only connection is ``store.readonly.read_only_sqlite``.

Returns plain ``(columns, rows)``; ``relational.access.run_sql`` makes the DataFrame and maps
errors. Values are always bound, never formatted into the statement.
"""

from __future__ import annotations

import re
import threading
from collections.abc import Iterator, Mapping
from contextlib import contextmanager, suppress
from typing import Any

from .limits import QueryLimit
from .where import QueryError, QueryTimedOut

Result = tuple[list[str], list[Any]]


def run_generic(store: Any, sql: str, params: Any) -> Result:
    """One query on a database other than SQLite and PostgreSQL, in a read-only transaction
    (no time limit is enforced there: docs/reliability.md)."""
    from sqlalchemy import text

    with store.reader.connect() as sa_conn:
        sa_conn.exec_driver_sql("SET TRANSACTION READ ONLY")
        result = sa_conn.execute(text(sql), params or {})
        return list(result.keys()), list(result.fetchall())


_READ_ONLY = "queries are read-only (one SELECT; no writes, DDL, COPY, SET or transaction control)"
# Leading comments, whitespace and parentheses, then the statement's first keyword.
_FIRST_WORD = re.compile(r"(?:\s+|--[^\n]*(?:\n|$)|/\*.*?\*/|\()*(\w+)", re.S)
_QUERY_WORDS = {"select", "with", "values", "table"}
# SQLSTATEs that mean "this tried to write or to leave the read-only transaction".
_WRITE_STATES = {"25006", "25001", "25P01", "2D000", "0A000"}


def run_postgres(
    store: Any, sql: str, params: dict[str, Any] | list[Any] | None, limit: QueryLimit
) -> Result:
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
    from sqlalchemy import text

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
                raise QueryTimedOut(str(limit.error())) from None
            raise QueryError(explain_postgres(exc, several=";" in body)) from None
        raise


_CANCELED = "57014"  # query_canceled: statement_timeout or a cancel request


def _read_only_prepared(
    store: Any, sql: str, params: Mapping[str, Any], limit: QueryLimit
) -> Result:
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
    return columns, rows


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


def explain_postgres(exc: Exception, several: bool = False) -> str:
    orig = getattr(exc, "orig", exc)
    message = (str(orig).strip() or type(orig).__name__).splitlines()[0]
    state = getattr(orig, "sqlstate", None)
    syntax = state == "42601" and (several or "INTO" in message)
    if state in _WRITE_STATES or syntax or "multiple commands" in message:
        return f"{message}: {_READ_ONLY}"
    return message
