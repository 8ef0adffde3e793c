"""The store on the standard library's ``sqlite3`` alone, for processes that must start fast.

A recording run and the replay coordinator open an existing SQLite store whose schema is current
through :class:`LiteStore`; importing SQLAlchemy (about 0.5 s of CPU) was the largest part of a
run's recording cost and of a warm replay's fixed cost. ``store.open.open_db`` falls back to the
SQLAlchemy :class:`~retrolog.store.store.Store`, which creates and checks schemas and serves other
databases. Both offer the same narrow surface (:class:`Database`): ``ingest``, ``set_status``,
``running_runs``, ``fetch`` and ``transaction``. SQL is ours; values are always bound (``:name``).
"""

from __future__ import annotations

import re
import sqlite3
import threading
import time
from collections import namedtuple
from collections.abc import Iterable, Iterator, Mapping, Sequence
from contextlib import contextmanager
from functools import lru_cache
from pathlib import Path
from typing import Any, Protocol

from ..errors import StoreError
from .columnar_ingest import CacheFollower
from .ingest import BUSY_TIMEOUT_MS, SCHEMA_VERSION, apply_events

Params = Mapping[str, Any]


class Transaction(Protocol):
    """One write transaction: statements run in order, committed together or not at all."""

    def execute(self, sql: str, params: Params | Sequence[Params] | None = None) -> None: ...

    def fetch(self, sql: str, params: Params | None = None) -> list[Any]: ...


class Database(Protocol):
    """What replay and crash recovery need of a store, whichever engine serves it."""

    url: str
    is_postgres: bool

    def fetch(self, sql: str, params: Params | None = None) -> list[Any]: ...

    def transaction(self) -> Any: ...  # a context manager yielding a Transaction

    def ingest(self, run_id: str, events: Iterable[Sequence[Any]]) -> int: ...

    def set_status(
        self, run_id: str, status: str, end_time: float | None = None, error: str | None = None
    ) -> None: ...

    def running_runs(self) -> list[Any]: ...

    def dispose(self) -> None: ...


@lru_cache(maxsize=256)
def _row_type(fields: tuple[str, ...]) -> Any:
    return namedtuple("Row", fields, rename=True)


def _rows(cursor: sqlite3.Cursor) -> list[Any]:
    """Rows that unpack like tuples and have attributes per column, as SQLAlchemy's do."""
    row = _row_type(tuple(d[0] for d in cursor.description or ()))
    return [row._make(r) for r in cursor.fetchall()]


class _LiteTransaction:
    def __init__(self, cursor: sqlite3.Cursor) -> None:
        self._cursor = cursor

    def execute(self, sql: str, params: Params | Sequence[Params] | None = None) -> None:
        if isinstance(params, Sequence):
            self._cursor.executemany(sql, params)
        else:
            self._cursor.execute(sql, params or {})

    def fetch(self, sql: str, params: Params | None = None) -> list[Any]:
        return _rows(self._cursor.execute(sql, params or {}))


class LiteStore:
    """An existing, current SQLite store (WAL) through ``sqlite3``; safe to share between threads."""

    is_postgres = False
    is_sqlite = True

    def __init__(self, path: Path) -> None:
        self.path = path
        self.frames = CacheFollower(path)  # keeps dataframe's columnar cache current
        self.url = f"sqlite:///{path}"
        self._lock = threading.RLock()
        self._conn = sqlite3.connect(
            path, timeout=BUSY_TIMEOUT_MS / 1000, isolation_level=None, check_same_thread=False
        )
        self._conn.execute(f"PRAGMA busy_timeout={BUSY_TIMEOUT_MS}")
        self._conn.execute("PRAGMA synchronous=NORMAL")

    @classmethod
    def open(cls, url: str) -> LiteStore | None:
        """A store when ``url`` is a SQLite file whose schema is current; None otherwise (then the
        SQLAlchemy Store creates or checks the schema)."""
        if not url.startswith("sqlite:///"):
            return None
        path = Path(url[len("sqlite:///") :])
        if not path.is_file():
            return None
        try:
            conn = sqlite3.connect(f"{path.resolve().as_uri()}?mode=ro", uri=True, timeout=5)
            try:
                found = conn.execute(
                    "SELECT value FROM retrolog_meta WHERE key = 'schema_version'"
                ).fetchone()
                wal = conn.execute("PRAGMA journal_mode").fetchone()
            finally:
                conn.close()
        except sqlite3.Error:
            return None
        if found is None or int(found[0]) != SCHEMA_VERSION or (wal and wal[0] != "wal"):
            return None
        return cls(path)

    @contextmanager
    def _begin(self) -> Iterator[sqlite3.Cursor]:
        """``BEGIN IMMEDIATE`` (writers queue on the busy timeout), COMMIT, or ROLLBACK on error."""
        with self._lock:
            cursor = self._conn.cursor()
            cursor.execute("BEGIN IMMEDIATE")
            try:
                yield cursor
                if self._conn.in_transaction:
                    cursor.execute("COMMIT")
            except BaseException:
                # SQLite may have rolled back already (a full disk): keep the original error.
                if self._conn.in_transaction:
                    cursor.execute("ROLLBACK")
                raise
            finally:
                cursor.close()

    @contextmanager
    def transaction(self) -> Iterator[Transaction]:
        """One write transaction; see :class:`Transaction`."""
        with self._begin() as cursor:
            yield _LiteTransaction(cursor)

    def fetch(self, sql: str, params: Params | None = None) -> list[Any]:
        """Run a read query of our own (values bound, never formatted in) and return its rows."""
        with self._lock:
            return _rows(self._conn.execute(sql, params or {}))

    def ingest(self, run_id: str, events: Iterable[Sequence[Any]]) -> int:
        """As ``Store.ingest``: apply one run's journal events above its high-water mark."""
        with self.frames.around(), self._begin() as cursor:
            self.frames.before(cursor)
            count = apply_events(cursor, True, run_id, events)
            if count:
                self.frames.after(cursor)
            return count

    def set_status(
        self, run_id: str, status: str, end_time: float | None = None, error: str | None = None
    ) -> None:
        """Close a run whose process is gone (crash recovery)."""
        with self.transaction() as tx:
            set_run_status(tx, run_id, status, end_time, error)

    def running_runs(self) -> list[Any]:
        return self.fetch("SELECT run_id, host, pid FROM runs WHERE status = 'running'")

    def dispose(self) -> None:
        with self._lock:
            self._conn.close()
            self.frames.close()


# SQLite's words for a file that is not (or no longer) a sound database.
DAMAGE_WORDS = ("malformed", "not a database", "corrupt", "disk image")


def is_damage(exc: BaseException) -> bool:
    """Whether a database error says the store's file is damaged (not locked, not a bad query)."""
    text = str(getattr(exc, "orig", None) or exc).lower()
    return any(word in text for word in DAMAGE_WORDS)


def as_store_error(url: str, exc: BaseException) -> StoreError:
    """The one-line error every command prints when it meets a store it cannot use."""
    first = (str(getattr(exc, "orig", None) or exc).strip() or type(exc).__name__).splitlines()[0]
    where = url[len("sqlite:///") :] if url.startswith("sqlite:///") else hide_password(url)
    if is_damage(exc):
        return StoreError(
            f"the store {where} is damaged ({first}); run `retrolog doctor` to check it and "
            "`retrolog doctor --repair` to rebuild what can be"
        )
    return StoreError(f"cannot use the store {where} ({first}); run `retrolog doctor` to check it")


def hide_password(url: str) -> str:
    return re.sub(r"(//[^:/@]+):[^@/]*@", r"\1:***@", url)


def insert_rows(tx: Transaction, table: str, rows: Sequence[Params]) -> None:
    """INSERT ``rows`` (dicts with the same keys) into ``table``. Table and column names are the
    caller's constants, never user input; the values are bound."""
    if rows:
        columns = list(rows[0])
        tx.execute(
            f"INSERT INTO {table} ({', '.join(columns)}) "
            f"VALUES ({', '.join(':' + c for c in columns)})",
            rows,
        )


def update_rows(tx: Transaction, table: str, values: Params, where: Params) -> None:
    """UPDATE ``table`` SET ``values`` WHERE every ``where`` column equals its value (names are
    the caller's constants; values are bound)."""
    assignments = ", ".join(f"{c} = :set_{c}" for c in values)
    conditions = " AND ".join(f"{c} = :where_{c}" for c in where)
    params = {f"set_{c}": v for c, v in values.items()} | {
        f"where_{c}": v for c, v in where.items()
    }
    tx.execute(f"UPDATE {table} SET {assignments} WHERE {conditions}", params)


def set_run_status(
    tx: Transaction, run_id: str, status: str, end_time: float | None, error: str | None
) -> None:
    """Set a run's status, and its end time and error when given (both stores' ``set_status``)."""
    values: dict[str, Any] = {"status": status}
    if end_time is not None:
        values["end_time"] = end_time
    if error is not None:
        values["error"] = error
    update_rows(tx, "runs", values, {"run_id": run_id})
    if status != "running":  # a crashed run's rows are final once its journal is ingested
        tx.execute(
            "UPDATE digests SET sealed = :t WHERE scope = '' AND sealed IS NULL "
            "AND run = (SELECT id FROM runs WHERE run_id = :r)",
            {"t": end_time if end_time is not None else time.time(), "r": run_id},
        )
