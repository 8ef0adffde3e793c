"""Numeric log and loop rows for ``dataframe``'s fast path (``relational/fastpath.py``), read
from a SQLite store as packed integer/float columns, and the columnar cache that keeps them.

The cache: a columnar copy of the store's log and loop rows, so ``dataframe`` need not read 10^6 rows.

Reading a million log rows through SQLite's row-at-a-time API costs ~1.3 s of Python tuples even
when only three numbers per row are fetched; the loop rows another ~0.6 s. This cache keeps, per
(run, name), the numeric columns ``fastpath`` needs as packed int64/float64 arrays, and per run
its loop rows the same way, in a separate SQLite file next to the store (derived data: deleting it
loses nothing, ``retrolog rm`` does). Reading 10^6 cached rows is a few hundred blobs.

Staleness: the store's tables only ever grow by INSERT (recorded values are never updated; only
``retrolog rm`` deletes, and it drops the cache), so every change since the cache was last checked
is a row with a ``rowid`` above the cache's marks. Each use scans those new rows (normally few)
and marks the (run, name) and run entries they touch stale; stale and missing entries are read
from the store again, all inside one read transaction of the store, so what is cached is a
consistent snapshot. A name is cached for all runs or not at all, so the runs that hold a name are
the cache's entries for it. If the marks are above the store's largest rowid (the store was
recreated), or the row at a mark is not the one seen when it was set (rowids reused), the cache
starts over. Any problem with the cache file: the caller reads the store.

Ingest keeps it current (``store/columnar_ingest.py``): each ingest transaction appends the
packed rows it wrote as a new *part* of their entries and moves the marks, in a cache
transaction committed only after the store's, so the cache never holds rows the store lacks; a
killed ingest leaves the marks behind, and the rows above them are marked stale as above.
"""

from __future__ import annotations

import json
import sqlite3
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
from pathlib import Path
from typing import Any, TypeVar

import numpy as np

from .._warn import warn_once

ROW_DTYPE = np.dtype([("k", "i8"), ("m", "i8"), ("v", "f8")])
LOOP_DTYPE = np.dtype([("k", "i8"), ("p", "i8"), ("i", "i8")])
CACHE_VERSION = "2"  # 2: entries in parts (appended at ingest); marks with tails
SCHEMA_VERSION = 2  # the cache file's user_version: its tables' layout
_CHUNK = 500  # bound parameters per IN (...)

_SCHEMA = """
CREATE TABLE IF NOT EXISTS marks (key TEXT PRIMARY KEY, value);
CREATE TABLE IF NOT EXISTS complete (name TEXT PRIMARY KEY);
CREATE TABLE IF NOT EXISTS log_arrays (
    name TEXT NOT NULL, run INTEGER NOT NULL, part INTEGER NOT NULL, k BLOB, m BLOB, v BLOB,
    PRIMARY KEY (name, run, part));
CREATE TABLE IF NOT EXISTS loop_arrays (
    run INTEGER NOT NULL, part INTEGER NOT NULL, names TEXT, k BLOB, p BLOB, i BLOB,
    PRIMARY KEY (run, part));
"""
STALE = -1  # the part of a (name, run) entry's stale marker (k, m, v NULL): read it again
# the store row at a mark, compared on each use: a store whose rowids were reused (a lost
# transaction, a recreated file) does not keep a cache built from the rows it lost
_TAILS = {
    "logs": "SELECT json_array(run, seq, ctx_id, name, vtype, value_num, value_text, replay_id) "
    "FROM logs WHERE rowid = ?",
    "loops": "SELECT json_array(run, ctx_id, parent_id, name, iteration) FROM loops WHERE rowid = ?",
}


def cache_path(db_path: Path) -> Path:
    return db_path.with_name(db_path.name + ".frames")


def drop_cache(db_path: Path) -> None:
    """Forget everything cached for the store at ``db_path`` (after deleting rows from it)."""
    for suffix in ("", "-wal", "-shm"):
        Path(str(cache_path(db_path)) + suffix).unlink(missing_ok=True)


def connect(path: Path, timeout: float = 30, **options: Any) -> sqlite3.Connection:
    """A connection to the cache file at ``path``, its schema created."""
    conn = sqlite3.connect(path, timeout=timeout, isolation_level=None, **options)
    try:
        # WAL, synchronous NORMAL: commits do not wait for the disk (derived data; a transaction
        # lost to a power cut leaves marks the next use checks against the store)
        if conn.execute("PRAGMA journal_mode").fetchone()[0] != "wal":
            conn.execute("PRAGMA journal_mode=WAL")
        conn.execute("PRAGMA synchronous=NORMAL")
        if conn.execute("PRAGMA user_version").fetchone()[0] != SCHEMA_VERSION:
            conn.execute("BEGIN IMMEDIATE")
            if conn.execute("PRAGMA user_version").fetchone()[0] != SCHEMA_VERSION:
                for table in ("marks", "complete", "log_arrays", "loop_arrays"):
                    conn.execute(f"DROP TABLE IF EXISTS {table}")  # an older layout
                for statement in _SCHEMA.split(";"):
                    if statement.strip():
                        conn.execute(statement)
                conn.execute(f"PRAGMA user_version = {SCHEMA_VERSION}")
            conn.execute("COMMIT")
    except BaseException:
        conn.close()
        raise
    return conn


class FrameCache:
    """Cached numeric log and loop rows of one SQLite store, read within one store snapshot.

    ``log_sql(name)`` and ``loop_sql`` are the fast path's SELECTs (3 columns each, with a
    ``{runs}`` placeholder for an optional ``AND run IN (...)``), so cached and fresh rows are
    the same by construction.
    """

    def __init__(
        self, store_cursor: Any, path: Path, conn: sqlite3.Connection | None = None
    ) -> None:
        self.cur = store_cursor
        self.conn = conn if conn is not None else connect(path)

    @classmethod
    @contextmanager
    def open(cls, store_cursor: Any, db_path: Path) -> Iterator[FrameCache]:
        cache = cls(store_cursor, cache_path(db_path))
        try:
            cache.conn.execute("BEGIN IMMEDIATE")  # one refresher at a time
            store_cursor.execute("BEGIN")  # one snapshot of the store for everything read
            try:
                cache._refresh_marks()
                yield cache
                cache.conn.execute("COMMIT")
            except BaseException:
                cache.conn.execute("ROLLBACK")
                raise
            finally:
                store_cursor.execute("COMMIT")
        finally:
            cache.conn.close()

    # -- staleness ---------------------------------------------------------------------------
    def _scalar(self, sql: str, params: Sequence[Any] = ()) -> Any:
        self.cur.execute(sql, list(params))
        row = self.cur.fetchone()
        return None if row is None else row[0]

    def tops(self) -> tuple[int, int]:
        return store_tops(self.cur)

    def _tail(self, table: str, mark: int) -> str:
        return "" if mark == 0 else str(self._scalar(_TAILS[table], [mark]))

    def _refresh_marks(self, tops: tuple[int, int] | None = None) -> None:
        """Mark what changed in the store since the marks stale, and set the marks to ``tops``
        (default: the store's current largest rowids)."""
        logs_top, loops_top = self.tops() if tops is None else tops
        marks = dict(self.conn.execute("SELECT key, value FROM marks").fetchall())
        logs_mark, loops_mark = marks.get("logs"), marks.get("loops")
        if (
            marks.get("version") != CACHE_VERSION
            or logs_mark is None
            or loops_mark is None
            or logs_mark > logs_top
            or loops_mark > loops_top
            or marks.get("logs_tail") != self._tail("logs", logs_mark)
            or marks.get("loops_tail") != self._tail("loops", loops_mark)
        ):
            for table in ("complete", "log_arrays", "loop_arrays"):
                self.conn.execute(f"DELETE FROM {table}")
        else:
            if logs_top > logs_mark:
                self.cur.execute(
                    "SELECT DISTINCT name, run FROM logs WHERE rowid > ? AND rowid <= ?",
                    [logs_mark, logs_top],
                )
                complete = {row[0] for row in self.conn.execute("SELECT name FROM complete")}
                stale = [(name, run) for name, run in self.cur.fetchall() if name in complete]
                self.conn.executemany(
                    "INSERT OR REPLACE INTO log_arrays (name, run, part) VALUES (?, ?, ?)",
                    [(name, run, STALE) for name, run in stale],
                )
            if loops_top > loops_mark:
                self.cur.execute(
                    "SELECT DISTINCT run FROM loops WHERE rowid > ? AND rowid <= ?",
                    [loops_mark, loops_top],
                )
                self.conn.executemany("DELETE FROM loop_arrays WHERE run = ?", self.cur.fetchall())
        self.set_marks(logs_top, loops_top)

    def set_marks(self, logs_top: int, loops_top: int) -> None:
        """Record that the cache reflects every store row up to these rowids."""
        self.conn.executemany(
            "INSERT OR REPLACE INTO marks (key, value) VALUES (?, ?)",
            [
                ("version", CACHE_VERSION),
                ("logs", logs_top),
                ("loops", loops_top),
                ("logs_tail", self._tail("logs", logs_top)),
                ("loops_tail", self._tail("loops", loops_top)),
            ],
        )

    # -- log rows ----------------------------------------------------------------------------
    def log_rows(self, name: str, select: str, params: list[Any]) -> np.ndarray:
        """All (k, m, v) rows of ``name``: ``select`` has a ``{runs}`` slot for a run filter."""
        complete = self.conn.execute("SELECT 1 FROM complete WHERE name = ?", [name]).fetchone()
        if complete is None:
            rows = self._fetch(select.format(runs=""), params, ROW_DTYPE)
            self.conn.execute("DELETE FROM log_arrays WHERE name = ?", [name])
            if self._store_logs(name, rows):
                self.conn.execute("INSERT INTO complete (name) VALUES (?)", [name])
            return rows
        ks: list[Any] = []
        ms: list[Any] = []
        vs: list[Any] = []
        stale: list[int] = []
        # a stale marker (part -1) comes first in its run's parts: skip the run's other parts
        for run, k, m, v in self.conn.execute(
            "SELECT run, k, m, v FROM log_arrays WHERE name = ? ORDER BY run, part", [name]
        ):
            if stale and stale[-1] == run:
                continue
            if k is None:
                stale.append(run)
                continue
            ks.append(k)
            ms.append(m)
            vs.append(v)
        parts = [_rows(ROW_DTYPE, b"".join(ks), b"".join(ms), b"".join(vs))]
        for start in range(0, len(stale), _CHUNK):
            chunk = stale[start : start + _CHUNK]
            binds = ", ".join("?" for _ in chunk)
            fresh = self._fetch(
                select.format(runs=f"AND run IN ({binds})"), [*params, *chunk], ROW_DTYPE
            )
            if not self._store_logs(name, fresh, chunk):
                self.conn.execute("DELETE FROM complete WHERE name = ?", [name])
                self.conn.execute("DELETE FROM log_arrays WHERE name = ?", [name])
            parts.append(fresh)
        return np.concatenate(parts) if len(parts) > 1 else parts[0]

    def _store_logs(self, name: str, rows: np.ndarray, runs: Sequence[int] = ()) -> bool:
        """Cache ``rows`` per run (replacing ``runs``' entries); False when they cannot be."""
        self.conn.executemany(
            "DELETE FROM log_arrays WHERE name = ? AND run = ?", [(name, r) for r in runs]
        )
        if bool((rows["k"] < 0).any()):
            return False  # ids beyond the packed ranges: the caller takes the general path
        if len(rows) == 0:
            return True
        self.conn.executemany(
            "INSERT OR REPLACE INTO log_arrays (name, run, part, k, m, v) VALUES (?, ?, 0, ?, ?, ?)",
            ((name, run, *_column_bytes(part)) for run, part in _per_run(rows)),
        )
        return True

    # -- loop rows ---------------------------------------------------------------------------
    def loop_rows(
        self, runs: Sequence[int], select: str, name_sql: str
    ) -> tuple[np.ndarray, list[str]]:
        """(k, p, i) loop rows of ``runs`` with name codes in ``p`` into the returned name list.

        ``select`` takes ``{case}`` (a CASE over the run's loop names) and ``{runs}``;
        ``name_sql`` lists the distinct loop names of the runs in ``{runs}``.
        """
        names: list[str] = []
        code_of: dict[str, int] = {}
        parts: list[np.ndarray] = []
        cached: dict[int, list[tuple[str, bytes, bytes, bytes]]] = {}
        wanted = sorted(set(runs))
        for start in range(0, len(wanted), _CHUNK):
            chunk = wanted[start : start + _CHUNK]
            binds = ", ".join("?" for _ in chunk)
            for run, run_names, k, p, i in self.conn.execute(
                f"SELECT run, names, k, p, i FROM loop_arrays WHERE run IN ({binds}) "
                "ORDER BY run, part",
                chunk,
            ):
                cached.setdefault(run, []).append((run_names, k, p, i))
        missing = [run for run in wanted if run not in cached]
        for start in range(0, len(missing), _CHUNK):
            chunk = missing[start : start + _CHUNK]
            binds = ", ".join("?" for _ in chunk)
            runs_filter = f"WHERE run IN ({binds})"
            self.cur.execute(name_sql.format(runs=runs_filter), chunk)
            chunk_names = [row[0] for row in self.cur.fetchall()]
            whens = " ".join(f"WHEN ? THEN {n}" for n in range(len(chunk_names)))
            case = f"CASE name {whens} ELSE {len(chunk_names)} END"
            rows = self._fetch(
                select.format(case=case, runs=runs_filter), [*chunk_names, *chunk], LOOP_DTYPE
            )
            self._store_loops(rows, chunk_names)
            self._add_loops(rows, chunk_names, names, code_of, parts)
        by_names: dict[str, list[tuple[bytes, bytes, bytes]]] = {}
        for run in wanted:
            for run_names, k, p, i in cached.get(run, ()):
                by_names.setdefault(run_names, []).append((k, p, i))
        for run_names, blobs in by_names.items():  # usually one group: runs of one script
            k, p, i = (b"".join(column) for column in zip(*blobs, strict=True))
            self._add_loops(
                _rows(LOOP_DTYPE, k, p, i), json.loads(run_names), names, code_of, parts
            )
        return (np.concatenate(parts) if parts else np.empty(0, LOOP_DTYPE)), names

    @staticmethod
    def _add_loops(
        rows: np.ndarray,
        local: list[str],
        names: list[str],
        code_of: dict[str, int],
        parts: list[np.ndarray],
    ) -> None:
        """Append ``rows`` with their local loop-name codes translated to the shared list."""
        if len(rows) == 0:
            return
        for loop_name in local:
            if loop_name not in code_of:
                code_of[loop_name] = len(names)
                names.append(loop_name)
        table = np.array([code_of[n] for n in local] + [len(local)], dtype=np.int64)
        out = rows if rows.base is None else rows.copy()
        local_code = rows["p"] & ((1 << 20) - 1)
        out["p"] = (rows["p"] & ~((1 << 20) - 1)) | table[np.minimum(local_code, len(local))]
        parts.append(out)

    def _store_loops(self, rows: np.ndarray, local: list[str]) -> None:
        if len(rows) == 0 or bool((rows["k"] < 0).any()) or bool((rows["p"] < 0).any()):
            return
        encoded = json.dumps(local)
        self.conn.executemany(
            "INSERT OR REPLACE INTO loop_arrays (run, part, names, k, p, i) VALUES (?, 0, ?, ?, ?, ?)",
            ((run, encoded, *_column_bytes(part)) for run, part in _per_run(rows)),
        )

    def _fetch(self, sql: str, params: list[Any], dtype: np.dtype) -> np.ndarray:
        self.cur.execute(sql, params)
        return np.fromiter(self.cur, dtype=dtype)


def store_tops(cur: Any) -> tuple[int, int]:
    """The store's largest rowids of ``logs`` and ``loops`` (in the cursor's snapshot)."""
    cur.execute("SELECT IFNULL(max(rowid), 0), (SELECT IFNULL(max(rowid), 0) FROM loops) FROM logs")
    logs_top, loops_top = cur.fetchone()
    return int(logs_top), int(loops_top)


def _per_run(rows: np.ndarray) -> Iterator[tuple[int, np.ndarray]]:
    """``rows`` (non-empty, ``k`` = run << 32 | ctx) split by run, each part in its fetch order."""
    run_of = rows["k"] >> 32
    order = np.argsort(run_of, kind="stable")
    rows, run_of = rows[order], run_of[order]
    bounds = np.flatnonzero(np.r_[True, run_of[1:] != run_of[:-1], True])
    for a, b in zip(bounds[:-1], bounds[1:], strict=True):
        yield int(run_of[a]), rows[a:b]


def _column_bytes(rows: np.ndarray) -> list[bytes]:
    """The raw bytes of each field of a structured array, in field order (``_rows`` inverts it)."""
    return [rows[field].tobytes() for field in rows.dtype.names or ()]


def _rows(dtype: np.dtype, *columns: bytes) -> np.ndarray:
    """A structured array from the raw bytes of its int64/float64 columns, in field order."""
    fields = dtype.names or ()
    out = np.empty(len(columns[0]) // 8, dtype=dtype)
    for field, data in zip(fields, columns, strict=True):
        out[field] = np.frombuffer(data, dtype[field])
    return out


# --- the fast path's reads: packed numeric columns ------------------------------------------

KEY_BITS = 32  # run << 32 | ctx_id
NAME_BITS = 10  # at most 1024 names
SEQ_SHIFT = 2 + NAME_BITS
REC_SHIFT = 52  # seq < 2**40
MAX_CTX = (1 << KEY_BITS) - 1
MAX_RUN = (1 << 30) - 1
CODE_BITS = 20  # loop name codes
MAX_SEQ = (1 << 40) - 1


def _packed(run: str, ctx: str) -> str:
    """SQL for ``run << 32 | ctx``, or -1 where either is out of range."""
    return (
        f"CASE WHEN {run} BETWEEN 0 AND {MAX_RUN} AND {ctx} BETWEEN 0 AND {MAX_CTX} "
        f"THEN ({run} << {KEY_BITS}) | {ctx} ELSE -1 END"
    )


def _bind(items: Sequence[str]) -> str:
    return ", ".join("?" for _ in items)


def _case(column: str, items: Sequence[str]) -> tuple[str, list[str]]:
    whens = " ".join(f"WHEN ? THEN {i}" for i in range(len(items)))
    return f"CASE {column} {whens} ELSE {len(items)} END", list(items)


_LOG_SELECT = (
    f"SELECT {_packed('run', 'ctx_id')}, "
    f"CASE WHEN seq BETWEEN 0 AND {MAX_SEQ} THEN "
    f"((replay_id IS NULL) << {REC_SHIFT}) | (seq << {SEQ_SHIFT}) | "
    "CASE WHEN value_num IS NULL THEN 2 WHEN vtype = 'f' THEN 0 WHEN vtype = 'i' THEN 1 "
    "ELSE 2 END ELSE -1 END, IFNULL(value_num, 0.0) "
    "FROM logs WHERE name = ? {runs}"
)
_LOOP_SELECT = (
    f"SELECT {_packed('run', 'ctx_id')}, "
    f"CASE WHEN parent_id BETWEEN 0 AND {MAX_CTX} THEN (parent_id << {CODE_BITS}) | {{case}} "
    "ELSE -1 END, iteration FROM loops {runs}"
)


class StoreRows:
    """Log and loop rows read from the store."""

    def __init__(self, cur: Any) -> None:
        self.cur = cur

    def logs(self, name: str) -> np.ndarray:
        self.cur.execute(_LOG_SELECT.format(runs=""), [name])
        return np.fromiter(self.cur, dtype=ROW_DTYPE)

    def loops(self, runs: np.ndarray) -> tuple[np.ndarray, list[str]] | None:
        return all_loops(self.cur)


class CachedRows:
    """The same rows through the columnar cache (``FrameCache``)."""

    def __init__(self, cur: Any, cache: FrameCache) -> None:
        self.cur = cur
        self.cache = cache

    def logs(self, name: str) -> np.ndarray:
        return self.cache.log_rows(name, _LOG_SELECT, [name])

    def loops(self, runs: np.ndarray) -> tuple[np.ndarray, list[str]] | None:
        return self.cache.loop_rows(
            np.unique(runs).tolist(), _LOOP_SELECT, "SELECT DISTINCT name FROM loops {runs}"
        )


def all_loops(cur: Any) -> tuple[np.ndarray, list[str]] | None:
    """Every loop row of the store as (k, p, i) and the loop names ``p``'s codes refer to."""
    cur.execute("SELECT DISTINCT name FROM loops")
    loop_names = [row[0] for row in cur.fetchall()]
    if len(loop_names) >= (1 << CODE_BITS):
        return None
    case, params = _case("name", loop_names)
    columns = (  # the columns of _LOOP_SELECT
        _packed("run", "ctx_id"),
        f"CASE WHEN parent_id BETWEEN 0 AND {MAX_CTX} THEN (parent_id << {CODE_BITS}) | {case} "
        "ELSE -1 END",
        "iteration",
    )
    table = int_columns(cur, columns, "loops", params)
    if table is None:  # (run, ctx_id) packed, (parent_id, name code) packed, iteration: 3 ints
        cur.execute(_LOOP_SELECT.format(case=case, runs=""), params)
        table = np.fromiter(cur, dtype=LOOP_DTYPE)
    return table, loop_names


def int_columns(
    cur: Any, columns: Sequence[str], table: str, params: list[str]
) -> np.ndarray | None:
    """Integer columns of a whole table as one comma-joined string each, parsed by numpy: no
    Python object per cell. ``None`` where SQLite refuses (strings over its length limit)."""
    select = ", ".join(f"group_concat({column}, ',')" for column in columns)
    try:
        cur.execute(f"SELECT COUNT(*), {select} FROM {table}", params)
        count, *texts = cur.fetchone()
    except sqlite3.Error:
        return None
    out = np.empty(count, dtype=np.dtype([(n, "i8") for n in ("k", "p", "i")[: len(columns)]]))
    for name, text in zip(out.dtype.names or (), texts, strict=True):
        values = np.fromstring(text or "", sep=",", dtype=np.int64) if count else np.empty(0, "i8")
        if len(values) != count:
            return None
        out[name] = values
    return out


T = TypeVar("T")


def read_numeric(store: Any, compute: Callable[[StoreRows | CachedRows], T]) -> T:
    """``compute`` over the numeric rows of the SQLite ``store``: through the columnar cache (in
    one snapshot of the store), or read from the store when the cache cannot be used (warned
    once; the cache is an optimisation only)."""
    raw = store.reader.raw_connection()
    try:
        cur: Any = raw.cursor()
        if store.path is not None:
            try:
                with FrameCache.open(cur, store.path) as cache:
                    return compute(CachedRows(cur, cache))
            except (sqlite3.Error, OSError) as exc:
                warn_once("frames-cache", f"retrolog: not using the dataframe cache ({exc})")
        return compute(StoreRows(cur))
    finally:
        raw.close()
