"""The executors by name (``--executor``): ``create_executor`` builds one, a factory kept apart
from the implementations (executor.py, forkserver/, ray_executor.py, slurm_executor.py), which
do not import it. A new engine is one module with a ``create(workers, **options)`` function,
listed in ``ENGINES``."""

from __future__ import annotations

import importlib
from typing import Any

from .executor import Executor, LocalProcessExecutor, UnknownExecutor
from .forkserver import ForkServerExecutor

ENGINES: dict[str, str] = {
    "ray": "retrolog.replaying.ray_executor",
    "slurm": "retrolog.replaying.slurm_executor",
}
LOCAL_ENGINES = ("fork", "process")


def check_executor_name(name: str) -> None:
    """Raise ``UnknownExecutor`` unless ``name`` is an executor's."""
    if name not in (*LOCAL_ENGINES, "local", *ENGINES):
        known = ", ".join([*LOCAL_ENGINES, *ENGINES])
        raise UnknownExecutor(f"unknown executor {name!r} (one of: {known})")


def create_executor(name: str, workers: int, **options: Any) -> Executor:
    """The executor called ``name`` with ``workers`` tasks at once; ``options`` are the engine's
    (``address`` for Ray; ``partition``, ``time_min``, ``cpus_per_task``, ``mem_gb``, ``folder``
    for Slurm). Raises ``UnknownExecutor`` with a one-line reason."""
    if name in ("fork", "local"):
        return ForkServerExecutor(workers, preload=options.get("preload", ()))
    if name == "process":
        return LocalProcessExecutor(workers)
    check_executor_name(name)
    module = importlib.import_module(ENGINES[name])
    given = {k: v for k, v in options.items() if v is not None and k != "preload"}
    executor: Executor = module.create(workers, **given)
    return executor
