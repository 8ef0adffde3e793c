"""The run page's environment card: the other runs to compare with, and the diff to one."""

from __future__ import annotations

from typing import Any

from ..relational.labels import environment_diff, run_environment
from .db import Reader


class _Fetch:
    """``Reader.rows`` as the ``fetch`` that relational/labels.py reads through."""

    def __init__(self, reader: Reader) -> None:
        self._reader = reader

    def fetch(self, sql: str, params: dict[str, Any] | None = None) -> list[Any]:
        return self._reader.rows(sql, params)


def environment_view(reader: Reader, report: dict[str, Any], against: str) -> dict[str, Any]:
    """Runs with a recorded environment to compare with (newest first, at most 200) and, when
    ``against`` names one of them, the diff from this run's environment to that run's."""
    rows = reader.rows(
        "SELECT r.run_id, r.id, n.name FROM runs r JOIN run_environment e ON e.run = r.id "
        "LEFT JOIN run_names n ON n.run = r.id ORDER BY r.run_id DESC LIMIT 200"
    )
    others = [
        {"value": run_id, "label": f"{run_id}" + (f" ({name})" if name else "")}
        for run_id, _key, name in rows
        if run_id != report["run_id"]
    ]
    keys = {run_id: int(key) for run_id, key, _name in rows}
    diff = None
    if against in keys and against != report["run_id"]:
        diff = environment_diff(
            report.get("environment"), run_environment(_Fetch(reader), keys[against])
        )
        diff["against"] = against
    return {"others": others, "diff": diff}
