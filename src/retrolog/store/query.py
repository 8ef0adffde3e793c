"""What the read side (``relational``: dataframe, runs, show, checkpoints, labels) asks of the
store, as named reads with bound values. Stdlib only; each returns plain rows.

The reads take any store with ``fetch`` (``Store`` or ``LiteStore``); those of tables a store may
predate (run names, tags, notes, data versions: schema 3 and later) raise ``StoreError`` there,
which callers treat as "none".
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from .binds import Fetches, fetch_in

RUN_FACTS = (
    "id, run_id, start_time, end_time, status, version, script, git_head, git_branch, "
    "git_dirty, host, argv, error"
)


# --- runs -----------------------------------------------------------------------------------


def run_facts(db: Fetches) -> list[Any]:
    """The runs table's facts ``dataframe``/``runs()`` show (``RUN_FACTS``), by run id."""
    return db.fetch(f"SELECT {RUN_FACTS} FROM runs ORDER BY run_id")


def run_by_id(db: Fetches, run_id: str) -> list[Any]:
    """The whole runs row of ``run_id`` (a list of at most one)."""
    return db.fetch("SELECT * FROM runs WHERE run_id = :id", {"id": run_id})


def runs_by_prefix(db: Fetches, prefix: str) -> list[Any]:
    """Whole runs rows whose id starts with ``prefix``, by run id."""
    return db.fetch(
        "SELECT * FROM runs WHERE substr(run_id, 1, :n) = :prefix ORDER BY run_id",
        {"n": len(prefix), "prefix": prefix},
    )


def runs_named(db: Fetches, name: str) -> list[Any]:
    """Whole runs rows of the run called ``name`` (``retrolog.name``)."""
    return db.fetch(
        "SELECT * FROM runs WHERE id IN (SELECT run FROM run_names WHERE name = :n)", {"n": name}
    )


def ordered_run_ids(db: Fetches) -> list[str]:
    """Every run id, oldest first."""
    return [row[0] for row in db.fetch("SELECT run_id FROM runs ORDER BY run_id")]


def known_names(db: Fetches) -> list[str]:
    """Every name a run logged or took as an arg, sorted."""
    rows = db.fetch("SELECT DISTINCT name FROM logs UNION SELECT DISTINCT name FROM args")
    return sorted(row[0] for row in rows)


def is_logged(db: Fetches, name: str) -> bool:
    """Whether any run logged ``name``."""
    return bool(db.fetch("SELECT 1 FROM logs WHERE name = :n LIMIT 1", {"n": name}))


# --- args and values ------------------------------------------------------------------------


def all_args(db: Fetches) -> list[Any]:
    """``(run, name, vtype, value_num, value_text)`` of every arg of every run."""
    return db.fetch("SELECT run, name, vtype, value_num, value_text FROM args")


def args_by_name(db: Fetches, run_key: int) -> list[Any]:
    """``(name, vtype, value_num, value_text)`` of one run's args, by name."""
    return db.fetch(
        "SELECT name, vtype, value_num, value_text FROM args WHERE run = :r ORDER BY name",
        {"r": run_key},
    )


def run_values(db: Fetches, run_key: int) -> list[Any]:
    """``(name, vtype, value_num, value_text, replayed)`` of every value one run logged, in
    logging order."""
    return db.fetch(
        "SELECT name, vtype, value_num, value_text, replay_id IS NOT NULL FROM logs "
        "WHERE run = :r ORDER BY seq",
        {"r": run_key},
    )


def top_level_values(db: Fetches) -> list[Any]:
    """``(run, name, vtype, value_num, value_text, seq)`` of every value logged outside every
    loop, in logging order."""
    return db.fetch(
        "SELECT run, name, vtype, value_num, value_text, seq FROM logs WHERE ctx_id = 0 "
        "ORDER BY seq"
    )


LOG_ROW_COLUMNS = [
    "run",
    "ctx_id",
    "name",
    "vtype",
    "value_num",
    "value_text",
    "seq",
    "recorded",
    "parent_id",
    "loop",
    "iteration",
]


def log_rows(db: Any, names: Sequence[str]) -> list[Any]:
    """Every value of ``names`` with its loop context (``LOG_ROW_COLUMNS``). On SQLite through
    the raw driver cursor: this returns up to millions of rows."""
    sql = (
        "SELECT l.run, l.ctx_id, l.name, l.vtype, l.value_num, l.value_text, l.seq, "
        "l.replay_id IS NULL AS recorded, c.parent_id, c.name AS loop, c.iteration "
        "FROM logs l LEFT JOIN loops c ON c.run = l.run AND c.ctx_id = l.ctx_id "
        "WHERE l.name IN ({in})"
    )
    if getattr(db, "is_sqlite", False) and hasattr(db, "reader"):
        raw = db.reader.raw_connection()
        try:
            cur = raw.cursor()
            out: list[Any] = []
            for start in range(0, len(names), 500):
                part = list(names[start : start + 500])
                cur.execute(sql.replace("{in}", ", ".join("?" * len(part))), part)
                out.extend(cur.fetchall())
            return out
        finally:
            raw.close()
    return fetch_in(db, sql, names)


def loop_parents(db: Fetches, run_key: int, ctx_ids: Sequence[int]) -> list[Any]:
    """``(ctx_id, parent_id, name, iteration)`` of the given loop contexts of one run."""
    return fetch_in(
        db,
        "SELECT ctx_id, parent_id, name, iteration FROM loops WHERE run = :run AND ctx_id IN ({in})",
        ctx_ids,
        {"run": run_key},
    )


# --- checkpoints and loops of one run (retrolog.checkpoints) --------------------------------


def checkpoint_rows(db: Fetches, run_key: int) -> list[Any]:
    """``(loop, iteration, manifest, bytes_total, last nested ctx)`` of one run's checkpoints;
    the last column orders the checkpoints of one iteration as their loops ran."""
    return db.fetch(
        "SELECT c.loop, c.iteration, c.manifest, c.bytes_total, "
        "(SELECT max(l.ctx_id) FROM loops l WHERE l.run = c.run AND l.parent_id = c.ctx_id "
        "AND l.name = c.loop) FROM checkpoints c WHERE c.run = :r",
        {"r": run_key},
    )


def first_main_loop(db: Fetches, run_key: int) -> str | None:
    """The name of the first loop a run ran at depth 1."""
    rows = db.fetch(
        "SELECT name FROM loops WHERE run = :r AND parent_id = 0 ORDER BY ctx_id LIMIT 1",
        {"r": run_key},
    )
    return str(rows[0][0]) if rows else None


def last_iteration(db: Fetches, run_key: int, loop: str | None) -> int | None:
    """The last iteration index of the depth-1 loop ``loop`` in one run."""
    rows = db.fetch(
        "SELECT max(iteration) FROM loops WHERE run = :r AND parent_id = 0 AND name = :n",
        {"r": run_key, "n": loop},
    )
    return None if not rows or rows[0][0] is None else int(rows[0][0])


# --- labels, environments, data versions ----------------------------------------------------


def all_run_names(db: Fetches) -> list[Any]:
    """``(run, name)`` of every named run."""
    return db.fetch("SELECT run, name FROM run_names")


def all_notes(db: Fetches) -> list[Any]:
    """``(run, created, text)`` of every note, by run then time."""
    return db.fetch("SELECT run, created, text FROM run_notes ORDER BY run, created")


def all_tags(db: Fetches) -> list[Any]:
    """``(run, key, value)`` of every tag, by key."""
    return db.fetch("SELECT run, key, value FROM run_tags ORDER BY key")


def run_name_rows(db: Fetches, run_key: int) -> list[Any]:
    """``(name,)`` of one run (at most one row)."""
    return db.fetch("SELECT name FROM run_names WHERE run = :r", {"r": run_key})


def run_tag_rows(db: Fetches, run_key: int) -> list[Any]:
    """``(key, value)`` of one run's tags, by key."""
    return db.fetch("SELECT key, value FROM run_tags WHERE run = :r ORDER BY key", {"r": run_key})


def run_note_rows(db: Fetches, run_key: int) -> list[Any]:
    """``(created, text)`` of one run's notes, oldest first."""
    return db.fetch(
        "SELECT created, text FROM run_notes WHERE run = :r ORDER BY created", {"r": run_key}
    )


def environment_row(db: Fetches, run_key: int) -> list[Any]:
    """One run's recorded environment with its packages (a list of at most one row)."""
    return db.fetch(
        "SELECT e.env_hash, e.python, e.platform, e.host, e.executable, e.accelerator, "
        "e.stdout, e.stderr, p.packages FROM run_environment e "
        "LEFT JOIN environments p ON p.hash = e.env_hash WHERE e.run = :r",
        {"r": run_key},
    )


def data_version_digests(db: Fetches) -> list[Any]:
    """``(run, name, kind, digest)`` of every recorded data version."""
    return db.fetch("SELECT run, name, kind, digest FROM data_versions")


def run_data_versions(db: Fetches, run_key: int) -> list[Any]:
    """One run's data versions, all recorded facts, by name."""
    return db.fetch(
        "SELECT name, path, kind, digest, algo, files, bytes, dvc_md5, manifest, auto "
        "FROM data_versions WHERE run = :r ORDER BY name",
        {"r": run_key},
    )
