"""The recording runtime: run session, loop context, log buffer and journal, args, timings."""

from .api import arg, checkpointing, commit, current_run_id, iteration, log, loop
from .args import ArgumentError

__all__ = [
    "ArgumentError",
    "arg",
    "checkpointing",
    "commit",
    "current_run_id",
    "iteration",
    "log",
    "loop",
]
