"""Persistent fork servers: one per interpreter, start-up environment, installed preload and
retrolog source tree (``server_key``), shared by this user's replays until idle. Found, started
(one starter at a time, under a lock) and stopped here; each replay talks to its own session of
the server. What starting one took is remembered (``calibration.json``) for the next plan's
estimate. Runs in the coordinator."""

from __future__ import annotations

import contextlib
import importlib.machinery
import json
import os
import signal
import socket
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import Sequence
from typing import Any

from ...settings import FORKSERVER_DIR, FORKSERVER_IDLE, FORKSERVER_PERSIST
from .client import READY_TIMEOUT, ForkServerError, ServerClient
from .server import SERVER_FILE, startup_env

PERSIST_ENV = "RETROLOG_FORKSERVER_PERSIST"  # these three: see retrolog.settings
IDLE_ENV = "RETROLOG_FORKSERVER_IDLE"
DIR_ENV = "RETROLOG_FORKSERVER_DIR"
_RETROLOG_DIR = os.path.dirname(os.path.dirname(os.path.dirname(SERVER_FILE)))  # retrolog/


def persist_default() -> bool:
    """Whether replays reuse a persistent fork server (``RETROLOG_FORKSERVER_PERSIST=0``: no)."""
    return bool(FORKSERVER_PERSIST.get())


def idle_seconds() -> float:
    return float(FORKSERVER_IDLE.get())


def runtime_dir() -> str:
    """This user's folder of persistent fork servers (sockets, pid files, logs), mode 0700."""
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
    ours = os.path.realpath(_RETROLOG_DIR)
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
    h.update(json.dumps(sorted(startup_env(env).items())).encode())
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
    package = _RETROLOG_DIR  # retrolog's own sources
    for folder, _dirs, files in sorted(os.walk(package)):
        for name in sorted(files):
            if name.endswith(".py"):
                st = os.stat(os.path.join(folder, name))
                h.update(f"{folder}/{name}:{st.st_mtime_ns}:{st.st_size}".encode())
    return h.hexdigest()[:16]


def open_session(interpreter: str, preload: Sequence[str], env: dict[str, str]) -> ServerClient:
    """A session of the persistent server for this interpreter, environment and preload (its
    shareable part), starting the server first when none runs."""
    sock, spawned = _connect(interpreter, list(preload), env)
    return ServerClient(sock=sock, reused=not spawned)


def _connect(
    interpreter: str, preload: list[str], env: dict[str, str]
) -> tuple[socket.socket, bool]:
    """Connect to the persistent server for this key, starting it first when none runs (True)."""
    import fcntl

    preload = shareable_preload(preload)
    key = server_key(interpreter, preload, env)
    folder = runtime_dir()
    path = os.path.join(folder, f"{key}.sock")
    sock = _try_connect(path)
    if sock is not None:
        return sock, False
    with open(os.path.join(folder, f"{key}.lock"), "w") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)  # one replay starts it; the others wait and connect
        sock = _try_connect(path)
        if sock is not None:
            return sock, False
        log_path = os.path.join(folder, f"{key}.log")
        with open(log_path, "wb") as log:
            proc = subprocess.Popen(
                [interpreter, SERVER_FILE, "--persist", path, str(idle_seconds()), *preload],
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
                return sock, True
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


def load_calibration() -> dict[str, Any]:
    try:
        with open(_calibration_path()) as fh:
            data = json.load(fh)
        return data if isinstance(data, dict) else {}
    except (OSError, ValueError, ForkServerError):
        return {}


def save_calibration(key: str, ready_seconds: float, import_seconds: dict[str, float]) -> None:
    """Remember what starting this server took, for the next plan's estimate (best effort)."""
    data = load_calibration()
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


def server_listening(key: str) -> bool:
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
                if SERVER_FILE.encode() not in fh.read():
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
