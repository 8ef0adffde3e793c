"""One recorded run: its buffers, loop-context stack, background flusher and end of life.

The training thread only appends tuples to two lists (``rows`` for log values, ``events`` for
everything rarer). A daemon thread drains them at least every ``FLUSH_SECONDS``: it numbers the
events, encodes values, appends them to the run's journal and ingests them into the store. Any
failure there is reported once and never reaches the training thread; what could not be stored
stays in the journal (or, if even that is impossible, in memory and then a rescue file).
"""

from __future__ import annotations

import json
import os
import platform
import socket
import sys
import threading
import time
import warnings
from collections.abc import Generator, Iterable, Iterator
from types import FrameType
from typing import TYPE_CHECKING, Any

from .. import settings
from .._ids import new_run_id
from .._warn import RetrologWarning, warn_once
from ..project import Project
from . import values as V
from .anticipate import Anticipation
from .journal import (
    SUFFIX,
    Batch,
    Journal,
    batch_size,
    is_disk_full,
    rescue_path,
    shape_batch,
)

if TYPE_CHECKING:
    from ..code import Carried
    from ..store.lite import Database
    from ..versions import Snapshot
    from .follower import Follower

FLUSH_SECONDS = 1.0
DELEGATE_EVENTS = settings.FOLLOWER_EVENTS.default
_REPORTED_PACKAGES = (  # (distribution, import name)
    ("torch", "torch"),
    ("numpy", "numpy"),
    ("pandas", "pandas"),
    ("scikit-learn", "sklearn"),
    ("retrolog", "retrolog"),
)


class RunSession:
    """State of the run in progress in this process."""

    def __init__(
        self, project: Project, script: str, argv: list[str], overrides: dict[str, str]
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
        # background state
        self._seq = 0
        self._unstored: list[Batch] = []  # flushed batches not yet in the store (raw)
        self._follower: Follower | None = None  # ingestion handed to a helper process
        self._delegate_events = _delegate_threshold()
        self._store: Database | None = None  # opened on first store (store.open.open_db)
        self._flush_lock = threading.Lock()
        self._journal: Journal | None = None
        self._journal_backlog: list[Batch] = []  # flushed, not yet written (a full disk)
        self._disk_full = False
        self._broken_journal: Journal | None = None
        self._closed = False
        self.status: str | None = None
        self.error: str | None = None
        self.snapshot: Snapshot | None = None  # the code version, once taken
        self.events.append(("run", self._facts(argv)))
        if self._stores_to_project():  # RETROLOG_CAPTURE_OUTPUT=1 (record/environment.py)
            from .environment import start_capture

            start_capture()
        # Interpreter start and imports up to the first retrolog call: what a fork server saves.
        self.events.append(("timing", "startup", None, 0, None, since_start, None))
        try:
            self._journal = self._open_journal()
        except OSError as exc:
            warn_once(
                "journal",
                f"retrolog: cannot write a journal in {project.journal_dir} ({exc}); "
                "keeping this run's logs in memory until it ends",
            )
        self._stop = threading.Event()
        self._store_wanted = threading.Event()
        self._ingest_lock = threading.Lock()
        self._storer = threading.Thread(target=self._store_loop, name="retrolog-store", daemon=True)
        self._storer.start()
        self._versioner = threading.Thread(
            target=self._snapshot, name="retrolog-version", daemon=True
        )
        self._versioner.start()
        self._flusher = threading.Thread(
            target=self._flush_loop, name="retrolog-flush", daemon=True
        )
        self._flusher.start()
        # The run's identity reaches the journal now, not a flush interval later: a run killed
        # in its first second still says what it was (record/journal.py, docs/reliability.md).
        self.flush()

    def _seconds_before_run(self) -> float:
        """Interpreter start and imports before the run's first retrolog call (its start-up)."""
        return _seconds_since_process_start()

    def _open_journal(self) -> Journal | None:
        self.project.ensure_data_dir()
        return Journal(self.project.journal_dir / (self.run_id + SUFFIX))

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
                carried = self._carried_state(name)
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

    def _carried_state(
        self, name: str
    ) -> tuple[dict[str, Any] | None, dict[str, Any] | None] | None:
        """The loop-carried variables and the modules whose gradients to capture at this nested
        loop's exit (docs/checkpoints.md); None when the loop can never be skipped.

        Runs in the loop's generator as it finishes, so the user's frame executing the ``for``
        is the first frame outside retrolog. The analysis runs once per loop site; what is left
        per exit is reading a few names and checking their types.
        """
        frame = _user_frame()
        if frame is None:
            return None, None
        sites: dict[tuple[Any, int], _LoopSite] = self.__dict__.setdefault("_carried_sites", {})
        site = sites.get((frame.f_code, frame.f_lineno))
        if site is None:
            from ..code import carried_at

            code = frame.f_code
            where = f"{os.path.basename(code.co_filename)}:{frame.f_lineno}"
            site = _LoopSite(carried_at(code.co_filename, frame.f_lineno), where)
            sites[(code, frame.f_lineno)] = site
        if site.disabled:
            return None
        carried = site.carried
        if carried is None:  # not a for statement we can see: nothing known to carry
            return None, None
        from ..checkpoint.capture import uncapturable
        from ..checkpoint.codec import torch_module

        values: dict[str, Any] = {}
        names = frame.f_globals if carried.module_level else frame.f_locals
        for var in sorted(carried.names):
            space = frame.f_globals if var in carried.global_names else names
            problem = uncapturable(space[var]) if var in space else "unbound"
            if problem is not None:
                site.disabled = True
                warn_once(
                    f"carried:{site.where}",
                    f"retrolog: the loop {name!r} at {site.where} leaves {var!r} ({problem}) to "
                    "the code after it, which a checkpoint cannot hold; it is no longer "
                    "checkpointed in this run and replay will re-execute it",
                )
                return None
            values[var] = space[var]
        grads = None
        torch = torch_module()
        if carried.needs_grads and torch is not None:
            grads = {
                key: obj
                for key, obj in self.checkpoint_objects.items()
                if isinstance(obj, torch.nn.Module)
            }
        return values, grads

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

    # -- background flushing ---------------------------------------------------------------
    def _flush_loop(self) -> None:
        while not self._stop.wait(FLUSH_SECONDS):
            self.flush()

    def _snapshot(self) -> None:
        from ..versions import GitRepo

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

    def _drain(self) -> Batch:
        """Take what the training thread buffered: two slice copies, no per-event work here."""
        n_events = len(self.events)
        n_rows = len(self.rows)
        events = self.events[:n_events]
        rows = self.rows[:n_rows]
        del self.events[:n_events]
        del self.rows[:n_rows]
        first = self._seq + 1
        self._seq += n_events + n_rows
        return first, events, rows

    def flush(self) -> None:
        """Move buffered rows to the journal and wake the store writer. Never raises.

        Journaling and storing run on separate threads, so a slow store (first import of
        SQLAlchemy, a long lock wait) never delays the journal past its one-second promise.
        When a run logs faster than about DELEGATE_EVENTS events a second, storing moves to a
        helper process that follows the journal (record/follower.py): shaping and inserting cost
        ~5 µs per event of Python, which would otherwise compete with training for the GIL.
        """
        with self._flush_lock:
            try:
                batch = self._drain()
                self.anticipation.observe(batch[2])
                fresh = batch_size(batch) > 0
                if not fresh and not self._journal_backlog:
                    return
                following = self._follower is not None
                kept = False
                if self._journal is not None:
                    if fresh:
                        self._journal_backlog.append(batch)
                    if not self._write_journal() and following:
                        # A follower stores only what reaches the journal: the rest stays in
                        # memory and goes to a rescue file at the end, above the journal's events.
                        self._unstored.extend(self._journal_backlog)
                        self._journal_backlog.clear()
                        self._broken_journal = self._journal  # still locked: the run is alive
                        self._journal = None
                        kept = True
                if not fresh:
                    return
                if not kept and (not following or self._journal is None):
                    self._unstored.append(batch)
                if (
                    not following
                    and self._journal is not None
                    and not self._journal_backlog
                    and batch_size(batch) >= self._delegate_events
                    and self._stores_to_project()
                ):
                    self._start_following()
            except Exception as exc:  # the flusher must survive anything
                warn_once("flush", f"retrolog: background flush failed: {exc!r}")
        if self._unstored:
            self._store_wanted.set()

    def _write_journal(self) -> bool:
        """Append the batches waiting for the journal, oldest first; True when none is left.

        A failed write (a full disk) keeps them for the next flush, and the journal is cut back
        to its last whole record, so it stays readable and gapless when space returns."""
        assert self._journal is not None
        while self._journal_backlog:
            try:
                self._journal.append(*self._journal_backlog[0])
            except OSError as exc:
                self._warn_unwritable("journalwrite", exc)
                return False
            del self._journal_backlog[0]
        return True

    def _warn_unwritable(self, key: str, exc: BaseException) -> None:
        """One warning for a full disk, whether the journal or the store noticed it first."""
        if is_disk_full(exc):
            self._disk_full = True
            rescue = rescue_path(self.project.journal_dir, self.run_id)
            warn_once(
                "diskfull",
                f"retrolog: the disk is full ({exc}); training continues, its logs are kept in "
                "memory and written when space returns (if it has not when the run ends, they "
                f"are saved to {rescue} and the next retrolog command stores them)",
            )
        elif key == "journalwrite":
            warn_once(key, f"retrolog: journal write failed ({exc}); keeping logs in memory")
        else:
            warn_once(
                key,
                f"retrolog: cannot write to the store {self.project.db_url} ({exc}); "
                "logs are kept in the journal and stored by the next retrolog command",
            )

    def _stores_to_project(self) -> bool:
        """Only a recorded run ingests into the project's store (a replay task never does)."""
        return type(self)._ingest is RunSession._ingest

    def _start_following(self) -> None:
        from .follower import Follower

        assert self._journal is not None
        try:
            self._follower = Follower.start(self._journal.path, self.project.db_url, self.run_id)
        except OSError as exc:
            warn_once("follower", f"retrolog: storing stays in this process ({exc})")
            return
        self._unstored.clear()  # the follower reads the journal from its start

    def _store_loop(self) -> None:
        while not self._stop.is_set():
            self._store_wanted.wait()
            self._store_wanted.clear()
            self._ingest()

    def _ingest(self) -> None:
        """Write journaled events to the store; on failure keep them for the next try."""
        with self._ingest_lock:
            count = len(self._unstored)
            if not count or self._follower is not None:
                return
            try:
                if self._store is None:
                    from ..store.open import open_db

                    self._store = open_db(self.project.db_url)
                events = [ev for batch in self._unstored[:count] for ev in shape_batch(*batch)]
                self._store.ingest(self.run_id, events)
                del self._unstored[:count]
            except Exception as exc:
                # The journal (or, at the end, a rescue file) holds whatever never reached the store.
                self._warn_unwritable("store", exc)

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
        self._versioner.join(timeout=60)
        if self._checkpointer is not None:
            try:
                self._checkpointer.close()  # waits for queued checkpoints; their events follow
            except Exception as exc:
                warn_once("checkpoint-close", f"retrolog: finishing checkpoints failed: {exc!r}")
        self._stop.set()
        self._store_wanted.set()
        self._flusher.join(timeout=30)
        self._storer.join(timeout=60)
        self.events.append(("run", {"packages": _package_versions()}))
        if self._stores_to_project():  # installed packages, python, host, accelerator, output
            from .environment import event as environment_event

            self.events.append(environment_event(self.project.data_dir))
        self.events.append(("end", status, time.time(), error))
        self.status, self.error = status, error
        self.flush()
        self._ingest()
        stored_by_follower = self._finish_following()
        if self._journal is not None:
            disposable = stored_by_follower or self._journal_disposable()
            if not disposable and self._journal_backlog and self._stores_to_project():
                # the disk is still full (a replay task's output is its coordinator's business)
                self._rescue(self._journal_backlog)
            self._journal.close(delete=disposable)
        elif self._unstored:
            self._rescue()
        if self._store is not None:
            self._store.dispose()

    def _finish_following(self) -> bool:
        """Wait for the follower to store the end of the journal; True when it did."""
        if self._follower is None or self._journal is None:
            return False  # no follower, or it cannot see the end: the journal stays for recovery
        return self._follower.finish()

    def _journal_disposable(self) -> bool:
        """The journal may go once everything in it reached the store."""
        return not self._unstored and self._follower is None

    def _rescue(self, batches: list[Batch] | None = None) -> None:
        """Save what neither the journal nor the store took (``batches``, default everything
        unstored) where the next command of this project finds it (journal.rescue_path)."""
        path = rescue_path(self.project.journal_dir, self.run_id)
        partial = path.with_name(path.name + ".part")  # renamed whole: never read half-written
        try:
            with open(partial, "w", encoding="utf-8") as fh:
                for batch in self._unstored if batches is None else batches:
                    for ev in shape_batch(*batch):
                        fh.write(json.dumps(ev, allow_nan=True) + "\n")
            partial.rename(path)
            if self._disk_full:
                return  # the one disk-full warning already said where they go
            warnings.warn(
                f"retrolog: the store and journal were unwritable; this run's logs are saved in {path} "
                "(the next retrolog command in this project stores it)",
                RetrologWarning,
                stacklevel=2,
            )
        except OSError as exc:
            warnings.warn(
                f"retrolog: could not save this run's logs anywhere: {exc}",
                RetrologWarning,
                stacklevel=2,
            )


def _delegate_threshold() -> int:
    """Events per flush above which a helper process takes over storing (env override)."""
    return int(settings.FOLLOWER_EVENTS.get())


def _budget_from_env() -> float:
    """The checkpoint budget (fraction of training time); 0 records without checkpoints."""
    return float(settings.CHECKPOINT_BUDGET.get())


class _LoopSite:
    """A nested loop's ``for`` statement as recording sees it: its carried state (None: not
    known) and whether a value it carries made its checkpoints useless for the rest of the run."""

    __slots__ = ("carried", "disabled", "where")

    def __init__(self, carried: Carried | None, where: str) -> None:
        self.carried = carried
        self.where = where
        self.disabled = False


def _user_frame() -> FrameType | None:
    """The innermost frame outside the retrolog package (the user's code that drives a loop)."""
    frame: FrameType | None = sys._getframe(1)
    while frame is not None and _is_ours(frame.f_globals.get("__name__")):
        frame = frame.f_back
    return frame


def _is_ours(module: object) -> bool:
    return isinstance(module, str) and (module == "retrolog" or module.startswith("retrolog."))


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


def _package_versions() -> dict[str, str]:
    """Versions of the reported packages this run imported (their ``__version__``: reading
    installed metadata instead cost ~15 ms per run)."""
    found = {}
    for name, module_name in _REPORTED_PACKAGES:
        module = sys.modules.get(module_name)
        version = getattr(module, "__version__", None)
        if isinstance(version, str):
            found[name] = version
    return found


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
