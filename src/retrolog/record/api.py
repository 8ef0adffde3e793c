"""The recording API: log, arg, args, loop, iteration, checkpointing, data, commit.

``log`` is the hot path (called millions of times): when the name was seen before and the value is
a plain Python scalar it is one tuple append; everything else goes through ``RunSession.log_slow``.
A run starts at the first call of any of these functions and ends at ``commit()`` or at
interpreter exit; in a notebook it spans cells (``retrolog.notebook``), and a script IPython runs
(``%run train.py``) ends with the cell that ran it. The values of the script's own argparse parse
(captured by ``retrolog._early``) are recorded as args when the main loop starts, so an explicit
``arg()`` of the same name in the prefix wins (its ``--kwargs`` override included).
"""

from __future__ import annotations

import atexit
import itertools
import os
import signal
import sys
import threading
from collections.abc import Iterable, Iterator
from contextlib import AbstractContextManager, contextmanager
from pathlib import Path
from types import TracebackType
from typing import Any, TypeVar, overload

from .. import _early, settings
from .._warn import warn_once
from ..project import Project, find_project
from . import ranks
from . import values as V
from .args import ArgumentError, cast_like, flatten_config
from .replay_session import ReplaySession, TaskSpec
from .session import RunSession

T = TypeVar("T")
C = TypeVar("C")
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
            _early.take_kwargs()  # `import retrolog` took it already, unless argv changed since
            if _early.kwargs_error is not None:
                raise ArgumentError(_early.kwargs_error)
            _overrides = dict(_early.kwargs_overrides)
        project = find_project()
        script = _script_name(project.root)
        spec_path = settings.REPLAY.get()
        if spec_path:
            _session = ReplaySession(project, script, list(sys.argv), TaskSpec.load(spec_path))
        else:
            notebook = _notebook_session(project, dict(_overrides))
            # torchrun ranks other than 0 get a silent session; RETROLOG_AUTO_PUSH is scheduled
            _session = notebook or ranks.new_session(
                project, script, list(sys.argv), dict(_overrides)
            )
        _session.start()  # its threads, now that it is whole
        _install_hooks()
        if settings.TRACK_DATA.get():  # automatic data versions (record/data.py)
            from .data import start_tracking

            start_tracking(_session)
        return _session


def _notebook_session(project: Project, overrides: dict[str, str]) -> RunSession | None:
    """A run of notebook cells (Jupyter kernel, IPython) that lasts until ``commit()``, or None
    outside IPython and for a script IPython runs (``%run``: a script run, ended with its cell)."""
    if "IPython" not in sys.modules:
        return None
    from ..notebook.kernel import new_session

    return new_session(project, overrides)


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


@overload
def loop(name: str) -> Iterator[int]: ...
@overload
def loop(name: str, iterable: Iterable[T]) -> Iterator[T]: ...
def loop(name: str, iterable: Iterable[Any] | None = None) -> Iterator[Any]:
    """Iterate ``iterable`` as the loop ``name``: every log inside carries the iteration index.

    The outermost loop of a script is its main loop (it shows a progress bar on a terminal).
    Without an iterable it counts 0, 1, 2, ... for ever: ``for _ in loop("iter"):`` replaces a
    ``while True:`` loop that ends by ``break``.
    """
    if iterable is None:
        iterable = itertools.count()
    problem = V.check_name(name)
    s = _session or _begin()
    if problem:
        warn_once(f"loop:{name!r}", f"retrolog: loop({name!r}, ...) is not tracked: {problem}")
        return iter(iterable)
    if s.depth == 0 and not s.main_loop_started:
        _record_parsed(s, strict=True)
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
        _record_parsed(s, strict=True)
        s._start_main_loop()
    s.ctx, s.depth = s.new_context(name, int(idx), value), depth + 1
    try:
        yield
    finally:
        s.ctx, s.depth = parent, depth


class _Registration(AbstractContextManager[None]):
    """What ``checkpointing()`` returns: the objects are registered already; leaving a ``with``
    block restores the registration that was in place before the call."""

    def __init__(self, session: RunSession, previous: dict[str, Any]) -> None:
        self._session = session
        self._previous = previous

    def __enter__(self) -> None:
        return None

    def __exit__(self, *exc_info: object) -> None:
        self._session.checkpoint_objects = self._previous


def checkpointing(**objects: Any) -> AbstractContextManager[None]:
    """Register state (model=, optimizer=, ...) to checkpoint at loop exits.

    As a plain call the objects stay registered for the rest of the run; as ``with
    checkpointing(...):`` only inside the block.
    """
    s = _session or _begin()
    previous = dict(s.checkpoint_objects)
    s.checkpoint_objects.update(objects)
    return _Registration(s, previous)


def args(config: C) -> C:
    """Record the fields of a config as args in one call; returns ``config`` itself.

    ``config`` is a dict, an ``argparse.Namespace``, a dataclass instance or any object with public
    attributes; nested dicts (and namespaces, dataclasses) are flattened as ``outer.inner``. For
    dicts, ``--kwargs key=value`` overrides a key (cast like ``arg`` does) and the dict is updated
    in place, as it is with the recorded values during a replay. Values that cannot be stored are
    left out with one warning.
    """
    s = _session or _begin()
    skipped: list[str] = []
    for name, (container, key, value) in flatten_config(config).items():
        if V.check_name(name):
            skipped.append(name)
            continue
        if name in s.args:
            value = s.args[name]
        else:
            if name in s.overrides and isinstance(container, dict):
                value = cast_like(name, s.overrides[name], value)
                s.unused_overrides.discard(name)
            stored = _storable(value)
            if stored is _UNSTORABLE:
                skipped.append(name)
                continue
            s.args[name] = value
            s.record_arg(name, stored)
        if isinstance(container, dict):
            container[key] = value
    if skipped:
        warn_once(
            f"args:{','.join(skipped)}",
            f"retrolog: args() left out {', '.join(skipped)} (not storable values or names)",
        )
    return config


_UNSTORABLE = object()


def _storable(value: Any) -> Any:
    """The value as it is stored (paths as strings), or _UNSTORABLE."""
    if isinstance(value, os.PathLike):
        value = os.fspath(value)
    value = V.normalise(value)
    try:
        V.to_cell(value)
    except V.UnsupportedValue:
        return _UNSTORABLE
    return value


def _record_parsed(s: RunSession, strict: bool) -> None:
    """Record the captured argparse values as args (those an ``arg()`` did not record already).

    ``strict`` (the main loop starts): a ``--kwargs`` override of an argparse value is an error,
    raised before any training, since argparse owns those values.
    """
    if not _early.parsed:
        return
    skipped: list[str] = []
    for name, (value, options) in _early.take_parsed().items():
        if name in s.args:
            continue
        if strict and name in s.unused_overrides:
            flag = options[0] if options else name
            raise ArgumentError(
                f"--kwargs {name}=...: {name!r} is an argparse option of this script; "
                f"give it as {flag} on the command line instead"
            )
        stored = _storable(value)
        if stored is _UNSTORABLE or V.check_name(name):
            skipped.append(name)
            continue
        s.args[name] = value
        s.record_arg(name, stored)
    if skipped:
        warn_once(
            "argparse-skipped",
            f"retrolog: argparse values not recorded as args (not storable): {', '.join(skipped)}",
        )


def data(name: str, path: str | os.PathLike[str]) -> str | os.PathLike[str]:
    """Record the content identity of the data file or directory ``path`` under ``name``; returns
    ``path``. Hashed now (through a size+mtime cache: an unchanged tree costs a ``stat`` per
    file), so call it before the training loop. Replay refuses runs whose data changed since."""
    problem = V.check_name(name)
    if problem:
        raise ArgumentError(f"data({name!r}, ...): {problem}")
    s = _session or _begin()
    from .data import record

    try:
        record(s, name, path)
    except Exception as exc:  # a run never dies because retrolog could not hash its data
        warn_once(f"data:{name}", f"retrolog: data({name!r}, ...) not recorded: {exc!r}")
    return path


def commit() -> str | None:
    """End the current run (flush, finish); the next API call starts a new one. Returns its id."""
    global _session
    with _lock:
        s = _session
        if s is None:
            return None
        _session = None
    status, error = _exit_status or ("finished", None)
    if "retrolog.record.data" in sys.modules:  # automatic data versions still being hashed
        sys.modules["retrolog.record.data"].drain_tracking()
    try:
        _record_parsed(s, strict=False)
    except Exception as exc:  # the run must still close
        warn_once("argparse-record", f"retrolog: could not record the argparse values: {exc!r}")
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
        if _session is None or getattr(_session, "spans_cells", False):
            return  # a notebook run lasts until commit() (notebook/kernel.py)
        error = getattr(result, "error_in_exec", None)
        if error is not None:
            _exit_status = ("failed", f"{type(error).__name__}: {error}")
        commit()
        _exit_status = None

    shell.events.register("post_run_cell", _after_cell)
