"""The forked task: what a child of the fork server does to become ``python script.py``.

It runs in the child between ``fork`` and the script's end, never in the coordinator. The child
takes the job's environment (plus what the server's preloaded imports added to ``os.environ``,
as they would in the script), cwd, argv, ``sys.path[0]``, fd 1/2 appended to the job's log,
stdin from /dev/null, a new ``__main__``, fresh stdio objects, signal handlers, hooks and caches
as a new interpreter has them (``random`` reseeds itself at fork, the legacy NumPy global
generator is reseeded from OS entropy, torch's default generator gets a distinct seed in each
child as in each process). It runs the script, maps ``SystemExit`` / uncaught exceptions to an
exit status like the interpreter, waits for non-daemon threads, runs ``atexit`` handlers
(retrolog's ``commit`` writes the task output there) and flushes files; the server's fork branch
then ``os._exit``\\ s with the status. When the fork cannot be a fresh interpreter (the server
says why), the child ``execve``\\ s the job's command instead.

Standard library only: the server (run as a script) loads this file by its path.
"""

from __future__ import annotations

import atexit
import builtins
import contextlib
import gc
import importlib
import importlib.machinery
import io
import linecache
import os
import signal
import sys
import tempfile
import threading
import traceback
import types
from collections.abc import Callable
from typing import IO, Any

GUARD_MODULE = "retrolog.replaying.guard"
GUARD_ENV = "RETROLOG_SANDBOX"  # guard.ENV (the server loads this file without the package)


def become(
    req: dict[str, Any],
    exec_reason: str | None,
    *,
    signals: dict[signal.Signals, Callable[..., Any] | int | None],
    import_env: dict[str, str],
    base_path: list[str],
) -> int:
    """Turn this forked child into the job ``req`` describes and run it; its exit status.
    ``signals`` and ``base_path``: the handlers and ``sys.path`` the server started with;
    ``import_env``: the variables its preloaded imports set; ``exec_reason``: why the job must
    be exec'd (None: run it in this process)."""
    argv, env = list(req["argv"]), dict(req["env"])
    log = os.open(req["log_path"], os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o666)
    os.dup2(log, 1)
    os.dup2(log, 2)
    os.close(log)
    null = os.open(os.devnull, os.O_RDONLY)
    os.dup2(null, 0)
    os.close(null)
    os.chdir(req["cwd"])
    for sig, handler in signals.items():
        if handler is not None and signal.getsignal(sig) is not handler:
            signal.signal(sig, handler)
    signal.pthread_sigmask(signal.SIG_SETMASK, set())
    guard = importlib.import_module(GUARD_MODULE) if env.get(GUARD_ENV) else None
    if exec_reason is not None:
        for sig in (signal.SIGPIPE, signal.SIGXFSZ):  # as subprocess restores them
            signal.signal(sig, signal.SIG_DFL)
        if guard is not None:  # the new interpreter installs the guard before the script
            argv = guard.wrap_argv(argv)
        os.execve(argv[0], argv, env)
    os.environ.clear()
    os.environ.update({**import_env, **env})
    _fresh_stdio(bool(env.get("PYTHONUNBUFFERED")))
    _fresh_state()
    if guard is not None:
        guard.install(env[GUARD_ENV])  # copy-on-write guard: never write the user's files
    script = os.path.abspath(argv[1])
    sys.argv, sys.orig_argv = argv[1:], argv
    sys.path[:] = base_path
    if not getattr(sys.flags, "safe_path", False):
        sys.path.insert(0, os.path.dirname(os.path.realpath(script)))
    return _run_script(script)


def _fresh_stdio(unbuffered: bool) -> None:
    """New stdin/stdout/stderr objects on fds 0-2, buffered as a new interpreter buffers them."""
    encoding = sys.stdout.encoding

    def writer(fd: int, errors: str | None, line: bool) -> io.TextIOWrapper:
        raw = io.FileIO(fd, "w", closefd=False)
        binary: IO[bytes] = raw if unbuffered else io.BufferedWriter(raw)
        return io.TextIOWrapper(
            binary,
            encoding,
            errors,
            line_buffering=line and not unbuffered,
            write_through=unbuffered,
        )

    stdin = io.TextIOWrapper(io.BufferedReader(io.FileIO(0, "r", closefd=False)), encoding)
    stdout = writer(1, sys.stdout.errors, False)
    stderr = writer(2, sys.stderr.errors, True)
    sys.stdin, sys.stdout, sys.stderr = stdin, stdout, stderr
    for name, stream in (("__stdin__", stdin), ("__stdout__", stdout), ("__stderr__", stderr)):
        setattr(sys, name, stream)


def _fresh_state() -> None:
    """Hooks, caches and global generators as a new interpreter would have them."""
    sys.excepthook = sys.__excepthook__
    sys.displayhook = sys.__displayhook__
    sys.unraisablehook = sys.__unraisablehook__
    threading.excepthook = threading.__excepthook__
    tempfile.tempdir = None
    np_random = sys.modules.get("numpy.random")
    if np_random is not None:
        with contextlib.suppress(Exception):
            np_random.seed()  # from OS entropy, as at a fresh import
    importlib.invalidate_caches()
    linecache.clearcache()


def _run_script(script: str) -> int:
    """Run ``script`` as ``__main__``; then shut down as the interpreter would. Exit status."""
    main = types.ModuleType("__main__")
    main.__dict__.update(
        __file__=script,
        __cached__=None,
        __builtins__=builtins,
        __loader__=importlib.machinery.SourceFileLoader("__main__", script),
    )
    sys.modules["__main__"] = main
    code, interrupted = 0, False
    try:
        with io.open_code(script) as fh:
            source = fh.read()
        exec(compile(source, script, "exec", dont_inherit=True), main.__dict__)
    except SystemExit as exc:
        if exc.code is None or isinstance(exc.code, int):
            code = exc.code or 0
        else:
            print(exc.code, file=sys.stderr)
            code = 1
    except BaseException as exc:
        interrupted, code = isinstance(exc, KeyboardInterrupt), 1
        tb = exc.__traceback__
        while tb is not None and tb.tb_frame.f_code.co_filename == _run_script.__code__.co_filename:
            tb = tb.tb_next  # drop this runner's frames, as a plain interpreter would show none
        sys.excepthook(type(exc), exc.with_traceback(tb), tb)
    try:
        getattr(threading, "_shutdown", lambda: None)()  # join non-daemon threads
    except BaseException:
        traceback.print_exc()
    atexit._run_exitfuncs()
    _flush_open_files()
    if interrupted:  # like CPython: die of SIGINT after an uncaught KeyboardInterrupt
        signal.signal(signal.SIGINT, signal.SIG_DFL)
        os.kill(os.getpid(), signal.SIGINT)
    return code & 0xFF


def _flush_open_files() -> None:
    """Flush what the script left open (a new interpreter would at shutdown), then stdio.
    Objects from before the fork are frozen, so ``gc.get_objects`` lists only the child's."""
    objects = gc.get_objects()
    for kind in (io.TextIOWrapper, (io.BufferedWriter, io.BufferedRandom)):
        for obj in objects:
            if isinstance(obj, kind):
                with contextlib.suppress(Exception):  # closed, detached: nothing to flush
                    obj.flush()
    for stream in (sys.stdout, sys.stderr):
        with contextlib.suppress(Exception):
            stream.flush()
