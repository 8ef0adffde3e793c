"""Reading the history: ``retrolog runs``, ``df``, ``sql`` and ``show``."""

from __future__ import annotations

import json
import sys
from typing import Annotated, Any

import typer

from .common import (
    AllOption,
    Format,
    FormatOption,
    ProjectOption,
    WhereOption,
    complete_names,
    complete_run_ids,
    recorded,
)
from .labels import print_labels
from .output import cell, emit


def runs_command(
    fmt: FormatOption = Format.table, where: WhereOption = None, project: ProjectOption = None
) -> None:
    """List runs: status, times, version, script and args."""
    from ..relational import open_store, runs
    from ..relational.describe import run_ids, unique_prefixes

    resolved = recorded(project)
    frame = runs(project=resolved, where=where)
    if fmt is Format.table:
        short = unique_prefixes(run_ids(open_store(resolved, recover=False)))
        frame["run_id"] = frame["run_id"].map(short)
        frame = frame.drop(
            columns=[
                c for c in ("argv", "host", "error", "git_head", "end_time", "notes") if c in frame
            ]
        )
        if "version" in frame:
            frame["version"] = frame["version"].map(lambda v: v[:10] if isinstance(v, str) else v)
        frame = _fit_runs(frame)
    emit(frame, fmt)


RUN_COLUMNS = ("run_id", "run_name", "status", "start_time", "version", "script")  # kept first
RUN_EXTRA_COLUMNS = ("duration", "git_branch", "git_dirty")  # after the args, dropped first


def _fit_runs(frame: Any) -> Any:
    """The runs table for the terminal's width: shorter times and durations, then as many columns
    as fit at their natural width (run facts first, args next, git facts last); the hidden ones
    are named on stderr. A table wider than the terminal folds every cell to a few characters."""
    import pandas as pd
    from rich.console import Console

    frame = frame.copy()
    if "start_time" in frame:
        frame["start_time"] = frame["start_time"].map(
            lambda t: t.strftime("%m-%d %H:%M") if isinstance(t, pd.Timestamp) else t
        )
    if "duration" in frame:
        frame["duration"] = frame["duration"].map(_duration)
    if "git_dirty" in frame:
        frame["git_dirty"] = frame["git_dirty"].map(lambda d: "dirty" if d else "")
    args = [c for c in frame.columns if c not in RUN_COLUMNS + RUN_EXTRA_COLUMNS]
    order = [c for c in (*RUN_COLUMNS, *args, *RUN_EXTRA_COLUMNS) if c in frame.columns]
    width = Console().width
    used = 1  # the table's left border
    shown: list[str] = []
    for column in order:
        cells = [cell(v) for v in frame[column].head(200)]
        natural = max([len(str(column)), *map(len, cells)]) + 3  # padding and the border
        if used + natural > width and shown:
            continue
        used += natural
        shown.append(column)
    hidden = [c for c in order if c not in shown]
    if hidden:
        typer.echo(
            f"(hidden for width: {', '.join(hidden)}; a wider terminal, or -f csv / -f json, "
            "shows them)",
            err=True,
        )
    return frame[shown]


def _duration(seconds: Any) -> str:
    """12.3 -> '12.3s', 754 -> '12m34s', 7260 -> '2h01m'."""
    try:
        value = float(seconds)
    except (TypeError, ValueError):
        return ""
    if value != value:
        return ""
    if value < 60:
        return f"{value:.1f}s"
    if value < 3600:
        return f"{int(value // 60)}m{int(value % 60):02d}s"
    return f"{int(value // 3600)}h{int(value % 3600 // 60):02d}m"


def df_command(
    names: Annotated[
        list[str] | None,
        typer.Argument(help="Logged names and args to show.", autocompletion=complete_names),
    ] = None,
    fmt: FormatOption = Format.table,
    where: WhereOption = None,
    all_rows: AllOption = False,
    project: ProjectOption = None,
) -> None:
    """One row per run and loop coordinate, one column per NAME (like retrolog.dataframe)."""
    from ..relational import dataframe, open_store
    from ..relational.describe import check_names, run_ids, unique_prefixes

    resolved = recorded(project)
    frame = dataframe(*(names or []), where=where, project=resolved)
    store = open_store(resolved, recover=False)
    unseen = [n for n in names or [] if n not in frame or bool(frame[n].isna().all())]
    if unseen:  # only then is it worth listing every name the store knows
        check_names(store, unseen)
    if fmt is Format.table:
        if "version" in frame:
            frame["version"] = frame["version"].map(lambda v: v[:10] if isinstance(v, str) else v)
        if "run_id" in frame and len(frame):
            frame["run_id"] = frame["run_id"].map(unique_prefixes(run_ids(store)))
    emit(frame, fmt, all_rows=all_rows)


def sql_command(
    statement: Annotated[str, typer.Argument(help="One read-only SELECT.")],
    fmt: FormatOption = Format.table,
    all_rows: AllOption = False,
    project: ProjectOption = None,
) -> None:
    """Run read-only SQL over the tables and views described in docs/data-model.md."""
    from ..relational import open_store, run_sql

    emit(run_sql(open_store(recorded(project)), statement), fmt, all_rows=all_rows)


def show_command(
    run_id: Annotated[
        str,
        typer.Argument(
            help="A run id (or a unique prefix of one).", autocompletion=complete_run_ids
        ),
    ],
    fmt: FormatOption = Format.table,
    project: ProjectOption = None,
    diff: Annotated[
        bool, typer.Option("--diff/--no-diff", help="Show the code diff against HEAD.")
    ] = True,
) -> None:
    """A run's facts, args, metrics summary, version and code diff against HEAD."""
    from ..relational import describe_run

    report = describe_run(run_id, project=recorded(project), with_diff=diff)
    if fmt is Format.json:
        sys.stdout.write(json.dumps(report, default=str, indent=2) + "\n")
        return
    if fmt is Format.csv:
        import pandas as pd

        sys.stdout.write(pd.DataFrame(report["metrics"]).to_csv(index=False))
        return
    from rich.console import Console
    from rich.syntax import Syntax
    from rich.table import Table

    console = Console()
    facts = Table(title=f"run {report['run_id']}", show_header=False)
    for key in (
        "name",
        "status",
        "script",
        "start_time",
        "end_time",
        "duration",
        "version",
        "git_head",
        "git_branch",
        "git_dirty",
        "host",
        "python",
        "argv",
        "error",
    ):
        facts.add_row(key, cell(report.get(key)))
    console.print(facts)
    print_labels(console, report)
    args = Table(title="args")
    args.add_column("name")
    args.add_column("value")
    for key, value in report["args"].items():
        args.add_row(key, cell(value))
    console.print(args)
    if report.get("data"):  # retrolog.data (docs/data-versions.md)
        data = Table(title="data")
        for column in ("name", "path", "kind", "hash", "files", "bytes", "dvc md5"):
            data.add_column(column)
        for d in report["data"]:
            data.add_row(
                d["name"], d["path"], d["kind"], d["short"], cell(d["files"]),
                cell(d["bytes"]), cell(d["dvc_md5"]),
            )  # fmt: skip
        console.print(data)
    metrics = Table(title="metrics")
    for column in ("name", "count", "first", "last", "min", "max"):
        metrics.add_column(column)
    for row in report["metrics"]:
        metrics.add_row(*[cell(row[c]) for c in ("name", "count", "first", "last", "min", "max")])
    console.print(metrics)
    if diff:
        text = report.get("diff")
        if text:
            console.print(Syntax(text, "diff", theme="ansi_dark"))
        else:
            console.print(report.get("diff_note") or "(code identical to HEAD)")
