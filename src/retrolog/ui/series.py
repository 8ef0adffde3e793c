"""Metric series for charts: one series per (name, run, recorded | hindsight), downsampled.

The x coordinate of a logged value comes from its loop coordinates (table ``loops``):

* ``step``: the row's innermost loop iteration counted across the run (iteration ``i`` of a
  nested loop's ``k``-th instance is ``i`` plus the iterations of the ``k-1`` earlier instances);
  a value logged in the main loop has its main-loop iteration.
* ``epoch``: the main-loop (outermost) iteration, plus the position inside it as a fraction for
  values logged in nested loops (``2.25`` = a quarter into main-loop iteration 2).
* ``wall``: ``start_time`` of the row's innermost loop iteration (seconds since the epoch).

Values logged outside every loop have no loop coordinate: they get their ordinal (0, 1, ...) on
``step`` and ``epoch`` and are left out of ``wall`` charts. Values a replay stored
(``logs.replay_id IS NOT NULL``) form their own series, flagged ``hindsight``.
"""

from __future__ import annotations

from typing import Any, cast

import numpy as np
import pandas as pd

from ..record.values import from_cell
from ..store import views
from .db import Reader
from .downsample import lttb, minmax_many

X_AXES = ("step", "epoch", "wall")
TOTAL_POINT_BUDGET = 200_000  # points in one response, all series together
MIN_POINTS_PER_SERIES = 64
DEFAULT_RUNS = 20

_ROW_COLUMNS = [
    "run",
    "ctx_id",
    "seq",
    "value",
    "replay_id",
    "loop",
    "iteration",
    "depth",
    "parent_id",
    "start_time",
]


def default_runs(reader: Reader, names: list[str], limit: int = DEFAULT_RUNS) -> list[str]:
    """The newest ``limit`` runs that logged any of ``names`` (one index probe per run)."""
    return sorted(views.newest_runs_logging(reader, names, limit))


def _runs_meta(reader: Reader, run_ids: list[str]) -> pd.DataFrame:
    rows = views.runs_meta(reader, run_ids)
    return pd.DataFrame(rows, columns=["run", "run_id", "version", "status", "start", "script"])


def _args_of(reader: Reader, keys: list[int]) -> dict[int, dict[str, Any]]:
    out: dict[int, dict[str, Any]] = {}
    for run, name, vtype, num, text in views.args_of_runs(reader, keys):
        out.setdefault(int(run), {})[name] = from_cell(vtype, num, text)
    return out


def _group_label(group_by: str, meta: pd.Series, args: dict[str, Any]) -> str:
    if group_by == "version":
        return str(meta["version"])[:10] if meta["version"] else "(no version)"
    if group_by == "status":
        return str(meta["status"])
    if group_by == "script":
        return str(meta["script"])
    if group_by.startswith("arg:"):
        name = group_by[4:]
        return f"{name}={args[name]}" if name in args else f"{name} unset"
    return str(meta["run_id"])


def _log_rows(reader: Reader, name: str, keys: list[int]) -> pd.DataFrame:
    """Numeric rows of ``name`` in the given runs, with their innermost loop iteration."""
    rows = views.numeric_log_rows(reader, name, keys)
    return pd.DataFrame.from_records(rows, columns=_ROW_COLUMNS)


def _nested_coordinates(reader: Reader, frame: pd.DataFrame, x: str) -> pd.Series:
    """``step`` or ``epoch`` of rows logged inside nested loops (depth >= 2)."""
    keys = sorted({int(r) for r in frame["run"]})
    # iterations per loop instance: (run, parent, loop name) -> count
    counts = pd.DataFrame(
        views.nested_loop_counts(reader, keys),
        columns=["run", "parent_id", "loop", "n"],
    )
    if x == "step":
        counts = counts.sort_values(["run", "loop", "parent_id"])
        counts["offset"] = counts.groupby(["run", "loop"])["n"].cumsum() - counts["n"]
        rows = frame[["run", "parent_id", "loop", "iteration"]].astype(
            {"run": "int64", "parent_id": "int64", "iteration": "float64"}
        )
        counts = counts.astype({"run": "int64", "parent_id": "int64"})
        merged = rows.merge(counts, on=["run", "parent_id", "loop"], how="left")
        return pd.Series(
            (merged["offset"].fillna(0) + merged["iteration"]).to_numpy(dtype=float),
            index=frame.index,
        )
    # epoch: climb to the depth-2 ancestor (position inside the main-loop iteration), then to 1
    max_depth = int(frame["depth"].max())
    ancestors = pd.DataFrame(
        views.loops_above(reader, keys, max_depth),
        columns=["run", "ctx_id", "up_parent", "up_depth", "up_loop", "up_iteration"],
    ).astype({"run": "int64", "ctx_id": "int64"})
    level = frame[["run", "parent_id", "depth", "loop", "iteration"]].astype(
        {"run": "int64", "parent_id": "int64", "depth": "int64", "iteration": "float64"}
    )
    level = level.reset_index(drop=True)
    while bool((level["depth"] > 2).any()):  # one merge per level of nesting above 2
        deep = level["depth"] > 2
        up = level.loc[deep, ["run", "parent_id"]].merge(
            ancestors, left_on=["run", "parent_id"], right_on=["run", "ctx_id"], how="left"
        )
        up.index = level.index[deep]
        level.loc[deep, "parent_id"] = up["up_parent"].fillna(0).astype("int64")
        level.loc[deep, "loop"] = up["up_loop"]
        level.loc[deep, "iteration"] = up["up_iteration"].astype(float)
        level.loc[deep, "depth"] = up["up_depth"].fillna(0).astype("int64")  # 0: lost, stop
    counts = counts.astype({"run": "int64", "parent_id": "int64"})
    main = ancestors.loc[ancestors["up_depth"] == 1, ["run", "ctx_id", "up_iteration"]]
    merged = level.merge(counts, on=["run", "parent_id", "loop"], how="left").merge(
        main, left_on=["run", "parent_id"], right_on=["run", "ctx_id"], how="left"
    )
    epoch = merged["up_iteration"] + merged["iteration"] / merged["n"].fillna(1).clip(lower=1)
    epoch[(level["depth"] != 2).to_numpy()] = np.nan
    return pd.Series(epoch.to_numpy(dtype=float), index=frame.index)


def _x_values(reader: Reader, frame: pd.DataFrame, x: str) -> pd.Series:
    xs = pd.Series(np.nan, index=frame.index)
    top = frame["depth"].isna()
    if x == "wall":
        xs[~top] = frame.loc[~top, "start_time"].astype(float)
        return xs
    order = frame.loc[top].sort_values("seq", kind="stable")
    xs[order.index] = order.groupby(["run", "hindsight"]).cumcount().astype(float)
    main = frame["depth"] == 1
    xs[main] = frame.loc[main, "iteration"].astype(float)
    nested = frame["depth"].fillna(0) >= 2
    if nested.any():
        xs[nested] = _nested_coordinates(reader, frame.loc[nested], x)
    return xs


def metric_series(
    reader: Reader,
    names: list[str],
    run_ids: list[str],
    x: str = "step",
    max_points: int = 1000,
    method: str = "minmax",
    group_by: str = "run",
) -> dict[str, Any]:
    """Chart data for ``names`` over ``run_ids`` (see the module docstring for the axes)."""
    if x not in X_AXES:
        raise ValueError(f"x must be one of {', '.join(X_AXES)}, not {x!r}")
    meta = _runs_meta(reader, run_ids)
    keys = [int(k) for k in meta["run"]]
    args = _args_of(reader, keys) if group_by.startswith("arg:") else {}
    runs_out = []
    run_id_of: dict[int, str] = {}
    for _, row in meta.iterrows():
        run_args = args.get(int(row["run"]), {})
        run_id_of[int(row["run"])] = row["run_id"]
        runs_out.append(
            {
                "run_id": row["run_id"],
                "version": row["version"],
                "status": row["status"],
                "start_time": row["start"],
                "script": row["script"],
                "group": _group_label(group_by, row, run_args),
            }
        )
    pieces = []
    for name in names:
        frame = _log_rows(reader, name, keys) if keys else pd.DataFrame(columns=_ROW_COLUMNS)
        if frame.empty:
            continue
        frame["hindsight"] = frame["replay_id"].notna()
        # two replays storing the same coordinate: the later one wins (loop rows only)
        dup = frame.duplicated(["run", "ctx_id", "hindsight"], keep="last")
        frame = frame.loc[~(dup & frame["hindsight"] & (frame["ctx_id"] != 0))]
        frame["x"] = _x_values(reader, frame, x)
        frame = frame.loc[frame["x"].notna()]
        frame["name"] = name
        pieces.append(frame)
    series_out: list[dict[str, Any]] = []
    if pieces:
        data = pd.concat(pieces, ignore_index=True)
        data = data.sort_values(["name", "run", "hindsight", "x", "seq"], kind="stable")
        data = data.reset_index(drop=True)
        groups = data.groupby(["name", "run", "hindsight"], sort=False).indices
        share = max(MIN_POINTS_PER_SERIES, TOTAL_POINT_BUDGET // max(len(groups), 1))
        per_series = min(int(max_points), share)
        xs = data["x"].to_numpy(dtype=float)
        ys = data["value"].to_numpy(dtype=float)
        starts = np.sort(np.array([idx[0] for idx in groups.values()], dtype=np.int64))
        if method == "lttb":
            kept = np.concatenate(
                [idx[lttb(xs[idx], ys[idx], per_series)] for idx in groups.values()]
            )
        else:
            kept = minmax_many(ys, starts, per_series)
        keep_mask = np.zeros(len(data), dtype=bool)
        keep_mask[kept] = True
        for group_key, idx in groups.items():
            name, run, hindsight = cast(tuple[str, int, bool], group_key)
            chosen = idx[keep_mask[idx]]
            replay_ids = sorted(set(data["replay_id"].iloc[idx].dropna())) if hindsight else []
            series_out.append(
                {
                    "name": name,
                    "run_id": run_id_of[int(run)],
                    "hindsight": bool(hindsight),
                    "replay_ids": replay_ids,
                    "points": len(idx),
                    "x": xs[chosen].tolist(),
                    "y": ys[chosen].tolist(),
                }
            )
    else:
        per_series = int(max_points)
    return {
        "x": x,
        "names": names,
        "group_by": group_by,
        "method": method,
        "max_points": per_series,
        "runs": runs_out,
        "series": series_out,
    }
