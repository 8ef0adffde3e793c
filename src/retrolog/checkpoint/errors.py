"""Exceptions of the checkpoint engine."""

from __future__ import annotations

from ..errors import RetrologError


class CheckpointError(RetrologError):
    """Base class of checkpoint errors."""


class CaptureError(CheckpointError, TypeError):
    """A registered object (or a value inside its state) cannot be checkpointed.

    Raised on the training thread by :func:`~retrolog.checkpoint.capture`; the message names the
    object and the path of the offending value, and says how to make it checkpointable.
    """


class CheckpointUnavailable(CheckpointError):
    """A checkpoint cannot be restored: missing or corrupt blob, unknown format, or a state that
    does not fit the live objects. Replay catches it and falls back to re-execution.

    ``partial`` is True when some live objects were already modified before the failure (only
    possible when an object's own ``load_state_dict`` rejects the state); they must then be rebuilt
    before re-executing.
    """

    def __init__(self, message: str, *, digest: str | None = None, partial: bool = False) -> None:
        super().__init__(message)
        self.digest = digest
        self.partial = partial
