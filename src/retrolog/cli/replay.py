"""``retrolog replay`` (hindsight logging, docs/replay.md) and ``retrolog ui`` (the local web UI)."""

from __future__ import annotations

from typing import Annotated, Any

import typer

from ..errors import UsageError
from .common import ProjectOption, WhereOption, fail


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

    from ..replaying import ReplayError, replay
    from ..replaying.plan import NothingToReplay
    from ..replaying.render import confirm_plan, progress_display, render_report, show_plan

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
            fail(str(exc), exc.exit_code)
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
        fail(str(exc), exc.exit_code)
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
        fail(f"--mem {text!r}: expected a size such as 4G or 500M", 2)
        raise


def _nothing_to_replay(error: Any) -> None:
    """No task planned: one line per run and why on stderr, then the error's exit code."""
    lines = str(error).splitlines()
    for line in lines[1:]:
        typer.echo(f"retrolog: {line.strip()}", err=True)
    fail(f"nothing to replay ({len(lines) - 1} run(s) skipped, reasons above)", error.exit_code)


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

    from ..ui import serve

    try:
        serve(project=project, host=host, port=port, open_browser=open_browser)
    except OSError as exc:  # only what binding the address can say about the user's choice
        bad_address = (errno.EADDRINUSE, errno.EADDRNOTAVAIL, errno.EACCES)
        if not isinstance(exc, socket.gaierror) and exc.errno not in bad_address:
            raise
        where = f"{host}:{port}" if port else host
        raise UsageError(f"cannot serve on {where}: {exc.strerror or exc}") from None
