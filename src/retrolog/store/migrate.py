"""Bringing a store written by an earlier retrolog up to ``SCHEMA_VERSION``.

New tables are created by ``Store._ensure_schema`` (``create_all``); what they must hold for the
data already there is filled in here, in the same write transaction that bumps the version, so a
store is never seen half-migrated. Version history:

- 1: the first schema.
- 2: ``digests`` (store/digest.py). Existing runs and replays get their digest computed from the
  rows stored at migration time: it proves the values did not change *since*.
- 3: run names, tags, notes and environments (store/labels.py): new tables only, nothing to
  fill in for existing runs (``_labels_tables``); ``data_versions`` (record/data.py), likewise
  (``_data_versions_table``): runs recorded before have no data versions.
"""

from __future__ import annotations

from typing import Any

from . import digest


def migrate(cursor: Any, mark: str, found: int, target: int) -> list[str]:
    """Migrate from schema ``found`` to ``target`` through a DB-API cursor inside the caller's
    write transaction; returns what was done, in words."""
    done: list[str] = []
    if found < 2 <= target:
        done.append(_seal_existing(cursor, mark))
    if found < 3 <= target:
        done.append(_labels_tables(cursor))
        done.append(_data_versions_table(cursor))
    cursor.execute(
        f"UPDATE retrolog_meta SET value = {mark} WHERE key = 'schema_version'", (str(target),)
    )
    return done


def _seal_existing(cursor: Any, mark: str) -> str:
    cursor.execute(f"DELETE FROM {digest.TABLE}")
    cursor.execute("SELECT id, status, end_time FROM runs")
    runs = cursor.fetchall()
    cursor.execute("SELECT replay_id, finished FROM replays")
    finished = {r[0]: r[1] for r in cursor.fetchall()}
    for run_key, status, end_time in runs:
        cursor.execute(
            "SELECT COALESCE(replay_id, ''), seq, ctx_id, name, vtype, value_num, value_text "
            f"FROM logs WHERE run = {mark}",
            (run_key,),
        )
        scopes: dict[str, list[tuple[Any, ...]]] = {digest.RECORDED: []}
        for scope, *row in cursor.fetchall():
            scopes.setdefault(scope, []).append(tuple(row))
        for scope, rows in scopes.items():
            if scope == digest.RECORDED:
                sealed = end_time if status != "running" else None
            else:
                sealed = finished.get(scope)
            digest.add_rows(cursor, mark, int(run_key), scope, rows, sealed=sealed)
    return f"computed the value digests of {len(runs)} existing run(s)"


# Idempotent: ``create_all`` made these tables before ``migrate`` runs; a store whose tables were
# made some other way (a copied database, an interrupted upgrade) gets them here.
_LABEL_TABLES = (
    "CREATE TABLE IF NOT EXISTS run_names (run INTEGER PRIMARY KEY, name VARCHAR(200) NOT NULL "
    "UNIQUE)",
    "CREATE TABLE IF NOT EXISTS run_tags (run INTEGER NOT NULL, key VARCHAR(200) NOT NULL, "
    "value TEXT, UNIQUE (run, key))",
    "CREATE TABLE IF NOT EXISTS run_notes (run INTEGER NOT NULL, created FLOAT NOT NULL, "
    "text TEXT NOT NULL)",
    "CREATE TABLE IF NOT EXISTS environments (hash VARCHAR(64) PRIMARY KEY, packages TEXT NOT NULL)",
    "CREATE TABLE IF NOT EXISTS run_environment (run INTEGER PRIMARY KEY, env_hash VARCHAR(64), "
    "python TEXT, platform TEXT, host TEXT, executable TEXT, accelerator TEXT, stdout TEXT, "
    "stderr TEXT)",
)


def _labels_tables(cursor: Any) -> str:
    for statement in _LABEL_TABLES:
        cursor.execute(statement)
    return "added the tables of run names, tags, notes and environments"


def _data_versions_table(cursor: Any) -> str:
    """Idempotent, like ``_labels_tables``: the table ``schema.data_versions`` describes."""
    cursor.execute(
        "CREATE TABLE IF NOT EXISTS data_versions (run INTEGER NOT NULL, name TEXT NOT NULL, "
        "path TEXT NOT NULL, kind VARCHAR(8) NOT NULL, digest VARCHAR(64) NOT NULL, "
        "algo VARCHAR(16) NOT NULL, files BIGINT, bytes BIGINT, dvc_md5 VARCHAR(64), "
        "manifest TEXT, auto INTEGER, recorded FLOAT, UNIQUE (run, name))"
    )
    return "added the data_versions table"
