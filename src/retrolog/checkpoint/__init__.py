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

from __future__ import annotations

import sys
import types
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from retrolog.checkpoint.capture import CapturedState, capture
    from retrolog.checkpoint.checkpointer import Checkpointer
    from retrolog.checkpoint.collect import gc, reachable, usage
    from retrolog.checkpoint.errors import CaptureError, CheckpointError, CheckpointUnavailable
    from retrolog.checkpoint.format import write_checkpoint
    from retrolog.checkpoint.kinds import detect_kind
    from retrolog.checkpoint.manifest import FORMAT, CheckpointStats, Manifest, load_manifest
    from retrolog.checkpoint.policy import CheckpointPolicy
    from retrolog.checkpoint.restore import restore
    from retrolog.checkpoint.writer import CheckpointWriter

# Each name is imported from its module on first use: reading a manifest (checkpoint.manifest,
# as the replay coordinator does) must not import numpy, safetensors and the tensor code (~0.4 s).
_HOMES = {
    "CapturedState": "capture",
    "capture": "capture",
    "Checkpointer": "checkpointer",
    "gc": "collect",
    "reachable": "collect",
    "usage": "collect",
    "CaptureError": "errors",
    "CheckpointError": "errors",
    "CheckpointUnavailable": "errors",
    "write_checkpoint": "format",
    "detect_kind": "kinds",
    "FORMAT": "manifest",
    "CheckpointStats": "manifest",
    "Manifest": "manifest",
    "load_manifest": "manifest",
    "CheckpointPolicy": "policy",
    "restore": "restore",
    "CheckpointWriter": "writer",
}
_SHADOWED = ("capture", "restore")  # names of a submodule and of the function exported here


def __getattr__(name: str) -> Any:
    home = _HOMES.get(name)
    if home is None:
        raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
    from importlib import import_module

    value = getattr(import_module(f"{__name__}.{home}"), name)
    globals()[name] = value
    return value


class _Package(types.ModuleType):
    """Importing the ``capture`` or ``restore`` submodule sets the package attribute of that name
    to the module; the package exports the functions under those names, so that is refused."""

    def __setattr__(self, name: str, value: Any) -> None:
        if name in _SHADOWED and isinstance(value, types.ModuleType):
            return
        super().__setattr__(name, value)


sys.modules[__name__].__class__ = _Package

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
