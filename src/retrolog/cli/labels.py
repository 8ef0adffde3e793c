"""``retrolog tag``, ``note``, ``name`` and ``checkpoints``: commands on one run's labels and
models; and the labels section of ``retrolog show``."""

from __future__ import annotations

import json
from typing import Annotated, Any

import typer

from ..errors import UsageError
from .common import Format, FormatOption, ProjectOption, complete_run_ids, recorded
from .output import cell, emit

RunArgument = Annotated[
    str,
    typer.Argument(
        help="A run id, a unique prefix of one, or a run name.", autocompletion=complete_run_ids
    ),
]


def tag_command(
    run: RunArgument,
    tags: Annotated[
        list[str] | None, typer.Argument(help="key=value pairs to set (text values).")
    ] = None,
    remove: Annotated[
        list[str] | None, typer.Option("--remove", "-d", help="A tag key to remove (repeatable).")
    ] = None,
    project: ProjectOption = None,
) -> None:
    """Tag a run: `retrolog tag RUN dataset=v2 owner=ana`; filter with --where "tag_dataset = 'v2'"."""
    from ..relational.labels import tag_run

    changes: dict[str, str | None] = {}
    for item in tags or []:
        key, sep, value = item.partition("=")
        if not sep:
            raise UsageError(f"tag {item!r}: give key=value (or --remove {item} to remove it)")
        changes[key.strip()] = value
    for key in remove or []:
        changes[key] = None
    if not changes:
        raise UsageError("give at least one key=value (or --remove KEY)")
    run_id = tag_run(run, changes, project=recorded(project))
    typer.echo(
        f"run {run_id}: "
        + ", ".join(f"{k}={v}" if v is not None else f"{k} removed" for k, v in changes.items())
    )


def note_command(
    run: RunArgument,
    text: Annotated[str, typer.Argument(help="The note (quote it).")],
    project: ProjectOption = None,
) -> None:
    """Add a note to a run (shown by `retrolog show` and on the run's page; notes accumulate)."""
    from ..relational.labels import note_run

    run_id = note_run(run, text, project=recorded(project))
    typer.echo(f"run {run_id}: note added")


def name_command(
    run: RunArgument,
    name: Annotated[
        str | None, typer.Argument(help="The run's new name (unique per project).")
    ] = None,
    remove: Annotated[bool, typer.Option("--remove", help="Remove the run's name.")] = False,
    project: ProjectOption = None,
) -> None:
    """Name a run; every command that takes a run id then takes the name too."""
    from ..relational.labels import name_run

    if (name is None) == (not remove):
        raise UsageError("give a NAME, or --remove to remove the run's name")
    run_id = name_run(run, None if remove else name, project=recorded(project))
    typer.echo(f"run {run_id}: " + ("name removed" if remove else f"named {name!r}"))


def checkpoints_command(
    run: RunArgument, fmt: FormatOption = Format.table, project: ProjectOption = None
) -> None:
    """List a run's checkpoints: main-loop iteration, loop, size and time (for retrolog.load)."""
    import pandas as pd

    from ..relational.models import checkpoints

    rows = checkpoints(run, project=recorded(project))
    frame = pd.DataFrame(
        rows, columns=["run_id", "iteration", "loop", "bytes", "created", "manifest"]
    )
    frame["created"] = pd.to_datetime(frame["created"], unit="s", utc=True)
    if fmt is Format.table:
        frame["iteration"] = frame["iteration"].map(
            lambda i: "exit" if i is None or i != i else str(int(i))
        )
        frame = frame.drop(columns=["run_id", "manifest"])
        frame["created"] = frame["created"].map(
            lambda t: t.strftime("%Y-%m-%d %H:%M:%S") if t == t else ""
        )
        if not rows:
            typer.echo("this run has no checkpoints", err=True)
    emit(frame, fmt)


def print_labels(console: Any, report: dict[str, Any]) -> None:
    """`retrolog show`'s notes and environment sections (rich)."""
    from rich.table import Table

    tags = report.get("tags") or {}
    if tags:
        console.print("[bold]tags[/bold] " + ", ".join(f"{k}={v}" for k, v in sorted(tags.items())))
    for note in report.get("notes") or []:
        console.print(f"[bold]note[/bold] ({note['created']}): {note['text']}")
    env = report.get("environment")
    if not env:
        return
    table = Table(title="environment", show_header=False)
    accel = env.get("accelerator")
    for key, value in (
        ("python", env.get("python")),
        ("platform", env.get("platform")),
        ("host", env.get("host")),
        ("accelerator", json.dumps(accel) if accel else None),
        (
            "distributions",
            f"{len(env.get('distributions') or [])} (hash {(env.get('hash') or '')[:12]})",
        ),
        ("stdout", f"{len(env['stdout'])} characters captured" if env.get("stdout") else None),
        ("stderr", f"{len(env['stderr'])} characters captured" if env.get("stderr") else None),
    ):
        table.add_row(key, cell(value))
    console.print(table)
