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
from .errors import NotFoundError, RetrologError, UsageError

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
    from .relational.access import resolve_project

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
        ids = run_ids(open_store(project, recover=False)) if project is not None else []
    except Exception:  # noqa: BLE001 - no completions rather than a traceback in the shell
        return []
    return [i for i in ids if i.startswith(incomplete.upper())]


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
    if not project.db_url.startswith(prefix) or os.environ.get("RETROLOG_DB"):
        return True
    return Path(project.db_url[len(prefix) :]).exists()


def _recorded(project: Path | None) -> Any:
    """The project of ``-C`` (or the cwd), refusing one where nothing was ever recorded rather
    than creating an empty store there."""
    from .relational.access import resolve_project

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
    typer.Option("--all", "-a", help="Every row in table format (default on a terminal: head and tail)."),
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


def _emit(frame: Any, fmt: Format, title: str | None = None) -> None:
    """Print a DataFrame as a rich table, CSV or JSON records."""
    if fmt is Format.csv:
        sys.stdout.write(frame.to_csv(index=False))
        return
    if fmt is Format.json:
        sys.stdout.write(
            frame.to_json(orient="records", date_format="iso", default_handler=str) + "\n"
        )
        return
    from rich.console import Console
    from rich.table import Table

    table = Table(title=title, show_lines=False)
    for column in frame.columns:
        table.add_column(str(column), overflow="fold")
    for row in frame.itertuples(index=False):
        table.add_row(*[_cell(v) for v in row])
    Console().print(table)
    if frame.empty:
        typer.echo("(no rows)", err=True)


def _cell(value: Any) -> str:
    import pandas as pd

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
    from .relational import QueryError, runs

    try:
        frame = runs(project=project, where=where)
    except QueryError as exc:
        _fail(str(exc))
    if fmt is Format.table:
        frame = frame.drop(
            columns=[c for c in ("argv", "host", "error", "git_head", "end_time") if c in frame]
        )
        if "version" in frame:
            frame["version"] = frame["version"].map(lambda v: v[:10] if isinstance(v, str) else v)
    _emit(frame, fmt)


@app.command("df")
def df_command(
    names: Annotated[
        list[str] | None, typer.Argument(help="Logged names and args to show.")
    ] = None,
    fmt: FormatOption = Format.table,
    where: WhereOption = None,
    project: ProjectOption = None,
) -> None:
    """One row per run and loop coordinate, one column per NAME (like retrolog.dataframe)."""
    from .relational import QueryError, dataframe

    try:
        frame = dataframe(*(names or []), where=where, project=project)
    except QueryError as exc:
        _fail(str(exc))
    if fmt is Format.table and "version" in frame:
        frame["version"] = frame["version"].map(lambda v: v[:10] if isinstance(v, str) else v)
    _emit(frame, fmt)


@app.command("sql")
def sql_command(
    statement: Annotated[str, typer.Argument(help="One read-only SELECT.")],
    fmt: FormatOption = Format.table,
    project: ProjectOption = None,
) -> None:
    """Run read-only SQL over the tables and views described in docs/data-model.md."""
    from .relational import QueryError, open_store, run_sql

    try:
        frame = run_sql(open_store(project), statement)
    except QueryError as exc:
        _fail(str(exc))
    _emit(frame, fmt)


@app.command("show")
def show_command(
    run_id: Annotated[str, typer.Argument(help="A run id (or a unique prefix of one).")],
    fmt: FormatOption = Format.table,
    project: ProjectOption = None,
    diff: Annotated[
        bool, typer.Option("--diff/--no-diff", help="Show the code diff against HEAD.")
    ] = True,
) -> None:
    """A run's facts, args, metrics summary, version and code diff against HEAD."""
    from .relational import describe_run

    try:
        report = describe_run(run_id, project=project, with_diff=diff)
    except LookupError as exc:
        _fail(str(exc))
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
    args = Table(title="args")
    args.add_column("name")
    args.add_column("value")
    for key, value in report["args"].items():
        args.add_row(key, _cell(value))
    console.print(args)
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
        list[str], typer.Argument(help="Names logged by the new statements in today's script.")
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
    project: ProjectOption = None,
) -> None:
    """Fill in values of new log statements for past runs, replaying only the work they need."""
    from rich.console import Console

    from .replaying import ReplayError, replay
    from .replaying.render import confirm_plan, progress_display, render_report, show_plan

    console = Console(stderr=True)
    if dry_run:
        try:
            report = replay(
                names, where=where, workers=workers, project=project, script=script, dry_run=True
            )
        except ReplayError as exc:
            _fail(str(exc))
        show_plan(Console(), report.plan)
        return
    try:
        with progress_display(console) as on_event:
            report = replay(
                names,
                where=where,
                workers=workers,
                project=project,
                script=script,
                confirm=lambda plan: confirm_plan(console, plan, ask=not yes),
                on_event=on_event,
                tolerance=tolerance,
                accept_divergence=accept_divergence,
            )
    except ReplayError as exc:
        _fail(str(exc))
    if not report.executed:
        raise typer.Exit(1 if report.plan.tasks else 0)
    render_report(Console(), report)
    if report.failed or report.diverged:
        raise typer.Exit(1)


@app.command("ui")
def ui_command(
    port: Annotated[
        int | None, typer.Option("--port", "-p", help="Port (default: a free one).")
    ] = None,
    host: Annotated[
        str,
        typer.Option("--host", help="Interface to bind; anything but loopback exposes your runs."),
    ] = "127.0.0.1",
    open_browser: Annotated[bool, typer.Option("--open", help="Open the UI in a browser.")] = False,
    project: ProjectOption = None,
) -> None:
    """Serve the local web UI over this project's runs, metrics, versions and replays."""
    from .ui import serve

    serve(project=project, host=host, port=port, open_browser=open_browser)


@app.command("du")
def du_command(fmt: FormatOption = Format.table, project: ProjectOption = None) -> None:
    """Checkpoint space per run (shared blobs count in each run) and the unique total."""
    import pandas as pd

    from .maintenance import disk_usage

    rows, total = disk_usage(project)
    frame = pd.DataFrame(
        [r.__dict__ for r in rows], columns=["run_id", "status", "checkpoints", "bytes"]
    )
    _emit(frame, fmt)
    if fmt is Format.table:
        typer.echo(f"total unique checkpoint bytes: {total:,}", err=True)


@app.command("rm")
def rm_command(
    run_ids: Annotated[list[str], typer.Argument(help="Run ids (or unique prefixes) to delete.")],
    yes: Annotated[bool, typer.Option("--yes", "-y", help="Do not ask for confirmation.")] = False,
    project: ProjectOption = None,
) -> None:
    """Delete runs: their rows, replayed values and snapshot refs (then `retrolog gc` frees space)."""
    from .maintenance import MaintenanceError, delete_runs

    if not yes and not typer.confirm(
        f"Delete {len(run_ids)} run(s) and all their data?", default=False
    ):
        raise typer.Exit(1)
    try:
        deleted = delete_runs(run_ids, project)
    except (LookupError, MaintenanceError) as exc:
        _fail(str(exc))
    typer.echo(f"deleted {len(deleted)} run(s); run `retrolog gc` to free their checkpoint space")


@app.command("gc")
def gc_command(
    dry_run: Annotated[
        bool, typer.Option("--dry-run", help="Only report what would be removed.")
    ] = False,
    project: ProjectOption = None,
) -> None:
    """Remove checkpoint blobs that no remaining run references."""
    from .maintenance import MaintenanceError, collect_garbage

    try:
        blobs, freed = collect_garbage(project, dry_run=dry_run)
    except MaintenanceError as exc:
        _fail(str(exc))
    verb = "would remove" if dry_run else "removed"
    typer.echo(f"{verb} {blobs} blob(s), {freed:,} bytes")


def main(argv: list[str] | None = None) -> None:
    """Run the typer app (the console script enters through ``retrolog._entry``)."""
    from .store.limits import set_default_surface

    set_default_surface("cli")  # user queries get the command line's time limit
    app(args=list(sys.argv[1:] if argv is None else argv), prog_name="retrolog")


if __name__ == "__main__":  # pragma: no cover
    main()
