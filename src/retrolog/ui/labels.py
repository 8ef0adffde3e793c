"""The run page's environment card: the other runs to compare with, and the diff to one."""

from __future__ import annotations

from typing import Any

from ..relational.labels import environment_diff, run_environment
from ..store import views
from .db import Reader


def environment_view(reader: Reader, report: dict[str, Any], against: str) -> dict[str, Any]:
    """Runs with a recorded environment to compare with (newest first, at most 200) and, when
    ``against`` names one of them, the diff from this run's environment to that run's."""
    rows = views.runs_with_environment(reader, 200)
    others = [
        {"value": run_id, "label": f"{run_id}" + (f" ({name})" if name else "")}
        for run_id, _key, name in rows
        if run_id != report["run_id"]
    ]
    keys = {run_id: int(key) for run_id, key, _name in rows}
    diff = None
    if against in keys and against != report["run_id"]:
        diff = environment_diff(report.get("environment"), run_environment(reader, keys[against]))
        diff["against"] = against
    return {"others": others, "diff": diff}
