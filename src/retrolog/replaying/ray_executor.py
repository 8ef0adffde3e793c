"""``--executor ray``: replay tasks as Ray tasks (``remote.py`` ships them; this is the engine).

``RayExecutor(workers, address=None)`` connects, at the first task, to the Ray cluster at
``address`` (``"auto"``, or ``ray://host:10001``) or, without one, starts a local Ray with
``num_cpus=workers`` and shuts it down at ``close``. A Ray session that is already initialised in this process is used as it is and
left running. Each task is a Ray task of one CPU with Ray's own retries off
(``max_retries=0``): a worker that dies raises on its result, and the executor's retry reports it
and starts the task again. A version's files go into Ray's object store once per replay.
Workers need retrolog (and the script's libraries) installed, and the user's data and the
object store (``RETROLOG_OBJECTS``) reachable at the same paths or URLs as on the coordinator.
"""

from __future__ import annotations

from typing import Any

from .executor import UnknownExecutor
from .remote import RemoteExecutor, RemoteTask, TaskOutcome, VersionFiles, run_task


class RayEngine:
    """``remote.Engine`` on Ray: tasks are ``ray.remote(run_task)`` calls."""

    name = "Ray"

    def __init__(self, workers: int, address: str | None = None) -> None:
        try:
            import ray
        except ImportError as exc:
            raise UnknownExecutor(
                "the ray executor needs Ray: pip install 'retrolog[ray]'"
            ) from exc
        self.ray = ray
        self.workers = workers
        self.address = address
        self.owned = False
        self.remote: Any = None

    def _connect(self) -> None:
        """Connect (or start a local Ray) at the first task: a replay that plans nothing, or
        whose plan is declined, never starts one."""
        ray = self.ray
        if not ray.is_initialized():
            if self.address:
                ray.init(address=self.address, log_to_driver=False)
            else:
                ray.init(num_cpus=self.workers, include_dashboard=False, log_to_driver=False)
            self.owned = True
        self.remote = ray.remote(num_cpus=1, max_retries=0)(run_task)

    def share(self, files: VersionFiles) -> Any:
        if self.remote is None:
            self._connect()
        return self.ray.put(files)

    def submit(self, task: RemoteTask, files: Any) -> Any:
        if self.remote is None:
            self._connect()
        return self.remote.remote(task, files)

    def poll(self, handles: list[Any], timeout: float) -> list[Any]:
        ready, _ = self.ray.wait(handles, num_returns=len(handles), timeout=timeout)
        return list(ready)

    def result(self, handle: Any) -> TaskOutcome:
        outcome: TaskOutcome = self.ray.get(handle)
        return outcome

    def cancel(self, handle: Any) -> None:
        self.ray.cancel(handle, force=True)

    def shutdown(self) -> None:
        if self.owned and self.ray.is_initialized():
            self.ray.shutdown()
        self.owned = False


class RayExecutor(RemoteExecutor):
    """Replay tasks as Ray tasks, ``workers`` at once."""

    def __init__(self, workers: int, address: str | None = None, retries: int = 1) -> None:
        self.ray_engine = RayEngine(workers, address)
        super().__init__(self.ray_engine, workers, retries, poll=0.1)

    def close(self) -> None:
        self.ray_engine.shutdown()


def create(workers: int, address: str | None = None, **_: Any) -> RayExecutor:
    """``engines.create_executor("ray", ...)``: options other than ``address`` are Slurm's."""
    return RayExecutor(workers, address)


__all__ = ["RayExecutor", "create"]
