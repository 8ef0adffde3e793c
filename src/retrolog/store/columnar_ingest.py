"""Keeping ``dataframe``'s columnar cache (``columnar.py``) current as ingest writes rows.

Without this, the first ``dataframe`` after recording 10^6 rows read them all back to build the
cache (~5 s). Here each ingest transaction of a SQLite store, before it commits, reads back the
rows it just inserted (a rowid range: the same packed SELECT expressions as the query, so cached
and fresh rows stay equal by construction) and appends them to the cache as a new part of each
(name, run) log entry and run loop entry. Order of commits, so that a crash never leaves a cache
that claims rows the store lacks:

1. store ``BEGIN IMMEDIATE``, the inserts (``ingest.apply_events``);
2. cache ``BEGIN IMMEDIATE`` (short wait: a long query holding it only costs us the increment),
   the stale marking of anything written since the cache's marks by others (``FrameCache
   ._refresh_marks``), the new parts, the marks moved to the store's new largest rowids;
3. store ``COMMIT``, then cache ``COMMIT``; if the store's commit fails the cache rolls back.

A process killed between the two commits leaves marks below the store's rows: the next use marks
what they touch stale and reads it again. Entries are only extended when they are whole: a log
name the cache does not hold for every run becomes whole here only when the store has no older
row of it (a name first seen in this transaction), a run's loop entry only when the run has no
older loop row the cache lacks. Any problem with the cache (a query holding it, a full disk): it
is left as it was, silently (the run's own warnings say what matters; the next query catches up,
and warns if it cannot use the file); ingest itself never fails because of it.
"""

from __future__ import annotations

import os
import sqlite3
import threading
from collections.abc import Iterator
from contextlib import contextmanager, suppress
from pathlib import Path
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from .columnar import FrameCache

# numpy and the cache's reader (store/columnar.py) are imported on the first ingest, not with
# the store: the replay coordinator opens stores and must not import numpy (its start-up).
LOCK_WAIT_S = 0.2  # how long ingest waits for a query holding the cache before skipping it


class CacheFollower:
    """Appends each ingest transaction's rows to the columnar cache of one SQLite store."""

    def __init__(self, db_path: Path) -> None:
        self._db_path = db_path
        self._path: Path | None = None
        self._lock = threading.Lock()
        self._cache: FrameCache | None = None
        self._tops: tuple[int, int] | None = None
        self._conn: sqlite3.Connection | None = None  # kept open: no schema check, no
        self._file: tuple[int, int] | None = None  # checkpoint on close, per transaction
        self.appended = 0  # rows appended by this process (for tests and benchmarks)

    @property
    def path(self) -> Path:
        """The cache file beside the store."""
        if self._path is None:
            from .columnar import cache_path

            self._path = cache_path(self._db_path)
        return self._path

    @contextmanager
    def around(self) -> Iterator[None]:
        """Wrap one store transaction (which calls ``before`` and ``after`` inside it): the
        staged cache transaction commits once the store's has, else it is rolled back."""
        with self._lock:
            self._cache, self._tops = None, None
            committed = False
            try:
                yield
                committed = True
            finally:
                self._finish(committed)

    def before(self, cursor: Any) -> None:
        """In the store's write transaction, before the inserts: remember its largest rowids."""
        from .columnar import store_tops

        try:
            self._tops = store_tops(cursor)
        except sqlite3.Error:
            self._tops = None

    def after(self, cursor: Any) -> None:
        """Still in the store's transaction: stage the new rows in a cache transaction."""
        if self._tops is None:
            return
        from .columnar import FrameCache
        from .columnar_append import append

        cache: FrameCache | None = None
        try:
            cache = FrameCache(cursor, self.path, self._connection())
            cache.conn.execute("BEGIN IMMEDIATE")
            self._cache = cache
            cache._refresh_marks(self._tops)
            self.appended += append(cache, cursor, self._tops)
            cache.set_marks(*cache.tops())
        except (sqlite3.Error, OSError):
            self._discard(cache)
            if not cursor.connection.in_transaction:
                raise  # SQLite rolled the store's transaction back (a full disk): say so

    def _finish(self, committed: bool) -> None:
        """After the store's COMMIT (``committed``) or its failure: commit or drop the stage."""
        cache, self._cache = self._cache, None
        if cache is None:
            return
        if not committed:
            self._discard(cache)
            return
        try:
            cache.conn.execute("COMMIT")
        except sqlite3.Error:
            self._discard(cache)

    def _connection(self) -> sqlite3.Connection:
        """The open connection, or a new one when the file was deleted or replaced since."""
        try:
            stat = os.stat(self.path)
            current: tuple[int, int] | None = (stat.st_dev, stat.st_ino)
        except FileNotFoundError:
            current = None
        if self._conn is None or current is None or current != self._file:
            self.close()
            from .columnar import connect

            self._conn = connect(self.path, LOCK_WAIT_S, check_same_thread=False)
            stat = os.stat(self.path)
            self._file = (stat.st_dev, stat.st_ino)
        return self._conn

    def close(self) -> None:
        """Close the kept connection (the store's ``dispose``)."""
        conn, self._conn = self._conn, None
        if conn is not None:
            with suppress(sqlite3.Error):
                conn.close()

    def _discard(self, cache: FrameCache | None) -> None:
        """Roll back the staged cache transaction (and drop the connection: a fresh one next)."""
        self._cache = None
        if cache is None:
            return
        try:
            if cache.conn.in_transaction:
                cache.conn.execute("ROLLBACK")
        except sqlite3.Error:
            pass
        self.close()
