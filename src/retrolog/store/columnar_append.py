"""Appending one ingest transaction's rows to the columnar cache (numpy): what
``columnar_ingest.CacheFollower`` does inside the store's transaction, imported on first use."""

from __future__ import annotations

import json
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
)

_BATCH_LOG = np.dtype([("c", "i8"), ("run", "i8"), ("k", "i8"), ("m", "i8"), ("v", "f8")])
_BATCH_LOOP = np.dtype([("run", "i8"), ("k", "i8"), ("p", "i8"), ("i", "i8")])


def append(cache: FrameCache, cur: Any, tops: tuple[int, int]) -> int:
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
