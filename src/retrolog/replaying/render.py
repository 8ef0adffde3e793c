"""Terminal rendering of plans, progress and reports for ``retrolog replay`` (rich)."""

from __future__ import annotations

import json
import sys
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from typing import Any

from rich.console import Console
from rich.progress import BarColumn, Progress, TextColumn, TimeElapsedColumn
from rich.table import Table

from .api import ReplayReport
from .plan import Plan

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


def show_plan(console: Console, plan: Plan) -> None:
    table = Table(title=f"replay plan {plan.replay_id}: {', '.join(plan.names)} in {plan.script}")
    for column in ("run", "version", "level", "iterations", "tasks", "estimate", "notes"):
        table.add_column(column)
    for run in plan.runs:
        notes = run.skipped or ""
        if run.propagated and not run.skipped:
            renames = run.propagated.get("renames") or {}
            notes = f"propagated (confidence {run.propagated.get('confidence', 0):.2f}"
            notes += f", renames {json.dumps(renames)})" if renames else ")"
        if run.reexecute_loops and not run.skipped:
            notes += f" re-executes {', '.join(run.reexecute_loops)} (state not checkpointed)"
        estimate = sum(t.estimate_seconds for t in run.tasks)
        table.add_row(
            run.run_id,
            (run.version or "-")[:10],
            run.level or "-",
            ranges(run.iterations) if run.tasks else "-",
            str(len(run.tasks)),
            f"{estimate:.1f}s" if run.tasks else "-",
            notes,
        )
    console.print(table)
    if plan.tasks:
        console.print(
            f"{len(plan.tasks)} task(s) on {plan.workers} worker(s): estimated {plan.estimate_seconds:.1f}s "
            f"(from recorded timings; checkpoints load at {plan.load_speed / 1e6:.0f} MB/s). "
            f"First task: {plan.tasks[0].basis}."
        )
        if plan.statements:
            console.print("statement(s): " + " | ".join(s.strip() for s in plan.statements))
    else:
        console.print("nothing to replay")


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


def render_report(console: Console, report: ReplayReport) -> None:
    table = Table(title=f"replay {report.replay_id}")
    for column in ("run", "level", "fidelity", "compared", "differ", "stored", "notes"):
        table.add_column(column)
    for run in report.runs:
        colour = _COLOURS.get(run.fidelity, "white")
        notes = run.detail.splitlines()[0] if run.detail else ""
        if run.fallbacks:
            notes += f" ({len(run.fallbacks)} fallback(s) to re-execution)"
        table.add_row(
            run.run_id,
            run.level or "-",
            f"[{colour}]{run.fidelity}[/]",
            str(run.compared),
            str(run.mismatches),
            str(run.stored),
            notes,
        )
    console.print(table)
    for run in report.runs:
        for example in run.examples[:3]:
            console.print(
                f"  {run.run_id} {example['name']} at {example['at']}: recorded {example['recorded']!r}, "
                f"replayed {example['replayed']!r}"
            )
    if report.actual_seconds is not None:
        console.print(
            f"estimated {report.estimate_seconds:.1f}s, took {report.actual_seconds:.1f}s; "
            f"{report.stored} new value(s) stored. Query them with retrolog df {' '.join(report.plan.names)}"
        )
