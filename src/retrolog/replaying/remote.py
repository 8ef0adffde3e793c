"""Replay tasks shipped to workers that may run on other machines (Ray, Slurm).

A local job (``executor.Job``) names paths of the coordinator: its scratch tree, its task spec,
its sandbox manifest, where its output goes. ``pack`` turns it into a ``RemoteTask`` that holds
everything a worker elsewhere needs, by value: the version's files (the regular files of the
task's scratch tree; shipped once per version), the rest of the tree's layout (directories and
symlinks, which point at the user's data in place, as on the coordinator: on a cluster the data
must be on a shared filesystem), the task spec, the guard's manifest, the command line with paths
relative to the tree, and the environment variables that matter to a task. The checkpoints are
read by the worker from the object store named in the spec.

``run_task`` (the worker side, an importable function that the engines call) builds its own
scratch tree with ``sandbox.build`` in a temporary directory of the worker's machine, runs the
script under the guard (``guard.wrap_argv``), and returns the exit code, the task's output file
(journal events) and its log, by value. It never opens the store: ``RemoteBackend`` writes the
output where the coordinator's collector reads it, and only the coordinator writes the store.

``RemoteBackend`` adapts an engine (``Engine``: submit, poll, cancel) to ``executor.run_jobs``, so
retries, events and results are the local executors'. A worker that dies (the engine raises on
its result) counts as a failed attempt with the engine's reason in the task's log: it is retried
(``retries``) and then marked failed; its output never reaches the store.
"""

from __future__ import annotations

import contextlib
import json
import os
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Protocol

from ..record.replay_session import REPLAY_ENV
from .executor import Capabilities, EventCallback, Job, JobResult, run_jobs
from .guard import ENV as SANDBOX_ENV
from .guard import wrap_argv
from .sandbox import Layout, build

MAX_LOG_BYTES = 1 << 20  # of a task's log shipped back (its tail)
# environment variables a task carries to its worker (the worker keeps its own PATH, HOME, ...)
SHIPPED_PREFIXES = (
    "RETROLOG_",
    "PYTHONHASHSEED",
    "PYTHONUNBUFFERED",
    "PYTHONWARNINGS",
    "OMP_",
    "MKL_",
    "OPENBLAS_",
    "CUBLAS_",
    "TORCH_",
    "PYTORCH_",
    "CUDA_VISIBLE_DEVICES",
)
VersionFiles = dict[str, tuple[bytes, int]]  # relative path -> (content, mode)


@dataclass
class RemoteTask:
    """One replay task by value: picklable, no path of the coordinator needed to run it."""

    task_id: int
    spec: dict[str, Any]  # record.replay_session.TaskSpec's fields
    manifest: dict[str, Any]  # the guard's (sandbox.Sandboxes.create), paths rewritten on arrival
    dirs: list[str]  # of the scratch tree, parents first
    symlinks: list[tuple[str, str]]  # (path in the tree, link text)
    file_names: list[str]  # the tree's regular files, found in the version files
    argv: list[str]  # argv[1:] relative to the tree where they were in it
    argv_in_tree: list[bool]
    cwd: str  # relative to the tree
    env: dict[str, str]
    coordinator_dirs: tuple[str, str]  # (scratch root, work directory), for rewriting values


@dataclass
class TaskOutcome:
    """What a worker sends back: exit code, output file, log, where and how long it ran."""

    task_id: int
    returncode: int
    output: bytes | None
    log: bytes
    host: str
    seconds: float
    output_name: str = ""


class Engine(Protocol):
    """A cluster engine as ``RemoteBackend`` uses it. ``submit`` starts ``run_task(task, files)``
    somewhere and returns a handle; ``poll`` returns the handles that ended within ``timeout``
    seconds; ``result`` returns the outcome of one (or raises: the worker was lost); ``cancel``
    stops one still running."""

    name: str

    def submit(self, task: RemoteTask, files: Any) -> Any: ...
    def poll(self, handles: list[Any], timeout: float) -> list[Any]: ...
    def result(self, handle: Any) -> TaskOutcome: ...
    def cancel(self, handle: Any) -> None: ...
    def share(self, files: VersionFiles) -> Any: ...


def _ship_env(env: dict[str, str]) -> dict[str, str]:
    return {
        k: v
        for k, v in env.items()
        if k.startswith(SHIPPED_PREFIXES) and k not in (REPLAY_ENV, SANDBOX_ENV)
    }


def scan_tree(root: Path) -> tuple[list[str], list[tuple[str, str]], list[str], tuple[Any, ...]]:
    """A built scratch tree as (dirs, symlinks, regular files, version key). The key names the
    version's files by inode: the task trees of one version hard link the same files."""
    dirs: list[str] = []
    links: list[tuple[str, str]] = []
    files: list[str] = []
    key: list[tuple[str, int, int]] = []
    base = str(root)
    for folder, dirnames, filenames in os.walk(base):
        rel = os.path.relpath(folder, base)
        for name in sorted([*dirnames, *filenames]):
            path = os.path.join(folder, name)
            r = name if rel == "." else os.path.join(rel, name)
            if os.path.islink(path):
                links.append((r, os.readlink(path)))
            elif os.path.isdir(path):
                dirs.append(r)
            else:
                st = os.stat(path)
                files.append(r)
                key.append((r, st.st_dev, st.st_ino))
    return dirs, links, files, tuple(key)


def read_files(root: Path, names: Sequence[str]) -> VersionFiles:
    out: VersionFiles = {}
    for name in names:
        path = root / name
        out[name] = (path.read_bytes(), os.stat(path).st_mode & 0o777)
    return out


def pack(
    job: Job, cache: dict[tuple[Any, ...], VersionFiles]
) -> tuple[RemoteTask, tuple[Any, ...]]:
    """The job as a ``RemoteTask``, and the key of its version's files (read into ``cache``)."""
    manifest = json.loads(Path(job.env[SANDBOX_ENV]).read_text())
    spec = json.loads(Path(job.env[REPLAY_ENV]).read_text())
    root = Path(manifest["scratch"])
    dirs, links, files, key = scan_tree(root)
    if key not in cache:
        cache[key] = read_files(root, files)
    prefix = str(root) + os.sep
    args = job.argv[1:]
    in_tree = [a.startswith(prefix) for a in args]
    rel_args = [a[len(prefix) :] if inside else a for a, inside in zip(args, in_tree, strict=True)]
    cwd = os.path.relpath(job.cwd, root)
    task = RemoteTask(
        job.task_id,
        spec,
        manifest,
        dirs,
        links,
        files,
        rel_args,
        in_tree,
        "." if cwd.startswith("..") else cwd,
        _ship_env(job.env),
        (str(root), str(job.output_path.parent)),
    )
    return task, key


def run_task(task: RemoteTask, files: VersionFiles) -> TaskOutcome:
    """Worker side: build the task's tree here, run the script under the guard, return what it
    produced. Everything it writes lives in a temporary directory removed before returning."""
    started = time.perf_counter()
    work = Path(tempfile.mkdtemp(prefix=f"retrolog-task-{task.task_id}-"))
    try:
        version = work / "version"
        for name, (content, mode) in files.items():
            path = version / name
            path.parent.mkdir(parents=True, exist_ok=True)
            path.write_bytes(content)
            os.chmod(path, mode)
        scratch = work / "scratch"
        layout = Layout(
            dirs=dict.fromkeys(task.dirs),
            hardlinks=[(n, str(version / n)) for n in task.file_names],
            symlinks=list(task.symlinks),
        )
        build(layout, scratch)
        old_root, old_work = task.coordinator_dirs

        def here(value: str) -> str:
            return value.replace(old_root, str(scratch)).replace(old_work, str(work))

        spec = dict(task.spec)
        output = work / Path(str(spec["output"])).name
        spec["output"] = str(output)
        spec["progress"] = str(work / "progress")
        spec_path = work / "spec.json"
        spec_path.write_text(json.dumps(spec))
        manifest = dict(task.manifest)
        manifest["scratch"] = str(scratch)
        manifest["allowed"] = [here(str(p)) for p in manifest.get("allowed", [])]
        manifest_path = work / "sandbox.json"
        manifest_path.write_text(json.dumps(manifest))
        env = dict(os.environ)
        env.update({k: here(v) for k, v in task.env.items()})
        env.update({REPLAY_ENV: str(spec_path), SANDBOX_ENV: str(manifest_path)})
        args = [
            str(scratch / a) if inside else a
            for a, inside in zip(task.argv, task.argv_in_tree, strict=True)
        ]
        argv = wrap_argv([sys.executable, *args])
        log_path = work / "task.log"
        with open(log_path, "wb") as log:
            code = subprocess.call(
                argv,
                cwd=scratch / task.cwd,
                env=env,
                stdout=log,
                stderr=subprocess.STDOUT,
                stdin=subprocess.DEVNULL,
            )
        with open(log_path, "rb") as fh:
            fh.seek(max(0, log_path.stat().st_size - MAX_LOG_BYTES))
            log_bytes = fh.read()
        return TaskOutcome(
            task.task_id,
            code,
            output.read_bytes() if code == 0 and output.exists() else None,
            log_bytes,
            socket.gethostname(),
            time.perf_counter() - started,
            output.name,
        )
    finally:
        shutil.rmtree(work, ignore_errors=True)


@dataclass
class RemoteBackend:
    """``executor.Backend`` over an ``Engine``: packs jobs, submits them, writes what comes back
    where the coordinator collects it (an output file only for an attempt that succeeded)."""

    engine: Engine
    running: dict[int, tuple[Job, Any]] = field(default_factory=dict)
    files: dict[tuple[Any, ...], VersionFiles] = field(default_factory=dict)
    shared: dict[tuple[Any, ...], Any] = field(default_factory=dict)
    hosts: dict[int, str] = field(default_factory=dict)

    def submit(self, job: Job) -> None:
        task, key = pack(job, self.files)
        if key not in self.shared:
            self.shared[key] = self.engine.share(self.files[key])
        self.running[job.task_id] = (job, self.engine.submit(task, self.shared[key]))

    def wait(self, timeout: float) -> list[tuple[int, int]]:
        if not self.running:
            time.sleep(timeout)
            return []
        by_handle = {h: t for t, (_j, h) in self.running.items()}  # Ray refs: equal by id
        done = self.engine.poll(list(by_handle), timeout)
        ended = []
        for handle in done:
            task_id = by_handle[handle]
            job, _ = self.running.pop(task_id)
            ended.append((task_id, self._collect(job, handle)))
        return ended

    def _collect(self, job: Job, handle: Any) -> int:
        try:
            outcome = self.engine.result(handle)
        except Exception as exc:  # the engine's error: the worker (or its node) was lost
            reason = str(exc).strip().splitlines()
            with open(job.log_path, "ab") as log:
                log.write(
                    f"\nretrolog: the {self.engine.name} worker running task {job.task_id} "
                    f"was lost: {type(exc).__name__}: {reason[0] if reason else ''}\n".encode()
                )
            return -signal.SIGKILL
        self.hosts[job.task_id] = outcome.host
        with open(job.log_path, "ab") as log:
            log.write(outcome.log)
        if outcome.returncode == 0 and outcome.output is not None:
            partial = job.output_path.with_name(job.output_path.name + ".part")
            partial.write_bytes(outcome.output)
            os.replace(partial, job.output_path)  # whole or absent, never half written
        return outcome.returncode

    def close(self) -> None:
        for _job, handle in self.running.values():
            with contextlib.suppress(Exception):  # already gone: nothing left to stop
                self.engine.cancel(handle)
        self.running.clear()


class RemoteExecutor:
    """The executor of every engine whose workers run shipped tasks (``Engine``): same events,
    retries and result order as the local ones; start and finish events, no per-iteration
    progress (the worker's progress file stays on its machine)."""

    capabilities = Capabilities(remote=True, progress=False)

    def __init__(self, engine: Engine, workers: int, retries: int = 1, poll: float = 0.2) -> None:
        self.engine = engine
        self.workers = max(1, workers)
        self.retries = retries
        self.poll_seconds = poll
        self.hosts: dict[int, str] = {}  # task -> the worker's host name, after ``run``

    def run(self, jobs: Sequence[Job], on_event: EventCallback) -> list[JobResult]:
        backend = RemoteBackend(self.engine)
        try:
            return run_jobs(jobs, on_event, backend, self.workers, self.retries, self.poll_seconds)
        finally:
            self.hosts.update(backend.hosts)

    def close(self) -> None:
        """Subclasses let go of their engine's session here."""


__all__ = ["Engine", "RemoteBackend", "RemoteExecutor", "RemoteTask", "TaskOutcome", "run_task"]
