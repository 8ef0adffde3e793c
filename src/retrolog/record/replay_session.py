"""The recording runtime in replay mode: the same script, re-run under a replay task's plan.

The coordinator (``retrolog.replaying``) starts the old version of a script with
``RETROLOG_REPLAY=<task spec JSON>``. Here, ``arg`` returns the run's recorded values, the main
loop runs only as far as the task needs, nested loops are either re-executed or skipped by
restoring the checkpoint taken at their exit (registered objects, RNG states, gradients and the
loop-carried variables, written back into the user's frame), and every logged row goes to the
task's output file (the coordinator compares and stores them). Nothing is written to the store
or to git.
"""

from __future__ import annotations

import bisect
import contextlib
import ctypes
import inspect
import json
import sys
import time
from collections.abc import Iterable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from types import FrameType
from typing import TYPE_CHECKING, Any

from .._warn import warn_once
from ..project import Project
from ..settings import REPLAY
from .backend import TaskOutputBackend
from .carried import user_frame
from .session import RunSession

if TYPE_CHECKING:
    from ..code import Carried

REPLAY_ENV = REPLAY.name


class ReplayDone(SystemExit):
    """Raised out of the main loop when the task's work is done (exit status 0)."""

    def __init__(self) -> None:
        super().__init__(0)


@dataclass
class TaskSpec:
    """What one replay task must do; written by the planner, read by the worker."""

    replay_id: str
    task_id: int
    run_id: str
    level: str  # prefix | outer | inner | suffix | full
    output: str
    progress: str
    objects_url: str
    args: dict[str, Any] = field(default_factory=dict)
    last_iteration: int | None = None  # stop after this main-loop iteration (None: run them all)
    full_iterations: list[int] | None = None  # main-loop iterations whose nested loops re-execute
    skip_main_loop: bool = False  # restore the main loop's exit checkpoint instead of running it
    stop_at_main_loop: bool = False  # prefix level: the work ends where the main loop starts
    stop_after_main_loop: bool = True  # everything but suffix/full: the suffix is not needed
    reexecute_loops: list[str] = field(default_factory=list)  # nested loops never to skip
    checkpoints: list[tuple[int, str, str]] = field(
        default_factory=list
    )  # (main iter, loop, manifest)
    main_exit: str | None = None  # manifest of the main loop's exit
    # outer level, some iterations selected: the only ones whose observations matter
    selected_iterations: list[int] | None = None
    # the new statements run before an iteration's nested loops: a selected iteration's own
    # nested loops are not needed either
    selected_before_nested: bool = False

    def to_json(self) -> str:
        return json.dumps(self.__dict__)

    @classmethod
    def load(cls, path: str | Path) -> TaskSpec:
        data = json.loads(Path(path).read_text())
        data["checkpoints"] = [tuple(c) for c in data.get("checkpoints", [])]
        return cls(**data)


class ReplaySession(RunSession):
    """A RunSession whose sink is the task's output file and whose loops follow the task spec."""

    def __init__(self, project: Project, script: str, argv: list[str], spec: TaskSpec) -> None:
        self.spec = spec
        self._checkpoint_by_iteration = {
            (int(i), loop): digest for i, loop, digest in spec.checkpoints
        }
        # for lazy outer replays: each loop's checkpointed iterations, and the selected ones, sorted
        self._checkpointed: dict[str, list[int]] = {}
        for i, loop in sorted(self._checkpoint_by_iteration):
            self._checkpointed.setdefault(loop, []).append(i)
        self._selected = sorted(spec.selected_iterations or ())
        self._reexecute = set(spec.reexecute_loops)
        self._full = set(spec.full_iterations) if spec.full_iterations is not None else None
        self._objects: Any = None
        self.fallbacks: list[str] = []
        super().__init__(
            project, script, argv, overrides={}, backend=TaskOutputBackend(spec.output)
        )
        self.args.update(spec.args)

    # -- the output file only (TaskOutputBackend): no checkpoints, args or code version -------
    def _loop_exited(self, name: str, parent: int, is_main: bool) -> None:
        return None

    def record_arg(self, name: str, value: Any) -> None:
        return None

    def _start_main_loop(self) -> None:
        self.main_loop_started = True
        self.events.append(
            ("timing", "prefix", None, 0, None, time.perf_counter() - self._t0, None)
        )

    # -- control flow ------------------------------------------------------------------------
    def loop(self, name: str, iterable: Iterable[Any]) -> Iterator[Any]:
        is_main = self.depth == 0 and not self.main_loop_started
        if is_main:
            return self._main_loop(name, iterable)
        if (
            self.depth == 1
            and self._may_skip(name)
            and (self._not_needed(name) or self._restore_exit(name))
        ):
            return iter(())
        return self._iterate_nested(name, iterable, self.ctx, self.depth)

    def _not_needed(self, name: str) -> bool:
        """True when no selected iteration observes what this nested loop does: none lies
        between this iteration and the next checkpoint of the loop (inclusive), whose restore
        replaces everything the loop changed. Then it is skipped without restoring anything:
        the outer code until that restore runs on stale state, and nothing it logs is kept or
        compared (``selected_iterations``, set by the planner for lazy outer replays)."""
        index = self.main_index
        if self.spec.selected_iterations is None or index is None:
            return False
        checkpointed = self._checkpointed.get(name, [])
        at = bisect.bisect_right(checkpointed, index)
        until = checkpointed[at] if at < len(checkpointed) else None
        # the first selected iteration whose statements may observe this iteration's loops
        after = bisect.bisect_right if self.spec.selected_before_nested else bisect.bisect_left
        first = after(self._selected, index)
        unneeded = first == len(self._selected) or (
            until is not None and self._selected[first] > until
        )
        return unneeded and self._carried_bound()

    def _carried_bound(self) -> bool:
        """Whether the variables the code after this nested loop reads from it are bound: a loop
        skipped without restoring leaves them as an earlier iteration left them, and before its
        first pass (or when the loop cannot be analysed) there is nothing to leave."""
        from ..code import carried_at

        frame = user_frame()
        carried = carried_at(frame.f_code.co_filename, frame.f_lineno) if frame else None
        if frame is None or carried is None:
            return False
        names = frame.f_globals if carried.module_level else frame.f_locals
        return all(
            var in (frame.f_globals if var in carried.global_names else names)
            for var in carried.names
        )

    def _may_skip(self, name: str) -> bool:
        if self.spec.level == "full" or name in self._reexecute or self.main_index is None:
            return False
        return self._full is None or self.main_index not in self._full

    def _main_loop(self, name: str, iterable: Iterable[Any]) -> Iterator[Any]:
        spec = self.spec
        self._start_main_loop()
        if spec.stop_at_main_loop:
            self.close("finished")
            raise ReplayDone()
        if spec.skip_main_loop:
            if spec.main_exit and self._restore(spec.main_exit, f"{name} (main loop exit)"):
                return
            self.fallbacks.append(
                f"main loop {name!r}: re-executed (its exit checkpoint is unavailable)"
            )
        total = spec.last_iteration + 1 if spec.last_iteration is not None else None
        inner = self._iterate_main(name, iterable)
        try:
            for item in inner:
                self._progress(self.main_index, total)
                yield item
                if (
                    spec.last_iteration is not None
                    and self.main_index is not None
                    and (self.main_index >= spec.last_iteration)
                ):
                    break
        finally:
            inner.close()
        if spec.stop_after_main_loop:
            self.close("finished")
            raise ReplayDone()

    def _restore_exit(self, name: str) -> bool:
        """Skip a nested loop: restore its exit checkpoint, loop-carried variables included."""
        assert self.main_index is not None
        what = f"{name}@{self.main_index}"
        digest = self._checkpoint_by_iteration.get((self.main_index, name))
        if digest is None:
            self.fallbacks.append(f"{what}: no checkpoint, re-executed")
            return False
        from ..code import carried_at

        frame = user_frame()
        carried = carried_at(frame.f_code.co_filename, frame.f_lineno) if frame else None
        if frame is None or carried is None:
            self.fallbacks.append(f"{what}: not driven by a for statement here, re-executed")
            return False
        return self._restore(digest, what, frame, carried)

    def _restore(
        self, digest: str, what: str, frame: FrameType | None = None, carried: Carried | None = None
    ) -> bool:
        """Load a checkpoint into the registered objects (and, for a nested loop, its carried
        variables into ``frame``); False (and re-execution) on any failure."""
        try:
            from ..checkpoint import load_manifest, restore
            from ..objects import open_object_store

            if self._objects is None:
                self._objects = open_object_store(self.spec.objects_url)
            if not self.checkpoint_objects:
                raise RuntimeError("no objects are registered with retrolog.checkpointing() here")
            manifest = load_manifest(self._objects, digest)
            if carried is not None:
                missing = sorted(carried.names - set(manifest.locals or {}))
                if missing:
                    self.fallbacks.append(
                        f"{what}: the checkpoint lacks {missing[0]!r}, which the code after the "
                        "loop reads; re-executed"
                    )
                    return False
                if carried.needs_grads and manifest.grads is None and self._has_modules():
                    self.fallbacks.append(
                        f"{what}: the checkpoint lacks the gradients the code after the loop "
                        "uses; re-executed"
                    )
                    return False
            values = restore(self._objects, manifest, dict(self.checkpoint_objects))
            if frame is not None and carried is not None and values:
                _write_locals(frame, carried, values)
            self.events.append(("restored", what, digest))
            return True
        except Exception as exc:
            warn_once(
                f"restore:{digest}",
                f"retrolog replay: cannot restore {what} ({exc}); re-executing it",
            )
            self.fallbacks.append(f"{what}: checkpoint unavailable ({exc}); re-executed")
            return False

    def _has_modules(self) -> bool:
        from ..checkpoint.codec import torch_module

        torch = torch_module()
        return torch is not None and any(
            isinstance(obj, torch.nn.Module) for obj in self.checkpoint_objects.values()
        )

    def _progress(self, index: int | None, total: int | None) -> None:
        with contextlib.suppress(OSError):
            Path(self.spec.progress).write_text(json.dumps({"iteration": index, "total": total}))

    def close(self, status: str = "finished", error: str | None = None) -> None:
        if not self._closed:
            self.events.append(("replay", {"fallbacks": self.fallbacks}))
        super().close(status, error)


def _write_locals(frame: FrameType, carried: Carried, values: dict[str, Any]) -> None:
    """Put restored loop-carried variables back into the user's frame.

    Module level: the script's globals. In a function, ``frame.f_locals`` is a snapshot on Python
    <= 3.12, written back into the frame's fast locals with ``PyFrame_LocalsToFast`` (what
    debuggers do); from 3.13 it is a write-through proxy (PEP 667).
    """
    if carried.module_level or not frame.f_code.co_flags & inspect.CO_OPTIMIZED:
        target = frame.f_globals if carried.module_level else frame.f_locals
        target.update(values)
        return
    local = {k: v for k, v in values.items() if k not in carried.global_names}
    frame.f_globals.update({k: v for k, v in values.items() if k in carried.global_names})
    if sys.version_info >= (3, 13):
        proxy = frame.f_locals
        for key, value in local.items():
            proxy[key] = value
        return
    frame.f_locals.update(local)
    ctypes.pythonapi.PyFrame_LocalsToFast(ctypes.py_object(frame), ctypes.c_int(0))
