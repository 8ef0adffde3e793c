"""The UI's read queries: run listing with last metric values, run details, versions, replays.

All SQL here is read-only and binds every value (see ``db.Reader``). Queries the relational layer
already answers (``runs()``, ``describe_run()``, ``filter_frame()``) are reused as they are.
"""

from __future__ import annotations

import contextlib
from typing import Any

import pandas as pd

from ..record.values import from_cell
from ..relational import QueryError, describe_run, filter_frame, runs
from .db import Reader, bind_list
from .replays import propagations

MAX_METRIC_COLUMNS = 40
FACT_COLUMNS = [
    "run_id",
    "start_time",
    "end_time",
    "status",
    "version",
    "script",
    "git_head",
    "git_branch",
    "git_dirty",
    "host",
    "argv",
    "error",
    "duration",
    "run_name",  # names, tags (tag_<key>) and notes: shown with the run id (relational/labels.py)
    "notes",
]

_NAMES_SQLITE = """
WITH RECURSIVE n(name) AS (
  SELECT min(name) FROM logs
  UNION ALL SELECT (SELECT min(name) FROM logs WHERE name > n.name) FROM n WHERE n.name IS NOT NULL
)
SELECT name FROM n WHERE name IS NOT NULL
"""  # a skip-scan over ix_logs_name_run: one index probe per distinct name


def metric_names(reader: Reader) -> list[str]:
    """Every name logged in the project, sorted."""
    sql = _NAMES_SQLITE if reader.is_sqlite else "SELECT DISTINCT name FROM logs ORDER BY name"
    return reader.cached("names", lambda: [r[0] for r in reader.rows(sql)])


def numeric_names(reader: Reader) -> list[str]:
    """Logged names that have at least one numeric value (the ones a chart can draw)."""
    return reader.cached("numeric_names", lambda: _numeric_names(reader))


def _numeric_names(reader: Reader) -> list[str]:
    out = []
    for name in metric_names(reader):
        found = reader.rows(
            "SELECT 1 FROM logs WHERE name = :n AND value_num IS NOT NULL LIMIT 1", {"n": name}
        )
        if found:
            out.append(name)
    return out


def last_values(reader: Reader, names: list[str]) -> pd.DataFrame:
    """The last value of each of ``names`` in each run: recorded values first, else hindsight.

    On SQLite the last recorded row of (name, run) is the one with the highest rowid (rows are
    inserted in ``seq`` order), found with one probe of ``ix_logs_name_run`` per pair; pairs whose
    newest row came from a replay are resolved exactly with a second, ordered query.
    """
    columns = ["run_id", "name", "vtype", "value_num", "value_text", "replay_id"]
    if not names:
        return pd.DataFrame(columns=[*columns, "value"])
    values = ", ".join(f"(:n{i})" for i in range(len(names)))
    params = {f"n{i}": name for i, name in enumerate(names)}
    exact_order = (
        "ORDER BY (replay_id IS NULL) DESC, "
        "CASE WHEN replay_id IS NULL THEN seq ELSE ctx_id END DESC, seq DESC"
    )
    if reader.is_sqlite:
        sql = f"""
            WITH n(name) AS (VALUES {values}),
            p AS (SELECT r.id AS run, r.run_id AS run_id, n.name AS name,
                    (SELECT rowid FROM logs WHERE name = n.name AND run = r.id
                     ORDER BY rowid DESC LIMIT 1) AS rid
                  FROM runs r CROSS JOIN n)
            SELECT p.run_id, p.name, l.vtype, l.value_num, l.value_text, l.replay_id, p.run
            FROM p JOIN logs l ON l.rowid = p.rid
        """
        rows = reader.rows(sql, params)
        fixed = []
        for row in rows:
            if row[5] is None:
                fixed.append(row[:6])
                continue
            exact = reader.rows(
                "SELECT vtype, value_num, value_text, replay_id FROM logs "
                f"WHERE name = :n AND run = :r {exact_order} LIMIT 1",
                {"n": row[1], "r": row[6]},
            )
            fixed.append((row[0], row[1], *exact[0]))
        rows = fixed
    else:
        sql = f"""
            SELECT r.run_id, x.name, x.vtype, x.value_num, x.value_text, x.replay_id FROM (
              SELECT run, name, vtype, value_num, value_text, replay_id,
                     ROW_NUMBER() OVER (PARTITION BY run, name {exact_order}) AS rn
              FROM logs WHERE name IN (SELECT name FROM (VALUES {values}) AS n(name))
            ) x JOIN runs r ON r.id = x.run WHERE x.rn = 1
        """
        rows = reader.rows(sql, params)
    frame = pd.DataFrame(rows, columns=columns)
    frame["value"] = [
        from_cell(t, n, x)
        for t, n, x in zip(frame["vtype"], frame["value_num"], frame["value_text"])
    ]
    return frame


def runs_table(reader: Reader, where: str | None = None) -> dict[str, Any]:
    """The runs page: one row per run with facts, args and the last value of each metric.

    ``where`` is the CLI's WHERE syntax over the table's columns (applied with ``filter_frame``);
    a metric whose name collides with a fact or arg column is called ``last:<name>``.
    """
    reader.recover()
    base = reader.cached("runs_table", lambda: _runs_table(reader))
    frame = base["frame"]
    total = len(frame)
    error = None
    if where and where.strip():
        try:
            frame = filter_frame(frame, where)
        except QueryError as exc:
            error = str(exc).replace("bad --where", "bad filter", 1)
            frame = frame.iloc[0:0]
    frame = frame.reset_index(drop=True)
    shown = [c for c in [*base["args"], *base["metrics"]] if frame[c].notna().any()]
    return {
        **base,
        "frame": frame,
        "shown_args": [c for c in base["args"] if c in shown],  # columns with a value in view
        "shown_metrics": [c for c in base["metrics"] if c in shown],
        "total": total,
        "error": error,
    }


def _runs_table(reader: Reader) -> dict[str, Any]:
    frame = runs(reader.project)
    arg_names = [c for c in frame.columns if c not in FACT_COLUMNS and not c.startswith("tag_")]
    all_names = metric_names(reader)
    names = all_names[:MAX_METRIC_COLUMNS]
    last = last_values(reader, names)
    metric_columns: list[str] = []
    hindsight: dict[tuple[str, str], str] = {}
    for name in names:
        column = f"last:{name}" if name in frame.columns else name
        part = last.loc[last["name"] == name]
        by_run = dict(zip(part["run_id"], part["value"]))
        frame[column] = pd.Series(
            [by_run.get(r) for r in frame["run_id"]], index=frame.index, dtype=object
        )
        for run_id, replay_id in zip(part["run_id"], part["replay_id"]):
            if isinstance(replay_id, str):
                hindsight[(run_id, column)] = replay_id
        metric_columns.append(column)
    for column in metric_columns:  # plain numbers become numeric so the filter compares them
        with contextlib.suppress(ValueError, TypeError):
            frame[column] = pd.to_numeric(frame[column])
    return {
        "frame": frame,
        "args": arg_names,
        "metrics": metric_columns,
        "numeric": {
            c
            for c in [*arg_names, *metric_columns]
            if pd.api.types.is_numeric_dtype(frame[c]) and not pd.api.types.is_bool_dtype(frame[c])
        },
        "hidden_metrics": len(all_names) - len(names),
        "hindsight": hindsight,
    }


def sort_runs(frame: pd.DataFrame, column: str, descending: bool) -> pd.DataFrame:
    """``frame`` ordered by ``column`` (missing values last); an unknown column leaves it as is."""
    if column not in frame.columns:
        return frame
    values = frame[column]
    if values.dtype == object:  # mixed cells: numbers before text, each in its own order
        is_num = values.map(lambda v: isinstance(v, (int, float)) and not isinstance(v, bool))
        key = pd.DataFrame(
            {
                "missing": values.isna(),
                "kind": ~is_num,
                "num": pd.to_numeric(values.where(is_num), errors="coerce"),
                "text": values.where(~is_num).astype(str),
            }
        )
        order = key.sort_values(
            ["missing", "kind", "num", "text"],
            ascending=[True, True, not descending, not descending],
            kind="stable",
        ).index
        return frame.loc[order]
    return frame.sort_values(column, ascending=not descending, na_position="last", kind="stable")


def run_keys(reader: Reader, run_ids: list[str]) -> dict[str, int]:
    """run_id -> internal key for the given public ids (unknown ids are left out)."""
    if not run_ids:
        return {}
    rows = reader.rows_in("SELECT run_id, id FROM runs WHERE run_id IN ({in})", run_ids)
    return {r[0]: int(r[1]) for r in rows}


def run_detail(reader: Reader, run_id: str) -> dict[str, Any]:
    """Facts, args and metric summary (``describe_run``), checkpoints and timing summary."""
    report = describe_run(run_id, project=reader.project, with_diff=False)
    key = run_keys(reader, [report["run_id"]])[report["run_id"]]
    ckpt_columns = [
        "loop",
        "iteration",
        "ctx_id",
        "bytes_total",
        "bytes_new",
        "capture_seconds",
        "write_seconds",
        "manifest",
    ]
    report["checkpoints"] = [
        dict(zip(ckpt_columns, row))
        for row in reader.rows(
            f"SELECT {', '.join(ckpt_columns)} FROM checkpoints WHERE run = :r ORDER BY ctx_id, loop",
            {"r": key},
        )
    ]
    report["timings"] = [
        {"kind": k, "loop": loop, "count": int(n), "seconds": s}
        for k, loop, n, s in reader.rows(
            "SELECT kind, loop, count(*), sum(seconds) FROM timings WHERE run = :r "
            "GROUP BY kind, loop ORDER BY CASE kind WHEN 'prefix' THEN 0 WHEN 'iteration' THEN 1 "
            "WHEN 'nested' THEN 2 ELSE 3 END, loop",
            {"r": key},
        )
    ]
    return report


def versions_list(reader: Reader) -> list[dict[str, Any]]:
    """Distinct code versions in order of their first run, with their runs and propagations."""
    rows = reader.rows(
        "SELECT run_id, version, status, start_time, git_head, git_branch, git_dirty, script "
        "FROM runs ORDER BY start_time, run_id"
    )
    by_version: dict[str | None, dict[str, Any]] = {}
    for run_id, version, status, start, head, branch, dirty, script in rows:
        entry = by_version.setdefault(
            version,
            {
                "version": version,
                "first_start": start,
                "last_start": start,
                "runs": [],
                "heads": set(),
                "branches": set(),
                "dirty": False,
                "scripts": set(),
            },
        )
        entry["runs"].append({"run_id": run_id, "status": status, "start_time": start})
        entry["last_start"] = start
        if head:
            entry["heads"].add(head)
        if branch:
            entry["branches"].add(branch)
        if script:
            entry["scripts"].add(script)
        entry["dirty"] = entry["dirty"] or bool(dirty)
    props = propagations(reader)
    out = []
    for entry in by_version.values():
        for key in ("heads", "branches", "scripts"):
            entry[key] = sorted(entry[key])
        entry["propagations"] = props.get(entry["version"], [])
        out.append(entry)
    return out


def known_versions(reader: Reader) -> set[str]:
    """Every version a run recorded (what a diff may name besides HEAD)."""
    return {r[0] for r in reader.rows("SELECT DISTINCT version FROM runs") if r[0]}


__all__ = [
    "bind_list",
    "known_versions",
    "last_values",
    "metric_names",
    "numeric_names",
    "run_detail",
    "run_keys",
    "runs_table",
    "versions_list",
]
