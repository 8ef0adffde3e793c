"""``ForkServerExecutor``: the replay executor whose tasks are forks of a warm server.

Starting ``python script.py`` costs interpreter start-up plus ``import torch`` (seconds) for every
task, often more than the task's work. This executor (in the coordinator) starts or connects to a
server (server.py, a process of its own) that imports ``preload`` and retrolog's replay runtime,
then asks it to fork a child per job (task.py: the child becomes what ``python script.py`` would
have been). Same events, retries and result order as ``LocalProcessExecutor``. If the server
dies, the lost attempts and the remaining jobs run as plain subprocesses, with a warning.
"""

from __future__ import annotations

import ast
import os
import sys
import threading
import time
import warnings
from collections import deque
from collections.abc import Sequence

from ..._warn import RetrologWarning
from ..executor import Backend, Capabilities, EventCallback, Job, JobResult, Subprocesses, run_jobs
from . import persistent
from .client import READY_TIMEOUT, ForkServerError, ServerClient, start_private
from .server import startup_env

ALWAYS_PRELOAD = (
    "retrolog",
    "retrolog.record",
    "retrolog.checkpoint.checkpointer",  # the package imports its parts lazily
    "retrolog.checkpoint.restore",
    "retrolog.objects",
    "retrolog.replaying.guard",  # installed in each sandboxed child before the script runs
)
# imported lazily by nearly every task that uses the key: torch.optim pulls in torch._dynamo
# (~800 modules, seconds) at the first optimizer; retrolog's checkpoints use safetensors
IMPLIED_PRELOAD = {
    "torch": ("torch._dynamo", "safetensors.torch"),
    "numpy": ("safetensors.numpy",),
}


def script_imports(source: str) -> list[str]:
    """The absolute imports a script runs at module level (not inside functions or classes),
    in order: the natural ``preload`` for it. Unparsable source gives none."""
    try:
        tree = ast.parse(source)
    except SyntaxError:
        return []
    names: list[str] = []
    todo: deque[ast.AST] = deque([tree])
    while todo:
        node = todo.popleft()
        if isinstance(node, ast.Import):
            names.extend(alias.name for alias in node.names)
        elif isinstance(node, ast.ImportFrom) and node.level == 0 and node.module:
            names.append(node.module)
        elif not isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef, ast.ClassDef)):
            todo.extend(ast.iter_child_nodes(node))
    return [n for n in dict.fromkeys(names) if n != "__future__"]


def with_implied(modules: Sequence[str]) -> list[str]:
    implied = [m for name in modules for m in IMPLIED_PRELOAD.get(name.partition(".")[0], ())]
    return list(dict.fromkeys([*modules, *implied]))


class ForkServerExecutor:
    """Executor protocol like ``LocalProcessExecutor`` (same events, retries, result order), but
    each attempt is a fork of a server that already imported ``preload`` (plus retrolog's replay
    runtime). Attributes after ``run``: ``preload_errors`` (module -> why its import failed),
    ``exec_reasons`` (task -> why it was exec'd rather than forked), ``fallback_error``."""

    def __init__(
        self,
        workers: int | None = None,
        preload: Sequence[str] = (),
        retries: int = 1,
        poll_seconds: float = 0.05,
        fallback: bool = True,
        persist: bool | None = None,
    ) -> None:
        self.workers = max(1, workers or os.cpu_count() or 1)
        self.preload = with_implied([*ALWAYS_PRELOAD, *preload])
        self.persist = persistent.persist_default() if persist is None else persist
        self.retries = retries
        self.poll_seconds = poll_seconds
        self.fallback = fallback  # False: raise ForkServerError instead of falling back
        self.server_pid: int | None = None
        self.server_threads = 0
        self.preload_errors: dict[str, str] = {}
        self.exec_reasons: dict[int, str] = {}
        self.fallback_error: str | None = None
        self.import_seconds: dict[str, float] = {}  # what the server's imports took
        self.reused = False  # a persistent server that was already running served this run
        self._extra: list[str] = []
        self._early: tuple[str, dict[str, str]] | None = None
        self._thread: threading.Thread | None = None
        self._client: ServerClient | None = None
        self._start_error: BaseException | None = None
        self._key: str | None = None
        self._started: float | None = None
        self._lock = threading.Lock()
        self._closed = False
        self.ready_seconds: float | None = None

    @property
    def capabilities(self) -> Capabilities:
        """Forks of a warm server that preloads and reports its import times (..executor)."""
        return Capabilities(fork=True, warm=True, preload=True)

    def start(self, interpreter: str | None = None, env: dict[str, str] | None = None) -> None:
        """Start (or connect to) the server now, in the background, so that it imports while the
        caller plans; ``run`` then uses it. Jobs with another interpreter or start-up environment
        get a server of their own."""
        if self._thread is not None or not hasattr(os, "fork"):
            return
        interpreter = interpreter or sys.executable
        env = dict(os.environ if env is None else env)
        self._early = (interpreter, startup_env(env))
        self._thread = threading.Thread(
            target=self._connect, args=(interpreter, env), name="retrolog-forkserver", daemon=True
        )
        self._thread.start()

    def add_preload(self, modules: Sequence[str]) -> None:
        """More modules to import before the first fork (the server may already be running)."""
        extra = [m for m in with_implied(modules) if m not in self.preload]
        self.preload += extra
        self._extra += extra

    def wait_ready(self, timeout: float = READY_TIMEOUT) -> dict[str, float]:
        """Wait for a server started by ``start``; its import times ({} when it failed)."""
        if self._thread is not None:
            self._thread.join(timeout)
        return dict(self.import_seconds)

    def _connect(self, interpreter: str, env: dict[str, str]) -> None:
        started = self._started = time.monotonic()
        try:
            preload = (
                persistent.shareable_preload(self.preload) if self.persist else list(self.preload)
            )
            self._key = persistent.server_key(interpreter, preload, env)
            client = self._new_client(interpreter, env)
        except (ForkServerError, OSError) as exc:
            self._start_error = exc
            return
        with self._lock:
            if self._closed:  # the replay ended (declined, nothing to run) while we started
                client.close()
                return
            self._client = client
        self.import_seconds = dict(client.hello.get("import_seconds", {}))
        self.reused = client.reused
        self.ready_seconds = time.monotonic() - started
        if not self.reused:
            persistent.save_calibration(self._key, self.ready_seconds, self.import_seconds)

    def _new_client(self, interpreter: str, env: dict[str, str]) -> ServerClient:
        """A ready server: the persistent one, or a private one when that cannot be had."""
        if self.persist:
            try:
                client = persistent.open_session(interpreter, self.preload, env)
                client.ready()
                return client
            except (ForkServerError, OSError) as exc:
                warnings.warn(
                    f"retrolog: no persistent fork server ({exc}); using one for this replay only",
                    RetrologWarning,
                    stacklevel=2,
                )
        client = start_private(interpreter, self.preload, env)
        client.ready()
        return client

    def calibration(self) -> tuple[float | None, dict[str, float]]:
        """For the cost model, while a server started by ``start`` may still be importing: (seconds
        until it is ready, from now; import seconds per module). Measured when it is ready, else
        what the last server like it took (None, {}: never measured)."""
        if self._thread is None:
            return None, {}
        if not self._thread.is_alive():
            return (0.0, dict(self.import_seconds)) if self._client is not None else (None, {})
        key = self._key
        for _ in range(100):  # the key is computed first thing in the thread (milliseconds)
            if key is not None or not self._thread.is_alive():
                break
            time.sleep(0.005)
            key = self._key
        past = persistent.load_calibration().get(key or "")
        if not past:
            return None, {}
        if self.persist and key and persistent.server_listening(key):
            return 0.0, dict(past["import_seconds"])  # already running: only connecting is left
        elapsed = time.monotonic() - (self._started or time.monotonic())
        return max(float(past["ready_seconds"]) - elapsed, 0.0), dict(past["import_seconds"])

    def close(self) -> None:
        """Let go of a server started by ``start`` and never used by ``run`` (without waiting for
        one still starting: it is let go of as soon as it is ready)."""
        with self._lock:
            self._closed = True
            client, self._client = self._client, None
        if client is not None:
            client.close()

    def run(self, jobs: Sequence[Job], on_event: EventCallback) -> list[JobResult]:
        if not jobs:
            return []
        backend = self._open(jobs[0])
        exec_reasons = getattr(backend, "exec_reasons", {})  # the server's, updated as it runs

        def replace(exc: Exception) -> Backend:  # the server died; run_jobs closed it
            assert isinstance(exc, ForkServerError)
            return self._fall_back(exc)

        try:
            return run_jobs(
                jobs,
                on_event,
                backend,
                self.workers,
                self.retries,
                self.poll_seconds,
                lost=(ForkServerError,),
                replace=replace,
            )
        finally:
            self.exec_reasons.update(exec_reasons)

    def _open(self, first: Job) -> Backend:
        if not hasattr(os, "fork"):
            return self._fall_back(ForkServerError("os.fork is not available here"))
        server: ServerClient | None = None
        if self._thread is not None:
            self._thread.join()
            self._thread = None
            server, self._client = self._client, None
            same = self._early == (first.argv[0], startup_env(dict(first.env)))
            if server is not None and not same:
                server.close()
                server = None
        try:
            if server is None:
                self._extra = []
                server = self._new_client(first.argv[0], dict(first.env))
                self.import_seconds = dict(server.hello.get("import_seconds", {}))
                self.reused = server.reused
            server.preload(self._extra)
        except (ForkServerError, OSError) as exc:
            return self._fall_back(ForkServerError(str(exc)))
        self.server_pid = server.pid
        self.preload_errors = dict(server.hello.get("failed", {}))
        self.server_threads = int(server.hello.get("threads", 1))
        return server

    def _fall_back(self, exc: ForkServerError) -> Backend:
        if not self.fallback:
            raise exc
        self.fallback_error = str(exc)
        warnings.warn(
            f"retrolog: {exc}\nrunning the remaining replay tasks as plain subprocesses",
            RetrologWarning,
            stacklevel=3,
        )
        return Subprocesses()
