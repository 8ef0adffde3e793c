"""Distributed training runs: one run per launch, not one unrelated run per process.

A launcher such as ``torchrun`` (or Slurm/MPI wrappers that follow the same convention) starts
one process per rank and sets ``RANK`` and ``WORLD_SIZE`` (and ``LOCAL_RANK``). By default only
rank 0 records; on the other ranks every retrolog call is a no-op (:class:`SilentSession`): no
store, no journal, no code snapshot, no checkpoints. ``RETROLOG_RANKS=all`` records every rank as
its own run. Either way a recorded run carries three args that say how it was launched:
``retrolog.rank``, ``retrolog.world_size`` and ``retrolog.group`` (the same for every rank of one
launch), so ``retrolog.dataframe("loss", "retrolog.rank")`` compares ranks.

Replay runs one process per task, without the other ranks: a rank's values after its first
collective (gradient all-reduce, broadcast, barrier) depend on processes that replay cannot
start, so :func:`replay_refusal` makes the planner refuse such runs before any work starts.
"""

from __future__ import annotations

import hashlib
import os
import socket
from dataclasses import dataclass
from typing import Any

from ..project import Project
from ..settings import RANKS
from .backend import DiscardBackend
from .session import RunSession

RANKS_ENV = RANKS.name
RANK_ARG = "retrolog.rank"
WORLD_ARG = "retrolog.world_size"
GROUP_ARG = "retrolog.group"


@dataclass(frozen=True)
class Launch:
    """Where this process sits in a multi-process launch."""

    rank: int
    world_size: int
    local_rank: int
    group: str


def _int_env(name: str) -> int | None:
    try:
        return int(os.environ[name])
    except (KeyError, ValueError):
        return None


def current_launch() -> Launch | None:
    """The launch this process belongs to, or None outside a multi-process launch."""
    rank, world = _int_env("RANK"), _int_env("WORLD_SIZE")
    if rank is None or world is None or world <= 1:
        return None
    return Launch(rank, world, _int_env("LOCAL_RANK") or 0, _group_id())


def _group_id() -> str:
    """An id shared by the ranks of one launch: torchrun's run id when it has one, else the
    rendezvous address plus the launching agent (same host and parent process)."""
    run_id = os.environ.get("TORCHELASTIC_RUN_ID", "")
    if run_id and run_id != "none":
        key = f"torchelastic:{run_id}"
    else:
        key = ":".join(
            (
                os.environ.get("MASTER_ADDR", ""),
                os.environ.get("MASTER_PORT", ""),
                socket.gethostname(),
                str(os.getppid()),
            )
        )
    return hashlib.sha256(key.encode()).hexdigest()[:16]


def records_all_ranks(value: str | None = None) -> bool:
    """Whether ``RETROLOG_RANKS`` asks every rank to record (``all``); default: rank 0 only."""
    text = RANKS.get() if value is None else value.strip().lower()
    return text == "all"


class SilentSession(RunSession):
    """The session of a rank that does not record: the API works, nothing is kept or written
    (made with a ``DiscardBackend``)."""

    silent = True

    def _loop_exited(self, name: str, parent: int, is_main: bool) -> None:
        return None

    def record_arg(self, name: str, value: Any) -> None:
        return None

    def close(self, status: str = "finished", error: str | None = None) -> None:
        if self._closed:
            return
        self._closed = True
        self.status, self.error = status, error
        self.backend.stop()


def new_session(
    project: Project, script: str, argv: list[str], overrides: dict[str, str]
) -> RunSession:
    """The session of a recording process: silent on ranks that do not record, else a run that
    says how it was launched (and is scheduled for auto-push when that is on)."""
    from ..versions import autopush

    launch = current_launch()
    if launch is not None and launch.rank != 0 and not records_all_ranks():
        return SilentSession(project, script, argv, overrides, backend=DiscardBackend())
    session = RunSession(project, script, argv, overrides)
    if launch is not None:
        for name, value in (
            (RANK_ARG, launch.rank),
            (WORLD_ARG, launch.world_size),
            (GROUP_ARG, launch.group),
        ):
            session.args[name] = value
            session.record_arg(name, value)
    autopush.schedule(project, session.run_id)  # RETROLOG_AUTO_PUSH; never raises
    return session


def replay_refusal(store: Any, run_key: int) -> str | None:
    """Why a run cannot be replayed in one process (it ran on several ranks), or None."""
    from ..store.replays import arg_numbers

    facts = arg_numbers(store, run_key, [WORLD_ARG, RANK_ARG])
    world = facts.get(WORLD_ARG)
    if world is None or world <= 1:
        return None
    rank = int(facts.get(RANK_ARG) or 0)
    return (
        f"recorded as rank {rank} of {int(world)} processes (torchrun, WORLD_SIZE={int(world)}): "
        "its values depend on the other ranks' collectives, which a replay in one process "
        "cannot reproduce; replay is refused rather than storing different values"
    )


__all__ = [
    "GROUP_ARG",
    "RANKS_ENV",
    "RANK_ARG",
    "WORLD_ARG",
    "Launch",
    "SilentSession",
    "current_launch",
    "new_session",
    "records_all_ranks",
    "replay_refusal",
]
