"""Hindsight logging: plan (levels, WHERE filter, cost model), execute (local process pool or
another executor), verify fidelity and store new values with provenance. See docs/replay.md."""

from .api import ReplayError, ReplayReport, replay
from .executor import Executor, Job, JobResult, LocalProcessExecutor
from .forkserver import ForkServerExecutor
from .plan import NothingToReplay, Plan

__all__ = [
    "Executor",
    "Job",
    "JobResult",
    "ForkServerExecutor",
    "LocalProcessExecutor",
    "NothingToReplay",
    "Plan",
    "ReplayError",
    "ReplayReport",
    "replay",
]
