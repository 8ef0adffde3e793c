"""Terminal rendering of plans, progress and reports for ``retrolog replay`` (rich)."""

from __future__ import annotations

import json
import sys
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from typing import Any

from rich.console import Console
from rich.markup import escape
from rich.progress import BarColumn, Progress, TextColumn, TimeElapsedColumn
from rich.table import Table
from rich.text import Text

from .api import ReplayReport
from .plan import Plan, RunPlan

_COLOURS = {
    "reproduced": "green",
    "diverged": "red",
    "failed": "red",
    "unchecked": "yellow",
    "not_replayable": "yellow",
    "not_selected": "dim",
}


def ranges(values: list[int]) -> str:
    """[0, 1, 2, 5, 7, 8] -> '0-2, 5, 7-8'."""
    if not values:
        return "-"
    out, start, prev = [], values[0], values[0]
    for v in [*values[1:], None]:
        if v is not None and v == prev + 1:
            prev = v
            continue
        out.append(f"{start}-{prev}" if prev != start else f"{start}")
        if v is not None:
            start = prev = v
    return ", ".join(out)


def run_notes(run: RunPlan) -> str:
    """A run's plan notes: why it is skipped, or where the statements run, how they were placed
    (each placement's confidence and warnings) and which nested loops re-execute."""
    if run.skipped:
        return run.skipped
    notes: list[str] = []
    if run.also:
        notes.append(f"also runs in the {' and '.join(run.also)}")
    if run.why:
        notes.append(run.why)
    report = run.propagated
    if report:
        for placement in report.get("placements") or []:
            where = f"{placement.get('file') or run.script}:{placement.get('line')}"
            note = f"placed at {where} (confidence {float(placement.get('confidence') or 0):.2f})"
            warnings = placement.get("warnings") or []
            notes.append(note + ("; " + "; ".join(warnings) if warnings else ""))
        renames = report.get("renames") or {}
        if renames:
            notes.append(f"renames {json.dumps(renames)}")
        for warning in report.get("warnings") or []:
            notes.append(f"warning: {warning}")
        if run.low_confidence:
            notes.append("LOW CONFIDENCE placement accepted (--accept-low-confidence)")
    if run.reexecute_loops:
        notes.append(f"re-executes {', '.join(run.reexecute_loops)} (state not checkpointed)")
    return "; ".join(notes)


def show_plan(console: Console, plan: Plan) -> None:
    table = Table(
        title=escape(f"replay plan {plan.replay_id}: {', '.join(plan.names)} in {plan.script}")
    )
    for column in ("run", "version", "level", "iterations", "tasks", "estimate"):
        table.add_column(column, no_wrap=column != "iterations")
    table.add_column("notes", overflow="fold", ratio=1)
    for run in plan.runs:
        estimate = sum(t.estimate_seconds for t in run.tasks)
        table.add_row(
            run.run_id,
            (run.version or "-")[:10],
            run.level or "-",
            ranges(run.iterations) if run.tasks else "-",
            str(len(run.tasks)),
            f"{estimate:.1f}s" if run.tasks else "-",
            Text(run_notes(run)),
        )
    console.print(table)
    if plan.tasks:
        console.print(
            Text(
                f"{len(plan.tasks)} task(s) on {plan.workers} worker(s): estimated "
                f"{plan.estimate_seconds:.1f}s (from recorded timings; checkpoints load at "
                f"{plan.load_speed / 1e6:.0f} MB/s). First task: {plan.tasks[0].basis}."
            )
        )
    else:
        console.print("nothing to replay")
    if plan.statements:  # the whole text: rich markup would eat a list comprehension's brackets
        console.print(Text("statement(s): " + " | ".join(s.strip() for s in plan.statements)))


def confirm_plan(console: Console, plan: Plan, ask: bool) -> bool:
    show_plan(console, plan)
    if not ask or not plan.tasks:
        return True
    if not sys.stdin.isatty():
        console.print("[yellow]not a terminal: pass --yes to run this plan[/]")
        return False
    import typer

    return bool(typer.confirm("Run this replay?", default=True))


@contextmanager
def progress_display(console: Console) -> Iterator[Callable[[str, int, dict[str, Any]], None]]:
    """An ``on_event`` callback drawing one bar per task; the display starts with the first task."""
    progress = Progress(
        TextColumn("task {task.fields[task_id]}"),
        BarColumn(),
        TextColumn("{task.fields[status]}"),
        TimeElapsedColumn(),
        console=console,
        transient=False,
    )
    bars: dict[int, Any] = {}
    started = False

    def on_event(kind: str, task_id: int, info: dict[str, Any]) -> None:
        nonlocal started
        if not started:
            progress.start()
            started = True
        if task_id not in bars:
            bars[task_id] = progress.add_task("", total=1.0, task_id=task_id, status="running")
        bar = bars[task_id]
        if kind == "progress":
            try:
                state = json.loads(str(info["progress"]))
                if state.get("total"):
                    progress.update(
                        bar,
                        completed=(state["iteration"] + 1) / state["total"],
                        status=f"iteration {state['iteration']}",
                    )
            except (ValueError, KeyError, TypeError):
                pass
        elif kind == "retry":
            progress.update(bar, status=f"[yellow]retrying (exit {info.get('returncode')})")
        elif kind == "finished":
            ok = info.get("returncode") == 0
            progress.update(bar, completed=1.0, status="[green]done" if ok else "[red]failed")

    try:
        yield on_event
    finally:
        if started:
            progress.stop()


def _reason(detail: str) -> str:
    """A run's detail for the table: a failed task's first line and the error its log ends with
    (the last non-empty line of the traceback), whole; other details as they are, joined."""
    lines = [line.strip() for line in (detail or "").splitlines() if line.strip()]
    if not lines:
        return ""
    if "failed after" in lines[0] and len(lines) > 1:
        return f"{lines[0]} {lines[-1]}"
    return " ".join(lines) if len(lines) <= 3 else f"{lines[0]} ... {lines[-1]}"


def render_report(console: Console, report: ReplayReport) -> None:
    table = Table(title=f"replay {report.replay_id}")
    for column in ("run", "level", "fidelity", "compared", "differ", "stored"):
        table.add_column(column, no_wrap=True)
    table.add_column("notes", overflow="fold", ratio=1)  # a failure's reason, whole, wrapped
    low = {r.run_id for r in report.plan.runs if r.low_confidence}
    for run in report.runs:
        colour = _COLOURS.get(run.fidelity, "white")
        notes = _reason(run.detail)
        if run.fallbacks:
            notes += f" ({len(run.fallbacks)} fallback(s) to re-execution)"
        if run.run_id in low:
            notes = ("low-confidence placement accepted; " + notes).strip()
        table.add_row(
            run.run_id,
            run.level or "-",
            Text(run.fidelity, style=colour),
            str(run.compared),
            str(run.mismatches),
            str(run.stored),
            Text(notes.strip()),
        )
    console.print(table)
    for run in report.runs:
        for example in run.examples[:3]:
            console.print(
                Text(
                    f"  {run.run_id} {example['name']} at {example['at']}: recorded "
                    f"{example['recorded']!r}, replayed {example['replayed']!r}"
                )
            )
    if report.actual_seconds is not None:
        console.print(
            f"estimated {report.estimate_seconds:.1f}s, took {report.actual_seconds:.1f}s; "
            f"{report.stored} new value(s) stored. Query them with retrolog df {' '.join(report.plan.names)}"
        )
