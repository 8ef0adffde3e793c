"""Executors run replay tasks. The interface is small so cluster engines can stand in for the
local process pool (see docs/replay.md): ``run(jobs, on_event)`` returns one result per job.
"""

from __future__ import annotations

import os
import subprocess
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Protocol

LOG_TAIL_BYTES = 8000


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


class Executor(Protocol):
    """Runs jobs; calls ``on_event("started" | "progress" | "retry" | "finished", task_id, info)``."""

    workers: int

    def run(self, jobs: Sequence[Job], on_event: EventCallback) -> list[JobResult]: ...


class LocalProcessExecutor:
    """Up to ``workers`` subprocesses at once on this machine; a failed job is retried once."""

    def __init__(
        self, workers: int | None = None, retries: int = 1, poll_seconds: float = 0.2
    ) -> None:
        self.workers = max(1, workers or os.cpu_count() or 1)
        self.retries = retries
        self.poll_seconds = poll_seconds

    def run(self, jobs: Sequence[Job], on_event: EventCallback) -> list[JobResult]:
        pending = list(jobs)
        attempts: dict[int, int] = {}
        history: dict[int, list[str]] = {}
        running: dict[int, tuple[subprocess.Popen[bytes], float, Job]] = {}
        results: dict[int, JobResult] = {}
        last_progress: dict[int, str] = {}
        while pending or running:
            while pending and len(running) < self.workers:
                job = pending.pop(0)
                attempts[job.task_id] = attempts.get(job.task_id, 0) + 1
                running[job.task_id] = (self._start(job), time.perf_counter(), job)
                on_event("started", job.task_id, {"attempt": attempts[job.task_id]})
            time.sleep(self.poll_seconds)
            for task_id, (proc, started, job) in list(running.items()):
                progress = _read(job.progress_path)
                if progress and progress != last_progress.get(task_id):
                    last_progress[task_id] = progress
                    on_event("progress", task_id, {"progress": progress})
                code = proc.poll()
                if code is None:
                    continue
                del running[task_id]
                seconds = time.perf_counter() - started
                tail = _tail(job.log_path)
                if code != 0 and attempts[task_id] <= self.retries:
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
        return [results[job.task_id] for job in jobs]

    @staticmethod
    def _start(job: Job) -> subprocess.Popen[bytes]:
        job.progress_path.unlink(missing_ok=True)
        job.output_path.unlink(missing_ok=True)  # a retry starts from an empty output
        with open(job.log_path, "ab") as log:
            return subprocess.Popen(
                job.argv,
                cwd=job.cwd,
                env=job.env,
                stdout=log,
                stderr=subprocess.STDOUT,
                stdin=subprocess.DEVNULL,
            )


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
