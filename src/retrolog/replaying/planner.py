"""Build a replay plan from the store, git and today's script (nothing runs here)."""

from __future__ import annotations

import time
from collections.abc import Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any

from .._ids import new_run_id
from ..errors import MissingVersionError
from ..project import Project
from ..record.ranks import replay_refusal
from ..store import planning as reads
from ..versions import GitError, GitRepo
from ..versions.remote import missing_version_message, missing_versions_message
from .analysis import Statement
from .codebase import (
    VersionScript,
    imported_files,
    new_statements,
    python_files_today,
    today_source,
    version_script,
)
from .corrections import correction_key, load_factor, past_corrections
from .datacheck import check_data
from .layout import Reach
from .plan import CostModel, Plan, ReplayError, RunPlan, TaskPlan, pace, split_contiguous
from .rundata import RunData, Structures, load_run
from .selection import NOT_SELECTED, check_where, narrow_to_siblings, select_coordinates

if TYPE_CHECKING:
    from ..store.lite import Database

DEFAULT_LOAD_SPEED = 200e6  # bytes/s, used when no checkpoint exists to measure

__all__ = [  # RunData, NOT_SELECTED, VersionScript and the corrections are re-exported for callers
    "NOT_SELECTED",
    "RunData",
    "VersionScript",
    "build_plan",
    "correction_key",
    "load_factor",
    "load_run",
    "measure_load_speed",
    "past_corrections",
    "statement_text",
]


def statement_text(path: str, statement: Statement, script: str) -> str:
    """A statement as plans show and store it: its whole text, after its file's name when that
    is not the entry script."""
    return statement.text if path == script else f"{path}: {statement.text.strip()}"


def _already_replayed(
    store: Database, names: Sequence[str], statements: Sequence[str], where: str | None
) -> dict[int, str]:
    """run key -> the latest finished replay that stored values for every one of ``names`` on
    that run, from these same statements and over the same selection (no ``--where``, or the
    same one), and reproduced the run's recorded values there. A replay of an edited statement,
    of fewer iterations, or one whose divergence was accepted does not count."""
    try:
        rows = reads.replayed_values(store, names)
    except Exception:
        return {}
    wanted = [text.strip() for text in statements]
    latest: dict[int, dict[str, tuple[float, str]]] = {}
    for run, name, replay_id, texts, clause, created in rows:
        if clause not in (None, "", where):
            continue
        if not all(text in (texts or "") for text in wanted):
            continue
        seen = latest.setdefault(int(run), {})
        if name not in seen or (created or 0) > seen[name][0]:
            seen[name] = (created or 0.0, replay_id)
    return {
        run: max(by_name.values())[1]
        for run, by_name in latest.items()
        if all(n in by_name for n in names)
    }


def _low_confidence(report: dict[str, Any] | None) -> bool:
    """Whether a placement is below the propagation package's threshold (when it has one)."""
    if not report:
        return False
    try:
        from ..propagation import api as propagation_api

        threshold = float(getattr(propagation_api, "THRESHOLD", 0.5))
    except Exception:
        threshold = 0.5
    return float(report.get("confidence") or 0.0) < threshold


def measure_load_speed(objects_url: str, manifests: Sequence[str]) -> float:
    """Bytes per second to read one checkpoint's blobs back (the restore cost model's basis).
    The manifest is read by ``checkpoint.manifest`` (standard library only)."""
    if not manifests:
        return DEFAULT_LOAD_SPEED
    try:
        from ..checkpoint.manifest import load_manifest
        from ..objects import open_object_store

        objects = open_object_store(objects_url)
        start = time.perf_counter()
        blobs = load_manifest(objects, manifests[0]).blobs
        total = sum(len(objects.get(digest)) for digest in blobs)
        seconds = time.perf_counter() - start
        return max(total / max(seconds, 1e-6), 1e6)
    except Exception:
        return DEFAULT_LOAD_SPEED


def build_plan(
    project: Project,
    store: Database,
    names: Sequence[str],
    where: str | None = None,
    workers: int = 1,
    script: str | None = None,
    forked: bool = True,
    server_seconds: float | None = None,
    preloaded_lazy: float = 0.0,
    cores: int = 0,
    imports_now: float | None = None,
    force: bool = False,
    accept_low_confidence: bool = False,
    load: float = 1.0,
    allow_changed_data: bool = False,
) -> tuple[Plan, dict[str, RunData], dict[str, VersionScript]]:
    """Plan a replay of the statements logging ``names`` in today's project files (the entry
    script or any module it uses). ``server_seconds``: what is left of the fork server's start
    (None: as long as the slowest run's recorded start-up); ``preloaded_lazy``: seconds of the
    prefix's lazy imports the server has done; ``cores``: CPU cores the tasks share (0: one per
    worker); ``imports_now``: seconds the fork server took to import the script's top-level
    modules, against which the recorded start-ups give the pace of this machine now relative to
    when the runs were recorded (``plan.pace``). ``force``: replay runs an earlier replay already
    filled in; ``accept_low_confidence``: accept placements propagation finds unreliable;
    ``load``: the machine's load factor now (``load_factor``); ``allow_changed_data``: replay
    runs whose recorded data (``retrolog.data``) changed since (refused otherwise)."""
    names = list(dict.fromkeys(names))
    if not names:
        raise ReplayError("name at least one logged value to replay")
    rows = reads.plannable_runs(store)
    repo = GitRepo(project.root) if project.in_git else None
    found = new_statements(project.root, python_files_today(project.root, repo), names)
    script = _pick_script(project, rows, names, script, found)
    missing = [n for n in names if not any(s.name == n for _t, ss in found.values() for s in ss)]
    if missing:
        raise ReplayError(
            f"no Python file of the project has a statement logging "
            f"{', '.join(map(repr, missing))}; add it first"
        )
    statements = [statement_text(path, s, script) for path, (_t, ss) in found.items() for s in ss]
    versions: dict[str, VersionScript] = {}
    structures = Structures(script, versions)
    reaches: dict[str, Reach] = {}
    runs: dict[str, RunData] = {}
    plans: list[RunPlan] = []
    done = {} if force else _already_replayed(store, names, statements, where)
    absent: list[tuple[str, str]] = []  # runs whose version is not in this repository
    for row in (r for r in rows if r.script == script):
        plan = RunPlan(run_id=row.run_id, version=row.version, script=script)
        plans.append(plan)
        if row.status == "imported":  # exchange/: history brought in from elsewhere
            plan.skipped = "imported run: no code version"
            continue
        if not row.version:
            plan.skipped = (
                "the run has no code version (recorded outside git, or versioning failed)"
            )
            continue
        if repo is None or not repo.has_commit(row.version):
            plan.skipped = missing_version_message(row.run_id, row.version)
            absent.append((row.run_id, row.version))
            continue
        if refusal := replay_refusal(store, int(row.id)):  # recorded on several ranks
            plan.skipped = refusal
            continue
        if row.version not in versions:
            try:
                versions[row.version] = version_script(
                    repo, found, row.version, script, accept_low_confidence
                )
            except GitError as exc:
                plan.skipped = f"cannot read {script} at {row.version[:10]}: {exc}"
                continue
        vs = versions[row.version]
        plan.propagated = vs.propagation
        plan.low_confidence = accept_low_confidence and _low_confidence(vs.propagation)
        if vs.refused:
            plan.skipped = f"the statement has no place in version {row.version[:10]}: {vs.refused}"
            continue
        if vs.already:
            plan.skipped = f"its code already logs {', '.join(sorted(vs.already))}"
            continue
        if int(row.id) in done:
            plan.skipped = f"already replayed by {done[int(row.id)]}; --force recomputes"
            continue
        data = runs[row.run_id] = load_run(store, row)
        structure = structures.get(row.version, data)
        reach = reaches[row.run_id] = structure.reach_all(vs.placed)
        plan.level = reach.level
        plan.also = [w for w in ("prefix", "suffix") if getattr(reach, w)]
        plan.why = reach.why
        if plan.level in ("outer", "inner") and not data.main_ctx:
            plan.skipped = f"no recorded iterations of its main loop {data.main_loop!r}"
    if absent and len(absent) == len(plans):
        raise MissingVersionError(missing_versions_message(absent))
    # recorded data missing or changed: refused, or marked for the report (replaying/datacheck.py)
    check_data(project, store, plans, {r.run_id: int(r.id) for r in rows}, allow_changed_data)
    remaining = [p for p in plans if not p.skipped]
    if remaining:
        selected = select_coordinates(store, remaining, runs, structures, reaches, where)
    else:  # every run skipped above: still refuse a --where that names no recorded column
        selected = {}
        if where:
            check_where(store, where)
    objects_manifests = [c[2] for data in runs.values() for c in data.checkpoints[:1]]
    model = CostModel(
        measure_load_speed(project.objects_url, objects_manifests),
        forked,
        preloaded_lazy,
        imports_now,
    )
    for plan in plans:
        if not plan.skipped and not selected.get(plan.run_id):
            plan.skipped = NOT_SELECTED
    n_selected = sum(1 for p in plans if not p.skipped)
    model.pace = pace(imports_now, [runs[p.run_id].timings.startup for p in plans if not p.skipped])
    task_id = 0
    raw_bases: dict[int, str] = {}
    for plan in plans:
        if plan.skipped:
            continue
        data = runs[plan.run_id]
        coords = selected[plan.run_id]
        if plan.also and where is None and plan.level in ("outer", "inner"):
            coords.add(())  # keep what the statements log before/after the main loop too
        if plan.level == "outer" and plan.version in versions:
            coords = narrow_to_siblings(store, data, versions[plan.version], names, coords)
            if not coords:
                plan.skipped = "the block of the new statement never ran in this run"
                continue
        plan.selected = [list(c) for c in sorted(coords)]
        plan.iterations = sorted({c[0] for c in coords if c})
        plan.lazy = plan.level == "outer" and len(plan.iterations) < len(data.main_ctx)
        assert plan.version is not None and plan.level is not None
        structure = structures.get(plan.version, data)
        if plan.lazy and plan.version in versions:
            plan.before_nested = structure.before_nested(versions[plan.version].placed)
            plan.compared = sorted(structure.logged_before_nested()) if plan.before_nested else []
        reexecute = structure.loops_to_reexecute()
        plan.reexecute_loops = sorted(reexecute)
        last_recorded = max(data.main_ctx) if data.main_ctx else None
        for chunk in _chunks(plan, n_selected, workers):
            task_id += 1
            full = chunk if plan.level == "inner" else None
            last = max(chunk) if plan.level in ("outer", "inner") and chunk else None
            run_suffix = "suffix" in plan.also and last is not None and last == last_recorded
            skip_main = (
                plan.level == "suffix"
                and data.main_exit is not None
                and not structure.suffix_needs_main_loop()
            )
            shape = (
                data.timings,
                plan.level,
                full,
                last,
                data.checkpoint_bytes,
                reexecute,
                data.main_exit[1] if data.main_exit else None,
                skip_main,
            )
            chosen = plan.iterations if plan.lazy else None
            seconds, basis = model.task(*shape, selected=chosen, before_nested=plan.before_nested)
            raw_seconds, raw_bases[task_id] = model.task(
                *shape, pace=1.0, selected=chosen, before_nested=plan.before_nested
            )
            if run_suffix:
                seconds += data.timings.suffix * model.pace
                raw_seconds += data.timings.suffix
                basis += f" + suffix {data.timings.suffix * model.pace:.2f}s"
                raw_bases[task_id] += f" + suffix {data.timings.suffix:.2f}s"
            plan.tasks.append(
                TaskPlan(
                    task_id,
                    plan.run_id,
                    plan.version,
                    plan.level,
                    full,
                    last,
                    skip_main,
                    seconds,
                    basis,
                    raw_seconds,
                    run_suffix,
                )
            )
    corrections = past_corrections(store, script)
    for task in (t for p in plans for t in p.tasks):
        key = correction_key(task.level, task.run_id, corrections)
        if key is not None:  # measured replays say more than the pace's proxy: replace it
            factor = corrections[key]
            task.estimate_seconds = task.raw_seconds * factor * load
            whose = "this run" if "@" in key else script
            busy = f"; x{load:.2f} for the machine's load now" if load > 1.05 else ""
            task.basis = (
                f"{raw_bases[task.task_id]}; x{factor:.2f}, as past {task.level} replays of "
                f"{whose} ran{busy}"
            )
    replay_id = new_run_id()
    stmt_texts = statements
    if server_seconds is None:
        planned = [runs[p.run_id].timings.startup for p in plans if p.tasks]
        server_seconds = max(planned) if planned else 0.0
    server = server_seconds if forked else 0.0
    return (
        Plan(
            replay_id,
            names,
            script,
            stmt_texts,
            where,
            workers,
            plans,
            model.load_speed,
            server,
            cores=cores,
            corrections=corrections,
            load=load,
        ),
        runs,
        versions,
    )


def _pick_script(
    project: Project,
    rows: Sequence[Any],
    names: Sequence[str],
    script: str | None,
    found: dict[str, tuple[str, list[Statement]]],
) -> str:
    """The recorded entry script to replay: the one named, else the only recorded script that
    has the statements or imports a module that has them."""
    if script is not None:
        candidate = Path(script)
        if candidate.is_absolute():
            script = candidate.resolve().relative_to(project.root.resolve()).as_posix()
        if not any(r.script == script for r in rows):
            raise ReplayError(f"no recorded run of {script!r} (see `retrolog runs`)")
        return script
    scripts = sorted({r.script for r in rows if r.script and r.script != "<interactive>"})
    if not found:
        raise ReplayError(
            f"no recorded script logs {', '.join(map(repr, names))} today, nor any other "
            "Python file of the project; add the statement first"
        )
    with_statement = [s for s in scripts if s in found]
    if not with_statement:
        texts = {path: text for path, (text, _statements) in found.items()}
        with_statement = [s for s in scripts if _imports_any(project.root, s, texts)]
        if not with_statement:
            with_statement = scripts if len(scripts) == 1 else []
    if len(with_statement) == 1:
        return with_statement[0]
    if not with_statement:
        raise ReplayError(
            f"no recorded script logs {', '.join(map(repr, names))} today "
            f"(found in {', '.join(found)}); pass --script"
        )
    raise ReplayError(
        f"several scripts log these names ({', '.join(with_statement)}); pass --script"
    )


def _imports_any(root: Path, script: str, files: dict[str, str]) -> bool:
    """Whether today's ``script`` imports one of ``files`` (path -> text), directly or through
    another of them."""
    try:
        source = today_source(root, script)  # a notebook's script: its saved notebook's cells
    except (OSError, UnicodeDecodeError, ValueError):
        return False
    return len(imported_files(script, {**files, script: source})) > 1


def _chunks(plan: RunPlan, n_runs: int, workers: int) -> list[list[int]]:
    if plan.level != "inner" or n_runs >= workers:
        return [plan.iterations]
    parts = -(-workers // max(n_runs, 1))
    return split_contiguous(plan.iterations, parts)
