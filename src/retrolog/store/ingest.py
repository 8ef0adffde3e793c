"""Applying journal events to the store through a plain DB-API connection.

One implementation for two callers: ``Store.ingest`` (SQLAlchemy engines, any database) and
``lite.LiteStore``, which a recording process uses for an existing SQLite store so that it never
imports SQLAlchemy (about 0.45 s of CPU per run, the bulk of retrolog's recording cost).
Table and column names are our own constants; values are always bound parameters.
"""

from __future__ import annotations

import json
from collections.abc import Iterable, Sequence
from typing import Any

from . import digest, labels

# 2: the ``digests`` table (store/digest.py); stores of version 1 are migrated on open.
# 3: run names, tags, notes and environments (store/labels.py); data versions (record/data.py).
SCHEMA_VERSION = 3
BUSY_TIMEOUT_MS = 60_000

_COLUMNS = {
    "logs": ("run", "seq", "ctx_id", "name", "vtype", "value_num", "value_text"),
    "loops": ("run", "ctx_id", "parent_id", "depth", "name", "iteration", "value", "start_time"),
    "args": ("run", "name", "vtype", "value_num", "value_text"),
    "timings": ("run", "kind", "loop", "ctx_id", "iteration", "seconds", "count"),
    "checkpoints": (
        "run",
        "ctx_id",
        "loop",
        "iteration",
        "manifest",
        "bytes_total",
        "bytes_new",
        "capture_seconds",
        "write_seconds",
    ),
    "data_versions": (  # record/data.py
        "run",
        "name",
        "path",
        "kind",
        "digest",
        "algo",
        "files",
        "bytes",
        "dvc_md5",
        "manifest",
        "auto",
        "recorded",
    ),
}
_IGNORE_CONFLICTS = {"loops", "args", "checkpoints", "data_versions"}
RUN_FACTS = (
    "script",
    "argv",
    "cwd",
    "start_time",
    "host",
    "pid",
    "python",
    "packages",
    "git_head",
    "git_branch",
    "git_dirty",
    "version",
    "status",
)


def apply_events(
    cursor: Any,
    sqlite: bool,
    run_id: str,
    events: Iterable[Sequence[Any]],
    postgres: bool = False,
) -> int:
    """Apply one run's events above its high-water mark, inside the caller's transaction.

    Events: ``(seq, kind, *payload)`` as documented in docs/data-model.md. Idempotent.

    SQLite serialises writers (``BEGIN IMMEDIATE``). On PostgreSQL two transactions ingesting the
    same run (the run's own writer and its follower, or two recoveries) would both read the same
    ``last_seq`` under READ COMMITTED and store rows twice, so the run's row is locked
    (``FOR UPDATE``) for the transaction and created with ``ON CONFLICT DO NOTHING``.
    """
    mark = "?" if sqlite else "%s"
    select_run = f"SELECT id, last_seq FROM runs WHERE run_id = {mark}"
    if postgres:
        select_run += " FOR UPDATE"
    cursor.execute(select_run, (run_id,))
    row = cursor.fetchone()
    if row is None and postgres:
        cursor.execute(
            "INSERT INTO runs (run_id, status, last_seq) VALUES (%s, %s, 0) "
            "ON CONFLICT (run_id) DO NOTHING RETURNING id",
            (run_id, "running"),
        )
        created = cursor.fetchone()
        if created is not None:
            digest.forget_run(cursor, mark, int(created[0]))
        cursor.execute(select_run, (run_id,))
        row = cursor.fetchone()
    if row is None:
        cursor.execute(
            f"INSERT INTO runs (run_id, status, last_seq) VALUES ({mark}, {mark}, 0) RETURNING id",
            (run_id, "running"),
        )
        run_key, last_seq = int(cursor.fetchone()[0]), 0
        digest.forget_run(cursor, mark, run_key)
    else:
        run_key, last_seq = int(row[0]), int(row[1])
    fresh = [ev for ev in events if ev[0] > last_seq]
    if not fresh:
        return 0
    rows: dict[str, list[tuple[Any, ...]]] = {table: [] for table in _COLUMNS}
    facts: dict[str, Any] = {}
    labelled: list[Sequence[Any]] = []  # tag, name, note, env (store/labels.py)
    for ev in fresh:
        kind = ev[1]
        if kind == "log":
            rows["logs"].append((run_key, ev[0], *ev[2:7]))
        elif kind == "ctx":
            rows["loops"].append((run_key, *ev[2:9]))
        elif kind == "arg":
            rows["args"].append((run_key, *ev[2:6]))
        elif kind == "timing":
            rows["timings"].append((run_key, *ev[2:8]))
        elif kind == "ckpt":
            rows["checkpoints"].append((run_key, *ev[2:10]))
        elif kind == "data":
            rows["data_versions"].append((run_key, *ev[2:13]))
        elif kind == "run":
            facts.update(run_facts(ev[2]))
        elif kind == "end":
            facts.update(status=ev[2], end_time=ev[3], error=ev[4])
        elif kind in labels.KINDS:
            labelled.append(ev)
    for table, table_rows in rows.items():
        if not table_rows:
            continue
        columns = _COLUMNS[table]
        sql = f"INSERT INTO {table} ({', '.join(columns)}) VALUES ({', '.join([mark] * len(columns))})"
        if table in _IGNORE_CONFLICTS:
            sql = (
                sql.replace("INSERT", "INSERT OR IGNORE", 1)
                if sqlite
                else sql + " ON CONFLICT DO NOTHING"
            )
        cursor.executemany(sql, table_rows)
    if labelled:
        labels.apply(labels.Cursor(cursor, sqlite), run_key, labelled)
    # The run's digest grows in this same transaction, so it always matches the stored rows.
    sealed = facts.get("end_time") if "status" in facts and facts["status"] != "running" else None
    digest.add_rows(
        cursor, mark, run_key, digest.RECORDED, [r[1:] for r in rows["logs"]], sealed=sealed
    )
    facts["last_seq"] = max(ev[0] for ev in fresh)
    assignments = ", ".join(f"{key} = {mark}" for key in facts)
    cursor.execute(f"UPDATE runs SET {assignments} WHERE id = {mark}", (*facts.values(), run_key))
    return len(fresh)


def run_facts(facts: dict[str, Any]) -> dict[str, Any]:
    """The known run columns of a ``run`` event, JSON-encoded where the column holds JSON."""
    out: dict[str, Any] = {}
    for key, value in facts.items():
        if key not in RUN_FACTS:
            continue
        if key in ("argv", "packages") and value is not None and not isinstance(value, str):
            value = json.dumps(value)
        if key == "git_dirty" and value is not None:
            value = int(bool(value))
        out[key] = value
    return out
