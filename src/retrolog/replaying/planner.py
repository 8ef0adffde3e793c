"""Build a replay plan from the store, git and today's script (nothing runs here)."""

from __future__ import annotations

import json
import os
import time
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

from .._ids import new_run_id
from ..errors import MissingVersionError
from ..project import Project
from ..record.ranks import replay_refusal
from ..record.values import from_cell
from ..store.where import select_rows
from ..versions import GitError, GitRepo
from ..versions.remote import missing_version_message, missing_versions_message
from .analysis import ScriptStructure, Statement
from .codebase import (
    VersionScript,
    imported_files,
    new_statements,
    python_files_today,
    today_source,
    version_script,
)
from .datacheck import check_data
from .layout import Reach, Trees
from .plan import (
    CostModel,
    Plan,
    ReplayError,
    RunPlan,
    RunTimings,
    TaskPlan,
    pace,
    split_contiguous,
)

if TYPE_CHECKING:
    from ..store.lite import Database

NOT_SELECTED = "no row of this run matches --where"
DEFAULT_LOAD_SPEED = 200e6  # bytes/s, used when no checkpoint exists to measure


@dataclass
class RunData:
    """What the store recorded about one run, loaded once for planning and collecting."""

    key: int
    run_id: str
    script: str
    version: str | None
    argv: list[str]
    cwd: str | None
    args: dict[str, Any]
    main_loop: str | None = None  # the loop the run ran at depth 1 (its first, by name)
    paths: dict[int, tuple[tuple[str, int], ...]] = field(
        default_factory=dict
    )  # ctx -> coordinates
    main_ctx: dict[int, int] = field(default_factory=dict)  # main iteration -> ctx id
    nested_loops: set[str] = field(default_factory=set)  # loops run inside main iterations
    timings: RunTimings = field(default_factory=RunTimings)
    checkpoints: list[tuple[int, str, str]] = field(default_factory=list)
    checkpoint_bytes: dict[int, dict[str, int]] = field(default_factory=dict)
    main_exit: tuple[str, int] | None = None  # (manifest, bytes)


def load_run(store: Database, row: Any, main_loop: str | None = None) -> RunData:
    """A run's recorded loops, timings and checkpoints. The main loop is the loop the run ran at
    depth 1 (``parent_id = 0``; the first one, as recording counts only it), unless named."""
    key = int(row.id)
    args = {
        name: from_cell(t, n, x)
        for name, t, n, x in store.fetch(
            "SELECT name, vtype, value_num, value_text FROM args WHERE run = :r", {"r": key}
        )
    }
    data = RunData(
        key,
        row.run_id,
        row.script,
        row.version,
        json.loads(row.argv or "[]"),
        row.cwd,
        args,
        main_loop,
    )
    loops = store.fetch(
        "SELECT ctx_id, parent_id, name, iteration FROM loops WHERE run = :r ORDER BY ctx_id",
        {"r": key},
    )
    if data.main_loop is None:
        data.main_loop = next((name for _c, parent, name, _i in loops if not parent), None)
    for ctx_id, parent, name, iteration in loops:
        base = data.paths.get(parent, ()) if parent else ()
        data.paths[ctx_id] = (*base, (name, iteration))
        if not parent and name == data.main_loop:
            data.main_ctx[iteration] = ctx_id
    main_ctxs = set(data.main_ctx.values())
    data.nested_loops = {name for _c, parent, name, _i in loops if parent in main_ctxs}
    ctx_to_main = {ctx: index for index, ctx in data.main_ctx.items()}
    timings = data.timings
    for kind, loop, ctx_id, iteration, seconds in store.fetch(
        "SELECT kind, loop, ctx_id, iteration, seconds FROM timings WHERE run = :r", {"r": key}
    ):
        if kind == "startup":
            timings.startup = seconds
        elif kind == "prefix":
            timings.prefix = seconds
        elif kind == "suffix":
            timings.suffix = seconds
        elif kind == "iteration" and iteration is not None:
            timings.iterations[int(iteration)] = seconds
        elif kind == "nested" and ctx_id in ctx_to_main:
            per_loop = timings.nested.setdefault(ctx_to_main[ctx_id], {})
            per_loop[loop] = per_loop.get(loop, 0.0) + seconds
    start_end = store.fetch("SELECT start_time, end_time FROM runs WHERE id = :r", {"r": key})[0]
    if start_end[0] and start_end[1]:
        timings.total = (
            start_end[1] - start_end[0] + timings.prefix
        )  # prefix counts from process start
    for ctx_id, loop, iteration, manifest, nbytes in store.fetch(
        "SELECT ctx_id, loop, iteration, manifest, bytes_total FROM checkpoints WHERE run = :r",
        {"r": key},
    ):
        if iteration is None and ctx_id == 0:
            data.main_exit = (manifest, int(nbytes or 0))
        elif iteration is not None:
            data.checkpoints.append((int(iteration), loop, manifest))
            data.checkpoint_bytes.setdefault(int(iteration), {})[loop] = int(nbytes or 0)
    return data


class Structures:
    """``ScriptStructure`` per version and recorded loop names (runs of a version share it)."""

    def __init__(self, script: str, versions: dict[str, VersionScript]) -> None:
        self.script = script
        self.versions = versions
        self._cache: dict[tuple[str, str | None, tuple[str, ...]], ScriptStructure] = {}
        self._trees = Trees()  # files the versions share are parsed once

    def get(self, version: str, data: RunData | None) -> ScriptStructure:
        main = data.main_loop if data else None
        nested = tuple(sorted(data.nested_loops)) if data and main else ()
        key = (version, main, nested)
        if key not in self._cache:
            vs = self.versions[version]
            every = {**vs.modules, **vs.files, self.script: vs.source}
            modules = imported_files(self.script, every, self._trees)
            modules.pop(self.script, None)
            self._cache[key] = ScriptStructure(
                vs.source, self.script, modules, main, nested if main else None, self._trees
            )
        return self._cache[key]


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
    binds = {f"n{i}": name for i, name in enumerate(names)}
    try:
        rows = store.fetch(
            "SELECT DISTINCT l.run, l.name, r.replay_id, r.statements, r.where_clause, r.created "
            "FROM logs l JOIN replays r ON r.replay_id = l.replay_id "
            "JOIN runs u ON u.id = l.run "
            "JOIN replay_runs f ON f.replay_id = r.replay_id AND f.run_id = u.run_id "
            "WHERE r.status = 'finished' AND f.fidelity IN ('reproduced', 'unchecked') "
            f"AND l.name IN ({', '.join(':' + b for b in binds)})",
            binds,
        )
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
    rows = store.fetch(
        "SELECT id, run_id, script, version, status, argv, cwd FROM runs WHERE status != 'running' ORDER BY run_id"
    )
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
        selected = _select(store, remaining, runs, structures, reaches, where)
    else:  # every run skipped above: still refuse a --where that names no recorded column
        selected = {}
        if where:
            _check_where(store, where)
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
            coords = _narrow_to_siblings(store, data, versions[plan.version], names, coords)
            if not coords:
                plan.skipped = "the block of the new statement never ran in this run"
                continue
        plan.selected = [list(c) for c in sorted(coords)]
        plan.iterations = sorted({c[0] for c in coords if c})
        plan.lazy = plan.level == "outer" and len(plan.iterations) < len(data.main_ctx)
        assert plan.version is not None and plan.level is not None
        structure = structures.get(plan.version, data)
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
            seconds, basis = model.task(*shape, selected=chosen)
            raw_seconds, raw_bases[task_id] = model.task(*shape, pace=1.0, selected=chosen)
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


CORRECTION_REPLAYS = 5  # the latest replays of a script whose tasks calibrate the next estimate
CORRECTION_BOUNDS = (1 / 3, 3.0)  # wider than the pace's bounds: a factor also replaces the pace


def correction_key(level: str, run_id: str, corrections: dict[str, float]) -> str | None:
    """The correction that applies to a task: the run's own at this level, else the level's."""
    for key in (f"{level}@{run_id}", level):
        if key in corrections:
            return key
    return None


def load_factor(cores: int) -> float:
    """Runnable processes per core over the last minute, at least 1: how much slower than on a
    quiet machine work runs now. A replay's learned correction is divided by the factor of its
    own time and multiplied by today's, so a correction learned on a loaded machine does not
    inflate every estimate on a quiet one (seen: 2.2x under on a loaded VM, then 32 s estimated
    for 2.6 s on a quiet one)."""
    try:
        return max(1.0, os.getloadavg()[0] / max(cores or os.cpu_count() or 1, 1))
    except OSError:
        return 1.0


def past_corrections(store: Database, script: str) -> dict[str, float]:
    """Medians of actual / raw estimate (at the recorded pace, see ``TaskPlan.raw_seconds``)
    over the tasks of the latest replays of ``script`` (tasks that ran once and succeeded; at
    least 2 per median), per level (``"inner"``) and per level and run (``"inner@<run id>"``):
    the part of the error that repeats. A level's factor holds the machine's speed now and what
    the replay itself adds; a run's holds also how loaded the machine was when that run was
    recorded (its timings are the estimate's basis), which differs from run to run. A factor
    replaces the pace (a proxy measured once per fork server) and corrections applied earlier.
    Bounded; {} without history."""
    try:
        replays = store.fetch(
            "SELECT replay_id, plan FROM replays WHERE script = :s AND status = 'finished' "
            "ORDER BY created DESC LIMIT :n",
            {"s": script, "n": CORRECTION_REPLAYS},
        )
    except Exception:
        return {}
    ratios: dict[str, list[float]] = {}
    for replay_id, plan_json in replays:
        try:
            doc = json.loads(plan_json or "{}")
            applied = doc.get("corrections") or {}
            load_then = max(float(doc.get("load") or 1.0), 1.0)
            raws = {
                int(t["task_id"]): float(t.get("raw_seconds") or 0.0)
                for r in doc.get("runs") or []
                for t in r.get("tasks") or []
            }
        except (ValueError, TypeError, KeyError, AttributeError):
            continue
        for task_id, level, run_id, estimate, actual in store.fetch(
            "SELECT task_id, level, run_id, estimate_seconds, actual_seconds FROM replay_tasks "
            "WHERE replay_id = :r AND status = 'done' AND attempts = 1",
            {"r": replay_id},
        ):
            raw = raws.get(int(task_id), 0.0)
            if not raw and estimate:  # a plan of an earlier version: undo its correction only
                key = correction_key(level, run_id, applied)
                raw = estimate / float(applied[key] if key else 1.0)
            if raw > 0 and actual:
                ratio = actual / raw / load_then
                ratios.setdefault(level, []).append(ratio)
                ratios.setdefault(f"{level}@{run_id}", []).append(ratio)
    low, high = CORRECTION_BOUNDS
    return {
        key: min(max(sorted(values)[len(values) // 2], low), high)
        for key, values in ratios.items()
        if len(values) >= 2
    }


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


def _select(
    store: Database,
    plans: Sequence[RunPlan],
    runs: dict[str, RunData],
    structures: Structures,
    reaches: dict[str, Reach],
    where: str | None,
) -> dict[str, set[tuple[int, ...]]]:
    """Selected coordinates per run: () for a whole run, (main,) or (main, nested) iterations."""
    table: list[dict[str, Any]] = []
    levels: dict[str, str | None] = {}
    out: dict[str, set[tuple[int, ...]]] = {}
    data_columns = _data_columns(store, [runs[p.run_id].key for p in plans]) if where else {}
    for plan in plans:
        data = runs[plan.run_id]
        assert plan.version is not None
        main_name = data.main_loop
        base = {
            "run_id": data.run_id,
            "version": data.version,
            "script": data.script,
            **data.args,
            **data_columns.get(data.key, {}),
        }
        rows: list[dict[str, Any]]
        if plan.level == "inner":
            inner_names = set(reaches[plan.run_id].loops) or data.nested_loops
            rows = [
                {
                    **base,
                    main_name: path[0][1],
                    path[1][0]: path[1][1],
                    "_coord": (path[0][1], path[1][1]),
                }
                for path in data.paths.values()
                if len(path) == 2 and path[0][0] == main_name and path[1][0] in inner_names
            ]
        elif data.main_ctx and main_name:
            rows = [{**base, main_name: i, "_coord": (i,)} for i in sorted(data.main_ctx)]
        else:
            rows = [{**base, "_coord": ()}]
        levels[data.run_id] = plan.level
        if where and data.main_ctx and main_name is not None:
            _add_epoch_metrics(store, data, rows, main_name)
        table.extend(rows)
    chosen = select_rows(table, where, skip=("_coord",)) if where else range(len(table))
    for index in chosen:
        row = table[index]
        coord = () if levels[row["run_id"]] in ("prefix", "suffix") else tuple(row["_coord"])
        out.setdefault(row["run_id"], set()).add(coord)
    return out


def _data_columns(store: Database, run_keys: Sequence[int]) -> dict[int, dict[str, str]]:
    """Per run key, its data versions as the columns ``runs()`` and ``dataframe()`` show
    (``data.<name>``: the digest's first hex digits, or "missing"), for ``--where``."""
    from ..record.data import SHORT
    from .datacheck import recorded_versions

    columns: dict[int, dict[str, str]] = {}
    for key, rows in recorded_versions(store, run_keys).items():
        for _run, name, _path, kind, digest, _algo, _manifest in rows:
            shown = "missing" if kind == "missing" else str(digest)[:SHORT]
            columns.setdefault(key, {})[f"data.{name}"] = shown
    return columns


def _narrow_to_siblings(
    store: Database,
    data: RunData,
    vs: VersionScript,
    names: Sequence[str],
    coords: set[tuple[int, ...]],
) -> set[tuple[int, ...]]:
    """Keep the main iterations where the new statements can run: those in which the recorded
    neighbour of each (same block, nothing but simple statements between) logged
    (replaying/siblings.py). Unchanged when a statement has no such neighbour."""
    from .siblings import logged_iterations, sibling_names

    neighbours = sibling_names(vs.source, vs.lines, set(names)) if vs.lines else None
    if not neighbours:
        return coords
    ran = logged_iterations(store, data, sorted(set(neighbours)))
    return {c for c in coords if not c or c[0] in ran}


def _check_where(store: Database, where: str) -> None:
    """Raise the ``--where`` error a bad clause would get, over the columns any run could have
    (facts, args, loop names, logged names), when there are no rows to filter."""
    columns = ["run_id", "version", "script"]
    for sql in (
        "SELECT DISTINCT name FROM args",
        "SELECT DISTINCT name FROM loops",
        "SELECT DISTINCT name FROM logs",
    ):
        columns += [str(r[0]) for r in store.fetch(sql)]
    select_rows([dict.fromkeys(columns)], where)


def _add_epoch_metrics(
    store: Database, data: RunData, rows: list[dict[str, Any]], main_name: str
) -> None:
    """Add the values the run recorded at main-loop level to its rows, so --where can use them."""
    ctx_to_main = {ctx: i for i, ctx in data.main_ctx.items()}
    found = store.fetch(
        "SELECT ctx_id, name, vtype, value_num, value_text FROM logs WHERE run = :r AND replay_id IS NULL "
        "AND ctx_id IN (SELECT ctx_id FROM loops WHERE run = :r AND parent_id = 0)",
        {"r": data.key},
    )
    taken = {name for row in rows for name in row}
    values: dict[int, dict[str, Any]] = {}
    for ctx_id, name, t, n, x in found:
        if ctx_id in ctx_to_main and name not in taken:
            values.setdefault(ctx_to_main[ctx_id], {})[name] = from_cell(t, n, x)
    for row in rows:
        row.update(values.get(row.get(main_name), {}))  # type: ignore[arg-type]
