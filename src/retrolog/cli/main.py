"""The ``retrolog`` typer app: the commands in the order ``--help`` lists them, and ``main``.

The command modules define plain functions; this module registers them, so they do not import the
app and no module imports this one but the package's face.
"""

from __future__ import annotations

import os
import sys
from typing import Annotated

import typer

from .. import __version__
from ..errors import UsageError
from . import labels, maintain, query, replay

app = typer.Typer(
    name="retrolog",
    help="Multiversion hindsight logging for ML training: record, query, replay.",
    no_args_is_help=True,
    add_completion=True,
    pretty_exceptions_enable=False,
)
COMMANDS = (
    ("runs", query.runs_command),
    ("df", query.df_command),
    ("sql", query.sql_command),
    ("show", query.show_command),
    ("replay", replay.replay_command),
    ("ui", replay.ui_command),
    ("du", maintain.du_command),
    ("rm", maintain.rm_command),
    ("gc", maintain.gc_command),
    ("push", maintain.push_command),
    ("pull", maintain.pull_command),
    ("export", maintain.export_command),
    ("import", maintain.import_command),
    ("doctor", maintain.doctor_command),
    ("tag", labels.tag_command),
    ("note", labels.note_command),
    ("name", labels.name_command),
    ("checkpoints", labels.checkpoints_command),
)
for _name, _command in COMMANDS:
    app.command(_name)(_command)


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


def main(argv: list[str] | None = None) -> None:
    """Run the typer app (the console script enters through ``retrolog._entry``)."""
    from ..store.limits import set_default_surface

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
