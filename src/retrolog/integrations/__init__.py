"""Integrations with frameworks that own the training loops (PyTorch Lightning, the Hugging Face
``Trainer``): a callback drives retrolog's loop contexts (``epoch`` and ``step``), records
hyper-parameters and the framework's logged metrics, checkpoints at epoch ends, and under replay
skips the batches of the epochs a new statement does not need.

``driver`` is the framework-neutral part (no torch import); ``layout`` tells replay's planner
which framework hooks run per step and which per epoch (syntax trees only); ``lightning`` and
``transformers`` are the callbacks, imported only by ``retrolog.lightning`` and
``retrolog.transformers``.
"""
