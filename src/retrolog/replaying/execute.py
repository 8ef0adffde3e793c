"""Running a plan: materialise versions, start tasks, store results with provenance."""

from __future__ import annotations

import json
import os
import shutil
import sys
import tempfile
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from ..project import Project
from ..record.journal import SUFFIX as JOURNAL_SUFFIX
from ..record.replay_session import REPLAY_ENV, TaskSpec
from ..store.lite import Database
from ..store.replays import (
    record_replay,
    record_replay_run,
    store_replay_values,
    update_replay,
    update_task,
)
from ..versions import GitRepo
from .collect import Fidelity, TaskOutput, compare_and_pick, read_output
from .datacheck import attribute
from .executor import Executor, Job, JobResult
from .forkserver import ForkServerExecutor, script_imports
from .plan import Plan, RunPlan, TaskPlan
from .planner import NOT_SELECTED, RunData, VersionScript
from .sandbox import Sandboxes


@dataclass
class RunResult:
    """The outcome of replay for one run."""

    run_id: str
    level: str | None
    fidelity: str  # reproduced | diverged | unchecked | not_replayable | not_selected | failed
    compared: int = 0
    mismatches: int = 0
    max_abs_diff: float = 0.0
    stored: int = 0
    detail: str = ""
    examples: list[dict[str, Any]] = field(default_factory=list)
    fallbacks: list[str] = field(default_factory=list)


def materialise(
    project: Project, plan: Plan, versions: dict[str, VersionScript], workdir: Path
) -> dict[str, Path]:
    """One directory per version with the replay script in it; the user's tree is never touched."""
    repo = GitRepo(project.root)
    roots: dict[str, Path] = {}
    for version in sorted({t.version for t in plan.tasks}):
        root = repo.materialise(version, workdir / f"v-{version[:12]}")
        vs = versions[version]
        for path, text in {plan.script: vs.source, **vs.files}.items():
            (root / path).parent.mkdir(parents=True, exist_ok=True)
            (root / path).write_text(text)  # the entry script and every file with new statements
        roots[version] = root  # each task gets its own tree from it (sandbox.Sandboxes)
    return roots


def run_plan(
    project: Project,
    store: Database,
    plan: Plan,
    runs: dict[str, RunData],
    versions: dict[str, VersionScript],
    executor: Executor | None = None,
    on_event: Callable[[str, int, dict[str, Any]], None] | None = None,
    tolerance: float = 1e-6,
    accept_divergence: bool = False,
    keep_workdir: bool = False,
) -> tuple[list[RunResult], list[JobResult], float]:
    """Execute every task of ``plan`` and store what it produced. Returns (runs, jobs, seconds)."""
    if executor is None:
        preload = sorted({m for v in versions.values() for m in script_imports(v.source)})
        executor = ForkServerExecutor(plan.workers, preload=preload)
    workdir = Path(tempfile.mkdtemp(prefix=f"retrolog-replay-{plan.replay_id}-"))
    started = time.time()
    _record_plan(store, plan, versions)
    try:
        roots = materialise(project, plan, versions, workdir)
        sandboxes = Sandboxes(project.root, roots, workdir, allowed=[project.data_dir])
        jobs = []
        for task in plan.tasks:
            scratch = sandboxes.create(task.task_id, task.version).root
            jobs.append(_job(project, plan, task, runs[task.run_id], scratch, workdir))
            jobs[-1].env.update(sandboxes.env(task.task_id, jobs[-1].cwd))

        def event(kind: str, task_id: int, info: dict[str, Any]) -> None:
            if kind == "finished":
                sandboxes.finished(task_id)
            _update_task(store, plan.replay_id, task_id, kind, info)
            if on_event is not None:
                on_event(kind, task_id, info)

        results = executor.run(jobs, event) if jobs else []
        sandboxes.apply(results)  # a task during which a user file changed fails
        by_task = {r.task_id: r for r in results}
        for task in plan.tasks:
            _finish_task(store, plan.replay_id, task, by_task[task.task_id])
        outcomes = []
        for run_plan_ in plan.runs:
            outcomes.append(
                _collect_run(
                    store,
                    plan,
                    run_plan_,
                    runs.get(run_plan_.run_id),
                    by_task,
                    workdir,
                    tolerance,
                    accept_divergence,
                )
            )
        seconds = time.time() - started
        failed = any(not r.ok for r in results)
        update_replay(
            store,
            plan.replay_id,
            {
                "status": "failed" if failed else "finished",
                "finished": time.time(),
                "actual_seconds": seconds,
                "error": "some tasks failed; see replay_tasks.log" if failed else None,
            },
        )
        return outcomes, results, seconds
    except BaseException as exc:
        update_replay(
            store,
            plan.replay_id,
            {"status": "failed", "finished": time.time(), "error": f"{type(exc).__name__}: {exc}"},
        )
        raise
    finally:
        if not keep_workdir:
            shutil.rmtree(workdir, ignore_errors=True)


def _output_path(workdir: Path, task_id: int) -> Path:
    """A task's output: a journal, named with the suffix the journal reader reads it by."""
    return workdir / f"task-{task_id}.out{JOURNAL_SUFFIX}"


def _job(
    project: Project, plan: Plan, task: TaskPlan, data: RunData, root: Path, workdir: Path
) -> Job:
    base = workdir / f"task-{task.task_id}"
    spec = TaskSpec(
        replay_id=plan.replay_id,
        task_id=task.task_id,
        run_id=task.run_id,
        level=task.level,
        output=str(_output_path(workdir, task.task_id)),
        progress=str(base.with_suffix(".progress")),
        objects_url=project.objects_url,
        args=data.args,
        last_iteration=task.last_iteration,
        full_iterations=task.full_iterations,
        skip_main_loop=task.skip_main_loop,
        stop_at_main_loop=task.level == "prefix",
        stop_after_main_loop=task.level in ("outer", "inner") and not task.run_suffix,
        reexecute_loops=next(r.reexecute_loops for r in plan.runs if r.run_id == task.run_id),
        selected_iterations=next(
            (r.iterations for r in plan.runs if r.run_id == task.run_id and r.lazy), None
        ),
        selected_before_nested=any(
            r.before_nested for r in plan.runs if r.run_id == task.run_id and r.lazy
        ),
        checkpoints=data.checkpoints,
        main_exit=data.main_exit[0] if data.main_exit else None,
    )
    spec_path = base.with_suffix(".spec.json")
    spec_path.write_text(spec.to_json())
    cwd = root
    if data.cwd:
        try:
            relative = Path(data.cwd).resolve().relative_to(project.root.resolve())
            cwd = root / relative if (root / relative).is_dir() else root
        except ValueError:
            cwd = root
    env = dict(os.environ)
    env.update({REPLAY_ENV: str(spec_path), "RETROLOG_PROGRESS": "0", "PYTHONUNBUFFERED": "1"})
    argv = [sys.executable, str(root / plan.script), *data.argv[1:]]
    return Job(
        task.task_id,
        argv,
        cwd,
        env,
        base.with_suffix(".log"),
        Path(spec.progress),
        Path(spec.output),
    )


def _collect_run(
    store: Database,
    plan: Plan,
    run_plan: RunPlan,
    data: RunData | None,
    by_task: dict[int, JobResult],
    workdir: Path,
    tolerance: float,
    accept_divergence: bool,
) -> RunResult:
    if run_plan.skipped or data is None:
        verdict = "not_selected" if run_plan.skipped == NOT_SELECTED else "not_replayable"
        result = RunResult(run_plan.run_id, run_plan.level, verdict, detail=run_plan.skipped or "")
        _record_run(store, plan.replay_id, result)
        return result
    outputs: list[TaskOutput] = []
    failures = []
    for task in run_plan.tasks:
        job = by_task[task.task_id]
        if job.ok:
            outputs.append(read_output(_output_path(workdir, task.task_id)))
        else:
            failures.append(
                f"task {task.task_id} failed after {job.attempts} attempts:\n{job.log_tail}"
            )
    selected = {tuple(c) for c in run_plan.selected}
    main_name = data.main_loop
    keep = _selector(run_plan.level or "full", selected, main_name)
    fidelity, new_rows = compare_and_pick(
        store,
        data,
        outputs,
        set(plan.names),
        keep,
        tolerance,
        compare_all=not run_plan.lazy,
        compared=set(run_plan.compared) if run_plan.before_nested else None,
    )
    result = RunResult(
        run_plan.run_id,
        run_plan.level,
        fidelity.verdict,
        fidelity.compared,
        fidelity.mismatches,
        fidelity.max_abs_diff,
        examples=fidelity.examples,
        fallbacks=[f for o in outputs for f in o.fallbacks],
    )
    if failures:
        result.fidelity = "failed" if not outputs else result.fidelity
        result.detail = "\n\n".join(failures)
    if fidelity.verdict == "diverged" and not accept_divergence:
        result.detail = (result.detail + "\n" if result.detail else "") + (
            "replay did not reproduce recorded values; new values not stored (use --accept-divergence)"
        )
    else:
        result.stored = store_values(store, data.key, plan.replay_id, new_rows)
    # --allow-changed-data: the data is named as the cause of a divergence (datacheck.py)
    result.detail = attribute(result.detail, run_plan.data_changed, result.fidelity)
    _record_run(store, plan.replay_id, result)
    return result


def _selector(
    level: str, selected: set[tuple[int, ...]], main_name: str | None
) -> Callable[[Any], bool]:
    if level in ("prefix", "suffix") or () in selected:
        return lambda path: True

    def keep(path: Any) -> bool:
        if not path or path[0][0] != main_name:
            return level == "full"
        if level == "inner" and len(path) >= 2:
            return (path[0][1], path[1][1]) in selected or (path[0][1],) in selected
        return (path[0][1],) in selected or any(c[:1] == (path[0][1],) for c in selected)

    return keep


def store_values(
    store: Database, run_key: int, replay_id: str, rows: list[tuple[int, str, Any]]
) -> int:
    """Insert new values against the original run and coordinates; identical rows are skipped, so
    replaying the same statement again stores nothing twice. Recorded rows are never touched
    (``store.replays.store_replay_values``)."""
    return store_replay_values(store, run_key, replay_id, rows)


def _record_plan(store: Database, plan: Plan, versions: dict[str, VersionScript]) -> None:
    replay = {
        "replay_id": plan.replay_id,
        "created": time.time(),
        "status": "running",
        "names": json.dumps(plan.names),
        "statements": "\n".join(plan.statements),
        "script": plan.script,
        "where_clause": plan.where,
        "workers": plan.workers,
        "plan": plan.to_json(),
        "estimate_seconds": plan.estimate_seconds,
    }
    tasks = [
        {
            "replay_id": plan.replay_id,
            "task_id": t.task_id,
            "run_id": t.run_id,
            "version": t.version,
            "level": t.level,
            "iterations": json.dumps(
                t.full_iterations
                or ([0, t.last_iteration] if t.last_iteration is not None else None)
            ),
            "status": "pending",
            "attempts": 0,
            "progress": 0.0,
            "estimate_seconds": t.estimate_seconds,
        }
        for t in plan.tasks
    ]
    propagations = []
    for version, vs in versions.items():
        placement = (vs.propagation or {}).get("placements") or []
        first = placement[0] if placement else {}
        propagations.append(
            {
                "replay_id": plan.replay_id,
                "version": version,
                "script": plan.script,
                "line": first.get("line")
                if vs.propagation
                else (vs.lines[0] if vs.lines else None),
                "scope": json.dumps(first.get("scope")) if first else None,
                "renames": json.dumps((vs.propagation or {}).get("renames") or {}),
                "confidence": (vs.propagation or {}).get("confidence", 1.0)
                if vs.propagation
                else 1.0,
                "refused": vs.refused,
                "inserted": "\n".join(plan.statements),
            }
        )
    record_replay(store, replay, tasks, propagations)


def _update_task(
    store: Database, replay_id: str, task_id: int, kind: str, info: dict[str, Any]
) -> None:
    values: dict[str, Any] = {}
    if kind == "started":
        values = {"status": "running", "started": time.time(), "attempts": info.get("attempt", 1)}
    elif kind == "progress":
        try:
            progress = json.loads(str(info["progress"]))
            if progress.get("total"):
                values = {"progress": (progress["iteration"] + 1) / progress["total"]}
        except (ValueError, TypeError, KeyError):
            return
    elif kind == "retry":
        values = {"status": "retrying", "log": str(info.get("log", ""))[-8000:]}
    elif kind == "finished":  # done when it ends, not when the whole replay has been collected
        ok = info.get("returncode") == 0
        values = {"status": "done" if ok else "failed", "finished": time.time()}
        values.update({"progress": 1.0, "actual_seconds": info.get("seconds")} if ok else {})
    if values:
        update_task(store, replay_id, task_id, values)


def _finish_task(store: Database, replay_id: str, task: TaskPlan, result: JobResult) -> None:
    update_task(
        store,
        replay_id,
        task.task_id,
        {
            "status": "done" if result.ok else "failed",
            "finished": time.time(),
            "actual_seconds": result.seconds,
            "progress": 1.0 if result.ok else None,
            "attempts": result.attempts,
            "log": None
            if result.ok and not result.history
            else "\n\n".join([*result.history, result.log_tail])[-16000:],
        },
    )


def _record_run(store: Database, replay_id: str, result: RunResult) -> None:
    detail = {"detail": result.detail, "examples": result.examples, "fallbacks": result.fallbacks}
    record_replay_run(
        store,
        {
            "replay_id": replay_id,
            "run_id": result.run_id,
            "fidelity": result.fidelity,
            "compared": result.compared,
            "mismatches": result.mismatches,
            "max_abs_diff": result.max_abs_diff,
            "detail": json.dumps(detail, default=str),
            "stored": result.stored,
        },
    )


__all__ = ["Fidelity", "RunResult", "materialise", "run_plan", "store_values"]
