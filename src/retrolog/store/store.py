"""The metadata store: one object that writes run events and hands out read connections.

SQLite (WAL mode, ``BEGIN IMMEDIATE`` for writes so concurrent runs queue on the busy timeout
instead of failing with "database is locked") by default; any SQLAlchemy URL, e.g. PostgreSQL,
through ``RETROLOG_DB``.
"""

from __future__ import annotations

import json
import time
from collections.abc import Iterable, Sequence
from pathlib import Path
from typing import Any

from sqlalchemy import Connection, Engine, create_engine, event, insert, select, text, update
from sqlalchemy.dialects import postgresql, sqlite
from sqlalchemy.exc import OperationalError

from . import schema

Event = Sequence[Any]  # (seq, kind, *payload); see ingest()

_BUSY_TIMEOUT_MS = 60_000


class Store:
    """Write and read access to one retrolog database."""

    def __init__(self, url: str) -> None:
        self.url = url
        self.is_sqlite = url.startswith("sqlite")
        if self.is_sqlite:
            path = url.split("///", 1)[-1]
            if path and path != ":memory:":
                Path(path).parent.mkdir(parents=True, exist_ok=True)
            self.path: Path | None = Path(path)
        else:
            self.path = None
        self.writer = self._engine(immediate=True)
        self.reader = self._engine(immediate=False)
        self._ensure_schema()

    # -- engines ---------------------------------------------------------------------------
    def _engine(self, immediate: bool) -> Engine:
        if not self.is_sqlite:
            return create_engine(self.url, pool_pre_ping=True)
        engine = create_engine(self.url, connect_args={"timeout": _BUSY_TIMEOUT_MS / 1000})

        @event.listens_for(engine, "connect")
        def _on_connect(dbapi_conn: Any, _record: Any) -> None:
            dbapi_conn.isolation_level = None  # we issue BEGIN ourselves
            cur = dbapi_conn.cursor()
            cur.execute(f"PRAGMA busy_timeout={_BUSY_TIMEOUT_MS}")
            cur.execute("PRAGMA journal_mode=WAL")
            cur.execute("PRAGMA synchronous=NORMAL")
            cur.close()

        @event.listens_for(engine, "begin")
        def _on_begin(conn: Connection) -> None:
            conn.exec_driver_sql("BEGIN IMMEDIATE" if immediate else "BEGIN")

        return engine

    def _ensure_schema(self) -> None:
        for attempt in range(5):
            try:
                with self.writer.begin() as conn:
                    schema.metadata.create_all(conn, checkfirst=True)
                    for name, body in schema.VIEWS.items():
                        if self.is_sqlite:
                            conn.exec_driver_sql(f"CREATE VIEW IF NOT EXISTS {name} AS {body}")
                        else:
                            conn.exec_driver_sql(f"CREATE OR REPLACE VIEW {name} AS {body}")
                    found = conn.execute(
                        select(schema.meta.c.value).where(schema.meta.c.key == "schema_version")
                    ).scalar()
                    if found is None:
                        conn.execute(
                            insert(schema.meta).values(
                                key="schema_version", value=str(schema.SCHEMA_VERSION)
                            )
                        )
                    elif int(found) > schema.SCHEMA_VERSION:
                        raise RuntimeError(
                            f"{self.url} was written by a newer retrolog (schema {found}); upgrade retrolog"
                        )
                return
            except OperationalError as exc:  # two processes creating the schema at once
                if "already exists" not in str(exc) or attempt == 4:
                    raise
                time.sleep(0.05 * (attempt + 1))

    def dispose(self) -> None:
        self.writer.dispose()
        self.reader.dispose()

    # -- writes ----------------------------------------------------------------------------
    def _insert_ignore(self, table: Any) -> Any:
        if self.is_sqlite:
            return sqlite.insert(table).on_conflict_do_nothing()
        if self.writer.dialect.name == "postgresql":
            return postgresql.insert(table).on_conflict_do_nothing()
        return insert(table)

    def _bulk_insert(
        self,
        conn: Connection,
        table: str,
        columns: Sequence[str],
        rows: list[tuple[Any, ...]],
        ignore_conflicts: bool = False,
    ) -> None:
        """executemany straight on the driver: the big tables get up to millions of rows, and
        SQLAlchemy's per-row parameter processing costs several times the insert itself.
        ``table`` and ``columns`` are our own constants, never user input."""
        style = self.writer.dialect.paramstyle
        mark = "?" if style == "qmark" else "%s"
        sql = f"INSERT INTO {table} ({', '.join(columns)}) VALUES ({', '.join([mark] * len(columns))})"
        if ignore_conflicts:
            sql = (
                sql.replace("INSERT INTO", "INSERT OR IGNORE INTO")
                if self.is_sqlite
                else sql + " ON CONFLICT DO NOTHING"
            )
        conn.exec_driver_sql(sql, rows)

    def ingest(self, run_id: str, events: Iterable[Event]) -> int:
        """Apply journal events of one run; events at or below the run's high-water mark are skipped.

        Idempotent, so a crashed run's journal can be replayed over rows already stored. Events:
        ``(seq, "run", facts)``, ``(seq, "arg", name, vtype, num, text)``,
        ``(seq, "ctx", ctx_id, parent_id, depth, name, iteration, value_json, start_time)``,
        ``(seq, "log", ctx_id, name, vtype, num, text)``,
        ``(seq, "timing", kind, loop, ctx_id, iteration, seconds, count)``,
        ``(seq, "ckpt", ctx_id, loop, main_iteration, manifest, bytes_total, bytes_new, capture_s, write_s)``,
        ``(seq, "end", status, end_time, error)``. Returns the number of events applied.
        """
        runs_t = schema.runs
        with self.writer.begin() as conn:
            row = conn.execute(
                select(runs_t.c.id, runs_t.c.last_seq).where(runs_t.c.run_id == run_id)
            ).first()
            if row is None:
                key = conn.execute(
                    insert(runs_t).values(run_id=run_id, status="running", last_seq=0)
                ).inserted_primary_key
                assert key is not None
                run_key, last_seq = int(key[0]), 0
            else:
                run_key, last_seq = int(row[0]), int(row[1])
            fresh = [ev for ev in events if ev[0] > last_seq]
            if not fresh:
                return 0
            facts: dict[str, Any] = {}
            arg_rows: list[dict[str, Any]] = []
            timing_rows: list[dict[str, Any]] = []
            ckpt_rows: list[dict[str, Any]] = []
            ctx_rows: list[tuple[Any, ...]] = []
            log_rows: list[tuple[Any, ...]] = []
            for ev in fresh:
                kind = ev[1]
                if kind == "log":
                    log_rows.append((run_key, ev[0], ev[2], ev[3], ev[4], ev[5], ev[6]))
                elif kind == "ctx":
                    ctx_rows.append((run_key, *ev[2:9]))
                elif kind == "arg":
                    arg_rows.append(
                        {
                            "run": run_key,
                            "name": ev[2],
                            "vtype": ev[3],
                            "value_num": ev[4],
                            "value_text": ev[5],
                        }
                    )
                elif kind == "timing":
                    timing_rows.append(
                        {
                            "run": run_key,
                            "kind": ev[2],
                            "loop": ev[3],
                            "ctx_id": ev[4],
                            "iteration": ev[5],
                            "seconds": ev[6],
                            "count": ev[7],
                        }
                    )
                elif kind == "ckpt":
                    ckpt_rows.append(
                        {
                            "run": run_key,
                            "ctx_id": ev[2],
                            "loop": ev[3],
                            "iteration": ev[4],
                            "manifest": ev[5],
                            "bytes_total": ev[6],
                            "bytes_new": ev[7],
                            "capture_seconds": ev[8],
                            "write_seconds": ev[9],
                        }
                    )
                elif kind == "run":
                    facts.update(_run_facts(ev[2]))
                elif kind == "end":
                    facts.update(status=ev[2], end_time=ev[3], error=ev[4])
            if arg_rows:
                conn.execute(self._insert_ignore(schema.args), arg_rows)
            if ctx_rows:
                self._bulk_insert(conn, "loops", _LOOP_COLUMNS, ctx_rows, ignore_conflicts=True)
            if log_rows:
                self._bulk_insert(conn, "logs", _LOG_COLUMNS, log_rows)
            if timing_rows:
                conn.execute(insert(schema.timings), timing_rows)
            if ckpt_rows:
                conn.execute(self._insert_ignore(schema.checkpoints), ckpt_rows)
            facts["last_seq"] = max(ev[0] for ev in fresh)
            conn.execute(update(runs_t).where(runs_t.c.id == run_key).values(**facts))
        return len(fresh)

    def set_status(
        self, run_id: str, status: str, end_time: float | None = None, error: str | None = None
    ) -> None:
        """Close a run whose process is gone (crash recovery)."""
        values: dict[str, Any] = {"status": status}
        if end_time is not None:
            values["end_time"] = end_time
        if error is not None:
            values["error"] = error
        with self.writer.begin() as conn:
            conn.execute(update(schema.runs).where(schema.runs.c.run_id == run_id).values(**values))

    # -- reads -----------------------------------------------------------------------------
    def fetch(self, sql: str, params: dict[str, Any] | None = None) -> list[Any]:
        """Run a read query of our own (values bound, never formatted in) and return its rows."""
        with self.reader.connect() as conn:
            return list(conn.execute(text(sql), params or {}).all())

    def running_runs(self) -> list[Any]:
        return self.fetch("SELECT run_id, host, pid FROM runs WHERE status = 'running'")


_LOG_COLUMNS = ("run", "seq", "ctx_id", "name", "vtype", "value_num", "value_text")
_LOOP_COLUMNS = ("run", "ctx_id", "parent_id", "depth", "name", "iteration", "value", "start_time")

_RUN_FACT_KEYS = {
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
}


def _run_facts(facts: dict[str, Any]) -> dict[str, Any]:
    out: dict[str, Any] = {}
    for key, value in facts.items():
        if key not in _RUN_FACT_KEYS:
            continue
        if key in ("argv", "packages") and value is not None and not isinstance(value, str):
            value = json.dumps(value)
        if key == "git_dirty" and value is not None:
            value = int(bool(value))
        out[key] = value
    return out
