"""retrolog: multiversion hindsight logging for machine-learning training.

Record with ``log``/``arg``/``loop``/``iteration``/``checkpointing``/``commit``; query with
``dataframe``/``query``/``runs``; log in hindsight with ``replay`` (and ``propagate``, the
statement placement it uses). The query side imports pandas and SQLAlchemy lazily, so
``import retrolog`` in a training script stays cheap.
"""

from __future__ import annotations

from typing import Any

from .record import ArgumentError, arg, checkpointing, commit, iteration, log, loop

__version__ = "0.1.0"

__all__ = [
    "ArgumentError",
    "arg",
    "checkpointing",
    "commit",
    "dataframe",
    "iteration",
    "log",
    "loop",
    "propagate",
    "query",
    "replay",
    "runs",
]

_LAZY = {
    "dataframe": ("retrolog.relational", "dataframe"),
    "query": ("retrolog.relational", "query"),
    "runs": ("retrolog.relational", "runs"),
    "replay": ("retrolog.replaying", "replay"),
    "propagate": ("retrolog.propagation", "propagate"),
}


def __getattr__(name: str) -> Any:
    if name in _LAZY:
        import importlib

        module_name, attr = _LAZY[name]
        value = getattr(importlib.import_module(module_name), attr)
        globals()[name] = value
        return value
    raise AttributeError(f"module 'retrolog' has no attribute {name!r}")


def __dir__() -> list[str]:
    return sorted(set(globals()) | set(__all__))
