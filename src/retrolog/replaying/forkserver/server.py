"""The fork server: a process that imports the heavy modules once, then forks a child per task.

Run as a script (``python server.py PRELOAD...``, or ``--persist SOCKET IDLE PRELOAD...``) by
the coordinator's ``ForkServerExecutor``; it never runs in the coordinator. It imports ``preload``
and retrolog's replay runtime, then reads JSON request lines (a job, or more modules to preload)
and answers one line per finished child with its exit status. A private server talks over its
stdin/stdout; a persistent one listens on a Unix socket and forks a *session* per connection.
The child runs ``task.become`` (task.py: what the child does to be ``python script.py``).

Fork safety: forking after ``import torch`` is safe only while no intra-op thread pool (OpenMP,
MKL) has been started in the server, so the server never runs tensor operations; it only
imports. Each child starts its own pools with its own environment (``OMP_NUM_THREADS`` etc.).
NumPy's OpenBLAS starts its pool at import but shuts it down around ``fork`` (atfork handlers);
the hello message reports the server's native thread count after preloading. Preloading a module
that starts threads of its own at import (a client connecting to a server, a watchdog) is not
safe: keep ``preload`` to the script's library imports.

When the fork cannot reproduce a fresh interpreter the child ``execve``\\ s the job's command
instead (correct, just not faster): another interpreter or flags in ``argv``, start-up variables
(``PYTHON*``, ``LD_*``, ``OMP_*``, ``MKL_*``, ``TORCH_*``, ...) that differ from the server's, or
a file next to the script that would shadow a preloaded module. On Linux the server's children
die with it (``PR_SET_PDEATHSIG``).

Standard library only at import: the coordinator imports this module for ``SERVER_FILE`` and
``startup_env``; run as a script, it loads task.py by path, never the retrolog package (that
comes with the preload, whose import times the server measures).
"""

from __future__ import annotations

import contextlib
import gc
import importlib
import importlib.machinery
import importlib.util
import json
import os
import select
import signal
import socket
import sys
import threading
import time
import traceback
from collections.abc import Callable, Sequence
from typing import TYPE_CHECKING, Any

SERVER_FILE = os.path.abspath(__file__)
_STARTUP_PREFIXES = (
    "PYTHON",
    "LD_",
    "OMP_",
    "GOMP_",
    "KMP_",
    "MKL_",
    "OPENBLAS_",
    "TORCH",
    "PYTORCH",
)
_HANDLED_VARS = frozenset({"PYTHONUNBUFFERED"})  # the child rebuilds its stdio for this one


def startup_env(env: dict[str, str]) -> dict[str, str]:
    """The variables an interpreter or native library reads at start-up or import time: a job
    whose values differ from the server's is exec'd, and they are part of a server's identity."""
    return {
        k: v for k, v in env.items() if k.startswith(_STARTUP_PREFIXES) and k not in _HANDLED_VARS
    }


def _task_module() -> Any:
    """task.py, beside this file, loaded by path (run as a script, the package is not imported)."""
    path = os.path.join(os.path.dirname(SERVER_FILE), "task.py")
    spec = importlib.util.spec_from_file_location("_retrolog_forkserver_task", path)
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


if TYPE_CHECKING or __package__:
    from . import task
else:  # run as a script
    task = _task_module()


class _Server:
    """Imports ``preload``, then forks a child per request line until its input closes.

    A private server talks over its stdin/stdout; a persistent one (``--persist``) listens on a
    Unix socket and forks a *session* per connection, which serves that connection the same way.
    """

    def __init__(self, preload: list[str], persistent: bool = False) -> None:
        self.startup = {name.partition(".")[0] for name in sys.modules}
        self.signals = {s: signal.getsignal(s) for s in signal.valid_signals()}
        self.req = self.resp = -1
        if not persistent:
            self.req, self.resp = os.dup(0), os.dup(1)  # protocol fds, non-inheritable
        null = os.open(os.devnull, os.O_RDWR)
        os.dup2(null, 0)
        os.dup2(2, 1)  # stray prints of the server go to its stderr, never into the protocol
        os.close(null)
        signal.signal(signal.SIGINT, signal.SIG_IGN)  # the parent decides when we stop
        self.environ = dict(os.environ)
        self.startup_env = startup_env(self.environ)
        self.failed: dict[str, str] = {}
        self.import_seconds: dict[str, float] = {}
        self.prctl: Callable[..., int] | None = None
        if sys.platform.startswith("linux"):
            try:
                import ctypes

                self.prctl = ctypes.CDLL(None, use_errno=True).prctl
            except (OSError, AttributeError):
                pass
        self.base_path = list(sys.path)
        self._import(preload)
        self.pid = os.getpid()
        self.children: dict[int, int] = {}  # pid -> task
        self.reasons: dict[int, str | None] = {}  # pid -> why it was exec'd

    def _import(self, modules: Sequence[str]) -> None:
        for name in modules:
            if name in sys.modules:
                continue
            start = time.perf_counter()
            try:
                importlib.import_module(name)
            except BaseException as exc:  # an optional speed-up: never fatal
                self.failed[name] = f"{type(exc).__name__}: {exc}"
            self.import_seconds[name] = time.perf_counter() - start
        self.preloaded = sorted({n.partition(".")[0] for n in sys.modules} - self.startup)
        # variables the imports set themselves (torch._dynamo: TORCHINDUCTOR_CACHE_DIR)
        self.import_env = {k: v for k, v in os.environ.items() if self.environ.get(k) != v}
        gc.collect()
        gc.freeze()  # keep the collector off the shared pages in the children

    def hello(self) -> None:
        tasks = f"/proc/{self.pid}/task"  # native threads too (OpenBLAS starts its pool at load)
        threads = len(os.listdir(tasks)) if os.path.isdir(tasks) else threading.active_count()
        self._send(
            {
                "ready": True,
                "pid": self.pid,
                "failed": self.failed,
                "threads": threads,
                "import_seconds": self.import_seconds,
            }
        )

    def _send(self, message: dict[str, Any]) -> None:
        data = (json.dumps(message) + "\n").encode()
        while data:
            data = data[os.write(self.resp, data) :]

    def serve(self) -> None:
        buffer, eof = b"", False
        while not eof or self.children:
            ready, _, _ = select.select([] if eof else [self.req], [], [], 0.01)
            if ready:
                try:
                    data = os.read(self.req, 1 << 16)
                except OSError:
                    data = b""
                if not data:
                    eof = True
                    for pid in self.children:
                        os.kill(pid, signal.SIGKILL)
                buffer += data
                *lines, buffer = buffer.split(b"\n")
                for line in lines:
                    if line.strip():
                        request = json.loads(line)
                        if "preload" in request:
                            self._import(request["preload"])
                        else:
                            self._spawn(request)
            while self.children:
                pid, status = os.waitpid(-1, os.WNOHANG)
                if pid == 0:
                    break
                task_id = self.children.pop(pid)
                code = os.waitstatus_to_exitcode(status)
                with contextlib.suppress(OSError):  # a client gone: keep reaping, then exit
                    self._send(
                        {"task_id": task_id, "returncode": code, "exec": self.reasons.pop(pid)}
                    )

    def listen(self, path: str, idle: float) -> None:
        """Persistent mode: accept connections on ``path``; fork a session per connection; exit
        after ``idle`` seconds without sessions, on SIGTERM, or when ``path`` is taken away."""
        listener = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        staging = f"{path}.new"  # one starter at a time (the lock); AF_UNIX paths are <= 107 bytes
        with contextlib.suppress(FileNotFoundError):
            os.unlink(staging)
        listener.bind(staging)
        listener.listen(16)
        os.rename(staging, path)  # atomically: a client connects only to a ready server
        inode = os.stat(path).st_ino
        if os.fork() > 0:  # daemonise: the starter reaps this parent at once, init the server
            os._exit(0)
        self.pid = os.getpid()
        pid_path = path[: -len(".sock")] + ".pid" if path.endswith(".sock") else path + ".pid"
        with open(pid_path, "w") as fh:
            fh.write(str(self.pid))
        stop = []
        signal.signal(signal.SIGTERM, lambda *_: stop.append(True))
        sessions: set[int] = set()
        last = time.monotonic()
        while True:
            try:
                ready, _, _ = select.select([listener], [], [], 0.5)
            except InterruptedError:
                ready = []
            if ready and not stop:
                conn, _ = listener.accept()
                pid = os.fork()
                if pid == 0:
                    listener.close()
                    signal.signal(signal.SIGTERM, signal.SIG_DFL)
                    self.req = self.resp = conn.detach()
                    self.pid = os.getpid()
                    try:
                        self.hello()
                        self.serve()
                    finally:
                        os._exit(0)
                conn.close()
                sessions.add(pid)
            while sessions:
                pid, _status = os.waitpid(-1, os.WNOHANG)
                if pid == 0:
                    break
                sessions.discard(pid)
                last = time.monotonic()
            try:
                ours = os.stat(path).st_ino == inode
            except OSError:
                ours = False
            if sessions:
                last = time.monotonic()
            elif stop or not ours or time.monotonic() - last > idle:
                break
        listener.close()
        log_path = pid_path[: -len(".pid")] + ".log"
        for leftover in (path, pid_path, log_path):
            with contextlib.suppress(OSError):
                if leftover != path or ours:
                    os.unlink(leftover)

    def _spawn(self, req: dict[str, Any]) -> None:
        reason = self._exec_reason(req)
        for stream in (sys.stdout, sys.stderr):
            stream.flush()
        try:
            pid = os.fork()
        except OSError as exc:
            with open(req["log_path"], "a") as log:
                print(f"retrolog fork server: cannot fork: {exc}", file=log)
            self._send({"task_id": req["task_id"], "returncode": 1, "exec": None})
            return
        if pid == 0:
            code = 1
            try:
                code = self._child(req, reason)
            except BaseException:
                traceback.print_exc()
            finally:
                os._exit(code)
        self.children[pid] = req["task_id"]
        self.reasons[pid] = reason

    def _exec_reason(self, req: dict[str, Any]) -> str | None:
        """Why this job cannot be a fork of this server (None: it can)."""
        argv, env = req["argv"], req["env"]
        if len(argv) < 2 or argv[1].startswith("-"):
            return "the command is not `python SCRIPT ...`"
        if os.path.abspath(argv[0]) != os.path.abspath(sys.executable):
            return f"another interpreter: {argv[0]}"
        script = os.path.join(req["cwd"], argv[1])
        if not os.path.isfile(script) or script.endswith(".pyc"):
            return "the script is not a source file"
        if startup_env(env) != self.startup_env:
            return "interpreter start-up variables differ from the server's"
        folder = os.path.dirname(os.path.realpath(script))
        shadowed = [name for name in self.preloaded if _found_in(name, folder)]
        return f"the script's folder shadows preloaded {shadowed}" if shadowed else None

    def _child(self, req: dict[str, Any], reason: str | None) -> int:
        """In the forked child: let go of the server's side, then become the task."""
        os.close(self.req)
        if self.resp != self.req:
            os.close(self.resp)
        if self.prctl is not None:
            self.prctl(1, int(signal.SIGKILL), 0, 0, 0)  # PR_SET_PDEATHSIG: die with the server
            if os.getppid() != self.pid:
                return 1
        return int(
            task.become(
                req,
                reason,
                signals=self.signals,
                import_env=self.import_env,
                base_path=self.base_path,
            )
        )


def _found_in(name: str, folder: str) -> bool:
    """Whether ``import name`` would find a module or regular package in ``folder``."""
    try:
        spec = importlib.machinery.PathFinder.find_spec(name, [folder])
    except (ImportError, ValueError, OSError):
        return False
    return bool(spec is not None and spec.has_location)


def _main(argv: list[str]) -> None:
    here = os.path.dirname(os.path.realpath(__file__))
    if sys.path and os.path.realpath(sys.path[0] or ".") == here:
        del sys.path[0]  # run as a script: our folder must not become a top-level import root
    if argv[:1] == ["--persist"]:
        path, idle, preload = argv[1], float(argv[2]), argv[3:]
        _Server(preload, persistent=True).listen(path, idle)
        return
    server = _Server(argv)
    server.hello()
    server.serve()


if __name__ == "__main__":
    _main(sys.argv[1:])
