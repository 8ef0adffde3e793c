"""One run in detail, for ``retrolog show`` and the UI's run page."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pandas as pd

from ..project import Project
from ..record.values import from_cell
from ..versions import GitError, GitRepo
from .access import open_store, resolve_project


def find_run(store: Any, run_id: str) -> Any:
    """The runs row whose id is ``run_id`` or starts with it; LookupError if none or ambiguous."""
    rows = store.fetch("SELECT * FROM runs WHERE run_id = :id", {"id": run_id})
    if not rows:
        rows = store.fetch(
            "SELECT * FROM runs WHERE substr(run_id, 1, :n) = :prefix",
            {"n": len(run_id), "prefix": run_id},
        )
    if not rows:
        raise LookupError(f"no run {run_id!r} (see `retrolog runs`)")
    if len(rows) > 1:
        raise LookupError(f"{run_id!r} matches {len(rows)} runs; give more characters")
    return rows[0]


def describe_run(
    run_id: str, project: Project | str | Path | None = None, with_diff: bool = True
) -> dict[str, Any]:
    """Facts, args, a per-metric summary and the code diff (version -> HEAD) of one run."""
    proj = resolve_project(project)
    store = open_store(proj)
    run = find_run(store, run_id)._mapping
    report: dict[str, Any] = {k: run[k] for k in run if k not in ("id", "last_seq")}
    report["argv"] = json.loads(run["argv"]) if run["argv"] else None
    report["packages"] = json.loads(run["packages"]) if run["packages"] else {}
    if run["start_time"] and run["end_time"]:
        report["duration"] = run["end_time"] - run["start_time"]
    for key in ("start_time", "end_time"):
        if report.get(key):
            report[key] = pd.Timestamp(report[key], unit="s", tz="UTC").isoformat()
    args = store.fetch(
        "SELECT name, vtype, value_num, value_text FROM args WHERE run = :r ORDER BY name",
        {"r": run["id"]},
    )
    report["args"] = {name: from_cell(t, n, x) for name, t, n, x in args}
    rows = store.fetch(
        "SELECT name, vtype, value_num, value_text, replay_id IS NOT NULL FROM logs WHERE run = :r ORDER BY seq",
        {"r": run["id"]},
    )
    summary: dict[str, dict[str, Any]] = {}
    for name, t, n, x, replayed in rows:
        value = from_cell(t, n, x)
        entry = summary.setdefault(
            name,
            {
                "name": name,
                "count": 0,
                "first": value,
                "min": None,
                "max": None,
                "hindsight": False,
            },
        )
        entry["count"] += 1
        entry["last"] = value
        entry["hindsight"] = entry["hindsight"] or bool(replayed)
        if isinstance(value, (int, float)) and not isinstance(value, bool) and value == value:
            entry["min"] = value if entry["min"] is None else min(entry["min"], value)
            entry["max"] = value if entry["max"] is None else max(entry["max"], value)
    report["metrics"] = list(summary.values())
    if with_diff:
        report["diff"], report["diff_note"] = _diff_against_head(proj, run["version"])
    return report


def _diff_against_head(project: Project, version: str | None) -> tuple[str | None, str | None]:
    if not version:
        return None, "this run has no code version (recorded outside git, or versioning failed)"
    if not project.in_git:
        return None, "the project is not a git repository"
    repo = GitRepo(project.root)
    head = repo.head()
    if head is None:
        return None, "the repository has no commits to compare with"
    try:
        return repo.diff(version, head), None
    except GitError as exc:
        return None, str(exc)
