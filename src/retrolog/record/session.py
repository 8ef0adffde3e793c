"""One recorded run: its buffers, loop-context stack, checkpoint hooks, code version and end of life.

The training thread only appends tuples to two lists (``rows`` for log values, ``events`` for
everything rarer). Where they go is the session's storage back end (backend.py: the project's
journal and store, a replay task's output file, or nowhere), whose flusher drains them at least
every ``FLUSH_SECONDS``. The session's threads (the back end's, the code version's) start with
``start()``, once the session is whole, never from its constructor.
"""

from __future__ import annotations

import os
import platform
import socket
import sys
import threading
import time
from collections.abc import Generator, Iterable, Iterator
from typing import TYPE_CHECKING, Any

from .. import settings
from .._ids import new_run_id
from .._warn import warn_once
from ..project import Project
from . import values as V
from .anticipate import Anticipation
from .backend import DELEGATE_EVENTS, FLUSH_SECONDS, Backend, ProjectBackend
from .carried import LoopSite, carried_state

if TYPE_CHECKING:
    from ..versions import Snapshot

__all__ = ["DELEGATE_EVENTS", "FLUSH_SECONDS", "RunSession"]


class RunSession:
    """State of the run in progress in this process. ``backend``: where its buffers go (default:
    the project's journal and store). Call ``start()`` once it is made."""

    def __init__(
        self,
        project: Project,
        script: str,
        argv: list[str],
        overrides: dict[str, str],
        backend: Backend | None = None,
    ) -> None:
        self.project = project
        self.origin = _caller_location()  # the user's first retrolog line, for thread warnings
        self.run_id = new_run_id()
        self.pid = os.getpid()
        self.start_time = time.time()
        since_start = self._seconds_before_run()
        self._t0 = time.perf_counter() - since_start
        self.script = script
        self.overrides = overrides
        self.unused_overrides = set(overrides)
        self.args: dict[str, Any] = {}
        # hot state, touched by the training thread on every call
        self.rows: list[tuple[str, Any, int]] = []
        self.events: list[tuple[Any, ...]] = []
        self.ctx = 0
        self.depth = 0
        self.valid_names: set[str] = set()
        self._next_ctx = 0
        self.main_loop_started = False
        self._main_loop_end: float | None = None
        self.checkpoint_objects: dict[str, Any] = {}
        self.main_index: int | None = None
        self.anticipation = Anticipation()
        self.checkpoint_budget = _budget_from_env()
        self._checkpointer: Any = None
        self._checkpointer_failed = False
        self._last_opportunity = time.perf_counter()
        self._carried_sites: dict[tuple[Any, int], LoopSite] = {}  # nested loops' for statements
        # where the buffers go; its lock guards draining them (and swapping ``rows``)
        self.backend = backend if backend is not None else ProjectBackend()
        self._flush_lock = self.backend.lock
        self._closed = False
        self.status: str | None = None
        self.error: str | None = None
        self.snapshot: Snapshot | None = None  # the code version, once taken
        self.events.append(("run", self._facts(argv)))
        if self.backend.stores_to_project:  # RETROLOG_CAPTURE_OUTPUT=1 (record/environment.py)
            from .environment import start_capture

            start_capture()
        # Interpreter start and imports up to the first retrolog call: what a fork server saves.
        self.events.append(("timing", "startup", None, 0, None, since_start, None))
        self.backend.open(self, project, self.run_id, observe=self.anticipation.observe)
        self._versioner = threading.Thread(
            target=self._snapshot, name="retrolog-version", daemon=True
        )
        # The run's identity reaches the journal now, not a flush interval later: a run killed
        # in its first second still says what it was (record/journal.py, docs/reliability.md).
        self.flush()

    def start(self) -> None:
        """Start the run's threads: the back end's flusher and store writer, and the one that
        takes the code version. Apart from the constructor, so no thread sees half a session."""
        self.backend.start()
        self._versioner.start()

    def _seconds_before_run(self) -> float:
        """Interpreter start and imports before the run's first retrolog call (its start-up)."""
        return _seconds_since_process_start()

    def _stores_to_project(self) -> bool:
        """Only a recorded run ingests into the project's store (a replay task never does)."""
        return self.backend.stores_to_project

    def flush(self) -> None:
        """Move what is buffered to the back end now (it also does so every FLUSH_SECONDS)."""
        self.backend.flush()

    def _facts(self, argv: list[str]) -> dict[str, Any]:
        return {
            "script": self.script,
            "argv": argv,
            "cwd": os.getcwd(),
            "start_time": self.start_time,
            "host": socket.gethostname(),
            "pid": self.pid,
            "python": platform.python_version(),
            "status": "running",
        }

    # -- context ---------------------------------------------------------------------------
    def new_context(self, name: str, iteration: int, item: Any) -> int:
        """Open a loop iteration. Hot (once per iteration): the item is kept as it is only when it
        is an immutable scalar, and encoded later by the flusher."""
        self._next_ctx += 1
        cid = self._next_ctx
        if type(item) not in _SCALARS:
            item = None
        self.events.append(
            ("ctx", cid, self.ctx, self.depth + 1, name, iteration, item, time.time())
        )
        return cid

    def loop(self, name: str, iterable: Iterable[Any]) -> Iterator[Any]:
        """Yield the items of ``iterable`` inside a context per iteration (see api.loop)."""
        is_main = self.depth == 0 and not self.main_loop_started
        if is_main:
            self._start_main_loop()
            return self._iterate_main(name, iterable)
        return self._iterate_nested(name, iterable, self.ctx, self.depth)

    def _iterate_main(self, name: str, iterable: Iterable[Any]) -> Generator[Any, None, None]:
        """The main loop: per-iteration timings, the progress bar, the main-loop exit checkpoint."""
        parent, depth = self.ctx, self.depth
        iterable = _maybe_progress(name, iterable)
        loop_start = time.perf_counter()
        count = 0
        completed = False
        try:
            for index, item in enumerate(iterable):
                cid = self.new_context(name, index, item)
                self.ctx, self.depth = cid, depth + 1
                self.main_index = index
                self.anticipation.entered(cid, index)
                iter_start = time.perf_counter()
                yield item
                self.ctx, self.depth = parent, depth
                count = index + 1
                self.events.append(
                    (
                        "timing",
                        "iteration",
                        name,
                        cid,
                        index,
                        time.perf_counter() - iter_start,
                        None,
                    )
                )
            completed = True
        except GeneratorExit:
            # A `break` (or `return`) out of the main loop is its normal end: a `while True` loop
            # ends no other way. An exception in the body closes this generator too, but then the
            # consumer is not at the instruction that drops the loop's iterator (POP_TOP/POP_ITER).
            import opcode

            consumer = sys._getframe(1)
            code, at = consumer.f_code.co_code, consumer.f_lasti
            drops = {opcode.opmap[op] for op in ("POP_TOP", "POP_ITER") if op in opcode.opmap}
            if 0 <= at < len(code) and code[at] in drops:
                completed, count = True, index + 1
                took = time.perf_counter() - iter_start
                self.events.append(("timing", "iteration", name, cid, index, took, None))
            raise
        finally:
            self.ctx, self.depth = parent, depth
            elapsed = time.perf_counter() - loop_start
            self._main_loop_end = time.perf_counter()
            self.events.append(("timing", "main", name, parent, None, elapsed, count))
            # Only a loop that ran to its end or was left by a break is a restorable exit.
            if completed and self.checkpoint_objects:
                self._loop_exited(name, parent, True)

    def _iterate_nested(
        self, name: str, iterable: Iterable[Any], parent: int, depth: int
    ) -> Generator[Any, None, None]:
        """Every loop but the main one: the hottest code of a run (a step loop runs millions of
        iterations), so new_context is inlined and nothing but the ctx event is recorded per
        iteration; the loop's total time and count are recorded once, at its exit."""
        events, wall, scalars = self.events, time.time, _SCALARS
        inner = depth + 1
        # Shared by every iteration's event: marshal writes it once per flush, then references.
        instance = ("ctx", parent, inner, name)
        loop_start = time.perf_counter()
        index = -1
        completed = False
        self.depth = inner
        try:
            for index, item in enumerate(iterable):
                cid = self._next_ctx = self._next_ctx + 1
                events.append(
                    (instance, cid, index, item if item.__class__ in scalars else None, wall())
                )
                self.ctx = cid
                yield item
                self.ctx = parent
            completed = True
        finally:
            self.ctx, self.depth = parent, depth
            elapsed = time.perf_counter() - loop_start
            count = index + 1 if completed else max(index, 0)
            if depth >= 1:
                events.append(("timing", "nested", name, parent, None, elapsed, count))
            # Only a loop that ran to its end is a restorable exit (a break or an exception is not).
            if completed and self.checkpoint_objects and depth == 1:
                self._loop_exited(name, parent, False)

    def _start_main_loop(self) -> None:
        self.main_loop_started = True
        self.events.append(
            ("timing", "prefix", None, 0, None, time.perf_counter() - self._t0, None)
        )
        if self.unused_overrides:
            from .args import ArgumentError

            # An override named like a recorded arg was not applied: the arg came from an object
            # (a namespace, a dataclass, a Lightning module's hparams), which --kwargs cannot change.
            fixed = sorted(self.unused_overrides & self.args.keys())
            if fixed:
                raise ArgumentError(
                    f"--kwargs cannot change {', '.join(fixed)}: this script records it from an "
                    "object, not from arg() or a dict given to args(); set it where the object "
                    "is built"
                )
            known = ", ".join(sorted(self.args)) or "none"
            raise ArgumentError(
                f"--kwargs gives unknown argument(s) {', '.join(sorted(self.unused_overrides))}; "
                f"this script's args are: {known}"
            )

    # -- checkpoints -----------------------------------------------------------------------
    def _loop_exited(self, name: str, parent: int, is_main: bool) -> None:
        """Offer a checkpoint of the registered objects at this loop exit (policy decides)."""
        now = time.perf_counter()
        work, self._last_opportunity = now - self._last_opportunity, now
        checkpointer = self._get_checkpointer()
        if checkpointer is None:
            return
        key = f"{self.run_id}/{name}@{parent}"
        objects = dict(self.checkpoint_objects)
        main_index = None if is_main else self.main_index
        try:
            if is_main:  # the main loop exits once: always save, replay's suffix level needs it
                future = checkpointer.save(key, objects)
            else:
                carried = carried_state(self._carried_sites, self.checkpoint_objects, name)
                if carried is None:  # never skippable: its checkpoints would be useless
                    self._last_opportunity = now - work  # its work goes to the next opportunity
                    return
                values, grads = carried
                priority, priority_in = self.anticipation.before_predicted(main_index)
                future = checkpointer.opportunity(
                    key,
                    objects,
                    work,
                    locals=(lambda: values) if values is not None else None,
                    grads=grads,
                    priority=priority,
                    priority_in=priority_in,
                )
        except Exception as exc:
            warn_once(
                "checkpoint",
                f"retrolog: checkpointing failed ({exc!r}); training continues without it",
            )
            return
        if future is not None:
            future.add_done_callback(
                lambda f: self._checkpoint_written(f, parent, name, main_index)
            )
        self._last_opportunity = time.perf_counter()

    def _get_checkpointer(self) -> Any:
        if self.checkpoint_budget <= 0:
            return None  # RETROLOG_CHECKPOINT_BUDGET=0: record without checkpoints
        if self._checkpointer is None and not self._checkpointer_failed:
            try:
                from ..checkpoint import Checkpointer, CheckpointPolicy
                from ..objects import open_object_store

                store = open_object_store(self.project.objects_url)
                policy = CheckpointPolicy(budget=self.checkpoint_budget)
                self._checkpointer = Checkpointer(store, policy=policy)
            except Exception as exc:
                self._checkpointer_failed = True
                warn_once(
                    "checkpoint-open",
                    f"retrolog: cannot checkpoint into {self.project.objects_url} "
                    f"({exc}); training continues, replay will re-execute instead of restoring",
                )
        return self._checkpointer

    def _checkpoint_written(
        self, future: Any, parent: int, name: str, main_index: int | None
    ) -> None:
        # Runs on the writer thread: a list append is all it does.
        if future.cancelled() or future.exception() is not None:
            return
        manifest = future.result()
        stats = manifest.stats
        self.events.append(
            (
                "ckpt",
                parent,
                name,
                main_index,
                manifest.digest,
                stats.total_bytes,
                stats.new_bytes,
                stats.capture_seconds,
                stats.write_seconds,
            )
        )

    # -- values ----------------------------------------------------------------------------
    def log_slow(self, name: Any, value: Any) -> Any:
        """Everything log() does not do inline: name checks, conversions, refusals."""
        if os.getpid() != self.pid:
            warn_once(
                "fork",
                "retrolog: log() called in a forked child process; those values are not recorded",
            )
            return value
        if name not in self.valid_names:
            problem = V.check_name(name)
            if problem:
                warn_once(
                    f"name:{name!r}",
                    f"retrolog: log({name!r}, ...) at {_caller()} ignored: {problem}",
                )
                return value
            self.valid_names.add(name)
        stored = V.normalise(value)
        try:
            cell = V.to_cell(stored)
        except V.UnsupportedValue as exc:
            warn_once(
                f"value:{name}:{type(value).__qualname__}",
                f"retrolog: log({name!r}, ...) at {_caller()} not recorded: {exc}",
            )
            return value
        self.rows.append((name, cell, self.ctx))
        return value

    def record_arg(self, name: str, value: Any) -> None:
        try:
            cell = V.to_cell(V.normalise(value))
        except V.UnsupportedValue as exc:
            warn_once(f"arg:{name}", f"retrolog: arg({name!r}) is used but not recorded: {exc}")
            return
        self.events.append(("arg", name, *cell))
        self.flush()  # args are durable once arg() returns (once per name: one small write)

    # -- code version ----------------------------------------------------------------------
    def _snapshot(self) -> None:
        """Take the code version (on its own thread): a recorded run's only."""
        from ..versions import GitRepo

        if not self.backend.stores_to_project:
            return
        if not self.project.in_git:
            warn_once(
                "nogit",
                f"retrolog: {self.project.root} is not in a git repository; "
                "runs are recorded without code versions",
            )
            return
        if not GitRepo.available():
            warn_once(
                "gitmissing",
                "retrolog: git is not installed; runs are recorded without code versions",
            )
            return
        try:
            snap = GitRepo(self.project.root).snapshot(
                self.run_id, message=f"retrolog: {self.script}"
            )
        except Exception as exc:  # never let versioning hurt the run
            warn_once("snapshot", f"retrolog: could not version this run's code: {exc}")
            return
        self.snapshot = snap  # a notebook run adds its executed cells to it (notebook/kernel.py)
        if snap.skipped_large:
            warn_once(
                "large",
                f"retrolog: left large changed files out of the code version: {', '.join(snap.skipped_large[:5])}",
                location=self.origin,
            )
        self.events.append(
            (
                "run",
                {
                    "version": snap.version,
                    "git_head": snap.head,
                    "git_branch": snap.branch,
                    "git_dirty": snap.dirty,
                },
            )
        )
        self.flush()  # the version is durable as soon as it is known

    # -- end of life -----------------------------------------------------------------------
    def close(self, status: str = "finished", error: str | None = None) -> None:
        """End the run: record timings and status, flush everything, release the journal."""
        if self._closed:
            return
        self._closed = True
        if self.main_loop_started and self._main_loop_end is not None:
            self.events.append(
                ("timing", "suffix", None, 0, None, time.perf_counter() - self._main_loop_end, None)
            )
        elif not self.main_loop_started:
            self.events.append(
                ("timing", "prefix", None, 0, None, time.perf_counter() - self._t0, None)
            )
        if self._versioner.ident is not None:  # started
            self._versioner.join(timeout=60)
        if self._checkpointer is not None:
            try:
                self._checkpointer.close()  # waits for queued checkpoints; their events follow
            except Exception as exc:
                warn_once("checkpoint-close", f"retrolog: finishing checkpoints failed: {exc!r}")
        self.backend.stop()
        from .environment import event as environment_event
        from .environment import reported_packages

        self.events.append(("run", {"packages": reported_packages()}))
        if self.backend.stores_to_project:  # installed packages, python, host, accelerator, output
            self.events.append(environment_event(self.project.data_dir))
        self.events.append(("end", status, time.time(), error))
        self.status, self.error = status, error
        self.backend.close()


def _budget_from_env() -> float:
    """The checkpoint budget (fraction of training time); 0 records without checkpoints."""
    return float(settings.CHECKPOINT_BUDGET.get())


def _seconds_since_process_start() -> float:
    """How long this process has been alive (Linux /proc), so the prefix includes imports; else 0."""
    try:
        with open("/proc/self/stat", encoding="ascii") as fh:
            fields = fh.read().rsplit(")", 1)[1].split()
        started = int(fields[19]) / os.sysconf("SC_CLK_TCK")
        return max(0.0, time.clock_gettime(time.CLOCK_BOOTTIME) - started)
    except (OSError, ValueError, IndexError, AttributeError):
        return 0.0


_SCALARS = frozenset({int, float, str, bool})


def _maybe_progress(name: str, iterable: Iterable[Any]) -> Iterable[Any]:
    if not settings.PROGRESS.get():
        return iterable
    if not (hasattr(sys.stderr, "isatty") and sys.stderr.isatty()):
        return iterable
    try:
        from tqdm import tqdm
    except ImportError:
        return iterable
    return tqdm(iterable, desc=name, file=sys.stderr, dynamic_ncols=True)


def _caller() -> str:
    """file:line of the user's statement that called the public API."""
    path, line = _caller_location()
    return f"{os.path.basename(path)}:{line}" if line else "?"


def _caller_location() -> tuple[str, int]:
    """(file, line) of the user's statement that called the public API; ("?", 0) if none."""
    frame = sys._getframe(1)
    here = os.path.dirname(__file__)
    while frame is not None and os.path.dirname(frame.f_code.co_filename) == here:
        frame = frame.f_back  # type: ignore[assignment]
    if frame is None:
        return "?", 0
    return frame.f_code.co_filename, frame.f_lineno
