"""Looking runs up: their public ids and internal keys (``runs.run_id`` and ``runs.id``).

The small questions every package asks of the ``runs`` table, answered once. Stdlib only.
"""

from __future__ import annotations

from collections.abc import Sequence

from .binds import Fetches, fetch_in


def run_ids(db: Fetches) -> set[str]:
    """Every run id the store holds."""
    return {row[0] for row in db.fetch("SELECT run_id FROM runs")}


def run_key(db: Fetches, run_id: str) -> int | None:
    """The internal key of the run ``run_id``, or None."""
    rows = db.fetch("SELECT id FROM runs WHERE run_id = :r", {"r": run_id})
    return int(rows[0][0]) if rows else None


def run_keys(db: Fetches, run_ids: Sequence[str]) -> dict[str, int]:
    """run_id -> internal key for the given public ids (unknown ids are left out)."""
    rows = fetch_in(db, "SELECT run_id, id FROM runs WHERE run_id IN ({in})", run_ids)
    return {r[0]: int(r[1]) for r in rows}


def all_run_keys(db: Fetches) -> list[tuple[int, str]]:
    """``(runs.id, run_id)`` of every run, by run id."""
    return [(int(r[0]), str(r[1])) for r in db.fetch("SELECT id, run_id FROM runs ORDER BY run_id")]


def run_states(db: Fetches) -> list[tuple[int, str, str]]:
    """``(runs.id, run_id, status)`` of every run, by run id."""
    return [
        (int(k), str(r), str(s))
        for k, r, s in db.fetch("SELECT id, run_id, status FROM runs ORDER BY run_id")
    ]


def run_count(db: Fetches) -> int:
    """How many runs the store holds."""
    return int(db.fetch("SELECT count(*) FROM runs")[0][0])


__all__ = ["all_run_keys", "run_count", "run_ids", "run_key", "run_keys", "run_states"]
