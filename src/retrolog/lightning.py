"""PyTorch Lightning integration: ``Trainer(callbacks=[RetrologCallback()])`` records a run.

``RetrologCallback`` subclasses the ``Callback`` of the Lightning package this process uses
(``lightning.pytorch`` or ``pytorch_lightning``, whichever was imported first; see
``retrolog.integrations.lightning``). Needs ``pip install 'retrolog[lightning]'``.
"""

from __future__ import annotations

from typing import Any

from .integrations.lightning import callback_class, lightning_package

__all__ = ["callback_class", "lightning_package"]  # and RetrologCallback, made on first use


def __getattr__(name: str) -> Any:
    if name == "RetrologCallback":
        return callback_class()
    raise AttributeError(f"module 'retrolog.lightning' has no attribute {name!r}")
