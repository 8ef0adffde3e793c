"""The UI's read queries about replays: the list, one replay in detail, plan summaries, and how
statements were propagated to each version (tables ``replays``, ``replay_tasks``, ``replay_runs``,
``propagations``; shapes in docs/data-model.md). The SQL is the store's (``store/replays.py``),
run read-only through ``db.Reader``."""

from __future__ import annotations

import json
import textwrap
from typing import Any

from ..store import replays as stored
from ..store.replays import (
    FIDELITY_COLUMNS,
    PROPAGATION_COLUMNS,
    REPLAY_COLUMNS,
    TASK_COLUMNS,
)
from .db import Reader


def _json(text: str | None) -> Any:
    if text is None:
        return None
    try:
        return json.loads(text)
    except ValueError:
        return text


def propagations(reader: Reader, replay_id: str | None = None) -> dict[str, list[dict[str, Any]]]:
    """version -> how each replay's statements were propagated to it (or why not)."""
    out: dict[str, list[dict[str, Any]]] = {}
    for item in stored.propagation_rows(reader, replay_id):
        for key in ("scope", "renames", "names"):
            item[key] = _json(item[key])
        out.setdefault(item["version"], []).append(item)
    return out


LIVE_STATUSES = ("planned", "running")


def _task_progress(status: str, progress: float | None) -> float:
    if status == "done":
        return 1.0
    return float(progress or 0.0) if status in ("running", "retrying", "failed") else 0.0


def replays_list(reader: Reader) -> list[dict[str, Any]]:
    """Every replay, newest first, with task counts, overall progress and fidelity counts."""
    replays = stored.replay_summaries(reader)
    tasks: dict[str, list[tuple[str, float | None, float | None]]] = {}
    for rid, status, progress, estimate in stored.task_states(reader):
        tasks.setdefault(rid, []).append((status, progress, estimate))
    fidelity: dict[str, dict[str, int]] = {}
    for rid, kind, count in stored.fidelity_counts(reader):
        fidelity.setdefault(rid, {})[kind or "unchecked"] = count
    for replay in replays:
        replay["names"] = _json(replay["names"])
        replay.update(task_summary(tasks.get(replay["replay_id"], [])))
        replay["fidelity"] = fidelity.get(replay["replay_id"], {})
    return replays


def task_summary(tasks: list[tuple[str, float | None, float | None]]) -> dict[str, Any]:
    """Counts per status and the overall progress (weighted by estimates when they exist)."""
    counts: dict[str, int] = {}
    done_weight = total_weight = 0.0
    for status, progress, estimate in tasks:
        counts[status] = counts.get(status, 0) + 1
        weight = float(estimate) if estimate and estimate > 0 else 1.0
        total_weight += weight
        done_weight += weight * _task_progress(status, progress)
    return {
        "task_counts": counts,
        "task_total": len(tasks),
        "progress": done_weight / total_weight if total_weight else None,
    }


def ranges(values: list[Any]) -> str:
    """``[2, 3, 4, 7]`` -> ``"2–4, 7"``."""
    ints = sorted({int(v) for v in values if isinstance(v, (int, float))})
    parts: list[str] = []
    start = prev = None
    for v in [*ints, None]:
        if v is not None and prev is not None and v == prev + 1:
            prev = v
            continue
        if start is not None:
            parts.append(str(start) if start == prev else f"{start}–{prev}")
        start = prev = v
    return ", ".join(parts)


def task_iterations(level: str | None, iterations: Any) -> str:
    """A task's main-loop iterations: re-executed ones for inner tasks, else ``0–last``."""
    if not isinstance(iterations, list) or not iterations:
        return ""
    if level == "inner" or len(iterations) != 2:
        return ranges(iterations)
    return f"{iterations[0]}–{iterations[1]}"


PLAN_LABELS = {"estimate_seconds": "estimate", "load_speed": "restore speed"}


def plan_summary(plan: Any) -> dict[str, Any]:
    """The parts of a plan worth a glance: its settings, runs per level, one line per run."""
    out: dict[str, Any] = {"facts": [], "levels": {}, "runs": []}
    if not isinstance(plan, dict):
        return out
    for key, value in plan.items():
        if key in ("names", "script", "where", "workers"):  # shown with the replay itself
            continue
        label = PLAN_LABELS.get(key, key.replace("_", " "))
        if isinstance(value, (str, int, float, bool)) or value is None:
            out["facts"].append((key, label, value))
        elif isinstance(value, list) and all(isinstance(v, str) for v in value):
            out["facts"].append((key, label, ", ".join(value)))
        elif isinstance(value, dict) and key == "levels":
            out["levels"] = dict(value)
    for run in plan.get("runs") or []:
        if not isinstance(run, dict):
            continue
        tasks = [t for t in run.get("tasks") or [] if isinstance(t, dict)]
        level = run.get("level") or ("not replayed" if run.get("skipped") else "?")
        out["levels"][level] = out["levels"].get(level, 0) + 1
        out["runs"].append(
            {
                "run_id": run.get("run_id"),
                "version": run.get("version"),
                "level": run.get("level"),
                "skipped": run.get("skipped"),
                "iterations": ranges(run.get("iterations") or []),
                "reexecute": ", ".join(run.get("reexecute_loops") or []),
                "propagated": bool(run.get("propagated")),
                "tasks": len(tasks),
                "estimate": sum(float(t.get("estimate_seconds") or 0) for t in tasks),
                "basis": "; ".join(sorted({str(t.get("basis")) for t in tasks if t.get("basis")})),
            }
        )
    return out


def replay_detail(reader: Reader, replay_id: str) -> dict[str, Any]:
    """One replay: its row, parsed plan, tasks, fidelity per run and propagations."""
    replay = stored.replay_row(reader, replay_id)
    if replay is None:
        raise LookupError(f"no replay {replay_id!r}")
    replay["names"] = _json(replay["names"])
    replay["statements"] = textwrap.dedent(replay["statements"] or "").strip() or None
    replay["plan_json"] = _json(replay["plan"])
    replay["plan_summary"] = plan_summary(replay["plan_json"])
    replay["tasks"] = stored.replay_task_rows(reader, replay_id)
    for task in replay["tasks"]:
        task["iterations"] = _json(task["iterations"])
        task["iterations_text"] = task_iterations(task["level"], task["iterations"])
        task["fraction"] = _task_progress(task["status"], task["progress"])
    replay.update(
        task_summary([(t["status"], t["progress"], t["estimate_seconds"]) for t in replay["tasks"]])
    )
    replay["runs"] = stored.replay_run_rows(reader, replay_id)
    for run in replay["runs"]:
        run["detail"] = _json(run["detail"])
    replay["propagations"] = [
        item for items in propagations(reader, replay_id).values() for item in items
    ]
    replay["live"] = replay["status"] in LIVE_STATUSES
    return replay


__all__ = [
    "FIDELITY_COLUMNS",
    "LIVE_STATUSES",
    "PROPAGATION_COLUMNS",
    "REPLAY_COLUMNS",
    "TASK_COLUMNS",
    "plan_summary",
    "propagations",
    "ranges",
    "replay_detail",
    "replays_list",
    "task_iterations",
    "task_summary",
]
