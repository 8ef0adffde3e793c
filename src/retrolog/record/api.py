"""The recording API: log, arg, loop, iteration, checkpointing, commit.

``log`` is the hot path (called millions of times): when the name was seen before and the value is
a plain Python scalar it is one tuple append; everything else goes through ``RunSession.log_slow``.
A run starts at the first call of any of these functions and ends at ``commit()``, at interpreter
exit, or after each notebook cell that used retrolog.
"""

from __future__ import annotations

import atexit
import os
import signal
import sys
import threading
from collections.abc import Iterable, Iterator
from contextlib import contextmanager
from pathlib import Path
from types import TracebackType
from typing import Any, TypeVar

from .._warn import warn_once
from ..project import find_project
from . import values as V
from .args import ArgumentError, cast_like, extract_kwargs
from .replay_session import REPLAY_ENV, ReplaySession, TaskSpec
from .session import RunSession

T = TypeVar("T")
_PLAIN = frozenset({float, int, bool, type(None)})

_session: RunSession | None = None
_lock = threading.RLock()
_overrides: dict[str, str] | None = None  # --kwargs of this process, parsed once
_hooks_installed = False
_exit_status: tuple[str, str | None] | None = None


def _begin() -> RunSession:
    """Start a run (first API call of a script, or first call after a commit)."""
    global _session, _overrides
    with _lock:
        if _session is not None:
            return _session
        if _overrides is None:
            argv, _overrides = extract_kwargs(sys.argv)
            sys.argv[:] = argv
        project = find_project()
        script = _script_name(project.root)
        spec_path = os.environ.get(REPLAY_ENV)
        if spec_path:
            _session = ReplaySession(project, script, list(sys.argv), TaskSpec.load(spec_path))
        else:
            _session = RunSession(project, script, list(sys.argv), dict(_overrides))
        _install_hooks()
        return _session


def _script_name(root: Path) -> str:
    argv0 = sys.argv[0] if sys.argv else ""
    if not argv0 or argv0 in ("-c", "-m") or not os.path.isfile(argv0):
        return "<interactive>"
    path = Path(argv0).resolve()
    try:
        return path.relative_to(root.resolve()).as_posix()
    except ValueError:
        return str(path)


def log(name: str, value: T) -> T:
    """Record ``value`` under ``name`` at the current loop coordinates; returns ``value``."""
    s = _session or _begin()
    if value.__class__ in _PLAIN and name in s.valid_names:
        s.rows.append((name, value, s.ctx))
        return value
    return s.log_slow(name, value)


def arg(name: str, default: T) -> T:
    """A hyper-parameter: ``default`` unless overridden by ``--kwargs name=value``; recorded once."""
    problem = V.check_name(name)
    if problem:
        raise ArgumentError(f"arg({name!r}, ...): {problem}")
    s = _session or _begin()
    if name in s.args:
        return s.args[name]
    if name in s.overrides:
        value = cast_like(name, s.overrides[name], default)
        s.unused_overrides.discard(name)
    else:
        value = default
    s.args[name] = value
    s.record_arg(name, value)
    return value


def loop(name: str, iterable: Iterable[T]) -> Iterator[T]:
    """Iterate ``iterable`` as the loop ``name``: every log inside carries the iteration index.

    The outermost loop of a script is its main loop (it shows a progress bar on a terminal).
    """
    problem = V.check_name(name)
    s = _session or _begin()
    if problem:
        warn_once(f"loop:{name!r}", f"retrolog: loop({name!r}, ...) is not tracked: {problem}")
        return iter(iterable)
    return s.loop(name, iterable)


@contextmanager
def iteration(name: str, idx: int, value: Any = None) -> Iterator[None]:
    """One iteration of a loop retrolog does not drive: ``with iteration("doc", i, doc_name):``."""
    s = _session or _begin()
    problem = V.check_name(name)
    if problem:
        warn_once(f"iter:{name!r}", f"retrolog: iteration({name!r}, ...) is not tracked: {problem}")
        yield
        return
    parent, depth = s.ctx, s.depth
    if depth == 0 and not s.main_loop_started:
        s._start_main_loop()
    s.ctx, s.depth = s.new_context(name, int(idx), value), depth + 1
    try:
        yield
    finally:
        s.ctx, s.depth = parent, depth


@contextmanager
def checkpointing(**objects: Any) -> Iterator[None]:
    """Register state (model=, optimizer=, ...) to checkpoint at loop exits inside the block."""
    s = _session or _begin()
    previous = dict(s.checkpoint_objects)
    s.checkpoint_objects.update(objects)
    try:
        yield
    finally:
        s.checkpoint_objects = previous


def commit() -> str | None:
    """End the current run (flush, finish); the next API call starts a new one. Returns its id."""
    global _session
    with _lock:
        s = _session
        if s is None:
            return None
        _session = None
    status, error = _exit_status or ("finished", None)
    s.close(status, error)
    return s.run_id


def current_run_id() -> str | None:
    """The id of the run in progress, if any."""
    return _session.run_id if _session is not None else None


# -- process hooks -------------------------------------------------------------------------
def _install_hooks() -> None:
    global _hooks_installed
    if _hooks_installed:
        return
    _hooks_installed = True
    atexit.register(_at_exit)
    previous_hook = sys.excepthook

    def _excepthook(
        kind: type[BaseException], exc: BaseException, tb: TracebackType | None
    ) -> None:
        global _exit_status
        status = "interrupted" if issubclass(kind, KeyboardInterrupt) else "failed"
        _exit_status = (status, f"{kind.__name__}: {exc}")
        previous_hook(kind, exc, tb)

    sys.excepthook = _excepthook
    if (
        threading.current_thread() is threading.main_thread()
        and signal.getsignal(signal.SIGTERM) is signal.SIG_DFL
    ):
        signal.signal(signal.SIGTERM, _on_sigterm)
    _register_ipython()


def _at_exit() -> None:
    try:
        commit()
    except Exception as exc:  # exit must not fail because of us
        print(f"retrolog: could not close the run: {exc!r}", file=sys.stderr)


def _on_sigterm(signum: int, _frame: Any) -> None:
    global _exit_status
    _exit_status = ("interrupted", "terminated by SIGTERM")
    _at_exit()
    signal.signal(signal.SIGTERM, signal.SIG_DFL)
    os.kill(os.getpid(), signal.SIGTERM)


def _register_ipython() -> None:
    ipython_module = sys.modules.get("IPython")
    if ipython_module is None:
        return
    shell = ipython_module.get_ipython()
    if shell is None:
        return

    def _after_cell(result: Any) -> None:
        global _exit_status
        error = getattr(result, "error_in_exec", None)
        if error is not None:
            _exit_status = ("failed", f"{type(error).__name__}: {error}")
        commit()
        _exit_status = None

    shell.events.register("post_run_cell", _after_cell)
