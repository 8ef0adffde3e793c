"""Replay plans: which runs, which iterations, which level, which tasks, and what it will cost.

The plan is built from the store alone (recorded loops, timings and checkpoints) plus the old
versions of the script read from git, so it can be shown and confirmed before anything runs.
"""

from __future__ import annotations

import bisect
import json
import math
from collections.abc import Callable, Iterable
from dataclasses import asdict, dataclass, field
from typing import Any

from ..errors import ReplayRefused, UsageError

LEVEL_ORDER = {"prefix": 0, "suffix": 1, "outer": 2, "inner": 3, "full": 4}
FORK_SECONDS = 0.12  # a forked task's fixed cost (fork, exit, torch's atexit handlers)
RESTORE_OVERHEAD_SECONDS = 0.01
# after the tasks: read their output, compare, store (measured through the stdlib SQLite store:
# 0.03-0.04 s for 5 runs of 10 epochs; it was ~0.1 s + ~0.05 s per run through SQLAlchemy)
COLLECT_SECONDS = 0.02
COLLECT_PER_RUN_SECONDS = 0.005


class ReplayError(UsageError):  # a ValueError too, as it always was
    """The replay cannot be planned; the message says what to change."""


class NothingToReplay(ReplayError, ReplayRefused):
    """No task was planned: every run was skipped. The message has one line per run and why;
    ``plan`` is the plan (to show it)."""

    exit_code = ReplayRefused.exit_code

    def __init__(self, plan: Plan) -> None:
        self.plan = plan
        reasons = [f"  {r.run_id}: {r.skipped or 'nothing selected'}" for r in plan.runs]
        if not reasons:
            reasons = [f"  no finished run of {plan.script} is recorded"]
        super().__init__("nothing to replay:\n" + "\n".join(reasons))


@dataclass
class RunTimings:
    """A recorded run's timings, as the cost model needs them."""

    startup: float = 0.0  # interpreter start + imports before the first retrolog call
    prefix: float = 0.0  # from process start to the main loop (includes startup)
    suffix: float = 0.0
    total: float = 0.0
    iterations: dict[int, float] = field(default_factory=dict)  # main iteration -> seconds
    nested: dict[int, dict[str, float]] = field(
        default_factory=dict
    )  # iteration -> loop -> seconds


@dataclass
class TaskPlan:
    """One unit of work for the executor: a run and the main-loop iterations it covers."""

    task_id: int
    run_id: str
    version: str
    level: str
    full_iterations: list[int] | None  # inner: iterations whose nested loops re-execute
    last_iteration: int | None  # stop after it (None: the whole main loop)
    skip_main_loop: bool
    estimate_seconds: float
    basis: str  # how the estimate was made, in words
    # the estimate at the recorded pace, before pace and corrections: what corrections learn from
    raw_seconds: float = 0.0
    run_suffix: bool = False  # outer/inner: go on after the main loop (a statement runs there)

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


@dataclass
class RunPlan:
    """What replay will do for one run, or why it will not."""

    run_id: str
    version: str | None
    script: str
    level: str | None = None
    skipped: str | None = None  # the reason this run is not replayed
    selected: list[list[int]] = field(
        default_factory=list
    )  # selected coordinates (see coordinator)
    iterations: list[int] = field(default_factory=list)  # selected main-loop iterations
    propagated: dict[str, Any] | None = None  # placement report when the code differed
    reexecute_loops: list[str] = field(default_factory=list)
    tasks: list[TaskPlan] = field(default_factory=list)
    # outer level with only some iterations selected: nested loops no selected iteration depends
    # on are skipped without restoring, and fidelity compares the selected iterations only
    lazy: bool = False
    # lazy, and the new statements run before the nested loops in an iteration's body: a
    # selected iteration's own nested loops are not needed either
    before_nested: bool = False
    compared: list[str] = field(default_factory=list)  # before_nested: the names fidelity compares
    # where the statements also run besides ``level`` ("prefix", "suffix"), and why in words
    also: list[str] = field(default_factory=list)
    why: str = ""
    low_confidence: bool = False  # a placement below the propagation threshold was accepted
    # data paths changed since the run, replayed anyway (--allow-changed-data; datacheck.py)
    data_changed: list[str] = field(default_factory=list)


@dataclass
class Plan:
    """A whole replay: shown to the user, stored in the ``replays`` table, then executed."""

    replay_id: str
    names: list[str]
    script: str
    statements: list[str]
    where: str | None
    workers: int
    runs: list[RunPlan]
    load_speed: float  # checkpoint bytes per second the restore estimates assume
    # what is left of the fork server's start when the tasks could begin (0: already running)
    server_seconds: float = 0.0
    planning_seconds: float = 0.0  # measured: from the replay call to this plan
    cores: int = 0  # CPU cores the tasks share (0: one per worker)
    # level or "level@run_id" -> factor (see planner.past_corrections)
    corrections: dict[str, float] = field(default_factory=dict)
    # runnable processes per core when planning, at least 1 (see planner.load_factor): corrections
    # learned on a loaded machine are divided by it, and multiplied by today's when applied
    load: float = 1.0

    @property
    def tasks(self) -> list[TaskPlan]:
        return [task for run in self.runs for task in run.tasks]

    @property
    def contention(self) -> float:
        """How much slower each task runs because more tasks run at once than there are cores."""
        busy = min(self.workers, len(self.tasks))
        return max(1.0, busy / self.cores) if self.cores and busy else 1.0

    @property
    def estimate_seconds(self) -> float:
        """Planning (measured), what is left of the server's start, the makespan of the tasks over
        the workers (longest task first onto the least-loaded worker; slowed down when tasks
        outnumber cores), then reading, comparing and storing their output."""
        tasks = [t.estimate_seconds for t in self.tasks]
        if not tasks:
            return self.planning_seconds
        runs = len({t.run_id for t in self.tasks})
        return (
            self.planning_seconds
            + self.server_seconds
            + makespan(tasks, self.workers) * self.contention
            + COLLECT_SECONDS
            + COLLECT_PER_RUN_SECONDS * runs
        )

    def to_json(self) -> str:
        return json.dumps(
            {
                "names": self.names,
                "script": self.script,
                "where": self.where,
                "workers": self.workers,
                "load_speed": self.load_speed,
                "server_seconds": self.server_seconds,
                "planning_seconds": self.planning_seconds,
                "cores": self.cores,
                "corrections": self.corrections,
                "load": self.load,
                "estimate_seconds": self.estimate_seconds,
                "runs": [asdict(r) for r in self.runs],
            },
            default=str,
        )


def makespan(durations: list[float], workers: int) -> float:
    loads = [0.0] * max(1, workers)
    for duration in sorted(durations, reverse=True):
        index = loads.index(min(loads))
        loads[index] += duration
    return max(loads) if durations else 0.0


def nested_work(
    restored: dict[str, int], rerun: dict[str, int], skipped: dict[str, int] | None = None
) -> str:
    """What outer iterations do with their nested loops, in words (loop -> iterations)."""
    skipped = skipped or {}
    parts = []
    for loop in sorted({*restored, *rerun, *skipped}):
        done, again, none = restored.get(loop, 0), rerun.get(loop, 0), skipped.get(loop, 0)
        if none:
            parts.append(
                f"{loop} skipped in {none} (no selected iteration needs it), restored in "
                f"{done}, re-executed in {again}"
            )
        elif done and again:
            parts.append(f"{loop} restored from checkpoints in {done}, re-executed in {again}")
        elif done:
            parts.append(f"{loop} restored from checkpoints")
        else:
            parts.append(f"{loop} re-executed")
    return f"(nested loop {'; '.join(parts)})" if parts else "(no nested loops)"


def lazy_skips(
    checkpoints: dict[int, dict[str, int]],
    selected: list[int],
    reexecute: set[str],
    before_nested: bool = False,
) -> Callable[[int, Iterable[str]], frozenset[str]]:
    """For a lazy outer replay: per main iteration, the nested loops it skips without restoring
    anything, because no selected iteration lies between it and the loop's next checkpoint
    (the rule ``ReplaySession._not_needed`` applies when the replay runs)."""
    chosen = sorted(selected)
    by_loop: dict[str, list[int]] = {}
    for index in sorted(checkpoints):
        for loop in checkpoints[index]:
            by_loop.setdefault(loop, []).append(index)

    def unneeded(index: int, loops: Iterable[str]) -> frozenset[str]:
        # the first selected iteration whose statements may observe this iteration's loops
        first = (bisect.bisect_right if before_nested else bisect.bisect_left)(chosen, index)
        out = set()
        for loop in loops:
            if loop in reexecute:
                continue
            checkpointed = by_loop.get(loop, [])
            at = bisect.bisect_right(checkpointed, index)
            if first == len(chosen) or (
                at < len(checkpointed) and chosen[first] > checkpointed[at]
            ):
                out.add(loop)
        return frozenset(out)

    return unneeded


def combine_levels(levels: list[str]) -> str:
    """One level for several new statements: the one whose task runs all of them (inner >
    outer > suffix > prefix; see ``layout.combine``, which also keeps where else they run)."""
    unique = set(levels)
    if not unique or "full" in unique:
        return "full"
    return next(level for level in ("inner", "outer", "suffix", "prefix") if level in unique)


def split_contiguous(values: list[int], parts: int) -> list[list[int]]:
    """Split sorted ``values`` into at most ``parts`` chunks of consecutive elements."""
    if not values:
        return []
    parts = max(1, min(parts, len(values)))
    size = math.ceil(len(values) / parts)
    return [values[i : i + size] for i in range(0, len(values), size)]


PACE_BOUNDS = (1 / 3, 2.0)


def pace(imports_now: float | None, startups: list[float]) -> float:
    """How long recorded work takes now, relative to when it was recorded: the fork server's
    import of the script's top-level modules now over the median recorded start-up (interpreter
    start and the same imports). Runs recorded on a loaded machine are replayed faster on a quiet
    one, and the other way round; bounded, and 1.0 without both measurements. The median keeps
    one run recorded with a cold page cache from setting the pace."""
    measured = sorted(t for t in startups if t > 0.2)
    if imports_now is None or imports_now <= 0.05 or not measured:
        return 1.0
    ratio = imports_now / measured[len(measured) // 2]
    return min(max(ratio, PACE_BOUNDS[0]), PACE_BOUNDS[1])


class CostModel:
    """Seconds a task will take, from the run's recorded timings and checkpoint sizes."""

    def __init__(
        self,
        load_speed: float,
        forked: bool = True,
        preloaded_lazy: float = 0.0,
        imports_now: float | None = None,
    ) -> None:
        self.load_speed = load_speed
        self.pace = 1.0  # recorded seconds -> seconds now (see ``pace``)
        self.forked = forked  # tasks fork from a server that already imported the script's modules
        # seconds of imports the recorded prefix paid lazily (torch.optim -> torch._dynamo) that
        # the fork server has already done: measured by the server, or by the last one like it
        self.preloaded_lazy = preloaded_lazy
        self.imports_now = imports_now  # the server's import of the top-level modules, seconds

    def lazy_imports_then(self, startup: float) -> float:
        """What the preloaded lazy imports took in a recorded run: their time now, scaled by how
        much slower that run imported its top-level modules than the server does now (a run
        recorded under load, or with a cold page cache, imported everything slower)."""
        if not self.imports_now or self.imports_now <= 0.05 or startup <= 0.2:
            return self.preloaded_lazy
        ratio = min(max(startup / self.imports_now, 1 / PACE_BOUNDS[1]), 1 / PACE_BOUNDS[0])
        return self.preloaded_lazy * ratio

    def restore(self, nbytes: int) -> float:
        return RESTORE_OVERHEAD_SECONDS + nbytes / self.load_speed

    def outer_iteration(
        self,
        timings: RunTimings,
        index: int,
        skippable: dict[str, int],
        reexecute: set[str],
        pace: float | None = None,
        unneeded: frozenset[str] = frozenset(),
    ) -> float:
        """An iteration whose nested loops are skipped where a checkpoint exists (and, in a lazy
        replay, without restoring anything where no selected iteration needs them)."""
        pace = self.pace if pace is None else pace
        seconds = timings.iterations.get(index, 0.0) * pace
        for loop, loop_seconds in timings.nested.get(index, {}).items():
            if loop in unneeded:
                seconds -= loop_seconds * pace
                continue
            if loop in reexecute or loop not in skippable:
                continue
            seconds += self.restore(skippable[loop]) - loop_seconds * pace
        return max(seconds, 0.0)

    def task(
        self,
        timings: RunTimings,
        level: str,
        full_iterations: list[int] | None,
        last_iteration: int | None,
        checkpoints: dict[int, dict[str, int]],
        reexecute: set[str],
        main_exit_bytes: int | None,
        skip_main_loop: bool,
        pace: float | None = None,
        selected: list[int] | None = None,
        before_nested: bool = False,
    ) -> tuple[float, str]:
        """(seconds, basis) for one task, at ``pace`` (default: the model's). ``selected``: the
        iterations a lazy outer replay needs (None: every one)."""
        pace = self.pace if pace is None else pace
        if level == "full":
            return timings.total * pace, "the recorded run's duration (whole script re-executed)"
        if self.forked:
            lazy = self.lazy_imports_then(timings.startup)
            work = max(timings.prefix - timings.startup - lazy, 0.0) * pace
            seconds = work + FORK_SECONDS
        else:
            seconds = max(timings.prefix, 0.0) * pace
        parts = [f"prefix {seconds:.2f}s" + (" (imports preloaded)" if self.forked else "")]
        if level == "prefix":
            return seconds, parts[0]
        if level == "suffix" and skip_main_loop and main_exit_bytes is not None:
            restore = self.restore(main_exit_bytes)
            suffix = timings.suffix * pace
            parts += [f"restore main loop exit {restore:.2f}s", f"suffix {suffix:.2f}s"]
            return seconds + restore + suffix, " + ".join(parts)
        iterations = sorted(timings.iterations)
        if last_iteration is not None:
            iterations = [i for i in iterations if i <= last_iteration]
        full = set(full_iterations or [])
        outer = full_time = 0.0
        restored: dict[str, int] = {}
        rerun: dict[str, int] = {}
        skipped: dict[str, int] = {}
        unneeded = (
            lazy_skips(checkpoints, selected, reexecute, before_nested)
            if selected is not None
            else None
        )
        for index in iterations:
            if index in full:
                full_time += timings.iterations.get(index, 0.0) * pace
            else:
                skippable = checkpoints.get(index, {})
                nested = timings.nested.get(index, {})
                dropped = unneeded(index, nested) if unneeded is not None else frozenset()
                outer += self.outer_iteration(timings, index, skippable, reexecute, pace, dropped)
                for loop in timings.nested.get(index, {}):
                    if loop in dropped:
                        done = skipped
                    else:
                        done = restored if loop in skippable and loop not in reexecute else rerun
                    done[loop] = done.get(loop, 0) + 1
        seconds += outer + full_time
        if len(iterations) > len(full):
            parts.append(
                f"{len(iterations) - len(full)} iterations {nested_work(restored, rerun, skipped)} "
                f"{outer:.2f}s"
            )
        if full:
            parts.append(f"{len(full)} iterations re-executed {full_time:.2f}s")
        if level == "suffix":
            seconds += timings.suffix * pace
            parts.append(f"suffix {timings.suffix * pace:.2f}s")
        if pace != 1.0:
            parts.append(f"recorded times x{pace:.2f} (this machine's pace now)")
        return seconds, " + ".join(parts)
