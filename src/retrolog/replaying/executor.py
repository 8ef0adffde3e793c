"""Executors run replay tasks. One small interface for every engine (see docs/replay.md):
``run(jobs, on_event)`` returns one result per job, ``close()`` lets go of what the executor
holds, and ``capabilities`` says what it can do, so callers ask rather than test its type.

Engines: ``fork`` (the fork server, ``forkserver/``; the default), ``process`` (a plain
subprocess per attempt, here), ``ray`` (``ray_executor.py``) and ``slurm`` (submitit,
``slurm_executor.py``). ``engines.create_executor(name, ...)`` builds one by name.
"""

from __future__ import annotations

import os
import signal
import subprocess
import time
from collections import deque
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Protocol

from .guard import ENV as SANDBOX_ENV
from .guard import wrap_argv

LOG_TAIL_BYTES = 8000
LOST = "retrolog: the process this attempt ran under was lost; the task is started again"


@dataclass
class Job:
    """A task as a process to start: command, directory, environment, where its output goes."""

    task_id: int
    argv: list[str]
    cwd: Path
    env: dict[str, str]
    log_path: Path
    progress_path: Path
    output_path: Path


@dataclass
class JobResult:
    task_id: int
    returncode: int
    seconds: float
    attempts: int
    log_tail: str = ""
    history: list[str] = field(default_factory=list)  # what happened to earlier attempts

    @property
    def ok(self) -> bool:
        return self.returncode == 0


EventCallback = Callable[[str, int, dict[str, object]], None]  # (kind, task_id, details)


@dataclass(frozen=True)
class Capabilities:
    """What an executor can do, asked by the planner and ``replay`` (never inferred from a type).

    ``fork``: attempts are forks of a process that already imported the script's libraries (the
    cost model counts no interpreter start). ``warm``: that process can start before planning
    and report its import times (``WarmExecutor``'s methods). ``preload``: it accepts more
    modules to import before the tasks run. ``cancel``: ``close`` stops attempts in flight.
    ``remote``: workers may be on other machines, so each task is shipped whole (code version,
    spec, sandbox layout) and its output comes back to the coordinator. ``progress``: per
    iteration progress events reach the coordinator while a task runs."""

    fork: bool = False
    warm: bool = False
    preload: bool = False
    cancel: bool = True
    remote: bool = False
    progress: bool = True


class Executor(Protocol):
    """Runs jobs; calls ``on_event("started" | "progress" | "retry" | "finished", task_id, info)``."""

    workers: int

    @property
    def capabilities(self) -> Capabilities: ...

    def run(self, jobs: Sequence[Job], on_event: EventCallback) -> list[JobResult]: ...

    def close(self) -> None: ...


class WarmExecutor(Executor, Protocol):
    """An executor whose ``capabilities.warm`` is true: the fork server's extra questions."""

    def calibration(self) -> tuple[float | None, dict[str, float]]: ...

    def wait_ready(self, timeout: float = ...) -> dict[str, float]: ...

    def add_preload(self, modules: Sequence[str]) -> None: ...


class UnknownExecutor(ValueError):
    """An executor name nobody knows, or an engine whose package is not installed."""


class Backend(Protocol):
    """Where job attempts run: ``submit`` starts one, ``wait`` returns ``(task_id, exit code)``
    of those that ended within ``timeout`` seconds, ``close`` stops what still runs."""

    def submit(self, job: Job) -> None: ...
    def wait(self, timeout: float) -> list[tuple[int, int]]: ...
    def close(self) -> None: ...


class Subprocesses:
    """Each attempt a plain subprocess of this interpreter's machine."""

    def __init__(self) -> None:
        self.procs: dict[int, subprocess.Popen[bytes]] = {}

    def submit(self, job: Job) -> None:
        # a sandboxed task runs under the copy-on-write guard: `python guard.py SCRIPT ARGS...`
        argv = wrap_argv(job.argv) if job.env.get(SANDBOX_ENV) else job.argv
        with open(job.log_path, "ab") as log:
            self.procs[job.task_id] = subprocess.Popen(
                argv,
                cwd=job.cwd,
                env=job.env,
                stdout=log,
                stderr=subprocess.STDOUT,
                stdin=subprocess.DEVNULL,
            )

    def wait(self, timeout: float) -> list[tuple[int, int]]:
        time.sleep(timeout)
        done = [(t, p.returncode) for t, p in self.procs.items() if p.poll() is not None]
        for task_id, _code in done:
            del self.procs[task_id]
        return done

    def close(self) -> None:
        for proc in self.procs.values():
            if proc.poll() is None:
                proc.kill()
                proc.wait()


def run_jobs(
    jobs: Sequence[Job],
    on_event: EventCallback,
    backend: Backend,
    workers: int,
    retries: int,
    poll_seconds: float,
    lost: tuple[type[Exception], ...] = (),
    replace: Callable[[Exception], Backend] | None = None,
) -> list[JobResult]:
    """Run ``jobs`` on ``backend``, at most ``workers`` at once, reporting events; a job that
    exits non-zero is started again up to ``retries`` times. When the backend raises one of
    ``lost`` (it died), ``replace`` gives the next one (or raises) and the attempts in flight
    start again there without counting as failures. Each backend is closed once done with."""
    pending = deque(jobs)
    attempts: dict[int, int] = {}
    failures: dict[int, int] = {}
    history: dict[int, list[str]] = {}
    running: dict[int, tuple[float, Job]] = {}
    results: dict[int, JobResult] = {}
    last_progress: dict[int, str] = {}
    current: Backend | None = backend
    try:
        while pending or running:
            try:
                while pending and len(running) < workers:
                    job = pending.popleft()
                    job.progress_path.unlink(missing_ok=True)
                    job.output_path.unlink(missing_ok=True)  # a retry starts from nothing
                    open(job.log_path, "ab").close()
                    try:
                        backend.submit(job)
                    except lost:
                        pending.appendleft(job)
                        raise
                    attempts[job.task_id] = attempts.get(job.task_id, 0) + 1
                    running[job.task_id] = (time.perf_counter(), job)
                    on_event("started", job.task_id, {"attempt": attempts[job.task_id]})
                finished = backend.wait(poll_seconds)
            except lost as exc:
                current = None
                backend.close()
                if replace is None:
                    raise
                backend = current = replace(exc)
                for task_id, (_started, job) in sorted(running.items(), reverse=True):
                    tail = _tail(job.log_path) + "\n" + LOST
                    history.setdefault(task_id, []).append(
                        f"attempt {attempts[task_id]} lost ({exc}):\n{tail}"
                    )
                    on_event("retry", task_id, {"returncode": -signal.SIGKILL, "log": tail})
                    pending.appendleft(job)
                running.clear()
                continue
            for task_id, (_started, job) in running.items():
                progress = _read(job.progress_path)
                if progress and progress != last_progress.get(task_id):
                    last_progress[task_id] = progress
                    on_event("progress", task_id, {"progress": progress})
            for task_id, code in finished:
                started, job = running.pop(task_id)
                seconds = time.perf_counter() - started
                tail = _tail(job.log_path)
                failures[task_id] = failures.get(task_id, 0) + (code != 0)
                if code != 0 and failures[task_id] <= retries:
                    history.setdefault(task_id, []).append(
                        f"attempt {attempts[task_id]} exited {code}:\n{tail}"
                    )
                    on_event("retry", task_id, {"returncode": code, "log": tail})
                    pending.append(job)
                    continue
                results[task_id] = JobResult(
                    task_id, code, seconds, attempts[task_id], tail, history.get(task_id, [])
                )
                on_event("finished", task_id, {"returncode": code, "seconds": seconds})
    finally:
        if current is not None:
            current.close()
    return [results[job.task_id] for job in jobs]


class LocalProcessExecutor:
    """Up to ``workers`` subprocesses at once on this machine; a failed job is retried once."""

    capabilities = Capabilities()

    def __init__(
        self, workers: int | None = None, retries: int = 1, poll_seconds: float = 0.2
    ) -> None:
        self.workers = max(1, workers or os.cpu_count() or 1)
        self.retries = retries
        self.poll_seconds = poll_seconds

    def run(self, jobs: Sequence[Job], on_event: EventCallback) -> list[JobResult]:
        return run_jobs(
            jobs, on_event, Subprocesses(), self.workers, self.retries, self.poll_seconds
        )

    def close(self) -> None:
        """Nothing outlives ``run`` (its subprocesses are stopped when it ends)."""


def _read(path: Path) -> str:
    try:
        return path.read_text()
    except OSError:
        return ""


def _tail(path: Path) -> str:
    try:
        with open(path, "rb") as fh:
            fh.seek(0, os.SEEK_END)
            size = fh.tell()
            fh.seek(max(0, size - LOG_TAIL_BYTES))
            return fh.read().decode(errors="replace")
    except OSError:
        return ""
