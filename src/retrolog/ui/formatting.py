"""Display helpers (Jinja filters) and JSON conversion for the UI's pages and endpoints."""

from __future__ import annotations

import datetime as dt
import json
import math
from typing import Any

import numpy as np
import pandas as pd


def _missing(value: Any) -> bool:
    if value is None or value is pd.NaT:
        return True
    if isinstance(value, float):
        return math.isnan(value)
    return False


def num(value: Any) -> str:
    """A compact cell: 4 significant digits for floats, JSON for containers, '' for missing."""
    if _missing(value):
        return ""
    if isinstance(value, (bool, np.bool_)):
        return "true" if value else "false"
    if isinstance(value, (float, np.floating)):
        return f"{float(value):.4g}"
    if isinstance(value, (int, np.integer)):
        return str(int(value))
    if isinstance(value, pd.Timestamp):
        return when(value)
    if isinstance(value, (list, dict)):
        return json.dumps(value, default=str)
    return str(value)


def when(value: Any) -> str:
    """A UTC timestamp as ``YYYY-MM-DD HH:MM:SS`` (seconds since the epoch or a Timestamp)."""
    if _missing(value):
        return ""
    if isinstance(value, pd.Timestamp):
        value = value.timestamp()
    if isinstance(value, str):
        return value.replace("T", " ")[:19]
    stamp = dt.datetime.fromtimestamp(float(value), tz=dt.timezone.utc)
    return stamp.strftime("%Y-%m-%d %H:%M:%S")


def duration(seconds: Any) -> str:
    """``450 ms``, ``12.3 s``, ``3 m 05 s``, ``1 h 02 m``."""
    if _missing(seconds):
        return ""
    s = float(seconds)
    if s < 1:
        return f"{s * 1000:.0f} ms"
    if s < 60:
        return f"{s:.1f} s"
    if s < 3600:
        return f"{int(s // 60)} m {int(s % 60):02d} s"
    return f"{int(s // 3600)} h {int(s % 3600 // 60):02d} m"


def size(value: Any) -> str:
    """Bytes in binary units: ``512 B``, ``1.5 KiB``, ``3.2 GiB``."""
    if _missing(value):
        return ""
    n = float(value)
    for unit in ("B", "KiB", "MiB", "GiB", "TiB"):
        if abs(n) < 1024 or unit == "TiB":
            return f"{n:.0f} {unit}" if unit == "B" else f"{n:.1f} {unit}"
        n /= 1024
    return f"{n:.1f} TiB"


def short(sha: Any) -> str:
    """The first 10 characters of a commit id, as ``retrolog runs`` prints it."""
    return str(sha)[:10] if sha else ""


def percent(value: Any) -> str:
    if _missing(value):
        return ""
    return f"{float(value) * 100:.0f}%"


def sort_key(value: Any) -> str:
    """A ``data-sort`` attribute value: numbers sort numerically in the table script."""
    if _missing(value):
        return ""
    if isinstance(value, pd.Timestamp):
        return repr(value.timestamp())
    if isinstance(value, (bool, np.bool_)):
        return "1" if value else "0"
    if isinstance(value, (int, float, np.integer, np.floating)):
        return repr(float(value))
    return num(value)


def pretty_json(value: Any) -> str:
    if isinstance(value, str):
        return value
    return json.dumps(value, indent=2, default=str, sort_keys=False)


def jsonable(value: Any) -> Any:
    """Plain JSON types: NaN/inf become None, timestamps ISO strings, numpy scalars Python ones."""
    if isinstance(value, dict):
        return {str(k): jsonable(v) for k, v in value.items()}
    if isinstance(value, (list, tuple, set)):
        return [jsonable(v) for v in value]
    if isinstance(value, (bool, np.bool_)):
        return bool(value)
    if isinstance(value, (int, np.integer)):
        return int(value)
    if isinstance(value, (float, np.floating)):
        f = float(value)
        return f if math.isfinite(f) else None
    if isinstance(value, pd.Timestamp):
        return None if value is pd.NaT else value.isoformat()
    if value is None or value is pd.NaT:
        return None
    if isinstance(value, (str,)):
        return value
    return str(value)


def runs_rows(table: dict[str, Any]) -> list[dict[str, Any]]:
    """Display rows for the runs table: fixed facts plus (class, sort key, text, title) per
    arg / metric cell, formatted once here rather than cell by cell in the template."""
    columns = [*table["shown_args"], *table["shown_metrics"]]
    numeric = table["numeric"]
    hindsight = table["hindsight"]
    rows = []
    for record in table["frame"].to_dict(orient="records"):
        run_id = record["run_id"]
        cells = []
        for column in columns:
            value = record.get(column)
            cls = "num" if column in numeric else ""
            replay = hindsight.get((run_id, column))
            title = f"logged in hindsight by replay {replay}" if replay else ""
            if replay:
                cls += " hindsight"
            cells.append((cls, sort_key(value), num(value), title))
        rows.append(
            {
                "run_id": run_id,
                "status": record["status"],
                "error": record.get("error") or "",
                "start": when(record["start_time"]),
                "start_key": sort_key(record["start_time"]),
                "duration": duration(record["duration"]),
                "duration_key": sort_key(record["duration"]),
                "version": record["version"] or "",
                "dirty": bool(record.get("git_dirty")),
                "script": num(record["script"]),
                "host": num(record["host"]),
                "name": record.get("run_name") if isinstance(record.get("run_name"), str) else "",
                "tags": {
                    k[4:]: v
                    for k, v in record.items()
                    if k.startswith("tag_") and isinstance(v, str)
                },
                "cells": cells,
            }
        )
    return rows


FILTERS = {
    "num": num,
    "when": when,
    "duration": duration,
    "size": size,
    "short": short,
    "percent": percent,
    "sort_key": sort_key,
    "pretty_json": pretty_json,
}
