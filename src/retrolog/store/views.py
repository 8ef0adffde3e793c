"""The web UI's reads: runs, metric names and last values, chart series, versions, run details.

Each function answers one question over a read-only store (the UI's ``ui.db.Reader``: any object
with ``fetch`` and ``is_sqlite``) and returns plain rows; the UI shapes them into pages. Every
value is bound (:mod:`store.binds`). Replay reads are in :mod:`store.replays`.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from .binds import Fetches, Reads, fetch_in, in_list

_NAMES_SQLITE = """
WITH RECURSIVE n(name) AS (
  SELECT min(name) FROM logs
  UNION ALL SELECT (SELECT min(name) FROM logs WHERE name > n.name) FROM n WHERE n.name IS NOT NULL
)
SELECT name FROM n WHERE name IS NOT NULL
"""  # a skip-scan over ix_logs_name_run: one index probe per distinct name

CHECKPOINT_COLUMNS = [
    "loop",
    "iteration",
    "ctx_id",
    "bytes_total",
    "bytes_new",
    "capture_seconds",
    "write_seconds",
    "manifest",
]


def metric_names(db: Reads) -> list[str]:
    """Every name logged in the project, sorted."""
    sql = _NAMES_SQLITE if db.is_sqlite else "SELECT DISTINCT name FROM logs ORDER BY name"
    return [r[0] for r in db.fetch(sql)]


def has_numeric_value(db: Fetches, name: str) -> bool:
    """Whether ``name`` was logged at least once with a numeric value."""
    rows = db.fetch(
        "SELECT 1 FROM logs WHERE name = :n AND value_num IS NOT NULL LIMIT 1", {"n": name}
    )
    return bool(rows)


def last_value_rows(db: Reads, names: Sequence[str]) -> list[tuple[Any, ...]]:
    """``(run_id, name, vtype, value_num, value_text, replay_id)``: the last value of each of
    ``names`` in each run, recorded values first, else hindsight.

    On SQLite the last recorded row of (name, run) is the one with the highest rowid (rows are
    inserted in ``seq`` order), found with one probe of ``ix_logs_name_run`` per pair; pairs whose
    newest row came from a replay are resolved exactly with a second, ordered query.
    """
    if not names:
        return []
    values = ", ".join(f"(:n{i})" for i in range(len(names)))
    params = {f"n{i}": name for i, name in enumerate(names)}
    exact_order = (
        "ORDER BY (replay_id IS NULL) DESC, "
        "CASE WHEN replay_id IS NULL THEN seq ELSE ctx_id END DESC, seq DESC"
    )
    if not db.is_sqlite:
        sql = f"""
            SELECT r.run_id, x.name, x.vtype, x.value_num, x.value_text, x.replay_id FROM (
              SELECT run, name, vtype, value_num, value_text, replay_id,
                     ROW_NUMBER() OVER (PARTITION BY run, name {exact_order}) AS rn
              FROM logs WHERE name IN (SELECT name FROM (VALUES {values}) AS n(name))
            ) x JOIN runs r ON r.id = x.run WHERE x.rn = 1
        """
        return [tuple(r) for r in db.fetch(sql, params)]
    sql = f"""
        WITH n(name) AS (VALUES {values}),
        p AS (SELECT r.id AS run, r.run_id AS run_id, n.name AS name,
                (SELECT rowid FROM logs WHERE name = n.name AND run = r.id
                 ORDER BY rowid DESC LIMIT 1) AS rid
              FROM runs r CROSS JOIN n)
        SELECT p.run_id, p.name, l.vtype, l.value_num, l.value_text, l.replay_id, p.run
        FROM p JOIN logs l ON l.rowid = p.rid
    """
    fixed: list[tuple[Any, ...]] = []
    for row in db.fetch(sql, params):
        if row[5] is None:
            fixed.append(tuple(row[:6]))
            continue
        exact = db.fetch(
            "SELECT vtype, value_num, value_text, replay_id FROM logs "
            f"WHERE name = :n AND run = :r {exact_order} LIMIT 1",
            {"n": row[1], "r": row[6]},
        )
        fixed.append((row[0], row[1], *exact[0]))
    return fixed


def run_checkpoints(db: Fetches, key: int) -> list[dict[str, Any]]:
    """A run's checkpoints (``CHECKPOINT_COLUMNS``), in context order."""
    rows = db.fetch(
        f"SELECT {', '.join(CHECKPOINT_COLUMNS)} FROM checkpoints WHERE run = :r "
        "ORDER BY ctx_id, loop",
        {"r": key},
    )
    return [dict(zip(CHECKPOINT_COLUMNS, row)) for row in rows]


def run_timing_summary(db: Fetches, key: int) -> list[tuple[str, str, int, float]]:
    """``(kind, loop, count, seconds)`` of a run's timings: prefix, iterations, nested, rest."""
    rows = db.fetch(
        "SELECT kind, loop, count(*), sum(seconds) FROM timings WHERE run = :r "
        "GROUP BY kind, loop ORDER BY CASE kind WHEN 'prefix' THEN 0 WHEN 'iteration' THEN 1 "
        "WHEN 'nested' THEN 2 ELSE 3 END, loop",
        {"r": key},
    )
    return [(k, loop, int(n), s) for k, loop, n, s in rows]


def run_versions(db: Fetches) -> list[tuple[Any, ...]]:
    """``(run_id, version, status, start_time, git_head, git_branch, git_dirty, script)`` of
    every run, in start order."""
    return [
        tuple(r)
        for r in db.fetch(
            "SELECT run_id, version, status, start_time, git_head, git_branch, git_dirty, script "
            "FROM runs ORDER BY start_time, run_id"
        )
    ]


def known_versions(db: Fetches) -> set[str]:
    """Every version a run recorded."""
    return {r[0] for r in db.fetch("SELECT DISTINCT version FROM runs") if r[0]}


def newest_runs_logging(db: Fetches, names: Sequence[str], limit: int) -> list[str]:
    """The newest ``limit`` run ids that logged any of ``names`` (one index probe per run)."""
    if not names:
        return []
    binds, params = in_list("n", names)
    rows = db.fetch(
        "SELECT r.run_id FROM runs r WHERE EXISTS (SELECT 1 FROM logs l "
        f"WHERE l.name IN ({binds}) AND l.run = r.id) ORDER BY r.run_id DESC LIMIT :limit",
        {**params, "limit": int(limit)},
    )
    return [r[0] for r in rows]


def runs_meta(db: Fetches, run_ids: Sequence[str]) -> list[tuple[Any, ...]]:
    """``(id, run_id, version, status, start_time, script)`` of the given runs, by run id."""
    return fetch_in(
        db,
        "SELECT id, run_id, version, status, start_time, script FROM runs "
        "WHERE run_id IN ({in}) ORDER BY run_id",
        run_ids,
    )


def args_of_runs(db: Fetches, keys: Sequence[int]) -> list[tuple[Any, ...]]:
    """``(run, name, vtype, value_num, value_text)``: the args of the given runs."""
    return fetch_in(
        db, "SELECT run, name, vtype, value_num, value_text FROM args WHERE run IN ({in})", keys
    )


def numeric_log_rows(db: Fetches, name: str, keys: Sequence[int]) -> list[tuple[Any, ...]]:
    """Numeric rows of ``name`` in the given runs with their innermost loop iteration:
    ``(run, ctx_id, seq, value_num, replay_id, loop, iteration, depth, parent_id, start_time)``."""
    return fetch_in(
        db,
        "SELECT l.run, l.ctx_id, l.seq, l.value_num, l.replay_id, "
        "c.name, c.iteration, c.depth, c.parent_id, c.start_time "
        "FROM logs l LEFT JOIN loops c ON c.run = l.run AND c.ctx_id = l.ctx_id "
        "WHERE l.name = :name AND l.run IN ({in}) AND l.value_num IS NOT NULL",
        keys,
        {"name": name},
    )


def nested_loop_counts(db: Fetches, keys: Sequence[int]) -> list[tuple[Any, ...]]:
    """``(run, parent_id, loop name, iterations)`` of every nested loop instance (depth >= 2)."""
    return fetch_in(
        db,
        "SELECT run, parent_id, name, count(*) FROM loops "
        "WHERE run IN ({in}) AND depth >= 2 GROUP BY run, parent_id, name",
        keys,
    )


def loops_above(db: Fetches, keys: Sequence[int], depth: int) -> list[tuple[Any, ...]]:
    """``(run, ctx_id, parent_id, depth, name, iteration)`` of loop iterations shallower than
    ``depth`` in the given runs."""
    return fetch_in(
        db,
        "SELECT run, ctx_id, parent_id, depth, name, iteration FROM loops "
        "WHERE run IN ({in}) AND depth < :d",
        keys,
        {"d": depth},
    )


def content_counts(db: Fetches) -> tuple[Any, ...]:
    """A few aggregates of runs and replays that change whenever the store's content does."""
    return tuple(
        db.fetch(
            "SELECT (SELECT count(*) FROM runs), (SELECT sum(last_seq) FROM runs), "
            "(SELECT count(*) FROM replays), (SELECT max(created) FROM replays), "
            "(SELECT sum(stored) FROM replay_runs)"
        )[0]
    )


def arg_names(db: Fetches) -> list[str]:
    """Every arg name any run recorded, sorted."""
    return sorted({r[0] for r in db.fetch("SELECT DISTINCT name FROM args")})


def runs_with_data(db: Fetches, limit: int = 200) -> list[tuple[str, int]]:
    """``(run_id, key)`` of the newest ``limit`` runs that recorded data versions."""
    rows = db.fetch(
        "SELECT r.run_id, r.id FROM runs r WHERE r.id IN (SELECT DISTINCT run FROM data_versions) "
        "ORDER BY r.run_id DESC LIMIT :limit",
        {"limit": int(limit)},
    )
    return [(rid, int(key)) for rid, key in rows]


def runs_with_environment(db: Fetches, limit: int = 200) -> list[tuple[str, int, str | None]]:
    """``(run_id, key, name)`` of the newest ``limit`` runs with a recorded environment."""
    rows = db.fetch(
        "SELECT r.run_id, r.id, n.name FROM runs r JOIN run_environment e ON e.run = r.id "
        "LEFT JOIN run_names n ON n.run = r.id ORDER BY r.run_id DESC LIMIT :limit",
        {"limit": int(limit)},
    )
    return [(rid, int(key), name) for rid, key, name in rows]
