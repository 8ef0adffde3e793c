"""The store's side of ``retrolog rm``, ``gc``, ``du`` and ``doctor``: deleting runs' rows, the
checkpoints runs reference, and the facts the doctor checks (integrity, schema version, versions,
value digests and the rows they cover, rows whose run is gone).

The SQLAlchemy ``Store`` serves deletion (Core statements over the schema's tables, one
transaction); the reads take any store with ``fetch``. Values are always bound.
"""

from __future__ import annotations

import sqlite3
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from .binds import Fetches
from .digest import RECORDED

# Tables whose rows belong to a run, by the column that names it (``runs.id`` or ``run_id``).
_BY_KEY = (
    "logs",
    "loops",
    "args",
    "timings",
    "checkpoints",
)
_BY_RUN_ID = ("replay_runs", "replay_tasks")
_LABELS = ("run_names", "run_tags", "run_notes", "run_environment", "data_versions")


def delete_run_rows(store: Any, keys: Sequence[int], run_ids: Sequence[str]) -> None:
    """Delete the runs ``keys`` (whose public ids are ``run_ids``) and every row recorded or
    replayed for them, labels and data versions included, in one transaction of the
    SQLAlchemy ``store``."""
    from sqlalchemy import delete

    from . import schema

    tables = schema.metadata.tables
    with store.writer.begin() as conn:
        for name in _BY_KEY:
            conn.execute(delete(tables[name]).where(tables[name].c.run.in_(keys)))
        for name in _BY_RUN_ID:
            conn.execute(delete(tables[name]).where(tables[name].c.run_id.in_(run_ids)))
        for name in _LABELS:  # issue 15: names, tags, notes, environments, data versions
            conn.execute(delete(tables[name]).where(tables[name].c.run.in_(keys)))
        conn.execute(delete(schema.runs).where(schema.runs.c.id.in_(keys)))


def checkpoint_manifests(db: Fetches) -> list[str]:
    """The manifest digest of every stored checkpoint (what ``gc`` must keep)."""
    return [row[0] for row in db.fetch("SELECT manifest FROM checkpoints")]


def manifests_by_run(db: Fetches) -> dict[int, list[str]]:
    """run key -> the manifest digests of its checkpoints."""
    out: dict[int, list[str]] = {}
    for run_key, manifest in db.fetch("SELECT run, manifest FROM checkpoints"):
        out.setdefault(run_key, []).append(manifest)
    return out


def run_manifests(db: Fetches) -> list[tuple[str, str]]:
    """``(run_id, manifest digest)`` of every stored checkpoint."""
    return [
        (r, m)
        for r, m in db.fetch(
            "SELECT r.run_id, c.manifest FROM checkpoints c JOIN runs r ON r.id = c.run"
        )
    ]


# -- the doctor ----------------------------------------------------------------------------------
def integrity_check(path: Path, limit: int = 20) -> list[str]:
    """SQLite's ``integrity_check`` of the file at ``path`` (read-only): ``["ok"]`` or up to
    ``limit`` problems. Raises ``sqlite3.DatabaseError`` when the file is no database."""
    conn = sqlite3.connect(f"{path.resolve().as_uri()}?mode=ro", uri=True, timeout=30)
    try:
        return [r[0] for r in conn.execute(f"PRAGMA integrity_check({int(limit)})")]
    finally:
        conn.close()


def schema_version(db: Fetches) -> int | None:
    """The schema version the store records, or None."""
    found = db.fetch("SELECT value FROM retrolog_meta WHERE key = 'schema_version'")
    return int(found[0][0]) if found else None


def run_versions(db: Fetches) -> list[tuple[str, str]]:
    """``(run_id, version)`` of every run that points to a code version."""
    return [
        (r, v) for r, v in db.fetch("SELECT run_id, version FROM runs WHERE version IS NOT NULL")
    ]


def digest_rows(db: Fetches) -> list[tuple[Any, ...]]:
    """``(run key, run_id, scope, rows, digest)`` of every value digest, by run and scope."""
    return [
        tuple(r)
        for r in db.fetch(
            "SELECT d.run, r.run_id, d.scope, d.rows, d.digest FROM digests d "
            "JOIN runs r ON r.id = d.run ORDER BY r.run_id, d.scope"
        )
    ]


def digest_scope_rows(db: Fetches, run_key: int, scope: str) -> list[Any]:
    """``(seq, ctx_id, name, vtype, value_num, value_text)`` of the rows one digest covers: the
    run's recorded rows (scope ``''``) or those of one replay (scope: the replay id)."""
    condition = "replay_id IS NULL" if scope == RECORDED else "replay_id = :s"
    return db.fetch(
        f"SELECT seq, ctx_id, name, vtype, value_num, value_text FROM logs "
        f"WHERE run = :r AND {condition}",
        {"r": run_key, "s": scope},
    )


def holdings(db: Fetches) -> tuple[int, int]:
    """(runs, logged values) the store holds."""
    runs = db.fetch("SELECT count(*) FROM runs")[0][0]
    logs = db.fetch("SELECT count(*) FROM logs")[0][0]
    return int(runs), int(logs)


def orphan_log_rows(db: Fetches) -> int:
    """How many logged values have no run row (after a recovery lost it)."""
    return int(db.fetch("SELECT count(*) FROM logs WHERE run NOT IN (SELECT id FROM runs)")[0][0])


__all__ = [
    "checkpoint_manifests",
    "delete_run_rows",
    "digest_rows",
    "digest_scope_rows",
    "holdings",
    "integrity_check",
    "manifests_by_run",
    "orphan_log_rows",
    "run_manifests",
    "run_versions",
    "schema_version",
]
