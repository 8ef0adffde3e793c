"""A fork-server executor: import the heavy modules once, fork a fresh child per replay task.

Starting ``python script.py`` costs interpreter start-up plus ``import torch`` (seconds) for every
task, often more than the task's work. ``ForkServerExecutor`` starts one server process per
``run()`` (this file run as a script), which imports ``preload`` and retrolog's replay runtime,
then forks a child per job. The child becomes what ``python script.py`` would have been: the
job's environment (plus what the preloaded imports added to ``os.environ``, as they would in the
script), cwd, argv, ``sys.path[0]``, fd 1/2 appended to the job's log, stdin from
/dev/null, a new ``__main__``, fresh stdio objects, signal handlers, hooks and caches as a new
interpreter has them (``random`` reseeds itself at fork, the legacy NumPy global generator is
reseeded from OS entropy, torch's default generator gets a distinct seed in each child as in
each process). It runs the script, maps ``SystemExit`` / uncaught exceptions to an exit
status like the interpreter, waits for non-daemon threads, runs ``atexit`` handlers (retrolog's
``commit`` writes the task output there), flushes files and ``os._exit``\\ s. Parent and server
talk JSON lines over the server's stdin/stdout.

Fork safety: forking after ``import torch`` is safe only while no intra-op thread pool (OpenMP,
MKL) has been started in the server, so the server never runs tensor operations; it only
imports. Each child starts its own pools with its own environment (``OMP_NUM_THREADS`` etc.).
NumPy's OpenBLAS starts its pool at import but shuts it down around ``fork`` (atfork handlers);
``server_threads`` reports the server's native thread count after preloading. Preloading a
module that starts threads of its own at import (a client connecting to a server, a watchdog)
is not safe: keep ``preload`` to the script's library imports.

When the fork cannot reproduce a fresh interpreter the child ``execve``\\ s the job's command
instead (correct, just not faster): another interpreter or flags in ``argv``, start-up variables
(``PYTHON*``, ``LD_*``, ``OMP_*``, ``MKL_*``, ``TORCH_*``, ...) that differ from the server's, or
a file next to the script that would shadow a preloaded module. If the server dies, the lost
attempts and the remaining jobs run as plain subprocesses (``LocalProcessExecutor``'s), with a
warning; on Linux the server's children die with it (``PR_SET_PDEATHSIG``).
"""

from __future__ import annotations

import ast
import atexit
import builtins
import contextlib
import gc
import importlib
import importlib.machinery
import io
import json
import linecache
import os
import select
import signal
import socket
import subprocess
import sys
import tempfile
import threading
import time
import traceback
import types
import warnings
from collections import deque
from collections.abc import Callable, Sequence
from typing import IO, TYPE_CHECKING, Any

if TYPE_CHECKING:
    from .executor import Backend, Capabilities, EventCallback, Job, JobResult

ALWAYS_PRELOAD = (
    "retrolog",
    "retrolog.record",
    "retrolog.checkpoint.checkpointer",  # the package imports its parts lazily
    "retrolog.checkpoint.restore",
    "retrolog.objects",
    "retrolog.replaying.guard",  # installed in each sandboxed child before the script runs
)
GUARD_MODULE = "retrolog.replaying.guard"
# imported lazily by nearly every task that uses the key: torch.optim pulls in torch._dynamo
# (~800 modules, seconds) at the first optimizer; retrolog's checkpoints use safetensors
IMPLIED_PRELOAD = {
    "torch": ("torch._dynamo", "safetensors.torch"),
    "numpy": ("safetensors.numpy",),
}
READY_TIMEOUT = 300.0  # seconds the server may take to import everything
PERSIST_ENV = "RETROLOG_FORKSERVER_PERSIST"  # these four: see retrolog.settings
IDLE_ENV = "RETROLOG_FORKSERVER_IDLE"
DIR_ENV = "RETROLOG_FORKSERVER_DIR"
GUARD_ENV = "RETROLOG_SANDBOX"  # guard.ENV (this file also runs as a script: no package imports)
_SERVER_FILE = os.path.abspath(__file__)
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


class ForkServerError(RuntimeError):
    """The fork server could not start or died; the message carries its exit status and stderr."""


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


def _with_implied(modules: Sequence[str]) -> list[str]:
    implied = [m for name in modules for m in IMPLIED_PRELOAD.get(name.partition(".")[0], ())]
    return list(dict.fromkeys([*modules, *implied]))


def _startup_env(env: dict[str, str]) -> dict[str, str]:
    """The variables an interpreter or native library reads at start-up or import time."""
    return {
        k: v for k, v in env.items() if k.startswith(_STARTUP_PREFIXES) and k not in _HANDLED_VARS
    }


# -- parent side -----------------------------------------------------------------------------
class _ServerClient:
    """The parent's handle on a fork server: a private one (a child process on pipes) or a session
    of a persistent one (a Unix socket). Construction starts it; ``ready()`` waits for its hello."""

    def __init__(
        self, interpreter: str, preload: list[str], env: dict[str, str], persist: bool = False
    ) -> None:
        self.proc: subprocess.Popen[bytes] | None = None
        self.sock: socket.socket | None = None
        self.stderr: IO[bytes] | None = None
        self.pid = 0
        self.buffer = b""
        self.exec_reasons: dict[int, str] = {}
        self.hello: dict[str, Any] = {}
        self.persistent_key: str | None = None
        self.reused = False  # a persistent server that was already running
        if persist:
            self.persistent_key, self.sock, spawned = _connect_persistent(interpreter, preload, env)
            self.reused = not spawned
            self.wfd = self.rfd = self.sock.fileno()
            return
        self.stderr = tempfile.TemporaryFile()  # noqa: SIM115 (closed by close())
        self.proc = subprocess.Popen(
            [interpreter, _SERVER_FILE, *preload],
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            stderr=self.stderr,
            env=env,
            bufsize=0,
        )
        assert self.proc.stdin is not None and self.proc.stdout is not None
        self.wfd, self.rfd = self.proc.stdin.fileno(), self.proc.stdout.fileno()
        self.pid = self.proc.pid

    def ready(self, timeout: float = READY_TIMEOUT) -> None:
        deadline = time.monotonic() + timeout
        try:
            while not self.hello:
                if time.monotonic() > deadline:
                    raise ForkServerError(f"the fork server was not ready in {timeout:.0f}s")
                self.hello = next(iter(self._messages(1.0)), {})
        except BaseException:
            self.close()
            raise
        self.pid = int(self.hello.get("pid", self.pid))

    def preload(self, modules: Sequence[str]) -> None:
        """Import more modules in the server (its session) before the next fork."""
        if modules:
            self._write({"preload": list(modules)})

    def submit(self, job: Job) -> None:
        self._write(
            {
                "task_id": job.task_id,
                "argv": list(job.argv),
                "cwd": str(job.cwd),
                "env": dict(job.env),
                "log_path": str(job.log_path),
            }
        )

    def _write(self, request: dict[str, Any]) -> None:
        data = memoryview((json.dumps(request) + "\n").encode())
        try:
            while data:
                data = data[os.write(self.wfd, data) :]
        except OSError as exc:
            raise ForkServerError(self._death(f"{exc}")) from exc

    def wait(self, timeout: float) -> list[tuple[int, int]]:
        done = []
        for msg in self._messages(timeout):
            if "task_id" not in msg:
                continue
            if msg.get("exec"):
                self.exec_reasons[int(msg["task_id"])] = str(msg["exec"])
            done.append((int(msg["task_id"]), int(msg["returncode"])))
        return done

    def _messages(self, timeout: float) -> list[dict[str, Any]]:
        ready, _, _ = select.select([self.rfd], [], [], timeout)
        try:
            data = os.read(self.rfd, 1 << 16) if ready else b""
        except OSError as exc:
            raise ForkServerError(self._death(f"{exc}")) from exc
        if (
            ready
            and not data
            or not ready
            and self.proc is not None
            and self.proc.poll() is not None
        ):
            raise ForkServerError(self._death("its pipe closed"))
        self.buffer += data
        *lines, self.buffer = self.buffer.split(b"\n")
        return [json.loads(line) for line in lines if line.strip()]

    def _death(self, what: str) -> str:
        if self.proc is None:
            return f"the fork server session (pid {self.pid}) died ({what})"
        try:
            code: int | None = self.proc.wait(timeout=2)
        except subprocess.TimeoutExpired:
            code = None
        tail = ""
        if self.stderr is not None:
            self.stderr.seek(0)
            tail = self.stderr.read()[-3000:].decode(errors="replace").strip()
        return f"the fork server (pid {self.proc.pid}) died ({what}; exit status {code})" + (
            f":\n{tail}" if tail else ""
        )

    def close(self) -> None:
        """EOF on its input: the server (session) kills what still runs, reaps and exits."""
        if self.sock is not None:
            with contextlib.suppress(OSError):
                self.sock.shutdown(socket.SHUT_WR)
            # the session exits once its children are reaped: wait for its EOF (bounded)
            deadline = time.monotonic() + 5
            with contextlib.suppress(OSError):
                while time.monotonic() < deadline:
                    ready, _, _ = select.select([self.rfd], [], [], 0.5)
                    if ready and not os.read(self.rfd, 1 << 16):
                        break
            self.sock.close()
            return
        assert self.proc is not None
        with contextlib.suppress(OSError):
            if self.proc.stdin is not None:
                self.proc.stdin.close()
        try:
            self.proc.wait(timeout=5)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            self.proc.wait()
        if self.proc.stdout is not None:
            self.proc.stdout.close()
        if self.stderr is not None:
            self.stderr.close()


# -- persistent servers ----------------------------------------------------------------------
def persist_default() -> bool:
    """Whether replays reuse a persistent fork server (``RETROLOG_FORKSERVER_PERSIST=0``: no)."""
    from ..settings import FORKSERVER_PERSIST  # not at the top: this file runs as a script

    return bool(FORKSERVER_PERSIST.get())


def idle_seconds() -> float:
    from ..settings import FORKSERVER_IDLE

    return float(FORKSERVER_IDLE.get())


def runtime_dir() -> str:
    """This user's folder of persistent fork servers (sockets, pid files, logs), mode 0700."""
    from ..settings import FORKSERVER_DIR

    path = FORKSERVER_DIR.get() or os.path.join(
        tempfile.gettempdir(), f"retrolog-forkservers-{os.getuid()}"
    )
    os.makedirs(path, mode=0o700, exist_ok=True)
    st = os.stat(path)
    if st.st_uid != os.getuid() or st.st_mode & 0o077:
        raise ForkServerError(f"{path} must be a folder only this user can access")
    return path


def shareable_preload(preload: Sequence[str]) -> list[str]:
    """The modules of ``preload`` a persistent server may import: installed packages (standard
    library, site-packages) and retrolog, never modules of a user's project."""
    import sysconfig

    roots = {
        os.path.realpath(p)
        for key in ("stdlib", "platstdlib", "purelib", "platlib")
        if (p := sysconfig.get_paths().get(key))
    }
    ours = os.path.realpath(os.path.dirname(os.path.dirname(_SERVER_FILE)))
    keep = []
    for name in preload:
        top = name.partition(".")[0]
        if top in sys.builtin_module_names or top == "retrolog":
            keep.append(name)
            continue
        try:
            spec = importlib.machinery.PathFinder.find_spec(top, [p for p in sys.path if p])
        except (ImportError, ValueError):
            continue
        origin = spec.origin if spec is not None else None
        if not origin or not os.path.isabs(origin):
            continue
        real = os.path.realpath(origin)
        if any(real.startswith(root + os.sep) for root in roots) and not real.startswith(ours):
            keep.append(name)
    return keep


def server_key(interpreter: str, preload: Sequence[str], env: dict[str, str]) -> str:
    """Identity of a persistent server: interpreter, start-up environment, preloaded modules and
    the installed files they come from (a package upgrade or an edit of retrolog changes it)."""
    import hashlib

    h = hashlib.sha256()
    exe = os.path.realpath(interpreter)
    h.update(f"{exe}\0{sys.version}\0{os.getuid()}\0".encode())
    h.update(json.dumps(sorted(_startup_env(env).items())).encode())
    h.update(json.dumps(list(preload)).encode())
    tops = sorted({n.partition(".")[0] for n in preload} | {"retrolog"})
    for top in tops:
        try:
            spec = importlib.machinery.PathFinder.find_spec(top, [p for p in sys.path if p])
        except (ImportError, ValueError):
            spec = None
        origin = spec.origin if spec is not None and spec.origin else ""
        h.update(f"{top}\0{origin}\0".encode())
        if os.path.isfile(origin):
            st = os.stat(origin)
            h.update(f"{st.st_mtime_ns}:{st.st_size}".encode())
            meta = os.path.dirname(os.path.dirname(origin)) if top != "retrolog" else ""
            with contextlib.suppress(OSError):  # the dist-info folders: versions of packages
                for entry in sorted(os.listdir(meta)) if meta else ():
                    if entry.lower().startswith(top.lower()) and entry.endswith(".dist-info"):
                        h.update(entry.encode())
    package = os.path.dirname(os.path.dirname(_SERVER_FILE))  # retrolog's own sources
    for folder, _dirs, files in sorted(os.walk(package)):
        for name in sorted(files):
            if name.endswith(".py"):
                st = os.stat(os.path.join(folder, name))
                h.update(f"{folder}/{name}:{st.st_mtime_ns}:{st.st_size}".encode())
    return h.hexdigest()[:16]


def _connect_persistent(
    interpreter: str, preload: list[str], env: dict[str, str]
) -> tuple[str, socket.socket, bool]:
    """Connect to the persistent server for this key, starting it first when none runs."""
    import fcntl

    preload = shareable_preload(preload)
    key = server_key(interpreter, preload, env)
    folder = runtime_dir()
    path = os.path.join(folder, f"{key}.sock")
    sock = _try_connect(path)
    if sock is not None:
        return key, sock, False
    with open(os.path.join(folder, f"{key}.lock"), "w") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)  # one replay starts it; the others wait and connect
        sock = _try_connect(path)
        if sock is not None:
            return key, sock, False
        log_path = os.path.join(folder, f"{key}.log")
        with open(log_path, "wb") as log:
            proc = subprocess.Popen(
                [interpreter, _SERVER_FILE, "--persist", path, str(idle_seconds()), *preload],
                stdin=subprocess.DEVNULL,
                stdout=subprocess.DEVNULL,
                stderr=log,
                env=env,
                cwd="/",
                start_new_session=True,  # outlives this replay; never gets the terminal's ^C
            )
        deadline = time.monotonic() + READY_TIMEOUT
        while True:
            code = proc.poll()  # 0: it daemonised (its listening socket is in place)
            sock = _try_connect(path)
            if sock is not None:
                if code is None:
                    threading.Thread(target=proc.wait, daemon=True).start()  # reap it
                return key, sock, True
            if code is not None and code != 0 or time.monotonic() > deadline:
                if code is None:
                    proc.kill()
                    proc.wait()
                with open(log_path, "rb") as fh:
                    tail = fh.read()[-3000:].decode(errors="replace").strip()
                raise ForkServerError(
                    f"the persistent fork server did not start (exit status {proc.returncode})"
                    + (f":\n{tail}" if tail else "")
                )
            time.sleep(0.02)


def _calibration_path() -> str:
    return os.path.join(runtime_dir(), "calibration.json")


def _load_calibration() -> dict[str, Any]:
    try:
        with open(_calibration_path()) as fh:
            data = json.load(fh)
        return data if isinstance(data, dict) else {}
    except (OSError, ValueError, ForkServerError):
        return {}


def _save_calibration(key: str, ready_seconds: float, import_seconds: dict[str, float]) -> None:
    """Remember what starting this server took, for the next plan's estimate (best effort)."""
    data = _load_calibration()
    data[key] = {
        "ready_seconds": ready_seconds,
        "import_seconds": import_seconds,
        "at": time.time(),
    }
    data = dict(sorted(data.items(), key=lambda kv: -float(kv[1].get("at", 0)))[:32])
    with contextlib.suppress(OSError, ForkServerError):
        staging = f"{_calibration_path()}.{os.getpid()}.{threading.get_ident()}"
        with open(staging, "w") as fh:
            json.dump(data, fh)
        os.replace(staging, _calibration_path())


def _server_listening(key: str) -> bool:
    """Whether the persistent server for ``key`` has its socket in place (it is running)."""
    try:
        return os.path.exists(os.path.join(runtime_dir(), f"{key}.sock"))
    except (OSError, ForkServerError):
        return False


def _try_connect(path: str) -> socket.socket | None:
    if not os.path.exists(path):
        return None
    sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    try:
        sock.connect(path)
    except OSError:
        sock.close()
        return None
    return sock


def shutdown_servers(timeout: float = 5.0) -> int:
    """Stop this user's persistent fork servers (running tasks finish first). Returns how many
    were running."""
    try:
        folder = runtime_dir()
    except (OSError, ForkServerError):
        return 0
    pids = []
    for name in os.listdir(folder):
        if not name.endswith(".pid"):
            continue
        with contextlib.suppress(OSError, ValueError):
            with open(os.path.join(folder, name)) as fh:
                pid = int(fh.read().strip())
            with open(f"/proc/{pid}/cmdline", "rb") as fh:
                if _SERVER_FILE.encode() not in fh.read():
                    continue
            os.kill(pid, signal.SIGTERM)
            pids.append(pid)
    deadline = time.monotonic() + timeout
    for pid in pids:
        while time.monotonic() < deadline and os.path.exists(f"/proc/{pid}"):
            with open(f"/proc/{pid}/stat") as fh:
                if fh.read().rsplit(")", 1)[-1].split()[0] == "Z":
                    break
            time.sleep(0.02)
    return len(pids)


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
        self.preload = _with_implied([*ALWAYS_PRELOAD, *preload])
        self.persist = persist_default() if persist is None else persist
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
        self._client: _ServerClient | None = None
        self._start_error: BaseException | None = None
        self._key: str | None = None
        self._started: float | None = None
        self._lock = threading.Lock()
        self._closed = False
        self.ready_seconds: float | None = None

    @property
    def capabilities(self) -> Capabilities:
        """Forks of a warm server that preloads and reports its import times (executor.py)."""
        from .executor import Capabilities

        return Capabilities(fork=True, warm=True, preload=True)

    def start(self, interpreter: str | None = None, env: dict[str, str] | None = None) -> None:
        """Start (or connect to) the server now, in the background, so that it imports while the
        caller plans; ``run`` then uses it. Jobs with another interpreter or start-up environment
        get a server of their own."""
        if self._thread is not None or not hasattr(os, "fork"):
            return
        interpreter = interpreter or sys.executable
        env = dict(os.environ if env is None else env)
        self._early = (interpreter, _startup_env(env))
        self._thread = threading.Thread(
            target=self._connect, args=(interpreter, env), name="retrolog-forkserver", daemon=True
        )
        self._thread.start()

    def add_preload(self, modules: Sequence[str]) -> None:
        """More modules to import before the first fork (the server may already be running)."""
        extra = [m for m in _with_implied(modules) if m not in self.preload]
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
            preload = shareable_preload(self.preload) if self.persist else list(self.preload)
            self._key = server_key(interpreter, preload, env)
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
            _save_calibration(self._key, self.ready_seconds, self.import_seconds)

    def _new_client(self, interpreter: str, env: dict[str, str]) -> _ServerClient:
        """A ready server: the persistent one, or a private one when that cannot be had."""
        if self.persist:
            try:
                client = _ServerClient(interpreter, list(self.preload), env, persist=True)
                client.ready()
                return client
            except (ForkServerError, OSError) as exc:
                from .._warn import RetrologWarning  # not at the top: this file runs as a script

                warnings.warn(
                    f"retrolog: no persistent fork server ({exc}); using one for this replay only",
                    RetrologWarning,
                    stacklevel=2,
                )
        client = _ServerClient(interpreter, list(self.preload), env, persist=False)
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
        past = _load_calibration().get(key or "")
        if not past:
            return None, {}
        if self.persist and key and _server_listening(key):
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
        from .executor import run_jobs

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
        server: _ServerClient | None = None
        if self._thread is not None:
            self._thread.join()
            self._thread = None
            server, self._client = self._client, None
            same = self._early == (first.argv[0], _startup_env(dict(first.env)))
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
        from .._warn import RetrologWarning  # not at the top: this file runs as a script

        warnings.warn(
            f"retrolog: {exc}\nrunning the remaining replay tasks as plain subprocesses",
            RetrologWarning,
            stacklevel=3,
        )
        from .executor import Subprocesses

        return Subprocesses()


# -- server side (this file run as a script) ---------------------------------------------------
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
        self.startup_env = _startup_env(self.environ)
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
        import socket as socket_

        listener = socket_.socket(socket_.AF_UNIX, socket_.SOCK_STREAM)
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
        if _startup_env(env) != self.startup_env:
            return "interpreter start-up variables differ from the server's"
        folder = os.path.dirname(os.path.realpath(script))
        shadowed = [name for name in self.preloaded if _found_in(name, folder)]
        return f"the script's folder shadows preloaded {shadowed}" if shadowed else None

    def _child(self, req: dict[str, Any], reason: str | None) -> int:
        os.close(self.req)
        if self.resp != self.req:
            os.close(self.resp)
        if self.prctl is not None:
            self.prctl(1, int(signal.SIGKILL), 0, 0, 0)  # PR_SET_PDEATHSIG: die with the server
            if os.getppid() != self.pid:
                return 1
        argv, env = list(req["argv"]), dict(req["env"])
        log = os.open(req["log_path"], os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o666)
        os.dup2(log, 1)
        os.dup2(log, 2)
        os.close(log)
        null = os.open(os.devnull, os.O_RDONLY)
        os.dup2(null, 0)
        os.close(null)
        os.chdir(req["cwd"])
        for sig, handler in self.signals.items():
            if handler is not None and signal.getsignal(sig) is not handler:
                signal.signal(sig, handler)
        signal.pthread_sigmask(signal.SIG_SETMASK, set())
        guard = importlib.import_module(GUARD_MODULE) if env.get(GUARD_ENV) else None
        if reason is not None:
            for sig in (signal.SIGPIPE, signal.SIGXFSZ):  # as subprocess restores them
                signal.signal(sig, signal.SIG_DFL)
            if guard is not None:  # the new interpreter installs the guard before the script
                argv = guard.wrap_argv(argv)
            os.execve(argv[0], argv, env)
        os.environ.clear()
        os.environ.update({**self.import_env, **env})
        _fresh_stdio(bool(env.get("PYTHONUNBUFFERED")))
        _fresh_state()
        if guard is not None:
            guard.install(env[GUARD_ENV])  # copy-on-write guard: never write the user's files
        script = os.path.abspath(argv[1])
        sys.argv, sys.orig_argv = argv[1:], argv
        sys.path[:] = self.base_path
        if not getattr(sys.flags, "safe_path", False):
            sys.path.insert(0, os.path.dirname(os.path.realpath(script)))
        return _run_script(script)


def _found_in(name: str, folder: str) -> bool:
    """Whether ``import name`` would find a module or regular package in ``folder``."""
    try:
        spec = importlib.machinery.PathFinder.find_spec(name, [folder])
    except (ImportError, ValueError, OSError):
        return False
    return bool(spec is not None and spec.has_location)


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
