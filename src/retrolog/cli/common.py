"""What every ``retrolog`` command shares: the output format, the project options and how a
project is found (never creating a store where nothing was recorded), shell completion of run
ids and names, and the one way a command fails with a message and an exit code."""

from __future__ import annotations

from enum import Enum
from pathlib import Path
from typing import Annotated, Any

import typer

from ..errors import NotFoundError, UsageError
from ..settings import DB


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
    from ..project import resolve_project

    value = ctx.params.get("project")
    if value is not None and not Path(value).is_dir():
        return None
    project = resolve_project(value)
    if not has_store(project):
        return None
    return project


def complete_run_ids(ctx: typer.Context, incomplete: str) -> list[str]:
    """Run ids for shell completion; completion must never print an error into a shell."""
    try:
        from ..relational import open_store
        from ..relational.describe import run_ids

        project = _project_of(ctx)
        store = open_store(project, recover=False) if project is not None else None
        ids = run_ids(store) if store is not None else []
        from ..relational.labels import run_names  # names complete too (retrolog name)

        named = run_names(store) if store is not None else []
    except Exception:  # noqa: BLE001 - no completions rather than a traceback in the shell
        return []
    return [i for i in ids if i.startswith(incomplete.upper())] + [
        n for n in named if n.startswith(incomplete)
    ]


def complete_names(ctx: typer.Context, incomplete: str) -> list[str]:
    """Logged names and args for shell completion."""
    try:
        from ..relational import open_store
        from ..relational.describe import known_names

        project = _project_of(ctx)
        names = known_names(open_store(project, recover=False)) if project is not None else []
    except Exception:  # noqa: BLE001 - no completions rather than a traceback in the shell
        return []
    return [n for n in names if n.startswith(incomplete)]


def has_store(project: Any) -> bool:
    """False for a project whose default SQLite store was never created (no run recorded)."""
    prefix = "sqlite:///"
    if not project.db_url.startswith(prefix) or DB.get():
        return True
    return Path(project.db_url[len(prefix) :]).exists()


def recorded(project: Path | None) -> Any:
    """The project of ``-C`` (or the cwd), refusing one where nothing was ever recorded rather
    than creating an empty store there."""
    from ..project import resolve_project

    resolved = resolve_project(project)
    if not has_store(resolved):
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


def fail(message: str, code: int = 2) -> None:
    """End the command with ``retrolog: message`` and ``code`` (the entry point prints it)."""
    error = UsageError(message)
    error.exit_code = code
    raise error
