"""The ``retrolog`` command: a thin shell over the engine (typer + rich).

``retrolog propagate`` never reaches this module: ``retrolog._entry`` routes it before typer is
imported, so it starts fast.
"""

from __future__ import annotations

import json
import os
import sys
from enum import Enum
from pathlib import Path
from typing import Annotated, Any

import typer

from . import __version__
from .errors import NotFoundError, UsageError
from .settings import DB

app = typer.Typer(
    name="retrolog",
    help="Multiversion hindsight logging for ML training: record, query, replay.",
    no_args_is_help=True,
    add_completion=True,
    pretty_exceptions_enable=False,
)


class Format(str, Enum):
    table = "table"
    csv = "csv"
    json = "json"


def _existing_dir(ctx: typer.Context, value: Path | None) -> Path | None:
    """``-C DIR`` must name an existing directory: a typo must not create a store somewhere."""
    if value is not None and not ctx.resilient_parsing and not value.is_dir():
        raise NotFoundError(f"no such project directory: {value}")
    return value


def _project_of(ctx: typer.Context) -> Any:
    """The project a command line names (for completion), or None."""
    from .project import resolve_project

    value = ctx.params.get("project")
    if value is not None and not Path(value).is_dir():
        return None
    project = resolve_project(value)
    if not _has_store(project):
        return None
    return project


def _complete_run_ids(ctx: typer.Context, incomplete: str) -> list[str]:
    """Run ids for shell completion; completion must never print an error into a shell."""
    try:
        from .relational import open_store
        from .relational.describe import run_ids

        project = _project_of(ctx)
        store = open_store(project, recover=False) if project is not None else None
        ids = run_ids(store) if store is not None else []
        from .relational.labels import run_names  # names complete too (retrolog name)

        named = run_names(store) if store is not None else []
    except Exception:  # noqa: BLE001 - no completions rather than a traceback in the shell
        return []
    return [i for i in ids if i.startswith(incomplete.upper())] + [
        n for n in named if n.startswith(incomplete)
    ]


def _complete_names(ctx: typer.Context, incomplete: str) -> list[str]:
    """Logged names and args for shell completion."""
    try:
        from .relational import open_store
        from .relational.describe import known_names

        project = _project_of(ctx)
        names = known_names(open_store(project, recover=False)) if project is not None else []
    except Exception:  # noqa: BLE001 - no completions rather than a traceback in the shell
        return []
    return [n for n in names if n.startswith(incomplete)]


def _has_store(project: Any) -> bool:
    """False for a project whose default SQLite store was never created (no run recorded)."""
    prefix = "sqlite:///"
    if not project.db_url.startswith(prefix) or DB.get():
        return True
    return Path(project.db_url[len(prefix) :]).exists()


def _recorded(project: Path | None) -> Any:
    """The project of ``-C`` (or the cwd), refusing one where nothing was ever recorded rather
    than creating an empty store there."""
    from .project import resolve_project

    resolved = resolve_project(project)
    if not _has_store(resolved):
        raise NotFoundError(
            f"no runs recorded in {resolved.root} yet (no {resolved.data_dir.name}/ store); "
            "record one by running a script that calls retrolog"
        )
    return resolved


FormatOption = Annotated[Format, typer.Option("--format", "-f", help="Output format.")]
ProjectOption = Annotated[
    Path | None,
    typer.Option(
        "--project",
        "-C",
        help="Project directory (default: the current one).",
        callback=_existing_dir,
    ),
]
AllOption = Annotated[
    bool,
    typer.Option(
        "--all", "-a", help="Every row in table format (default on a terminal: head and tail)."
    ),
]
WhereOption = Annotated[
    str | None, typer.Option("--where", "-w", help="SQL condition over the result's columns.")
]


def _version(value: bool) -> None:
    if value:
        typer.echo(f"retrolog {__version__}")
        raise typer.Exit()


@app.callback()
def _root(
    version: Annotated[
        bool,
        typer.Option("--version", callback=_version, is_eager=True, help="Print the version."),
    ] = False,
) -> None:
    """Multiversion hindsight logging for ML training: record, query, replay."""


def _fail(message: str, code: int = 2) -> None:
    """End the command with ``retrolog: message`` and ``code`` (the entry point prints it)."""
    error = UsageError(message)
    error.exit_code = code
    raise error


HEAD_ROWS = 20  # rows shown at each end of a long table on a terminal
RICH_ROWS = 200  # above this, tables are printed as plain aligned text (rich is not linear)


def _emit(frame: Any, fmt: Format, title: str | None = None, all_rows: bool = False) -> None:
    """Print a DataFrame as a table, CSV or JSON records.

    A table on a terminal shows the first and last ``HEAD_ROWS`` rows and the count unless
    ``all_rows``; piped, or in a file format, every row is written. Cost is linear in the rows.
    """
    if fmt is Format.csv:
        sys.stdout.write(frame.to_csv(index=False))
        return
    if fmt is Format.json:
        sys.stdout.write(
            frame.to_json(orient="records", date_format="iso", default_handler=str) + "\n"
        )
        return
    total = len(frame)
    clipped = not all_rows and sys.stdout.isatty() and total > 2 * HEAD_ROWS + 1
    columns = [_column_text(frame[c]) for c in frame.columns] if len(frame.columns) else []
    if clipped:
        columns = [[*col[:HEAD_ROWS], "…", *col[-HEAD_ROWS:]] for col in columns]
    rows = len(columns[0]) if columns else 0
    if rows <= RICH_ROWS:
        from rich.console import Console
        from rich.table import Table

        table = Table(title=title, show_lines=False)
        for column in frame.columns:
            table.add_column(str(column), overflow="fold")
        for row in zip(*columns, strict=True):
            table.add_row(*row)
        Console().print(table)
    else:
        _plain_table(frame, columns)
    if frame.empty:
        typer.echo("(no rows)", err=True)
    elif clipped:
        typer.echo(
            f"({total:,} rows; showing the first and last {HEAD_ROWS}: --all for every row, "
            "-f csv or -f json for a file)",
            err=True,
        )


def _plain_table(frame: Any, columns: list[list[str]]) -> None:
    """Every row as aligned text: numbers right-aligned, one pass per column."""
    import pandas as pd

    out = []
    for name, texts in zip(frame.columns, columns, strict=True):
        width = max(len(str(name)), max(map(len, texts), default=0))
        right = pd.api.types.is_numeric_dtype(frame[name])
        pad = str.rjust if right else str.ljust
        out.append([pad(str(name), width), "-" * width, *(pad(t, width) for t in texts)])
    write = sys.stdout.write
    lines = map("  ".join, zip(*out, strict=True))
    while True:
        chunk = [line.rstrip() for _, line in zip(range(10_000), lines, strict=False)]
        if not chunk:
            break
        write("\n".join(chunk) + "\n")


def _column_text(series: Any) -> list[str]:
    """One column's cells as text, vectorised per dtype (``_cell`` for the odd ones)."""
    import numpy as np
    import pandas as pd

    if pd.api.types.is_datetime64_any_dtype(series):
        return series.dt.strftime("%Y-%m-%d %H:%M:%S").fillna("").tolist()
    if pd.api.types.is_float_dtype(series) and series.dtype != object:
        values = series.to_numpy(dtype="float64", na_value=np.nan).tolist()
        return ["" if v != v else f"{v:.6g}" for v in values]
    if pd.api.types.is_integer_dtype(series) and not series.isna().any():
        return series.astype("int64").astype(str).tolist()
    return [_cell(v) for v in series.tolist()]


def _cell(value: Any) -> str:
    import pandas as pd

    if type(value) is str:
        return value
    if value is None or (not isinstance(value, (list, dict, str)) and pd.isna(value)):
        return ""
    if isinstance(value, float):
        return f"{value:.6g}"
    if isinstance(value, pd.Timestamp):
        return value.strftime("%Y-%m-%d %H:%M:%S")
    return str(value)


@app.command("runs")
def runs_command(
    fmt: FormatOption = Format.table, where: WhereOption = None, project: ProjectOption = None
) -> None:
    """List runs: status, times, version, script and args."""
    from .relational import open_store, runs
    from .relational.describe import run_ids, unique_prefixes

    resolved = _recorded(project)
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
    _emit(frame, fmt)


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
        cells = [_cell(v) for v in frame[column].head(200)]
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


@app.command("df")
def df_command(
    names: Annotated[
        list[str] | None,
        typer.Argument(help="Logged names and args to show.", autocompletion=_complete_names),
    ] = None,
    fmt: FormatOption = Format.table,
    where: WhereOption = None,
    all_rows: AllOption = False,
    project: ProjectOption = None,
) -> None:
    """One row per run and loop coordinate, one column per NAME (like retrolog.dataframe)."""
    from .relational import dataframe, open_store
    from .relational.describe import check_names, run_ids, unique_prefixes

    resolved = _recorded(project)
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
    _emit(frame, fmt, all_rows=all_rows)


@app.command("sql")
def sql_command(
    statement: Annotated[str, typer.Argument(help="One read-only SELECT.")],
    fmt: FormatOption = Format.table,
    all_rows: AllOption = False,
    project: ProjectOption = None,
) -> None:
    """Run read-only SQL over the tables and views described in docs/data-model.md."""
    from .relational import open_store, run_sql

    _emit(run_sql(open_store(_recorded(project)), statement), fmt, all_rows=all_rows)


@app.command("show")
def show_command(
    run_id: Annotated[
        str,
        typer.Argument(
            help="A run id (or a unique prefix of one).", autocompletion=_complete_run_ids
        ),
    ],
    fmt: FormatOption = Format.table,
    project: ProjectOption = None,
    diff: Annotated[
        bool, typer.Option("--diff/--no-diff", help="Show the code diff against HEAD.")
    ] = True,
) -> None:
    """A run's facts, args, metrics summary, version and code diff against HEAD."""
    from .relational import describe_run

    report = describe_run(run_id, project=_recorded(project), with_diff=diff)
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
        facts.add_row(key, _cell(report.get(key)))
    console.print(facts)
    from .cli_labels import print_labels

    print_labels(console, report)
    args = Table(title="args")
    args.add_column("name")
    args.add_column("value")
    for key, value in report["args"].items():
        args.add_row(key, _cell(value))
    console.print(args)
    if report.get("data"):  # retrolog.data (docs/data-versions.md)
        data = Table(title="data")
        for column in ("name", "path", "kind", "hash", "files", "bytes", "dvc md5"):
            data.add_column(column)
        for d in report["data"]:
            data.add_row(
                d["name"], d["path"], d["kind"], d["short"], _cell(d["files"]),
                _cell(d["bytes"]), _cell(d["dvc_md5"]),
            )  # fmt: skip
        console.print(data)
    metrics = Table(title="metrics")
    for column in ("name", "count", "first", "last", "min", "max"):
        metrics.add_column(column)
    for row in report["metrics"]:
        metrics.add_row(*[_cell(row[c]) for c in ("name", "count", "first", "last", "min", "max")])
    console.print(metrics)
    if diff:
        text = report.get("diff")
        if text:
            console.print(Syntax(text, "diff", theme="ansi_dark"))
        else:
            console.print(report.get("diff_note") or "(code identical to HEAD)")


@app.command("replay")
def replay_command(
    names: Annotated[
        list[str],
        typer.Argument(help="Names logged by the new statements (in the script or its modules)."),
    ],
    where: WhereOption = None,
    workers: Annotated[
        int | None, typer.Option("--workers", "-j", help="Parallel tasks (default: cores).")
    ] = None,
    yes: Annotated[
        bool, typer.Option("--yes", "-y", help="Run without asking to confirm the plan.")
    ] = False,
    dry_run: Annotated[bool, typer.Option("--dry-run", help="Show the plan and stop.")] = False,
    script: Annotated[
        str | None, typer.Option("--script", help="The script, when several are recorded.")
    ] = None,
    accept_divergence: Annotated[
        bool,
        typer.Option("--accept-divergence", help="Store new values even where replay diverged."),
    ] = False,
    tolerance: Annotated[
        float, typer.Option("--tolerance", help="Relative tolerance for float fidelity.")
    ] = 1e-6,
    force: Annotated[
        bool,
        typer.Option("--force", help="Recompute runs an earlier replay already filled in."),
    ] = False,
    accept_low_confidence: Annotated[
        bool,
        typer.Option(
            "--accept-low-confidence",
            help="Replay versions where the statement's placement has a low confidence.",
        ),
    ] = False,
    allow_changed_data: Annotated[
        bool,
        typer.Option(
            "--allow-changed-data",
            help="Replay runs whose recorded data (retrolog.data) changed or is missing.",
        ),
    ] = False,
    executor: Annotated[
        str,
        typer.Option(
            "--executor",
            help="Where tasks run: fork (default: forks of a warm server), process, ray, slurm.",
        ),
    ] = "fork",
    address: Annotated[
        str | None,
        typer.Option("--address", help="Ray: the cluster's address (default: a local Ray)."),
    ] = None,
    partition: Annotated[
        str | None, typer.Option("--partition", help="Slurm: the partition.")
    ] = None,
    time_min: Annotated[
        int | None, typer.Option("--time", help="Slurm: minutes a task may run (default 60).")
    ] = None,
    cpus_per_task: Annotated[
        int | None, typer.Option("--cpus-per-task", help="Slurm: CPUs per task (default 1).")
    ] = None,
    mem: Annotated[
        str | None, typer.Option("--mem", help="Slurm: memory per task, e.g. 4G or 500M.")
    ] = None,
    cluster: Annotated[
        str | None,
        typer.Option(
            "--cluster", help="Slurm: submitit's cluster (slurm, local); default: detected."
        ),
    ] = None,
    project: ProjectOption = None,
) -> None:
    """Fill in values of new log statements for past runs, replaying only the work they need."""
    from rich.console import Console

    from .replaying import ReplayError, replay
    from .replaying.plan import NothingToReplay
    from .replaying.render import confirm_plan, progress_display, render_report, show_plan

    console = Console(stderr=True)
    options: dict[str, Any] = {
        "where": where,
        "workers": workers,
        "project": project,
        "script": script,
        "force": force,
        "accept_low_confidence": accept_low_confidence,
        "allow_changed_data": allow_changed_data,
        "executor": executor,
        "executor_options": {
            "address": address,
            "partition": partition,
            "time_min": time_min,
            "cpus_per_task": cpus_per_task,
            "mem_gb": _memory_gb(mem) if mem else None,
            "cluster": cluster,
        },
    }
    if dry_run:
        try:
            report = replay(names, dry_run=True, **options)
        except NothingToReplay as exc:
            show_plan(Console(), exc.plan)
            _nothing_to_replay(exc)
        except ReplayError as exc:
            _fail(str(exc), exc.exit_code)
        show_plan(Console(), report.plan)
        return
    try:
        with progress_display(console) as on_event:
            report = replay(
                names,
                confirm=lambda plan: confirm_plan(console, plan, ask=not yes),
                on_event=on_event,
                tolerance=tolerance,
                accept_divergence=accept_divergence,
                **options,
            )
    except NothingToReplay as exc:
        _nothing_to_replay(exc)
    except ReplayError as exc:
        _fail(str(exc), exc.exit_code)
    if not report.executed:
        raise typer.Exit(1)  # declined at the confirmation
    render_report(Console(), report)
    if report.failed or report.diverged:
        raise typer.Exit(1)


def _memory_gb(text: str) -> float:
    """``--mem``: 4G, 4GB, 500M, or a number of gigabytes; bad input is a one-line error."""
    units = {"T": 1024.0, "G": 1.0, "M": 1 / 1024, "K": 1 / 1024**2}
    value = text.strip().upper().removesuffix("B")
    scale = units.get(value[-1:])
    try:
        return float(value[:-1] if scale else value) * (scale or 1.0)
    except ValueError:
        _fail(f"--mem {text!r}: expected a size such as 4G or 500M", 2)
        raise


def _nothing_to_replay(error: Any) -> None:
    """No task planned: one line per run and why on stderr, then the error's exit code."""
    lines = str(error).splitlines()
    for line in lines[1:]:
        typer.echo(f"retrolog: {line.strip()}", err=True)
    _fail(f"nothing to replay ({len(lines) - 1} run(s) skipped, reasons above)", error.exit_code)


@app.command("ui")
def ui_command(
    port: Annotated[
        int | None,
        typer.Option("--port", "-p", min=0, max=65535, help="Port (default: a free one)."),
    ] = None,
    host: Annotated[
        str,
        typer.Option("--host", help="Interface to bind; anything but loopback exposes your runs."),
    ] = "127.0.0.1",
    open_browser: Annotated[bool, typer.Option("--open", help="Open the UI in a browser.")] = False,
    project: ProjectOption = None,
) -> None:
    """Serve the local web UI over this project's runs, metrics, versions and replays."""
    import errno
    import socket

    from .ui import serve

    try:
        serve(project=project, host=host, port=port, open_browser=open_browser)
    except OSError as exc:  # only what binding the address can say about the user's choice
        bad_address = (errno.EADDRINUSE, errno.EADDRNOTAVAIL, errno.EACCES)
        if not isinstance(exc, socket.gaierror) and exc.errno not in bad_address:
            raise
        where = f"{host}:{port}" if port else host
        raise UsageError(f"cannot serve on {where}: {exc.strerror or exc}") from None


@app.command("du")
def du_command(fmt: FormatOption = Format.table, project: ProjectOption = None) -> None:
    """Checkpoint space per run (shared blobs count in each run) and the unique total."""
    import pandas as pd

    from .maintenance import disk_usage

    rows, total = disk_usage(_recorded(project))
    frame = pd.DataFrame(
        [r.__dict__ for r in rows], columns=["run_id", "status", "checkpoints", "bytes"]
    )
    _emit(frame, fmt)
    if fmt is Format.table:
        typer.echo(f"total unique checkpoint bytes: {total:,}", err=True)


@app.command("rm")
def rm_command(
    run_ids: Annotated[
        list[str],
        typer.Argument(
            help="Run ids (or unique prefixes) to delete.", autocompletion=_complete_run_ids
        ),
    ],
    yes: Annotated[bool, typer.Option("--yes", "-y", help="Do not ask for confirmation.")] = False,
    project: ProjectOption = None,
) -> None:
    """Delete runs: their rows, replayed values and snapshot refs (then `retrolog gc` frees space)."""
    from .maintenance import delete_runs

    resolved = _recorded(project)
    if not yes and not typer.confirm(
        f"Delete {len(run_ids)} run(s) and all their data?", default=False
    ):
        raise typer.Exit(1)
    deleted = delete_runs(run_ids, resolved)
    typer.echo(f"deleted {len(deleted)} run(s); run `retrolog gc` to free their checkpoint space")
    from .maintenance import shared_ref_note

    if note := shared_ref_note(resolved, deleted):  # refs other clones may still need
        typer.echo(note, err=True)


@app.command("gc")
def gc_command(
    dry_run: Annotated[
        bool, typer.Option("--dry-run", help="Only report what would be removed.")
    ] = False,
    project: ProjectOption = None,
) -> None:
    """Remove checkpoint blobs that no remaining run references."""
    from .maintenance import collect_garbage

    blobs, freed = collect_garbage(_recorded(project), dry_run=dry_run)
    verb = "would remove" if dry_run else "removed"
    typer.echo(f"{verb} {blobs} blob(s), {freed:,} bytes")
    from .maintenance import kept_refs_note

    if note := kept_refs_note(project):  # gc never deletes refs another clone may need
        typer.echo(note, err=True)


RemoteArgument = Annotated[
    str | None, typer.Argument(help="The git remote (default: origin).", show_default=False)
]


@app.command("push")
def push_command(remote: RemoteArgument = None, project: ProjectOption = None) -> None:
    """Push the code versions of recorded runs (hidden refs refs/retrolog/*) to a git remote."""
    from .project import resolve_project
    from .versions import push

    transfer = push(resolve_project(project).root, remote)
    typer.echo(transfer.summary(f"pushed to {transfer.remote}:"))
    if transfer.rejected:
        raise typer.Exit(1)


@app.command("pull")
def pull_command(remote: RemoteArgument = None, project: ProjectOption = None) -> None:
    """Fetch the code versions of runs recorded in other clones from a git remote."""
    from .project import resolve_project
    from .versions import pull

    transfer = pull(resolve_project(project).root, remote)
    typer.echo(transfer.summary(f"pulled from {transfer.remote}:"))
    if transfer.rejected:
        raise typer.Exit(1)


RunsOption = Annotated[
    list[str] | None,
    typer.Option(
        "--runs",
        "-r",
        help="Run ids or prefixes (repeat the option; default: every run).",
        autocompletion=_complete_run_ids,
    ),
]


@app.command("export")
def export_command(
    out_dir: Annotated[
        Path, typer.Argument(help="Directory for the Parquet files (or the MLflow store).")
    ],
    runs: RunsOption = None,
    where: WhereOption = None,
    mlflow: Annotated[
        bool,
        typer.Option(
            "--mlflow", help="Write an MLflow tracking store (a directory, or a .db file) instead."
        ),
    ] = False,
    project: ProjectOption = None,
) -> None:
    """Export runs, args, metrics with loop coordinates and provenance (docs/export.md)."""
    from .exchange import export_mlflow, export_parquet

    resolved = _recorded(project)
    write = export_mlflow if mlflow else export_parquet
    result = write(resolved, out_dir, run_ids=runs, where=where)
    for line in result.lines():
        typer.echo(line)


@app.command("import")
def import_command(
    source: Annotated[
        str,
        typer.Argument(
            help="A retrolog export, an MLflow tracking directory/database/URI, a directory of "
            "TensorBoard event files or of W&B offline runs."
        ),
    ],
    kind: Annotated[
        str | None,
        typer.Option("--from", help="retrolog, mlflow, tensorboard or wandb (default: detected)."),
    ] = None,
    project: ProjectOption = None,
) -> None:
    """Import another history as runs marked `imported` (queryable, never replayed)."""
    from .exchange import import_history
    from .project import resolve_project

    result = import_history(resolve_project(project), source, kind)
    for line in result.lines():
        typer.echo(line)


@app.command("doctor")
def doctor_command(
    repair: Annotated[
        bool,
        typer.Option(
            "--repair",
            help="Rebuild what can be (recover a damaged SQLite file into a new one, keeping the "
            "old; store journals of ended runs) and report what was lost.",
        ),
    ] = False,
    quick: Annotated[
        bool, typer.Option("--quick", help="Do not re-hash every checkpoint object.")
    ] = False,
    project: ProjectOption = None,
) -> None:
    """Check the store: integrity, schema, journals, code versions, checkpoints, value digests."""
    from .doctor import check
    from .doctor import repair as repair_store
    from .project import resolve_project

    proj = resolve_project(project)
    report = repair_store(proj) if repair else check(proj, verify_objects=not quick)
    for line in report.lines():
        typer.echo(line)
    if report.problems:
        raise typer.Exit(1)


def main(argv: list[str] | None = None) -> None:
    """Run the typer app (the console script enters through ``retrolog._entry``)."""
    from .store.limits import set_default_surface

    set_default_surface("cli")  # user queries get the command line's time limit
    _run(list(sys.argv[1:] if argv is None else argv))


def _run(args: list[str]) -> None:
    """The app without click's own error printing: a click usage error becomes a UsageError,
    so ``retrolog._entry`` prints every error the same way (one line, its exit code)."""
    try:
        code = app(args=args, prog_name="retrolog", standalone_mode=False)
    except typer.TyperException as exc:  # click's errors (typer vendors click)
        message = exc.format_message()
        ctx = getattr(exc, "ctx", None)
        if ctx is not None:  # a usage error: say where the usage is explained
            message = f"{message} (see `{ctx.command_path} --help`)"
        error = UsageError(message)
        error.exit_code = exc.exit_code
        raise error from None
    except typer.Abort:
        typer.echo("aborted", err=True)
        raise SystemExit(1) from None
    except BrokenPipeError:  # `retrolog df loss | head`: the reader has all it wanted
        os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())
        raise SystemExit(0) from None
    if isinstance(code, int) and code:
        raise SystemExit(code)


from . import cli_labels  # noqa: E402, F401  (registers tag, note, name and checkpoints)

if __name__ == "__main__":  # pragma: no cover
    main()
