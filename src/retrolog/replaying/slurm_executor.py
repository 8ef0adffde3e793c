"""``--executor slurm``: replay tasks as Slurm jobs through submitit (``remote.py`` ships them).

``SlurmExecutor(workers, partition=, time_min=, cpus_per_task=, mem_gb=, folder=, cluster=)``
submits each task as one job of ``submitit.AutoExecutor`` (``cluster="local"``: submitit's local
mode, processes on this machine, as the tests use; ``None``: whatever submitit detects, Slurm on
a cluster). At most ``workers`` jobs are queued or running at once. submitit moves the pickled
task and its result through ``folder``, which must be on a filesystem the nodes share (default:
``.retrolog/submitit`` of the project); it is removed at ``close``. A job that dies, times out or
is cancelled raises on its result: the task is retried once, then marked failed with submitit's
reason in its log.
"""

from __future__ import annotations

import shutil
import tempfile
import time
from pathlib import Path
from typing import Any

from .executor import UnknownExecutor
from .remote import RemoteExecutor, RemoteTask, TaskOutcome, VersionFiles, run_task

DEFAULT_TIME_MIN = 60


class SubmititEngine:
    """``remote.Engine`` on submitit: tasks are ``executor.submit(run_task, ...)`` jobs."""

    name = "Slurm"

    def __init__(
        self,
        folder: Path,
        cluster: str | None = None,
        partition: str | None = None,
        time_min: int | None = None,
        cpus_per_task: int | None = None,
        mem_gb: float | None = None,
    ) -> None:
        try:
            import submitit
        except ImportError as exc:
            raise UnknownExecutor(
                "the slurm executor needs submitit: pip install 'retrolog[slurm]'"
            ) from exc
        folder.mkdir(parents=True, exist_ok=True)
        self.folder = Path(tempfile.mkdtemp(prefix="replay-", dir=folder))
        self.executor = submitit.AutoExecutor(folder=self.folder / "%j", cluster=cluster)
        params: dict[str, Any] = {
            "timeout_min": time_min or DEFAULT_TIME_MIN,
            "cpus_per_task": cpus_per_task or 1,
            "name": "retrolog-replay",
        }
        if mem_gb:
            params["mem_gb"] = mem_gb
        if partition:
            params["slurm_partition"] = partition
        self.executor.update_parameters(**params)

    def share(self, files: VersionFiles) -> Any:
        return files  # pickled into each job's folder by submitit

    def submit(self, task: RemoteTask, files: Any) -> Any:
        return self.executor.submit(run_task, task, files)

    def poll(self, handles: list[Any], timeout: float) -> list[Any]:
        deadline = time.monotonic() + timeout
        while True:
            done = [h for h in handles if h.done()]
            if done or time.monotonic() >= deadline:
                return done
            time.sleep(min(0.05, timeout))

    def result(self, handle: Any) -> TaskOutcome:
        outcome: TaskOutcome = handle.result()
        return outcome

    def cancel(self, handle: Any) -> None:
        handle.cancel(check=False)

    def remove(self) -> None:
        shutil.rmtree(self.folder, ignore_errors=True)


class SlurmExecutor(RemoteExecutor):
    """Replay tasks as submitit jobs, ``workers`` at once."""

    def __init__(
        self,
        workers: int,
        folder: Path | str | None = None,
        cluster: str | None = None,
        partition: str | None = None,
        time_min: int | None = None,
        cpus_per_task: int | None = None,
        mem_gb: float | None = None,
        retries: int = 1,
    ) -> None:
        base = Path(folder) if folder is not None else Path(".retrolog") / "submitit"
        self.submitit = SubmititEngine(
            base.resolve(), cluster, partition, time_min, cpus_per_task, mem_gb
        )
        # a Slurm queue answers in seconds; submitit caches its answers between polls
        poll = 0.1 if cluster in ("local", "debug") else 2.0
        super().__init__(self.submitit, workers, retries, poll=poll)

    def close(self) -> None:
        self.submitit.remove()


def create(
    workers: int,
    folder: Path | str | None = None,
    cluster: str | None = None,
    partition: str | None = None,
    time_min: int | None = None,
    cpus_per_task: int | None = None,
    mem_gb: float | None = None,
    **_: Any,
) -> SlurmExecutor:
    """``engines.create_executor("slurm", ...)``; ``address`` (Ray's) is ignored."""
    return SlurmExecutor(workers, folder, cluster, partition, time_min, cpus_per_task, mem_gb)


__all__ = ["SlurmExecutor", "create"]
