"""How each kind of registered object is recognised (shared by capture and restore)."""

from __future__ import annotations

import random
from typing import Any

import numpy as np

from retrolog.checkpoint.codec import torch_module
from retrolog.checkpoint.errors import CaptureError

PROTOCOL = "protocol"
TORCH_MODULE = "torch_module"
STATE_DICT = "state_dict"
TORCH_TENSOR = "torch_tensor"
NDARRAY = "ndarray"
DICT = "dict"
LIST = "list"
PYTHON_RANDOM = "python_random"
NUMPY_GENERATOR = "numpy_generator"
NUMPY_RANDOM_STATE = "numpy_random_state"
TORCH_GENERATOR = "torch_generator"


def type_name(obj: Any) -> str:
    """``module.QualName`` of an object's type, recorded in manifests for diagnostics."""
    return f"{type(obj).__module__}.{type(obj).__qualname__}"


def detect_kind(obj: Any, name: str = "object") -> str:
    """Return how ``obj`` is checkpointed, or raise :class:`CaptureError`."""
    if callable(getattr(obj, "__retrolog_state__", None)) and callable(
        getattr(obj, "__retrolog_restore__", None)
    ):
        return PROTOCOL
    if isinstance(obj, np.random.Generator):
        return NUMPY_GENERATOR
    if isinstance(obj, np.random.RandomState):
        return NUMPY_RANDOM_STATE
    if isinstance(obj, random.Random):
        return PYTHON_RANDOM
    torch = torch_module()
    if torch is not None:
        if isinstance(obj, torch.Generator):
            return TORCH_GENERATOR
        if isinstance(obj, torch.nn.Module):
            return TORCH_MODULE
    if callable(getattr(obj, "state_dict", None)) and callable(
        getattr(obj, "load_state_dict", None)
    ):
        return STATE_DICT
    if torch is not None and isinstance(obj, torch.Tensor):
        return TORCH_TENSOR
    if isinstance(obj, np.ndarray):
        return NDARRAY
    if isinstance(obj, dict):
        return DICT
    if isinstance(obj, list):
        return LIST
    raise CaptureError(
        f"cannot checkpoint {name!r} of type {type_name(obj)}: register a torch module, "
        "optimizer, scheduler or anything with state_dict()/load_state_dict(), a tensor, a numpy "
        "array, a dict or list, or an object with __retrolog_state__()/__retrolog_restore__()"
    )
