"""The relational view users see: runs and metrics as pandas DataFrames.

``dataframe("lr", "loss")`` gives one row per run and loop coordinate: the run's id, start time,
version and script, one column per loop (its iteration index), then the requested names. Args and
values logged outside every loop are run-level: they are broadcast onto each row of their run.
"""

from __future__ import annotations

import contextlib
import json
from collections.abc import Sequence
from pathlib import Path

import numpy as np
import pandas as pd

from ..project import Project
from ..record.values import from_cell
from ..store import Store
from ..store import query as reads
from .access import open_store
from .fastpath import nested_frames
from .where import filter_rows, identifiers

RUN_COLUMNS = ["run_id", "start_time", "version", "script"]
DATA_PREFIX = "data."  # data version columns (relational/data_versions.py)


def _decode(frame: pd.DataFrame) -> pd.Series:
    """Decode (vtype, value_num, value_text) cells into one column; vectorised for plain numbers."""
    vtype = frame["vtype"]
    numbers = frame["value_num"]
    if bool((vtype.isin(["f", "i"]) & numbers.notna()).all()):
        return numbers.astype("int64") if bool((vtype == "i").all()) else numbers
    values = [from_cell(t, n, x) for t, n, x in zip(vtype, numbers, frame["value_text"])]
    return pd.Series(values, index=frame.index, dtype=object)


def _runs_table(store: Store) -> pd.DataFrame:
    rows = reads.run_facts(store)
    frame = pd.DataFrame(
        [tuple(row) for row in rows],
        columns=[
            "run",
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
        ],
    )
    return frame


def _args_long(store: Store) -> pd.DataFrame:
    rows = reads.all_args(store)
    frame = pd.DataFrame(
        [tuple(row) for row in rows], columns=["run", "name", "vtype", "value_num", "value_text"]
    )
    frame["value"] = pd.Series(
        [
            from_cell(t, n, x)
            for t, n, x in zip(
                frame["vtype"], frame["value_num"], frame["value_text"], strict=False
            )
        ],
        index=frame.index,
        dtype=object,
    )
    return frame


def _wide(long: pd.DataFrame, index: str = "run") -> pd.DataFrame:
    if long.empty:
        return pd.DataFrame(index=pd.Index([], name=index))
    last = long.drop_duplicates([index, "name"], keep="last")
    wide = last.pivot(index=index, columns="name", values="value")
    wide.columns.name = None
    return wide.infer_objects()


def _to_datetime(frame: pd.DataFrame, *columns: str) -> None:
    for column in columns:
        if column in frame:
            frame[column] = pd.to_datetime(frame[column], unit="s", utc=True)


def runs(project: Project | str | Path | None = None, where: str | None = None) -> pd.DataFrame:
    """One row per run: status, times, duration, version, script, git facts and args."""
    store = open_store(project)
    table = _runs_table(store)
    args = _args_long(store)
    wide = _wide(args.astype({"value": object}))
    table["duration"] = table["end_time"] - table["start_time"]
    from .labels import labels_frame  # run_name, notes, tag_<key> (docs/data-model.md)

    table = table.merge(labels_frame(store), left_on="run", right_index=True, how="left")
    table = table.merge(
        wide.rename(columns=lambda c: f"arg:{c}" if c in table.columns else c),
        left_on="run",
        right_index=True,
        how="left",
    )
    from .data_versions import data_frame  # data.<name>: short digest (docs/data-versions.md)

    table = table.merge(data_frame(store), left_on="run", right_index=True, how="left")
    table["argv"] = table["argv"].map(lambda s: json.loads(s) if isinstance(s, str) else s)
    table = table.drop(columns=["run"])
    _to_datetime(table, "start_time", "end_time")
    if where:
        table = filter_rows(table, where)
    return table.reset_index(drop=True)


def _log_rows(store: Store, names: Sequence[str]) -> pd.DataFrame:
    return pd.DataFrame.from_records(reads.log_rows(store, names), columns=reads.LOG_ROW_COLUMNS)


def _ancestors(store: Store, keys: pd.DataFrame) -> pd.DataFrame:
    """Loop rows (run, ctx_id, parent_id, loop, iteration) of every ancestor of the given contexts."""
    columns = ["run", "ctx_id", "parent_id", "loop", "iteration"]
    found: list[tuple[int, int, int, str, int]] = []
    seen: set[tuple[int, int]] = set()
    todo = {
        (int(r), int(p))
        for r, p in zip(keys["run"], keys["parent_id"].fillna(0), strict=False)
        if p
    }
    while todo:
        seen |= todo
        by_run: dict[int, list[int]] = {}
        for run, ctx in todo:
            by_run.setdefault(run, []).append(ctx)
        todo = set()
        for run, ctxs in by_run.items():
            for ctx_id, parent, name, iteration in reads.loop_parents(store, run, ctxs):
                found.append((run, ctx_id, parent, name, iteration))
                if parent and (run, parent) not in seen:
                    todo.add((run, parent))
    return pd.DataFrame(found, columns=columns)


def dataframe(
    *names: str, where: str | None = None, project: Project | str | Path | None = None
) -> pd.DataFrame:
    """Logged values as a table: one row per run and loop coordinate (see module docstring).

    With no names: one row per run with its args and the last value of each metric logged outside
    every loop. ``where`` is an SQL condition over the result's columns, and over any arg or
    logged name it mentions even when not asked for (``"lr > 1e-3 AND epoch >= 5"``); those
    are fetched for the filter and left out of the result.
    """
    store = open_store(project)
    runs_table = _runs_table(store)[["run", *RUN_COLUMNS]]
    args = _args_long(store)
    if not names:
        top = reads.top_level_values(store)
        top_frame = pd.DataFrame(
            top, columns=["run", "name", "vtype", "value_num", "value_text", "seq"]
        )
        if not top_frame.empty:
            top_frame["value"] = _decode(top_frame).astype(object)
        both = pd.concat(
            [
                args[["run", "name", "value"]],
                top_frame[["run", "name", "value"]] if not top_frame.empty else None,
            ]
        )
        frame = runs_table.merge(
            _wide(both.astype({"value": object})), left_on="run", right_index=True, how="left"
        )
        return _finish(_with_data_versions(store, frame).drop(columns=["run"]), where)

    # a run column asked for by name (``dataframe("script")``) is there already, once
    names = tuple(n for n in dict.fromkeys(names) if n not in RUN_COLUMNS)
    if not names:
        return _finish(_with_data_versions(store, runs_table).drop(columns=["run"]), where)
    asked = names
    names = (*names, *_where_only_names(store, where, names, set(args["name"])))
    arg_names = [n for n in names if n in set(args["name"])]
    nested_frame: pd.DataFrame | None = None
    run_values = pd.DataFrame(columns=["run", "name", "value"])
    fast = nested_frames(store, names, [*RUN_COLUMNS, "run", "ctx_id", "_order"])
    logs = _log_rows(store, names) if fast is None else pd.DataFrame()
    if fast is not None:
        nested_frame, run_values = fast
    elif not logs.empty:
        logs = logs.sort_values(["recorded", "seq"], kind="stable")
        logs = logs.drop_duplicates(["run", "ctx_id", "name"], keep="last")
        logs["value"] = _decode(logs)
        run_level = logs["ctx_id"] == 0
        if not bool(run_level.all()):
            nested_frame = _pivot_nested(store, logs.loc[~run_level])
        run_values = logs.loc[run_level, ["run", "name", "value"]]
    own_rows = pd.DataFrame(columns=["run", "name", "value"])
    if nested_frame is not None:
        # a name also logged inside loops keeps its values outside loops as rows of their own
        # (loop columns empty) instead of being broadcast over, and clashing with, its own column
        inside = run_values["name"].isin([n for n in names if n in nested_frame.columns])
        own_rows, run_values = run_values.loc[inside], run_values.loc[~inside]
    run_values = pd.concat(
        [run_values, args.loc[args["name"].isin(arg_names), ["run", "name", "value"]]]
    )
    run_wide = _wide(run_values.astype({"value": object})) if not run_values.empty else None
    if nested_frame is not None:
        frame = nested_frame
        if not own_rows.empty:
            frame = _with_run_level_rows(frame, own_rows, names)
        if run_wide is not None:
            frame = frame.merge(run_wide, left_on="run", right_index=True, how="left")
    elif run_wide is not None:
        frame = run_wide.reset_index()
    else:
        frame = pd.DataFrame(columns=["run"])
    frame = runs_table.merge(frame, on="run", how="inner")
    loop_cols = [
        c
        for c in frame.columns
        if c not in names and c not in RUN_COLUMNS and c not in ("run", "_order")
    ]
    frame = _with_data_versions(store, frame)
    for name in names:
        if name not in frame.columns:
            frame[name] = np.nan
    data_cols = [c for c in frame.columns if c.startswith(DATA_PREFIX) and c not in names]
    frame = frame.sort_values(["run", "_order"] if "_order" in frame else ["run"], kind="stable")
    frame = frame[[*RUN_COLUMNS, *data_cols, *loop_cols, *names]]
    for name in names:  # object columns of plain numbers become numeric again after the merges
        if frame[name].dtype == object:
            with contextlib.suppress(ValueError, TypeError):
                frame[name] = pd.to_numeric(frame[name])
    return _finish(frame, where).drop(columns=[n for n in names if n not in asked])


def _with_data_versions(store: Store, frame: pd.DataFrame) -> pd.DataFrame:
    """``frame`` (with a ``run`` key column) plus a ``data.<name>`` column per data name any run
    recorded with ``retrolog.data`` (docs/data-versions.md), right after the run columns; the
    same frame when no run recorded one."""
    from .data_versions import data_frame

    versions = data_frame(store)
    if versions.empty or not len(versions.columns):
        return frame
    merged = frame.merge(versions, left_on="run", right_index=True, how="left")
    data_cols = list(versions.columns)
    front = [c for c in ("run", *RUN_COLUMNS) if c in merged.columns]
    rest = [c for c in merged.columns if c not in front and c not in data_cols]
    return merged[[*front, *data_cols, *rest]]


def _where_only_names(
    store: Store, where: str | None, names: Sequence[str], arg_names: set[str]
) -> list[str]:
    """Args and logged names that ``where`` mentions but the caller did not ask for."""
    extra = []
    args_by_lower = {name.lower(): name for name in arg_names}
    taken = {name.lower() for name in (*names, *RUN_COLUMNS)}
    for name in identifiers(where or ""):
        if name.lower() in taken:
            continue
        if name.lower() in args_by_lower:  # SQL names are case-insensitive
            extra.append(args_by_lower[name.lower()])
        elif reads.is_logged(store, name):
            extra.append(name)
    return list(dict.fromkeys(extra))


def _with_run_level_rows(
    frame: pd.DataFrame, own_rows: pd.DataFrame, names: Sequence[str]
) -> pd.DataFrame:
    """``frame`` (one row per loop coordinate) plus one row per run for the values those runs
    logged outside every loop, ordered before the run's loop rows (``_order`` -1)."""
    wide = _wide(own_rows.astype({"value": object})).reset_index()
    wide["_order"] = -1
    loop_cols = [c for c in frame.columns if c not in names and c not in ("run", "_order")]
    out = pd.concat([wide, frame], ignore_index=True)
    for column in loop_cols:
        out[column] = out[column].astype("Int64")
    return out


def _pivot_nested(store: Store, nested: pd.DataFrame) -> pd.DataFrame:
    """Pivot nested-loop rows to one row per (run, ctx) with a column per loop and per name."""
    keys = nested[["run", "ctx_id", "parent_id", "loop", "iteration"]].drop_duplicates(
        ["run", "ctx_id"]
    )
    keys = keys.reset_index(drop=True)
    coords = keys[["run", "ctx_id"]].copy()
    ancestry = _ancestors(store, keys)
    level = keys.rename(columns={"parent_id": "parent"})[["run", "parent", "loop", "iteration"]]
    depth_of: dict[str, int] = {}
    depth = 0
    while True:
        for loop_name in level["loop"].dropna().unique():
            mask = (level["loop"] == loop_name).to_numpy()
            column = (
                coords[loop_name]
                if loop_name in coords
                else pd.Series(pd.NA, index=coords.index, dtype="Int64")
            )
            coords[loop_name] = column.mask(mask, level["iteration"]).astype("Int64")
            depth_of[loop_name] = max(depth_of.get(loop_name, 0), depth)
        parents = level["parent"].fillna(0)
        if ancestry.empty or not bool((parents != 0).any()):
            break
        level = (
            level[["run", "parent"]]
            .merge(ancestry, left_on=["run", "parent"], right_on=["run", "ctx_id"], how="left")[
                ["run", "parent_id", "loop", "iteration"]
            ]
            .rename(columns={"parent_id": "parent"})
        )
        depth += 1
    loop_columns = sorted(depth_of, key=lambda name: -depth_of[name])
    for column in loop_columns:
        if not coords[column].isna().any():
            coords[column] = coords[column].astype("int64")
    values = nested.pivot(index=["run", "ctx_id"], columns="name", values="value")
    values.columns.name = None
    out = coords[["run", "ctx_id", *loop_columns]].merge(
        values, left_on=["run", "ctx_id"], right_index=True, how="left"
    )
    out["_order"] = out["ctx_id"]
    return out.drop(columns=["ctx_id"])


def _finish(frame: pd.DataFrame, where: str | None) -> pd.DataFrame:
    frame = frame.copy()
    _to_datetime(frame, "start_time")
    if where:
        frame = filter_rows(frame, where)
    return frame.drop(columns=[c for c in ("_order",) if c in frame]).reset_index(drop=True)
