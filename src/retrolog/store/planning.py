"""What the replay planner reads of the store: runs to plan, a run's loops, timings and
checkpoints, earlier replays and their measured tasks. Stdlib only (the replay coordinator
imports neither pandas nor SQLAlchemy); every value is a bound parameter.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from .binds import Fetches, fetch_in


def plannable_runs(db: Fetches) -> list[Any]:
    """Rows (``id, run_id, script, version, status, argv, cwd``) of every run not still running,
    by run id."""
    return db.fetch(
        "SELECT id, run_id, script, version, status, argv, cwd FROM runs "
        "WHERE status != 'running' ORDER BY run_id"
    )


def run_args(db: Fetches, run_key: int) -> list[Any]:
    """``(name, vtype, value_num, value_text)`` of a run's args."""
    return db.fetch(
        "SELECT name, vtype, value_num, value_text FROM args WHERE run = :r", {"r": run_key}
    )


def run_loops(db: Fetches, run_key: int) -> list[Any]:
    """``(ctx_id, parent_id, name, iteration)`` of a run's loop iterations, by context id."""
    return db.fetch(
        "SELECT ctx_id, parent_id, name, iteration FROM loops WHERE run = :r ORDER BY ctx_id",
        {"r": run_key},
    )


def run_timings(db: Fetches, run_key: int) -> list[Any]:
    """``(kind, loop, ctx_id, iteration, seconds)`` of a run's recorded timings."""
    return db.fetch(
        "SELECT kind, loop, ctx_id, iteration, seconds FROM timings WHERE run = :r",
        {"r": run_key},
    )


def run_span(db: Fetches, run_key: int) -> tuple[Any, Any]:
    """``(start_time, end_time)`` of a run."""
    row = db.fetch("SELECT start_time, end_time FROM runs WHERE id = :r", {"r": run_key})[0]
    return row[0], row[1]


def run_checkpoints(db: Fetches, run_key: int) -> list[Any]:
    """``(ctx_id, loop, iteration, manifest, bytes_total)`` of a run's checkpoints."""
    return db.fetch(
        "SELECT ctx_id, loop, iteration, manifest, bytes_total FROM checkpoints WHERE run = :r",
        {"r": run_key},
    )


def replayed_values(db: Fetches, names: Sequence[str]) -> list[Any]:
    """``(run, name, replay_id, statements, where_clause, created)`` for each value of ``names``
    stored by a finished replay that reproduced (or could not check) the run's records."""
    return fetch_in(
        db,
        "SELECT DISTINCT l.run, l.name, r.replay_id, r.statements, r.where_clause, r.created "
        "FROM logs l JOIN replays r ON r.replay_id = l.replay_id "
        "JOIN runs u ON u.id = l.run "
        "JOIN replay_runs f ON f.replay_id = r.replay_id AND f.run_id = u.run_id "
        "WHERE r.status = 'finished' AND f.fidelity IN ('reproduced', 'unchecked') "
        "AND l.name IN ({in})",
        names,
    )


def latest_replay_plans(db: Fetches, script: str, limit: int) -> list[Any]:
    """``(replay_id, plan)`` of the latest ``limit`` finished replays of ``script``."""
    return db.fetch(
        "SELECT replay_id, plan FROM replays WHERE script = :s AND status = 'finished' "
        "ORDER BY created DESC LIMIT :n",
        {"s": script, "n": limit},
    )


def measured_tasks(db: Fetches, replay_id: str) -> list[Any]:
    """``(task_id, level, run_id, estimate_seconds, actual_seconds)`` of a replay's tasks that
    succeeded at their first attempt."""
    return db.fetch(
        "SELECT task_id, level, run_id, estimate_seconds, actual_seconds FROM replay_tasks "
        "WHERE replay_id = :r AND status = 'done' AND attempts = 1",
        {"r": replay_id},
    )


def column_names(db: Fetches) -> list[str]:
    """Every arg, loop and logged name any run has: the columns a ``--where`` may name."""
    out: list[str] = []
    for sql in (
        "SELECT DISTINCT name FROM args",
        "SELECT DISTINCT name FROM loops",
        "SELECT DISTINCT name FROM logs",
    ):
        out += [str(r[0]) for r in db.fetch(sql)]
    return out


def main_loop_values(db: Fetches, run_key: int) -> list[Any]:
    """``(ctx_id, name, vtype, value_num, value_text)`` of the values a run recorded directly
    in an iteration of a depth-1 loop (not replayed ones)."""
    return db.fetch(
        "SELECT ctx_id, name, vtype, value_num, value_text FROM logs "
        "WHERE run = :r AND replay_id IS NULL "
        "AND ctx_id IN (SELECT ctx_id FROM loops WHERE run = :r AND parent_id = 0)",
        {"r": run_key},
    )


__all__ = [
    "column_names",
    "latest_replay_plans",
    "main_loop_values",
    "measured_tasks",
    "plannable_runs",
    "replayed_values",
    "run_args",
    "run_checkpoints",
    "run_loops",
    "run_span",
    "run_timings",
]
