"""One recorded run: its buffers, loop-context stack, background flusher and end of life.

The training thread only appends tuples to two lists (``rows`` for log values, ``events`` for
everything rarer). A daemon thread drains them at least every ``FLUSH_SECONDS``: it numbers the
events, encodes values, appends them to the run's journal and ingests them into the store. Any
failure there is reported once and never reaches the training thread; what could not be stored
stays in the journal (or, if even that is impossible, in memory and then a rescue file).
"""

from __future__ import annotations

import json
import math
import os
import platform
import socket
import sys
import tempfile
import threading
import time
import warnings
from collections.abc import Iterable, Iterator
from pathlib import Path
from typing import TYPE_CHECKING, Any

from .._ids import new_run_id
from .._warn import warn_once
from ..project import Project
from . import values as V
from .journal import SUFFIX, Journal

if TYPE_CHECKING:
    from ..store import Store

FLUSH_SECONDS = 1.0
_REPORTED_PACKAGES = ("torch", "numpy", "pandas", "scikit-learn", "retrolog")


class RunSession:
    """State of the run in progress in this process."""

    def __init__(
        self, project: Project, script: str, argv: list[str], overrides: dict[str, str]
    ) -> None:
        self.project = project
        self.run_id = new_run_id()
        self.pid = os.getpid()
        self.start_time = time.time()
        self._t0 = time.perf_counter() - _seconds_since_process_start()
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
        # background state
        self._seq = 0
        self._unstored: list[list[Any]] = []
        self._store: Store | None = None
        self._flush_lock = threading.Lock()
        self._journal: Journal | None = None
        self._closed = False
        self.status: str | None = None
        self.error: str | None = None
        self.events.append(("run", self._facts(argv)))
        try:
            project.ensure_data_dir()
            self._journal = Journal(project.journal_dir / (self.run_id + SUFFIX))
        except OSError as exc:
            warn_once(
                "journal",
                f"retrolog: cannot write a journal in {project.journal_dir} ({exc}); "
                "keeping this run's logs in memory until it ends",
            )
        self._stop = threading.Event()
        self._versioner = threading.Thread(
            target=self._snapshot, name="retrolog-version", daemon=True
        )
        self._versioner.start()
        self._flusher = threading.Thread(
            target=self._flush_loop, name="retrolog-flush", daemon=True
        )
        self._flusher.start()

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
        self._next_ctx += 1
        cid = self._next_ctx
        self.events.append(
            ("ctx", cid, self.ctx, self.depth + 1, name, iteration, _item_value(item), time.time())
        )
        return cid

    def loop(self, name: str, iterable: Iterable[Any]) -> Iterator[Any]:
        """Yield the items of ``iterable`` inside a context per iteration (see api.loop)."""
        parent, depth = self.ctx, self.depth
        is_main = depth == 0 and not self.main_loop_started
        if is_main:
            self._start_main_loop()
            iterable = _maybe_progress(name, iterable)
        loop_start = time.perf_counter()
        count = 0
        try:
            for index, item in enumerate(iterable):
                cid = self.new_context(name, index, item)
                self.ctx, self.depth = cid, depth + 1
                iter_start = time.perf_counter()
                yield item
                self.ctx, self.depth = parent, depth
                count = index + 1
                if is_main:
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
        finally:
            self.ctx, self.depth = parent, depth
            elapsed = time.perf_counter() - loop_start
            if is_main:
                self._main_loop_end = time.perf_counter()
                self.events.append(("timing", "main", name, parent, None, elapsed, count))
            elif depth >= 1:
                self.events.append(("timing", "nested", name, parent, None, elapsed, count))

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
        if snap.skipped_large:
            warn_once(
                "large",
                f"retrolog: left large changed files out of the code version: {', '.join(snap.skipped_large[:5])}",
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

    def _drain(self) -> list[list[Any]]:
        out: list[list[Any]] = []
        n_events = len(self.events)
        n_rows = len(self.rows)
        events = self.events[:n_events]
        rows = self.rows[:n_rows]
        del self.events[:n_events]
        del self.rows[:n_rows]
        for ev in events:
            self._seq += 1
            out.append([self._seq, *ev])
        for name, value, ctx in rows:
            cell = value if type(value) is tuple else None
            if cell is None:
                try:
                    cell = V.to_cell(value)
                except V.UnsupportedValue as exc:
                    warn_once(
                        f"value:{name}", f"retrolog: a value of {name!r} was not recorded: {exc}"
                    )
                    continue
            self._seq += 1
            out.append([self._seq, "log", ctx, name, *cell])
        return out

    def flush(self) -> None:
        """Move buffered rows to the journal and the store. Never raises."""
        with self._flush_lock:
            try:
                batch = self._drain()
                if not batch and not self._unstored:
                    return
                if batch and self._journal is not None:
                    try:
                        self._journal.append(batch)
                    except OSError as exc:
                        warn_once(
                            "journalwrite",
                            f"retrolog: journal write failed ({exc}); keeping logs in memory",
                        )
                        self._journal = None
                self._unstored.extend(batch)
                self._ingest()
            except Exception as exc:  # the flusher must survive anything
                warn_once("flush", f"retrolog: background flush failed: {exc!r}")

    def _ingest(self) -> None:
        if not self._unstored:
            return
        try:
            if self._store is None:
                from ..store import Store

                self._store = Store(self.project.db_url)
            self._store.ingest(self.run_id, self._unstored)
            self._unstored = []
        except Exception as exc:
            # Keep them: the next flush retries, and at the end the journal (or a rescue file)
            # holds whatever never reached the store.
            warn_once(
                "store",
                f"retrolog: cannot write to the store {self.project.db_url} ({exc}); "
                "logs are kept in the journal and stored by the next retrolog command",
            )

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
        self._stop.set()
        self._flusher.join(timeout=30)
        self.events.append(("run", {"packages": _package_versions()}))
        self.events.append(("end", status, time.time(), error))
        self.status, self.error = status, error
        self.flush()
        if self._journal is not None:
            self._journal.close(delete=not self._unstored)
        elif self._unstored:
            self._rescue()
        if self._store is not None:
            self._store.dispose()

    def _rescue(self) -> None:
        path = Path(tempfile.gettempdir()) / f"retrolog-rescue-{self.run_id}{SUFFIX}"
        try:
            with open(path, "w", encoding="utf-8") as fh:
                for ev in self._unstored:
                    fh.write(json.dumps(ev, allow_nan=True) + "\n")
            warnings.warn(
                f"retrolog: the store and journal were unwritable; this run's logs are saved in {path} "
                f"(copy it into {self.project.journal_dir} and run any retrolog command to import it)",
                stacklevel=2,
            )
        except OSError as exc:
            warnings.warn(f"retrolog: could not save this run's logs anywhere: {exc}", stacklevel=2)


def _seconds_since_process_start() -> float:
    """How long this process has been alive (Linux /proc), so the prefix includes imports; else 0."""
    try:
        with open("/proc/self/stat", encoding="ascii") as fh:
            fields = fh.read().rsplit(")", 1)[1].split()
        started = int(fields[19]) / os.sysconf("SC_CLK_TCK")
        return max(0.0, time.clock_gettime(time.CLOCK_BOOTTIME) - started)
    except (OSError, ValueError, IndexError, AttributeError):
        return 0.0


def _item_value(item: Any) -> str | None:
    """JSON of a loop item worth keeping as the iteration's value (small scalars only)."""
    kind = type(item)
    if kind is int or kind is bool or (kind is str and len(item) <= 200):
        return json.dumps(item)
    if kind is float and math.isfinite(item):
        return repr(item)
    return None


def _maybe_progress(name: str, iterable: Iterable[Any]) -> Iterable[Any]:
    if os.environ.get("RETROLOG_PROGRESS", "1") in ("0", "false", "no", "off"):
        return iterable
    if not (hasattr(sys.stderr, "isatty") and sys.stderr.isatty()):
        return iterable
    try:
        from tqdm import tqdm
    except ImportError:
        return iterable
    return tqdm(iterable, desc=name, file=sys.stderr, dynamic_ncols=True)


def _package_versions() -> dict[str, str]:
    from importlib import metadata

    found = {}
    for name in _REPORTED_PACKAGES:
        try:
            found[name] = metadata.version(name)
        except metadata.PackageNotFoundError:
            continue
    return found


def _caller() -> str:
    """file:line of the user's statement that called the public API."""
    frame = sys._getframe(1)
    here = os.path.dirname(__file__)
    while frame is not None and os.path.dirname(frame.f_code.co_filename) == here:
        frame = frame.f_back  # type: ignore[assignment]
    if frame is None:
        return "?"
    return f"{os.path.basename(frame.f_code.co_filename)}:{frame.f_lineno}"
