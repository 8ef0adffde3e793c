"""The UI's read queries: run listing with last metric values, run details, versions, replays.

The SQL is the store's (``store/views.py``), run read-only through ``db.Reader``. Queries the
relational layer already answers (``runs()``, ``describe_run()``, ``filter_frame()``) are reused
as they are.
"""

from __future__ import annotations

import contextlib
from typing import Any

import pandas as pd

from ..record.values import from_cell
from ..relational import QueryError, describe_run, filter_frame, runs
from ..store import views
from ..store.runs import run_keys as stored_run_keys
from .db import Reader
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


def metric_names(reader: Reader) -> list[str]:
    """Every name logged in the project, sorted."""
    return reader.cached("names", lambda: views.metric_names(reader))


def numeric_names(reader: Reader) -> list[str]:
    """Logged names that have at least one numeric value (the ones a chart can draw)."""
    return reader.cached("numeric_names", lambda: _numeric_names(reader))


def _numeric_names(reader: Reader) -> list[str]:
    return [name for name in metric_names(reader) if views.has_numeric_value(reader, name)]


def last_values(reader: Reader, names: list[str]) -> pd.DataFrame:
    """The last value of each of ``names`` in each run: recorded values first, else hindsight
    (``views.last_value_rows``)."""
    columns = ["run_id", "name", "vtype", "value_num", "value_text", "replay_id"]
    if not names:
        return pd.DataFrame(columns=[*columns, "value"])
    frame = pd.DataFrame(views.last_value_rows(reader, names), columns=columns)
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
    return stored_run_keys(reader, run_ids)


def run_detail(reader: Reader, run_id: str) -> dict[str, Any]:
    """Facts, args and metric summary (``describe_run``), checkpoints and timing summary."""
    report = describe_run(run_id, project=reader.project, with_diff=False)
    key = run_keys(reader, [report["run_id"]])[report["run_id"]]
    report["checkpoints"] = views.run_checkpoints(reader, key)
    report["timings"] = [
        {"kind": k, "loop": loop, "count": n, "seconds": s}
        for k, loop, n, s in views.run_timing_summary(reader, key)
    ]
    return report


def versions_list(reader: Reader) -> list[dict[str, Any]]:
    """Distinct code versions in order of their first run, with their runs and propagations."""
    rows = views.run_versions(reader)
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
    return views.known_versions(reader)


__all__ = [
    "known_versions",
    "last_values",
    "metric_names",
    "numeric_names",
    "run_detail",
    "run_keys",
    "runs_table",
    "versions_list",
]
