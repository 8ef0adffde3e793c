"""Hugging Face Trainer integration: ``Trainer(..., callbacks=[RetrologCallback()])`` records a
run (see ``retrolog.integrations.transformers``). Needs ``pip install 'retrolog[transformers]'``.
"""

from __future__ import annotations

from .integrations.transformers import RetrologCallback, training_args

__all__ = ["RetrologCallback", "training_args"]
