"""The metadata store: one object that writes run events and hands out read connections.

SQLite (WAL mode, ``BEGIN IMMEDIATE`` for writes so concurrent runs queue on the busy timeout
instead of failing with "database is locked") by default; any SQLAlchemy URL through
``RETROLOG_DB``. PostgreSQL (psycopg 3) is tested: see ``tests/test_postgres.py``.
"""

from __future__ import annotations

import time
from collections.abc import Iterable, Iterator, Sequence
from contextlib import contextmanager, nullcontext
from pathlib import Path
from typing import Any

from sqlalchemy import (
    Connection,
    Engine,
    create_engine,
    event,
    insert,
    inspect,
    make_url,
    select,
    text,
)
from sqlalchemy.exc import DatabaseError, OperationalError

from ..errors import StoreError
from . import schema
from .columnar_ingest import CacheFollower
from .ingest import BUSY_TIMEOUT_MS, apply_events
from .lite import Params, Transaction, as_store_error, set_run_status
from .migrate import migrate

Event = Sequence[Any]  # (seq, kind, *payload); see ingest()

# pg_advisory_xact_lock key that serialises schema creation between processes ("retr").
_SCHEMA_LOCK = 0x72657472


def normalize_url(url: str) -> str:
    """``postgresql://`` / ``postgres://`` without a driver name use psycopg 3 (the ``postgres``
    extra) when it is installed; SQLAlchemy 2.0 would pick psycopg2. Other URLs are unchanged."""
    for prefix in ("postgresql://", "postgres://"):
        if url.startswith(prefix):
            try:
                import psycopg  # noqa: F401
            except ImportError:
                return url
            return "postgresql+psycopg://" + url[len(prefix) :]
    return url


class _SqlaTransaction:
    def __init__(self, conn: Connection) -> None:
        self._conn = conn

    def execute(self, sql: str, params: Params | Sequence[Params] | None = None) -> None:
        if isinstance(params, Sequence):
            self._conn.execute(text(sql), [dict(p) for p in params])
        else:
            self._conn.execute(text(sql), dict(params or {}))

    def fetch(self, sql: str, params: Params | None = None) -> list[Any]:
        return list(self._conn.execute(text(sql), dict(params or {})).all())


class Store:
    """Write and read access to one retrolog database."""

    def __init__(self, url: str) -> None:
        self.url = url
        url = normalize_url(url)
        self.is_sqlite = url.startswith("sqlite")
        self.is_postgres = make_url(url).get_backend_name() == "postgresql"
        self._url = url
        if self.is_sqlite:
            path = url.split("///", 1)[-1]
            if path and path != ":memory:":
                Path(path).parent.mkdir(parents=True, exist_ok=True)
            self.path: Path | None = Path(path)
        else:
            self.path = None
        # keeps dataframe's columnar cache current at ingest (a SQLite store in a file only)
        in_file = (
            self.is_sqlite and "///" in url and url.split("///", 1)[-1] not in ("", ":memory:")
        )
        self.frames = CacheFollower(self.path) if in_file and self.path else None
        self.writer = self._engine(immediate=True)
        self.reader = self._engine(immediate=False)
        self.migrated: list[str] = []  # what opening this store migrated, in words
        try:
            self._ensure_schema()
        except DatabaseError as exc:  # damaged, unreachable, locked past the busy timeout
            self.dispose()
            raise as_store_error(url, exc) from None

    # -- engines ---------------------------------------------------------------------------
    def _engine(self, immediate: bool) -> Engine:
        if not self.is_sqlite:
            return create_engine(self._url, pool_pre_ping=True)
        engine = create_engine(self._url, connect_args={"timeout": BUSY_TIMEOUT_MS / 1000})

        @event.listens_for(engine, "connect")
        def _on_connect(dbapi_conn: Any, _record: Any) -> None:
            dbapi_conn.isolation_level = None  # we issue BEGIN ourselves
            cur = dbapi_conn.cursor()
            cur.execute(f"PRAGMA busy_timeout={BUSY_TIMEOUT_MS}")
            cur.execute("PRAGMA journal_mode=WAL")
            cur.execute("PRAGMA synchronous=NORMAL")
            cur.close()

        @event.listens_for(engine, "begin")
        def _on_begin(conn: Connection) -> None:
            conn.exec_driver_sql("BEGIN IMMEDIATE" if immediate else "BEGIN")

        return engine

    def _ensure_schema(self) -> None:
        for attempt in range(5):
            try:
                with self.writer.begin() as conn:
                    if self.is_postgres:  # DDL is transactional: one process creates, others wait
                        conn.execute(text("SELECT pg_advisory_xact_lock(:k)"), {"k": _SCHEMA_LOCK})
                    schema.metadata.create_all(conn, checkfirst=True)
                    self._ensure_views(conn)
                    found = conn.execute(
                        select(schema.meta.c.value).where(schema.meta.c.key == "schema_version")
                    ).scalar()
                    if found is None:
                        conn.execute(
                            insert(schema.meta).values(
                                key="schema_version", value=str(schema.SCHEMA_VERSION)
                            )
                        )
                    elif int(found) > schema.SCHEMA_VERSION:
                        raise StoreError(
                            f"{self.url} was written by a newer retrolog (schema {found}); "
                            "upgrade retrolog"
                        )
                    elif int(found) < schema.SCHEMA_VERSION:
                        cursor = conn.connection.dbapi_connection.cursor()  # type: ignore[union-attr]
                        try:
                            mark = "?" if self.is_sqlite else "%s"
                            self.migrated = migrate(cursor, mark, int(found), schema.SCHEMA_VERSION)
                        finally:
                            cursor.close()
                return
            except OperationalError as exc:  # two processes creating the schema at once
                if "already exists" not in str(exc) or attempt == 4:
                    raise
                time.sleep(0.05 * (attempt + 1))

    def _ensure_views(self, conn: Connection) -> None:
        if self.is_sqlite:
            for name, body in schema.VIEWS.items():
                conn.exec_driver_sql(f"CREATE VIEW IF NOT EXISTS {name} AS {body}")
            return
        views = schema.POSTGRES_VIEWS if self.is_postgres else schema.VIEWS
        existing = set(inspect(conn).get_view_names())
        for name, body in views.items():
            # Created once, not replaced on every open: CREATE OR REPLACE takes an exclusive lock
            # on the view, which would queue every new run behind a long user query.
            if name not in existing:
                conn.exec_driver_sql(f"CREATE VIEW {name} AS {body}")

    def dispose(self) -> None:
        if self.frames is not None:
            self.frames.close()
        self.writer.dispose()
        self.reader.dispose()

    # -- writes ----------------------------------------------------------------------------
    def ingest(self, run_id: str, events: Iterable[Event]) -> int:
        """Apply journal events of one run; events at or below the run's high-water mark are skipped
        (idempotent, so a crashed run's journal can be replayed over rows already stored). The
        event kinds are documented in docs/data-model.md; see ``ingest.apply_events``."""
        frames = self.frames
        with (
            self._errors(),
            frames.around() if frames else nullcontext(),
            self.writer.begin() as conn,
        ):
            cursor = conn.connection.dbapi_connection.cursor()  # type: ignore[union-attr]
            try:
                if frames:
                    frames.before(cursor)
                count = apply_events(
                    cursor, self.is_sqlite, run_id, events, postgres=self.is_postgres
                )
                if frames and count:
                    frames.after(cursor)
                return count
            finally:
                cursor.close()

    @contextmanager
    def _errors(self) -> Iterator[None]:
        """Database errors become one-line ``StoreError``s that point at ``retrolog doctor``."""
        try:
            yield
        except DatabaseError as exc:
            raise as_store_error(self.url, exc) from None

    def set_status(
        self, run_id: str, status: str, end_time: float | None = None, error: str | None = None
    ) -> None:
        """Close a run whose process is gone (crash recovery)."""
        with self.transaction() as tx:
            set_run_status(tx, run_id, status, end_time, error)

    @contextmanager
    def transaction(self) -> Iterator[Transaction]:
        """One write transaction (``lite.Transaction``): our SQL with bound ``:name`` values."""
        with self._errors(), self.writer.begin() as conn:
            yield _SqlaTransaction(conn)

    # -- reads -----------------------------------------------------------------------------
    def fetch(self, sql: str, params: Params | None = None) -> list[Any]:
        """Run a read query of our own (values bound, never formatted in) and return its rows."""
        with self._errors(), self.reader.connect() as conn:
            return list(conn.execute(text(sql), dict(params or {})).all())

    def running_runs(self) -> list[Any]:
        return self.fetch("SELECT run_id, host, pid FROM runs WHERE status = 'running'")
