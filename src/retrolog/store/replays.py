"""Replays in the store: the ``replays``, ``replay_tasks``, ``replay_runs`` and ``propagations``
rows, the values a replay stores with their provenance, and the recorded rows a replay reads.

The replay coordinator writes through these functions (only it writes replay results; workers
never open the store), the UI reads replay pages through them. Stdlib only: the coordinator must
not pay for pandas or SQLAlchemy. Values are always bound; IN lists go through ``store.binds``.
Shapes of the tables: docs/data-model.md.
"""

from __future__ import annotations

import sqlite3
from collections.abc import Iterable, Mapping, Sequence
from typing import Any

from .binds import Fetches, chunks, in_list
from .digest import add_replay_rows
from .lite import Database, insert_rows, update_rows

Row = Mapping[str, Any]

PROPAGATION_COLUMNS = [
    "replay_id",
    "version",
    "script",
    "line",
    "scope",
    "renames",
    "confidence",
    "refused",
    "inserted",
]
REPLAY_COLUMNS = [
    "replay_id",
    "created",
    "finished",
    "status",
    "names",
    "statements",
    "script",
    "where_clause",
    "workers",
    "plan",
    "estimate_seconds",
    "actual_seconds",
    "error",
]
TASK_COLUMNS = [
    "task_id",
    "run_id",
    "version",
    "level",
    "iterations",
    "status",
    "attempts",
    "progress",
    "estimate_seconds",
    "actual_seconds",
    "started",
    "finished",
    "log",
]
FIDELITY_COLUMNS = [
    "run_id",
    "fidelity",
    "compared",
    "mismatches",
    "max_abs_diff",
    "detail",
    "stored",
]


# -- the coordinator's writes ------------------------------------------------------------------
def record_replay(
    db: Database, replay: Row, tasks: Sequence[Row], propagations: Sequence[Row]
) -> None:
    """A planned replay: its ``replays`` row, its tasks and its propagations, in one transaction."""
    with db.transaction() as tx:
        insert_rows(tx, "replays", [replay])
        insert_rows(tx, "replay_tasks", tasks)
        insert_rows(tx, "propagations", propagations)


def update_replay(db: Database, replay_id: str, values: Row) -> None:
    """Set columns of one ``replays`` row (status, finished, seconds, error)."""
    with db.transaction() as tx:
        update_rows(tx, "replays", values, {"replay_id": replay_id})


def update_task(db: Database, replay_id: str, task_id: int, values: Row) -> None:
    """Set columns of one ``replay_tasks`` row (status, progress, attempts, log ...)."""
    with db.transaction() as tx:
        update_rows(tx, "replay_tasks", values, {"replay_id": replay_id, "task_id": task_id})


def record_replay_run(db: Database, row: Row) -> None:
    """The outcome of a replay for one run (a ``replay_runs`` row: fidelity, values stored)."""
    with db.transaction() as tx:
        insert_rows(tx, "replay_runs", [row])


def store_replay_values(
    db: Database, run_key: int, replay_id: str, rows: Sequence[tuple[int, str, Any]]
) -> int:
    """Insert ``(ctx_id, name, (vtype, value_num, value_text))`` rows a replay produced against
    the original run, after its last ``seq``, with the replay's digest (store/digest.py).
    Identical rows are skipped, so replaying the same statement again stores nothing twice;
    recorded rows are never touched. Returns how many rows were inserted."""
    if not rows:
        return 0
    names = sorted({name for _c, name, _cell in rows})
    binds, params = in_list("n", names)
    with db.transaction() as tx:
        if db.is_postgres:  # serialise with other writers of this run (SQLite: BEGIN IMMEDIATE)
            tx.fetch("SELECT id FROM runs WHERE id = :r FOR UPDATE", {"r": run_key})
        existing = set(
            map(
                tuple,
                tx.fetch(
                    "SELECT ctx_id, name, vtype, value_num, value_text FROM logs "
                    f"WHERE run = :r AND name IN ({binds})",
                    {"r": run_key, **params},
                ),
            )
        )
        top = tx.fetch("SELECT max(seq) FROM logs WHERE run = :r", {"r": run_key})[0][0]
        seq = int(top or 0)
        fresh = []
        for ctx, name, (vtype, num, text) in rows:
            if (ctx, name, vtype, num, text) in existing:
                continue
            seq += 1
            fresh.append(
                {
                    "run": run_key,
                    "seq": seq,
                    "ctx_id": ctx,
                    "name": name,
                    "vtype": vtype,
                    "value_num": num,
                    "value_text": text,
                    "replay_id": replay_id,
                }
            )
        insert_rows(tx, "logs", fresh)
        add_replay_rows(tx, run_key, replay_id, fresh)  # store/digest.py: doctor verifies
    return len(fresh)


# -- what a replay reads of the recorded run ----------------------------------------------------
def recorded_cells(
    db: Fetches, run_key: int, names: Iterable[str], chunk: int = 200
) -> list[tuple[int, str, str, Any, Any]]:
    """``(ctx_id, name, vtype, value_num, value_text)`` of the values the run itself recorded
    under ``names`` (no replay's), in ``seq`` order within each chunk of names."""
    out: list[tuple[int, str, str, Any, Any]] = []
    for part in chunks(sorted(names), chunk):
        binds, params = in_list("n", part)
        out.extend(
            tuple(r)
            for r in db.fetch(
                "SELECT ctx_id, name, vtype, value_num, value_text FROM logs WHERE run = :r "
                f"AND replay_id IS NULL AND name IN ({binds}) ORDER BY seq",
                {**params, "r": run_key},
            )
        )
    return out


def recorded_contexts(db: Fetches, run_key: int, names: Sequence[str]) -> list[int]:
    """The loop contexts (``ctx_id``) in which the run itself recorded any of ``names``."""
    binds, params = in_list("n", names)
    rows = db.fetch(
        f"SELECT DISTINCT ctx_id FROM logs WHERE run = :r AND replay_id IS NULL "
        f"AND name IN ({binds})",
        {**params, "r": run_key},
    )
    return [r[0] for r in rows]


def arg_numbers(db: Fetches, run_key: int, names: Sequence[str]) -> dict[str, Any]:
    """name -> ``value_num`` of the run's args among ``names`` (absent names are left out)."""
    binds, params = in_list("a", names)
    rows = db.fetch(
        f"SELECT name, value_num FROM args WHERE run = :r AND name IN ({binds})",
        {**params, "r": run_key},
    )
    return {name: value for name, value in rows}


def recorded_scripts(db_url: str) -> list[str] | None:
    """The distinct scripts of the runs in a SQLite store, read without opening the store (the
    coordinator asks before it has one); None when ``db_url`` is not a readable SQLite file."""
    prefix = "sqlite:///"
    if not db_url.startswith(prefix):
        return None
    path = db_url[len(prefix) :]
    try:
        conn = sqlite3.connect(f"file:{path}?mode=ro", uri=True, timeout=1)
        try:
            rows = conn.execute("SELECT DISTINCT script FROM runs").fetchall()
        finally:
            conn.close()
    except sqlite3.Error:
        return None
    return [r[0] for r in rows]


# -- the UI's replay pages ----------------------------------------------------------------------
def propagation_rows(db: Fetches, replay_id: str | None = None) -> list[dict[str, Any]]:
    """How each replay's statements were propagated to each version (``PROPAGATION_COLUMNS``
    plus the replay's ``names``, ``created`` and ``replay_status``), in replay order."""
    cols = ", ".join(f"p.{c}" for c in PROPAGATION_COLUMNS)
    sql = (
        f"SELECT {cols}, r.names, r.created, r.status FROM propagations p "
        "LEFT JOIN replays r ON r.replay_id = p.replay_id"
    )
    params: dict[str, Any] = {}
    if replay_id is not None:
        sql += " WHERE p.replay_id = :rid"
        params["rid"] = replay_id
    sql += " ORDER BY r.created, p.replay_id, p.version"
    keys = [*PROPAGATION_COLUMNS, "names", "created", "replay_status"]
    return [dict(zip(keys, row)) for row in db.fetch(sql, params)]


def replay_summaries(db: Fetches) -> list[dict[str, Any]]:
    """Every replay, newest first: its ``REPLAY_COLUMNS`` less the plan and statements."""
    columns = [c for c in REPLAY_COLUMNS if c not in ("plan", "statements")]
    rows = db.fetch(f"SELECT {', '.join(columns)} FROM replays ORDER BY created DESC")
    return [dict(zip(columns, row)) for row in rows]


def task_states(db: Fetches) -> list[tuple[str, str, float | None, float | None]]:
    """``(replay_id, status, progress, estimate_seconds)`` of every replay task."""
    return [
        tuple(r)
        for r in db.fetch("SELECT replay_id, status, progress, estimate_seconds FROM replay_tasks")
    ]


def fidelity_counts(db: Fetches) -> list[tuple[str, str | None, int]]:
    """``(replay_id, fidelity, runs)``: how many runs of each replay got each verdict."""
    return [
        (rid, kind, int(count))
        for rid, kind, count in db.fetch(
            "SELECT replay_id, fidelity, count(*) FROM replay_runs GROUP BY replay_id, fidelity"
        )
    ]


def replay_row(db: Fetches, replay_id: str) -> dict[str, Any] | None:
    """One replay's row (``REPLAY_COLUMNS``), or None."""
    rows = db.fetch(
        f"SELECT {', '.join(REPLAY_COLUMNS)} FROM replays WHERE replay_id = :rid",
        {"rid": replay_id},
    )
    return dict(zip(REPLAY_COLUMNS, rows[0])) if rows else None


def replay_task_rows(db: Fetches, replay_id: str) -> list[dict[str, Any]]:
    """One replay's tasks (``TASK_COLUMNS``), by task id."""
    rows = db.fetch(
        f"SELECT {', '.join(TASK_COLUMNS)} FROM replay_tasks WHERE replay_id = :rid "
        "ORDER BY task_id",
        {"rid": replay_id},
    )
    return [dict(zip(TASK_COLUMNS, row)) for row in rows]


def replay_run_rows(db: Fetches, replay_id: str) -> list[dict[str, Any]]:
    """One replay's outcome per run (``FIDELITY_COLUMNS``), by run id."""
    rows = db.fetch(
        f"SELECT {', '.join(FIDELITY_COLUMNS)} FROM replay_runs WHERE replay_id = :rid "
        "ORDER BY run_id",
        {"rid": replay_id},
    )
    return [dict(zip(FIDELITY_COLUMNS, row)) for row in rows]


__all__ = [
    "FIDELITY_COLUMNS",
    "PROPAGATION_COLUMNS",
    "REPLAY_COLUMNS",
    "TASK_COLUMNS",
    "arg_numbers",
    "fidelity_counts",
    "propagation_rows",
    "record_replay",
    "record_replay_run",
    "recorded_cells",
    "recorded_contexts",
    "recorded_scripts",
    "replay_row",
    "replay_run_rows",
    "replay_summaries",
    "replay_task_rows",
    "store_replay_values",
    "task_states",
    "update_replay",
    "update_task",
]
