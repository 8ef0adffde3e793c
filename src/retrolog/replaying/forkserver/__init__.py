"""The fork-server executor, one module per process its code runs in: the coordinator's
``ForkServerExecutor`` (executor.py) speaks to a server (client.py; persistent.py: servers shared
by replays, found by ``server_key``) that imported the heavy modules once (server.py, run as a
script) and forks a child per task, which becomes ``python script.py`` (task.py)."""

from .client import READY_TIMEOUT, ForkServerError
from .executor import ALWAYS_PRELOAD, IMPLIED_PRELOAD, ForkServerExecutor, script_imports
from .persistent import (
    DIR_ENV,
    IDLE_ENV,
    PERSIST_ENV,
    idle_seconds,
    persist_default,
    runtime_dir,
    server_key,
    shareable_preload,
    shutdown_servers,
)

__all__ = [
    "ALWAYS_PRELOAD",
    "DIR_ENV",
    "IDLE_ENV",
    "IMPLIED_PRELOAD",
    "PERSIST_ENV",
    "READY_TIMEOUT",
    "ForkServerError",
    "ForkServerExecutor",
    "idle_seconds",
    "persist_default",
    "runtime_dir",
    "script_imports",
    "server_key",
    "shareable_preload",
    "shutdown_servers",
]
