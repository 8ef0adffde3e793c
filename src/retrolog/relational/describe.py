"""One run in detail, for ``retrolog show`` and the UI's run page."""

from __future__ import annotations

import difflib
import json
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import pandas as pd

from ..errors import NotFoundError
from ..project import Project
from ..record.values import from_cell
from ..store import query as reads
from ..versions import GitError, GitRepo, require_version
from .access import open_store, resolve_project
from .runref import MIN_PREFIX, find_run, unique_prefixes  # noqa: F401  (their old home)


def run_ids(store: Any) -> list[str]:
    """Every run id of the store, oldest first."""
    return reads.ordered_run_ids(store)


def known_names(store: Any) -> list[str]:
    """Every name a run logged or took as an arg, sorted (for suggestions and completion)."""
    return reads.known_names(store)


def check_names(store: Any, names: Sequence[str]) -> None:
    """NotFoundError naming the first of ``names`` that no run ever logged or took as an arg,
    with the closest known names as suggestions."""
    known = set(known_names(store))
    for name in names:
        if name not in known:
            close = difflib.get_close_matches(name, sorted(known), n=3, cutoff=0.6)
            hint = f"; did you mean {', '.join(map(repr, close))}?" if close else ""
            raise NotFoundError(
                f"unknown name {name!r}: no run logged it or has it as an arg{hint}"
            )


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
    args = reads.args_by_name(store, int(run["id"]))
    report["args"] = {name: from_cell(t, n, x) for name, t, n, x in args}
    from .data_versions import run_data  # retrolog.data (docs/data-versions.md)

    report["data"] = run_data(store, int(run["id"]))
    rows = reads.run_values(store, int(run["id"]))
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
    from .labels import run_environment, run_labels  # names, tags, notes, environment

    report.update(run_labels(store, run["id"]))
    report["environment"] = run_environment(store, run["id"])
    if with_diff:
        if run["version"] and proj.in_git:  # a version from another clone: say how to fetch it
            require_version(proj.root, run["run_id"], run["version"])
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
