"""Looking after the project: ``retrolog du``, ``rm``, ``gc`` and ``doctor``; sharing it: ``push``,
``pull``, ``export`` and ``import``."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer

from .common import Format, FormatOption, ProjectOption, WhereOption, complete_run_ids, recorded
from .output import emit


def du_command(fmt: FormatOption = Format.table, project: ProjectOption = None) -> None:
    """Checkpoint space per run (shared blobs count in each run) and the unique total."""
    import pandas as pd

    from ..maintenance import disk_usage

    rows, total = disk_usage(recorded(project))
    frame = pd.DataFrame(
        [r.__dict__ for r in rows], columns=["run_id", "status", "checkpoints", "bytes"]
    )
    emit(frame, fmt)
    if fmt is Format.table:
        typer.echo(f"total unique checkpoint bytes: {total:,}", err=True)


def rm_command(
    run_ids: Annotated[
        list[str],
        typer.Argument(
            help="Run ids (or unique prefixes) to delete.", autocompletion=complete_run_ids
        ),
    ],
    yes: Annotated[bool, typer.Option("--yes", "-y", help="Do not ask for confirmation.")] = False,
    project: ProjectOption = None,
) -> None:
    """Delete runs: their rows, replayed values and snapshot refs (then `retrolog gc` frees space)."""
    from ..maintenance import delete_runs

    resolved = recorded(project)
    if not yes and not typer.confirm(
        f"Delete {len(run_ids)} run(s) and all their data?", default=False
    ):
        raise typer.Exit(1)
    deleted = delete_runs(run_ids, resolved)
    typer.echo(f"deleted {len(deleted)} run(s); run `retrolog gc` to free their checkpoint space")
    from ..maintenance import shared_ref_note

    if note := shared_ref_note(resolved, deleted):  # refs other clones may still need
        typer.echo(note, err=True)


def gc_command(
    dry_run: Annotated[
        bool, typer.Option("--dry-run", help="Only report what would be removed.")
    ] = False,
    project: ProjectOption = None,
) -> None:
    """Remove checkpoint blobs that no remaining run references."""
    from ..maintenance import collect_garbage

    blobs, freed = collect_garbage(recorded(project), dry_run=dry_run)
    verb = "would remove" if dry_run else "removed"
    typer.echo(f"{verb} {blobs} blob(s), {freed:,} bytes")
    from ..maintenance import kept_refs_note

    if note := kept_refs_note(project):  # gc never deletes refs another clone may need
        typer.echo(note, err=True)


RemoteArgument = Annotated[
    str | None, typer.Argument(help="The git remote (default: origin).", show_default=False)
]


def push_command(remote: RemoteArgument = None, project: ProjectOption = None) -> None:
    """Push the code versions of recorded runs (hidden refs refs/retrolog/*) to a git remote."""
    from ..project import resolve_project
    from ..versions import push

    transfer = push(resolve_project(project).root, remote)
    typer.echo(transfer.summary(f"pushed to {transfer.remote}:"))
    if transfer.rejected:
        raise typer.Exit(1)


def pull_command(remote: RemoteArgument = None, project: ProjectOption = None) -> None:
    """Fetch the code versions of runs recorded in other clones from a git remote."""
    from ..project import resolve_project
    from ..versions import pull

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
        autocompletion=complete_run_ids,
    ),
]


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
    from ..exchange import export_mlflow, export_parquet

    resolved = recorded(project)
    write = export_mlflow if mlflow else export_parquet
    result = write(resolved, out_dir, run_ids=runs, where=where)
    for line in result.lines():
        typer.echo(line)


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
    from ..exchange import import_history
    from ..project import resolve_project

    result = import_history(resolve_project(project), source, kind)
    for line in result.lines():
        typer.echo(line)


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
    from ..doctor import check
    from ..doctor import repair as repair_store
    from ..project import resolve_project

    proj = resolve_project(project)
    report = repair_store(proj) if repair else check(proj, verify_objects=not quick)
    for line in report.lines():
        typer.echo(line)
    if report.problems:
        raise typer.Exit(1)
