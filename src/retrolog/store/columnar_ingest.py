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

import json
import os
import sqlite3
import threading
from collections.abc import Iterator
from contextlib import contextmanager, suppress
from pathlib import Path
from typing import Any

import numpy as np

from .columnar import (
    _LOG_SELECT,
    _LOOP_SELECT,
    CODE_BITS,
    STALE,
    FrameCache,
    _case,
    _column_bytes,
    cache_path,
    connect,
    store_tops,
)

LOCK_WAIT_S = 0.2  # how long ingest waits for a query holding the cache before skipping it
_BATCH_LOG = np.dtype([("c", "i8"), ("run", "i8"), ("k", "i8"), ("m", "i8"), ("v", "f8")])
_BATCH_LOOP = np.dtype([("run", "i8"), ("k", "i8"), ("p", "i8"), ("i", "i8")])


class CacheFollower:
    """Appends each ingest transaction's rows to the columnar cache of one SQLite store."""

    def __init__(self, db_path: Path) -> None:
        self.path = cache_path(db_path)
        self._lock = threading.Lock()
        self._cache: FrameCache | None = None
        self._tops: tuple[int, int] | None = None
        self._conn: sqlite3.Connection | None = None  # kept open: no schema check, no
        self._file: tuple[int, int] | None = None  # checkpoint on close, per transaction
        self.appended = 0  # rows appended by this process (for tests and benchmarks)

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
        try:
            self._tops = store_tops(cursor)
        except sqlite3.Error:
            self._tops = None

    def after(self, cursor: Any) -> None:
        """Still in the store's transaction: stage the new rows in a cache transaction."""
        if self._tops is None:
            return
        cache: FrameCache | None = None
        try:
            cache = FrameCache(cursor, self.path, self._connection())
            cache.conn.execute("BEGIN IMMEDIATE")
            self._cache = cache
            cache._refresh_marks(self._tops)
            self.appended += _append(cache, cursor, self._tops)
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


def _append(cache: FrameCache, cur: Any, tops: tuple[int, int]) -> int:
    """Append the log and loop rows above ``tops`` (this transaction's) to ``cache``."""
    logs_top, loops_top = tops
    return _append_logs(cache, cur, logs_top) + _append_loops(cache, cur, loops_top)


def _distinct(cur: Any, table: str, top: int) -> list[str]:
    # NOT INDEXED: a rowid range, not a scan of the whole name index DISTINCT would pick
    cur.execute(f"SELECT DISTINCT name FROM {table} NOT INDEXED WHERE rowid > ?", [top])
    return [row[0] for row in cur.fetchall()]


def _append_logs(cache: FrameCache, cur: Any, top: int) -> int:
    names = _distinct(cur, "logs", top)
    if not names:
        return 0
    case, params = _case("name", names)
    select = _LOG_SELECT.replace("SELECT ", f"SELECT {case}, run, ", 1).replace(
        "WHERE name = ? {runs}", "WHERE rowid > ?"
    )
    cur.execute(select, [*params, top])
    rows = np.fromiter(cur, dtype=_BATCH_LOG)
    order = np.lexsort((np.arange(len(rows)), rows["run"], rows["c"]))  # rowid order kept
    rows = rows[order]
    complete = {row[0] for row in cache.conn.execute("SELECT name FROM complete")}
    appended = 0
    for code, group in _groups(rows, "c"):
        name = names[code]
        if name not in complete:
            cur.execute("SELECT 1 FROM logs WHERE name = ? AND rowid <= ? LIMIT 1", [name, top])
            if cur.fetchone() is not None:
                continue  # older rows the cache lacks: the first query of it reads them all
            cache.conn.execute("INSERT OR REPLACE INTO complete (name) VALUES (?)", [name])
        if bool((group["k"] < 0).any()):  # ids beyond the packed ranges: as FrameCache does
            cache.conn.execute("DELETE FROM complete WHERE name = ?", [name])
            cache.conn.execute("DELETE FROM log_arrays WHERE name = ?", [name])
            continue
        for run, part in _groups(group, "run"):
            stale = cache.conn.execute(
                "SELECT 1 FROM log_arrays WHERE name = ? AND run = ? AND part = ?",
                [name, run, STALE],
            ).fetchone()
            if stale is not None:
                continue  # read again whole on the next use
            packed = part[["k", "m", "v"]]
            cache.conn.execute(
                "INSERT INTO log_arrays (name, run, part, k, m, v) VALUES (?, ?, ?, ?, ?, ?)",
                [name, run, top + 1, *(packed[f].tobytes() for f in ("k", "m", "v"))],
            )
            appended += len(part)
    return appended


def _append_loops(cache: FrameCache, cur: Any, top: int) -> int:
    names = _distinct(cur, "loops", top)
    if not names or len(names) >= (1 << CODE_BITS):
        return 0
    case, params = _case("name", names)
    select = _LOOP_SELECT.replace("SELECT ", "SELECT run, ", 1)
    cur.execute(select.format(case=case, runs="WHERE rowid > ?"), [*params, top])
    rows = np.fromiter(cur, dtype=_BATCH_LOOP)
    order = np.lexsort((np.arange(len(rows)), rows["run"]))
    appended = 0
    for run, part in _groups(rows[order], "run"):
        held = cache.conn.execute("SELECT 1 FROM loop_arrays WHERE run = ? LIMIT 1", [run])
        if held.fetchone() is None:
            cur.execute("SELECT 1 FROM loops WHERE run = ? AND rowid <= ? LIMIT 1", [run, top])
            if cur.fetchone() is not None:
                continue  # older loop rows the cache lacks: read on the next use
        if bool((part["k"] < 0).any()) or bool((part["p"] < 0).any()):
            cache.conn.execute("DELETE FROM loop_arrays WHERE run = ?", [run])
            continue
        mask = (1 << CODE_BITS) - 1
        codes = part["p"] & mask
        present = np.unique(codes)  # this part's own name list, as the query stores a run's
        local = np.zeros(len(names) + 1, dtype=np.int64)
        local[present] = np.arange(len(present))
        packed = part[["k", "p", "i"]].copy()
        packed["p"] = (part["p"] & ~mask) | local[codes]
        cache.conn.execute(
            "INSERT INTO loop_arrays (run, part, names, k, p, i) VALUES (?, ?, ?, ?, ?, ?)",
            [
                run,
                top + 1,
                json.dumps([names[c] for c in present.tolist()]),
                *_column_bytes(packed),
            ],
        )
        appended += len(part)
    return appended


def _groups(rows: np.ndarray, field: str) -> Any:
    """(value, rows) for each run of equal ``field`` values in ``rows`` (sorted by it)."""
    if len(rows) == 0:
        return
    keys = rows[field]
    bounds = np.flatnonzero(np.r_[True, keys[1:] != keys[:-1], True])
    for a, b in zip(bounds[:-1], bounds[1:], strict=True):
        yield int(keys[a]), rows[a:b]
