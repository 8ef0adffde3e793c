"""What ``retrolog export`` reads and ``retrolog import`` writes beside the ingest of events.

Export reads whole rows of the tables keyed by run (``SELECT *``: an export carries every column
this schema has) in chunks of bound run keys; import stores what the journal event format
cannot carry (values a replay produced, the replays they point to, rows of tables keyed by run)
and skips rows whose unique key the store has already. Table and column names come from this
retrolog's schema (``schema_tables``), never from the files read; values are always bound.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

from .binds import Fetches, fetch_in
from .digest import add_replay_rows
from .ingest import SCHEMA_VERSION
from .lite import Database, Transaction, insert_rows

Row = dict[str, Any]


def schema_tables() -> dict[str, tuple[str, ...]]:
    """The tables this retrolog's schema defines, with their columns, in schema order (only
    those the store has: the schema is created and migrated when the store opens)."""
    from . import schema

    return {name: tuple(t.columns.keys()) for name, t in schema.metadata.tables.items()}


def column_kinds() -> dict[str, dict[str, str]]:
    """table -> column -> ``"int"``, ``"float"`` or ``"text"``: the type of each schema column
    (what an export file declares)."""
    from sqlalchemy import Float, Integer

    from . import schema

    def kind(column: Any) -> str:
        if isinstance(column.type, Integer):
            return "int"
        if isinstance(column.type, Float):
            return "float"
        return "text"

    return {
        name: {c.name: kind(c) for c in table.columns}
        for name, table in schema.metadata.tables.items()
    }


def _table(name: str) -> str:
    """``name`` when the schema has that table (names are formatted into SQL: only ours)."""
    if name not in schema_tables():
        raise ValueError(f"no table {name!r} in retrolog's schema")
    return name


# -- export ------------------------------------------------------------------------------------
def run_rows(db: Fetches, keys: Sequence[int]) -> list[Row]:
    """Whole ``runs`` rows of the given run keys."""
    return [dict(r._mapping) for r in fetch_in(db, "SELECT * FROM runs WHERE id IN ({in})", keys)]


def rows_of_runs(db: Fetches, table: str, keys: Sequence[int]) -> list[Row]:
    """Whole rows of ``table`` (a schema table keyed by ``run``) for the given run keys."""
    sql = f"SELECT * FROM {_table(table)} WHERE run IN ({{in}})"
    return [dict(r._mapping) for r in fetch_in(db, sql, keys)]


def table_rows(db: Fetches, table: str) -> list[Row]:
    """Every row of ``table`` (a schema table not keyed by run)."""
    return [dict(r._mapping) for r in db.fetch(f"SELECT * FROM {_table(table)}")]


def log_rows(db: Fetches, keys: Sequence[int]) -> list[Any]:
    """Rows ``(run, seq, name, vtype, value_num, value_text, replay_id, ctx_id)`` of ``logs``
    (with attributes of those names) for the given run keys."""
    return fetch_in(
        db,
        "SELECT run, seq, name, vtype, value_num, value_text, replay_id, ctx_id "
        "FROM logs WHERE run IN ({in})",
        keys,
    )


def replay_rows(db: Fetches, replay_ids: Sequence[str], columns: Sequence[str]) -> list[Row]:
    """``columns`` of the ``replays`` rows of ``replay_ids``."""
    known = schema_tables()["replays"]
    if any(c not in known for c in columns):
        raise ValueError(f"not columns of replays: {[c for c in columns if c not in known]}")
    sql = f"SELECT {', '.join(columns)} FROM replays WHERE replay_id IN ({{in}})"
    return [dict(r._mapping) for r in fetch_in(db, sql, replay_ids)]


def run_row(db: Fetches, key: int) -> Any:
    """The whole ``runs`` row of one run key (attributes per column)."""
    return db.fetch("SELECT * FROM runs WHERE id = :k", {"k": key})[0]


def run_args(db: Fetches, key: int) -> list[Any]:
    """``(name, vtype, value_num, value_text)`` of one run's args."""
    return db.fetch(
        "SELECT name, vtype, value_num, value_text FROM args WHERE run = :k", {"k": key}
    )


def timed_log_rows(db: Fetches, key: int) -> list[Any]:
    """One run's ``logs`` rows ``(seq, name, vtype, value_num, value_text, ctx_id, replay_id,
    start_time)``, the last being the start of the row's loop iteration (None outside loops)."""
    return db.fetch(
        "SELECT l.seq, l.name, l.vtype, l.value_num, l.value_text, l.ctx_id, l.replay_id, "
        "c.start_time FROM logs l LEFT JOIN loops c ON c.run = l.run AND c.ctx_id = l.ctx_id "
        "WHERE l.run = :k",
        {"k": key},
    )


# -- import ------------------------------------------------------------------------------------
def store_run_extras(
    db: Database,
    key: int,
    run_columns: Mapping[str, Any],
    replayed: Mapping[str, list[Row]],
    extra: Mapping[str, list[Row]],
    tags: Mapping[str, str],
) -> None:
    """In one transaction, what an imported run has beside its events: ``runs`` columns no event
    carries, log rows of each replay (``replay_id`` -> rows, with the replay's digest), rows of
    other tables keyed by run (``extra``: table -> rows without ``run``; unknown tables and
    columns are left out) and tags. Rows whose unique key is present are kept as they are."""
    tables = schema_tables()
    sqlite = bool(getattr(db, "is_sqlite", False))
    with db.transaction() as tx:
        columns = {c: v for c, v in run_columns.items() if c in tables.get("runs", ())}
        if columns:
            sets = ", ".join(f"{c} = :{c}" for c in columns)
            tx.execute(f"UPDATE runs SET {sets} WHERE id = :_key", {**columns, "_key": key})
        for replay_id, rows in replayed.items():
            insert_rows(tx, "logs", rows)
            add_replay_rows(tx, key, replay_id, rows)
        for table, rows in extra.items():
            known = tables.get(table)
            if not known or "run" not in known or not rows:
                continue
            keep = [{"run": key, **{c: r[c] for c in r if c in known}} for r in rows]
            _insert_ignoring(tx, table, keep, sqlite)
        if tags and "run_tags" in tables:
            tag_rows = [{"run": key, "key": k[:200], "value": v} for k, v in tags.items()]
            _insert_ignoring(tx, "run_tags", tag_rows, sqlite)


def insert_ignoring_present(db: Database, table: str, rows: list[Row]) -> None:
    """Rows of a table not keyed by run (``replays``, ``environments``): a row whose key the store
    has already is kept as it is."""
    if rows:
        with db.transaction() as tx:
            _insert_ignoring(tx, table, rows, bool(getattr(db, "is_sqlite", False)))


def _insert_ignoring(tx: Transaction, table: str, rows: list[Row], sqlite: bool) -> None:
    """INSERT that keeps a row already present under a unique key (a run name another run has, a
    tag or an environment stored before). Table and column names are the schema's; values are
    bound."""
    columns = list(rows[0])
    sql = (
        f"INSERT INTO {_table(table)} ({', '.join(columns)}) "
        f"VALUES ({', '.join(':' + c for c in columns)})"
    )
    tx.execute(
        sql.replace("INSERT", "INSERT OR IGNORE", 1) if sqlite else sql + " ON CONFLICT DO NOTHING",
        rows,
    )


__all__ = [
    "SCHEMA_VERSION",
    "column_kinds",
    "insert_ignoring_present",
    "log_rows",
    "replay_rows",
    "rows_of_runs",
    "run_args",
    "run_row",
    "run_rows",
    "schema_tables",
    "store_run_extras",
    "table_rows",
    "timed_log_rows",
]
