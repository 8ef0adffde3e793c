"""``retrolog.replay``: plan, confirm, execute, verify and store a hindsight-logging replay."""

from __future__ import annotations

import os
import sys
import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any, cast

from ..project import Project, resolve_project
from .engines import check_executor_name, create_executor
from .executor import Executor, JobResult, UnknownExecutor, WarmExecutor
from .forkserver import ForkServerExecutor, script_imports
from .plan import NothingToReplay, Plan, ReplayError

if TYPE_CHECKING:
    from ..store.lite import Database
    from .execute import RunResult

# Planning and storing are imported inside ``replay``, after the fork server has been started: its
# imports (torch, ...) and ours then overlap on a machine with 2+ cores. Neither imports pandas,
# nor SQLAlchemy for a SQLite store (``store.lite``).


@dataclass
class ReplayReport:
    """What a replay planned and did. ``stored`` counts new values written to the store."""

    plan: Plan
    runs: list[RunResult] = field(default_factory=list)
    jobs: list[JobResult] = field(default_factory=list)
    actual_seconds: float | None = None
    executed: bool = False

    @property
    def replay_id(self) -> str:
        return self.plan.replay_id

    @property
    def estimate_seconds(self) -> float:
        return self.plan.estimate_seconds

    @property
    def stored(self) -> int:
        return sum(r.stored for r in self.runs)

    @property
    def diverged(self) -> list[RunResult]:
        return [r for r in self.runs if r.fidelity == "diverged"]

    @property
    def failed(self) -> list[RunResult]:
        return [
            r
            for r in self.runs
            if r.fidelity == "failed" or (r.detail and "failed after" in r.detail)
        ]

    def summary(self) -> str:
        """A few lines for logs and notebooks."""
        lines = [
            f"replay {self.replay_id}: {', '.join(self.plan.names)} over {len(self.plan.tasks)} task(s), "
            f"estimated {self.estimate_seconds:.1f}s"
            + (
                f", took {self.actual_seconds:.1f}s"
                if self.actual_seconds is not None
                else " (not run)"
            )
        ]
        low = {r.run_id for r in self.plan.runs if r.low_confidence}
        for r in self.runs:
            line = f"  {r.run_id}  {r.level or '-':6}  {r.fidelity:14}  stored {r.stored}"
            if r.run_id in low:
                line += "  (low-confidence placement accepted)"
            if r.compared:
                line += f"  ({r.compared} recorded values compared, {r.mismatches} differ)"
            if r.detail:
                line += f"  {r.detail.splitlines()[0]}"
            lines.append(line)
        return "\n".join(lines)


def replay(
    names: str | Sequence[str],
    where: str | None = None,
    workers: int | None = None,
    project: Project | str | Path | None = None,
    script: str | None = None,
    confirm: Callable[[Plan], bool] | None = None,
    on_event: Callable[[str, int, dict[str, Any]], None] | None = None,
    executor: Executor | str | None = None,
    executor_options: Mapping[str, Any] | None = None,
    tolerance: float = 1e-6,
    accept_divergence: bool = False,
    dry_run: bool = False,
    force: bool = False,
    accept_low_confidence: bool = False,
    allow_changed_data: bool = False,
) -> ReplayReport:
    """Fill in values of new log statements for past runs by replaying them from checkpoints.

    ``names``: the names the new ``retrolog.log`` statements log, in today's script or any
    module of the project. ``where``: SQL over args, run facts, main-loop iterations (and
    recorded values logged per iteration) that selects runs and iterations. ``confirm(plan)`` may
    veto after seeing the plan. ``force``: recompute runs an earlier replay of the same
    statements already filled in (skipped otherwise). ``accept_low_confidence``: replay versions
    where propagation placed a statement with a confidence below its threshold (refused
    otherwise). ``allow_changed_data``: replay runs whose data (``retrolog.data``) is missing or
    changed since they ran (refused otherwise); their report names the data. Returns a report;
    the new values are then visible through ``retrolog.dataframe``.
    ``executor``: an ``Executor``, or the name of one: ``"fork"`` (the default: forks of a warm
    server), ``"process"``, ``"ray"``, ``"slurm"``; ``executor_options`` are the named engine's
    (``address`` for Ray; ``partition``, ``time_min``, ``cpus_per_task``, ``mem_gb``,
    ``cluster``, ``folder`` for Slurm). An executor made from a name is closed at the end.
    Raises ``NothingToReplay`` (a ``ReplayError``; its message has one line per run and why) when
    no task is planned, dry run included.
    """
    started = time.perf_counter()
    if isinstance(names, str):
        names = [names]
    proj = resolve_project(project)
    workers = max(1, workers or os.cpu_count() or 1)
    early: ForkServerExecutor | None = None
    owned: Executor | None = None
    chosen = executor if not isinstance(executor, str) else None
    if executor in (None, "fork", "local"):
        if not dry_run:
            # start the fork server now, on today's script's imports: it imports while we plan
            early = ForkServerExecutor(workers, preload=_likely_imports(proj, names, script))
            early.start(sys.executable, task_environment())
    elif isinstance(executor, str):
        options = {"folder": proj.data_dir / "submitit", **(executor_options or {})}
        try:
            if dry_run:  # the name is checked; no engine is started to show a plan
                check_executor_name(executor)
            else:
                owned = chosen = create_executor(executor, workers, **options)
        except UnknownExecutor as exc:
            raise ReplayError(str(exc)) from None
    store: Database | None = None
    try:
        store = _open_store(proj)
        return _replay(
            proj,
            store,
            names,
            where,
            workers,
            script,
            confirm,
            on_event,
            early or chosen,
            tolerance,
            accept_divergence,
            dry_run,
            started,
            force,
            accept_low_confidence,
            allow_changed_data,
        )
    finally:
        if early is not None:
            early.close()  # a no-op once the tasks ran; otherwise the server session ends
        if owned is not None:
            owned.close()
        if store is not None:
            store.dispose()


def _replay(
    proj: Project,
    store: Database,
    names: Sequence[str],
    where: str | None,
    workers: int,
    script: str | None,
    confirm: Callable[[Plan], bool] | None,
    on_event: Callable[[str, int, dict[str, Any]], None] | None,
    executor: Executor | None,
    tolerance: float,
    accept_divergence: bool,
    dry_run: bool,
    started: float,
    force: bool = False,
    accept_low_confidence: bool = False,
    allow_changed_data: bool = False,
) -> ReplayReport:
    from .execute import run_plan
    from .planner import build_plan, load_factor

    # no executor: a dry run, planned as the default (the fork server) would run it
    forked = executor is None or executor.capabilities.fork
    warm = cast(WarmExecutor, executor) if executor and executor.capabilities.warm else None
    server_seconds: float | None = None
    lazy = 0.0
    imports_now: float | None = None
    if warm is not None:
        server_seconds, imported = warm.calibration()
        if server_seconds is None and not dry_run:
            # never measured (a first replay with these libraries): only the server can tell how
            # much of the recorded prefix was imports, and the tasks need it anyway: wait for it
            warm.wait_ready()
            server_seconds, imported = warm.calibration()
        top_level = set(_likely_imports(proj, names, script))
        lazy = sum(s for m, s in imported.items() if m not in top_level)
        imports_now = sum(s for m, s in imported.items() if m in top_level) or None
    plan, runs, versions = build_plan(
        proj,
        store,
        names,
        where=where,
        workers=workers,
        script=script,
        forked=forked,
        server_seconds=server_seconds,
        preloaded_lazy=lazy,
        cores=_cores(),
        imports_now=imports_now,
        force=force,
        accept_low_confidence=accept_low_confidence,
        load=load_factor(_cores()),
        allow_changed_data=allow_changed_data,
    )
    if warm is not None and server_seconds is not None:
        remaining, _ = warm.calibration()  # planning took some of the server's start
        plan.server_seconds = remaining or 0.0
    plan.planning_seconds = time.perf_counter() - started
    report = ReplayReport(plan)
    if not plan.tasks:
        raise NothingToReplay(plan)  # never a silent no-op: say, per run, why nothing runs
    if dry_run:
        return report
    if confirm is not None and not confirm(plan):
        return report
    if executor is not None and executor.capabilities.preload:
        cast(WarmExecutor, executor).add_preload(
            sorted({m for v in versions.values() for m in script_imports(v.source)})
        )
    report.runs, report.jobs, report.actual_seconds = run_plan(
        proj,
        store,
        plan,
        runs,
        versions,
        executor=executor,
        on_event=on_event,
        tolerance=tolerance,
        accept_divergence=accept_divergence,
    )
    report.executed = True
    return report


def _open_store(proj: Project) -> Database:
    """The project's store without SQLAlchemy when it is SQLite (``store.lite``), with runs whose
    process died recovered first (as ``relational.access.open_store`` does, without pandas)."""
    from ..project import open_project_db

    return open_project_db(proj)


def task_environment() -> dict[str, str]:
    """The environment replay tasks (and so their fork server) start with, less the task spec."""
    return {**os.environ, "RETROLOG_PROGRESS": "0", "PYTHONUNBUFFERED": "1"}


def _cores() -> int:
    try:
        return len(os.sched_getaffinity(0))
    except (AttributeError, OSError):
        return os.cpu_count() or 1


def _likely_imports(proj: Project, names: Sequence[str], script: str | None) -> list[str]:
    """Top-level imports of today's scripts that log ``names``, found without the store's
    libraries (SQLite read directly; another database: the named ``script`` only)."""
    from .analysis import find_log_statements

    scripts = [script] if script else _recorded_scripts(proj)
    found: list[str] = []
    every: list[str] = []  # the statements may be in a module the scripts import
    for name in scripts:
        try:
            source = (proj.root / name).read_text()
            every += script_imports(source)
            if find_log_statements(source, names):
                found += script_imports(source)
        except (OSError, ValueError, SyntaxError):
            continue
    return list(dict.fromkeys(found or every))


def _recorded_scripts(proj: Project) -> list[str]:
    from ..store.replays import recorded_scripts

    scripts = recorded_scripts(proj.db_url) or []
    return sorted(str(s) for s in scripts if s and s != "<interactive>")


__all__ = ["ReplayError", "ReplayReport", "replay"]
