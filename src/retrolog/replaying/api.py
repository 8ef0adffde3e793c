"""``retrolog.replay``: plan, confirm, execute, verify and store a hindsight-logging replay."""

from __future__ import annotations

import os
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from ..project import Project
from ..relational.access import open_store, resolve_project
from .execute import RunResult, run_plan
from .executor import Executor, JobResult
from .forkserver import ForkServerExecutor
from .plan import Plan
from .planner import NOT_SELECTED, ReplayError, build_plan


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
        for r in self.runs:
            line = f"  {r.run_id}  {r.level or '-':6}  {r.fidelity:14}  stored {r.stored}"
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
    executor: Executor | None = None,
    tolerance: float = 1e-6,
    accept_divergence: bool = False,
    dry_run: bool = False,
) -> ReplayReport:
    """Fill in values of new log statements for past runs by replaying them from checkpoints.

    ``names``: the names the new ``retrolog.log`` statements in today's script log. ``where``: SQL
    over args, run facts, main-loop iterations (and recorded values logged per iteration) that
    selects runs and iterations. ``confirm(plan)`` may veto after seeing the plan. Returns a
    report; the new values are then visible through ``retrolog.dataframe``.
    """
    if isinstance(names, str):
        names = [names]
    proj = resolve_project(project)
    store = open_store(proj)
    workers = max(1, workers or os.cpu_count() or 1)
    forked = executor is None or isinstance(executor, ForkServerExecutor)
    plan, runs, versions = build_plan(
        proj, store, names, where=where, workers=workers, script=script, forked=forked
    )
    report = ReplayReport(plan)
    if dry_run or not plan.tasks:
        if not plan.tasks and not dry_run:
            report.runs = [
                RunResult(
                    r.run_id,
                    r.level,
                    "not_selected" if r.skipped == NOT_SELECTED else "not_replayable",
                    detail=r.skipped or "",
                )
                for r in plan.runs
            ]
        return report
    if confirm is not None and not confirm(plan):
        return report
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


__all__ = ["ReplayError", "ReplayReport", "replay"]
