"""Reading replay outputs: map coordinates back to the run, check fidelity, pick new values."""

from __future__ import annotations

import math
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from ..record.journal import read_events
from ..record.values import from_cell
from ..store.lite import Database
from ..store.replays import recorded_cells
from .planner import RunData

Cell = tuple[str, float | None, str | None]


@dataclass
class Fidelity:
    """How a run's replay compared with what the run recorded."""

    compared: int = 0
    mismatches: int = 0
    max_abs_diff: float = 0.0
    examples: list[dict[str, Any]] = field(default_factory=list)

    @property
    def verdict(self) -> str:
        if self.mismatches:
            return "diverged"
        return "reproduced" if self.compared else "unchecked"


@dataclass
class TaskOutput:
    """What one task logged, keyed by the run's own loop coordinates."""

    rows: list[tuple[tuple[tuple[str, int], ...], str, Cell]]  # (path, name, cell), in log order
    fallbacks: list[str]
    restored: int


def read_output(path: Path) -> TaskOutput:
    """Parse a task's output file (journal events written by the replay-mode runtime)."""
    paths: dict[int, tuple[tuple[str, int], ...]] = {0: ()}
    rows: list[tuple[tuple[tuple[str, int], ...], str, Cell]] = []
    fallbacks: list[str] = []
    restored = 0
    events = read_events(path) if path.exists() else []
    for event in events:
        kind = event[1]
        if kind == "ctx":
            _, _, ctx_id, parent, _depth, name, iteration, *_ = event
            paths[ctx_id] = (*paths.get(parent, ()), (name, iteration))
        elif kind == "log":
            _, _, ctx_id, name, vtype, num, text = event
            rows.append((paths.get(ctx_id, ()), name, (vtype, num, text)))
        elif kind == "replay":
            fallbacks.extend(event[2].get("fallbacks", []))
        elif kind == "restored":
            restored += 1
    return TaskOutput(rows, fallbacks, restored)


def same_value(recorded: Any, replayed: Any, tolerance: float) -> tuple[bool, float]:
    """Exact for ints/strings/containers, relative ``tolerance`` for floats; (equal, abs diff)."""
    if isinstance(recorded, float) or isinstance(replayed, float):
        try:
            a, b = float(recorded), float(replayed)
        except (TypeError, ValueError):
            return False, math.inf
        if (math.isnan(a) and math.isnan(b)) or a == b:  # inf - inf is NaN, not 0
            return True, 0.0
        diff = abs(a - b)
        return (diff <= tolerance * max(abs(a), abs(b)) or diff == 0.0), diff
    return recorded == replayed, 0.0 if recorded == replayed else math.inf


def compare_and_pick(
    store: Database,
    data: RunData,
    outputs: Sequence[TaskOutput],
    new_names: set[str],
    keep: Any,
    tolerance: float,
    compare_all: bool = True,
    compared: set[str] | None = None,
) -> tuple[Fidelity, list[tuple[int, str, Cell]]]:
    """Fidelity of the re-logged recorded values, and the new values to store (deduplicated).

    ``keep(path) -> bool`` says whether a new value at these coordinates was selected; without
    ``compare_all`` only recorded values there are compared (a lazy replay's other iterations
    ran on state it did not restore); ``compared``: only these names are (a lazy replay that
    skips the selected iterations' own nested loops: what the body logs after them is stale).
    """
    path_to_ctx = {path: ctx for ctx, path in data.paths.items()}
    path_to_ctx[()] = 0
    recorded = _recorded(
        store, data.key, {name for o in outputs for _p, name, _c in o.rows} - new_names
    )
    fidelity = Fidelity()
    new_rows: dict[tuple[int, str, int], Cell] = {}
    for output in outputs:
        seen: dict[tuple[int, str], int] = {}
        for path, name, cell in output.rows:
            ctx = path_to_ctx.get(path)
            if ctx is None:
                continue  # coordinates the recorded run never reached
            occurrence = seen.get((ctx, name), 0)
            seen[(ctx, name)] = occurrence + 1
            if name in new_names:
                if keep(path):
                    new_rows[(ctx, name, occurrence)] = cell
                continue
            if not compare_all and not keep(path):
                continue
            if compared is not None and name not in compared:
                continue
            values = recorded.get((ctx, name))
            if values is None or occurrence >= len(values):
                continue
            ok, diff = same_value(values[occurrence], from_cell(*cell), tolerance)
            fidelity.compared += 1
            if not ok:
                fidelity.mismatches += 1
                fidelity.max_abs_diff = max(fidelity.max_abs_diff, diff)
                if len(fidelity.examples) < 5:
                    fidelity.examples.append(
                        {
                            "name": name,
                            "at": dict(path),
                            "recorded": values[occurrence],
                            "replayed": from_cell(*cell),
                        }
                    )
    return fidelity, [(ctx, name, cell) for (ctx, name, _o), cell in new_rows.items()]


def _recorded(
    store: Database, run_key: int, names: Iterable[str]
) -> dict[tuple[int, str], list[Any]]:
    out: dict[tuple[int, str], list[Any]] = {}
    for ctx_id, name, t, n, x in recorded_cells(store, run_key, names):
        out.setdefault((ctx_id, name), []).append(from_cell(t, n, x))
    return out
