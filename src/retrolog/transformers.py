"""Hugging Face Trainer integration: ``Trainer(..., callbacks=[RetrologCallback()])`` records a
run (see ``retrolog.integrations.transformers``). Needs ``pip install 'retrolog[transformers]'``.
"""

from __future__ import annotations

try:
    from .integrations.transformers import RetrologCallback, training_args
except ImportError as exc:  # transformers (or accelerate, which its Trainer needs) is missing
    raise ImportError(
        f"retrolog.transformers needs the Hugging Face Trainer ({exc}): "
        "pip install 'retrolog[transformers]'"
    ) from exc

__all__ = ["RetrologCallback", "training_args"]
