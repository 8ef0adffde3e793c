"""Learning from past replays: how far estimates were off, per level and per run, and how loaded
the machine is now, so the next plan's estimates correct for both."""

from __future__ import annotations

import json
import os
from typing import TYPE_CHECKING

from ..store import planning as reads

if TYPE_CHECKING:
    from ..store.lite import Database


CORRECTION_REPLAYS = 5  # the latest replays of a script whose tasks calibrate the next estimate
CORRECTION_BOUNDS = (1 / 3, 3.0)  # wider than the pace's bounds: a factor also replaces the pace


def correction_key(level: str, run_id: str, corrections: dict[str, float]) -> str | None:
    """The correction that applies to a task: the run's own at this level, else the level's."""
    for key in (f"{level}@{run_id}", level):
        if key in corrections:
            return key
    return None


def load_factor(cores: int) -> float:
    """Runnable processes per core over the last minute, at least 1: how much slower than on a
    quiet machine work runs now. A replay's learned correction is divided by the factor of its
    own time and multiplied by today's, so a correction learned on a loaded machine does not
    inflate every estimate on a quiet one (seen: 2.2x under on a loaded VM, then 32 s estimated
    for 2.6 s on a quiet one)."""
    try:
        return max(1.0, os.getloadavg()[0] / max(cores or os.cpu_count() or 1, 1))
    except OSError:
        return 1.0


def past_corrections(store: Database, script: str) -> dict[str, float]:
    """Medians of actual / raw estimate (at the recorded pace, see ``TaskPlan.raw_seconds``)
    over the tasks of the latest replays of ``script`` (tasks that ran once and succeeded; at
    least 2 per median), per level (``"inner"``) and per level and run (``"inner@<run id>"``):
    the part of the error that repeats. A level's factor holds the machine's speed now and what
    the replay itself adds; a run's holds also how loaded the machine was when that run was
    recorded (its timings are the estimate's basis), which differs from run to run. A factor
    replaces the pace (a proxy measured once per fork server) and corrections applied earlier.
    Bounded; {} without history."""
    try:
        replays = reads.latest_replay_plans(store, script, CORRECTION_REPLAYS)
    except Exception:
        return {}
    ratios: dict[str, list[float]] = {}
    for replay_id, plan_json in replays:
        try:
            doc = json.loads(plan_json or "{}")
            applied = doc.get("corrections") or {}
            load_then = max(float(doc.get("load") or 1.0), 1.0)
            raws = {
                int(t["task_id"]): float(t.get("raw_seconds") or 0.0)
                for r in doc.get("runs") or []
                for t in r.get("tasks") or []
            }
        except (ValueError, TypeError, KeyError, AttributeError):
            continue
        for task_id, level, run_id, estimate, actual in reads.measured_tasks(store, replay_id):
            raw = raws.get(int(task_id), 0.0)
            if not raw and estimate:  # a plan of an earlier version: undo its correction only
                key = correction_key(level, run_id, applied)
                raw = estimate / float(applied[key] if key else 1.0)
            if raw > 0 and actual:
                ratio = actual / raw / load_then
                ratios.setdefault(level, []).append(ratio)
                ratios.setdefault(f"{level}@{run_id}", []).append(ratio)
    low, high = CORRECTION_BOUNDS
    return {
        key: min(max(sorted(values)[len(values) // 2], low), high)
        for key, values in ratios.items()
        if len(values) >= 2
    }
