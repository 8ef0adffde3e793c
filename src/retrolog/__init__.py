"""retrolog: multiversion hindsight logging for machine-learning training.

Record with ``log``/``arg``/``loop``/``iteration``/``checkpointing``/``commit``; query with
``dataframe``/``query``/``runs``; log in hindsight with ``replay`` (and ``propagate``, the
statement placement it uses). Every name is imported on first use (PEP 562), so ``import
retrolog`` stays cheap in a training script and in ``retrolog propagate``. The import itself only
takes ``--kwargs`` out of ``sys.argv`` and watches argparse (``retrolog._early``).
"""

from __future__ import annotations

# Not `from typing import ...`: importing typing costs ~25 ms of `retrolog propagate`'s start-up.
# mypy treats this constant as true (pyproject: always_true).
TYPE_CHECKING = False
if TYPE_CHECKING:
    from typing import Any

__version__ = "0.1.0"

from . import _early  # noqa: E402  (after __version__: a cheap, stdlib-only module)

_early.take_kwargs()
_early.watch_argparse()
if "IPython" in _early.sys.modules:  # a Jupyter kernel or IPython: follow its cells from here on
    from .notebook import watch as _watch_cells

    _watch_cells()
if _early.settings.TRACK_DATA.get():  # RETROLOG_TRACK_DATA: also see opens before the first call
    from . import _datahook

    _datahook.install()

__all__ = [
    "ArgumentError",
    "MissingVersionError",
    "NotFoundError",
    "ReplayRefused",
    "RetrologError",
    "RetrologWarning",
    "StoreError",
    "UsageError",
    "arg",
    "args",
    "checkpointing",
    "commit",
    "data",
    "dataframe",
    "iteration",
    "load",
    "log",
    "loop",
    "name",
    "propagate",
    "query",
    "replay",
    "runs",
    "tag",
]

_LAZY = {
    "ArgumentError": ("retrolog.record", "ArgumentError"),
    # the error model (retrolog.errors) and the one warning category
    "MissingVersionError": ("retrolog.errors", "MissingVersionError"),
    "NotFoundError": ("retrolog.errors", "NotFoundError"),
    "ReplayRefused": ("retrolog.errors", "ReplayRefused"),
    "RetrologError": ("retrolog.errors", "RetrologError"),
    "RetrologWarning": ("retrolog._warn", "RetrologWarning"),
    "StoreError": ("retrolog.errors", "StoreError"),
    "UsageError": ("retrolog.errors", "UsageError"),
    "arg": ("retrolog.record", "arg"),
    # not "retrolog.record": there `args` is the submodule record/args.py
    "args": ("retrolog.record.api", "args"),
    "checkpointing": ("retrolog.record", "checkpointing"),
    "commit": ("retrolog.record", "commit"),
    "data": ("retrolog.record.api", "data"),
    "iteration": ("retrolog.record", "iteration"),
    "log": ("retrolog.record", "log"),
    "loop": ("retrolog.record", "loop"),
    # names and tags of the run in progress; models out of runs (issue 15)
    "name": ("retrolog.record.tags", "name"),
    "tag": ("retrolog.record.tags", "tag"),
    "load": ("retrolog.relational.models", "load"),
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
