"""Checkpoint engine: what to save, RNG states, adaptive policy, background writer, restore.

Recording (training thread)::

    ckpt = Checkpointer(open_object_store(root), policy=CheckpointPolicy(budget=0.05))
    future = ckpt.opportunity("train/epoch=3", {"model": model, "opt": opt}, work_seconds)
    ...  # later: future.result().digest names the checkpoint
    ckpt.close()

Replay::

    restore(store, load_manifest(store, digest), {"model": model, "opt": opt})

Lower-level pieces: :func:`capture` (synchronous snapshot), :class:`CheckpointWriter`
(background serialise/hash/write), :func:`write_checkpoint` (the same, synchronously).
"""

from retrolog.checkpoint.capture import CapturedState, capture
from retrolog.checkpoint.checkpointer import Checkpointer
from retrolog.checkpoint.collect import gc, reachable, usage
from retrolog.checkpoint.errors import CaptureError, CheckpointError, CheckpointUnavailable
from retrolog.checkpoint.format import (
    FORMAT,
    CheckpointStats,
    Manifest,
    load_manifest,
    write_checkpoint,
)
from retrolog.checkpoint.kinds import detect_kind
from retrolog.checkpoint.policy import CheckpointPolicy
from retrolog.checkpoint.restore import restore
from retrolog.checkpoint.writer import CheckpointWriter

__all__ = [
    "FORMAT",
    "CaptureError",
    "CapturedState",
    "CheckpointError",
    "CheckpointPolicy",
    "CheckpointStats",
    "CheckpointUnavailable",
    "CheckpointWriter",
    "Checkpointer",
    "Manifest",
    "capture",
    "detect_kind",
    "gc",
    "load_manifest",
    "reachable",
    "restore",
    "usage",
    "write_checkpoint",
]
