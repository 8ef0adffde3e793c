"""The coordinator's handle on one fork server: a private one (a child process on pipes) or a
session of a persistent one (a Unix socket, persistent.py), spoken to in JSON lines: jobs and
preload requests out, one line per finished task back (server.py is the other end)."""

from __future__ import annotations

import contextlib
import json
import os
import select
import socket
import subprocess
import tempfile
import time
from collections.abc import Sequence
from typing import IO, TYPE_CHECKING, Any

from .server import SERVER_FILE

if TYPE_CHECKING:
    from ..executor import Job

READY_TIMEOUT = 300.0  # seconds the server may take to import everything


class ForkServerError(RuntimeError):
    """The fork server could not start or died; the message carries its exit status and stderr."""


class ServerClient:
    """The coordinator's handle on a fork server: a private one (``start_private``: a child process
    on pipes) or a session of a persistent one (``persistent.open_session``: a Unix socket).
    ``ready()`` waits for its hello."""

    def __init__(
        self,
        proc: subprocess.Popen[bytes] | None = None,
        stderr: IO[bytes] | None = None,
        sock: socket.socket | None = None,
        reused: bool = False,
    ) -> None:
        self.proc = proc
        self.sock = sock
        self.stderr = stderr
        self.pid = 0
        self.buffer = b""
        self.exec_reasons: dict[int, str] = {}
        self.hello: dict[str, Any] = {}
        self.reused = reused  # a persistent server that was already running
        if sock is not None:
            self.wfd = self.rfd = sock.fileno()
            return
        assert proc is not None and proc.stdin is not None and proc.stdout is not None
        self.wfd, self.rfd = proc.stdin.fileno(), proc.stdout.fileno()
        self.pid = proc.pid

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
        poller = select.poll()  # not select(): a process with over 1024 open files has fds above
        poller.register(self.rfd, select.POLLIN)  # what select() can watch
        ready = poller.poll(None if timeout is None else max(timeout, 0.0) * 1000)
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
            poller = select.poll()
            poller.register(self.rfd, select.POLLIN)
            with contextlib.suppress(OSError):
                while time.monotonic() < deadline:
                    ready = poller.poll(500)
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


def start_private(interpreter: str, preload: Sequence[str], env: dict[str, str]) -> ServerClient:
    """Start a server of this replay's own (it ends when its input closes)."""
    stderr = tempfile.TemporaryFile()  # noqa: SIM115 (closed by ServerClient.close())
    proc = subprocess.Popen(
        [interpreter, SERVER_FILE, *preload],
        stdin=subprocess.PIPE,
        stdout=subprocess.PIPE,
        stderr=stderr,
        env=env,
        bufsize=0,
    )
    return ServerClient(proc, stderr=stderr)
