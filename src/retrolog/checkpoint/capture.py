"""Synchronous half of a checkpoint: snapshot registered objects on the training thread.

:func:`capture` does only what must happen before training mutates the state again: call
``state_dict()`` (or the object's protocol), copy every tensor off the device into an owned CPU
tensor, copy numpy arrays, encode the small non-tensor leaves into fresh JSON values (which is a
deep copy), and read the RNG states. Serialising, hashing and writing happen later on the
background writer.

Supported objects, tried in this order:

* anything with ``__retrolog_state__() -> state`` and ``__retrolog_restore__(state)``, where
  state is JSON-like (tuples, numpy arrays and tensors allowed too);
* numpy ``Generator``, ``RandomState``, ``random.Random``, ``torch.Generator`` (their RNG state);
* ``torch.nn.Module`` (``state_dict`` plus the ``training`` flag of every submodule);
* anything else with ``state_dict()`` and ``load_state_dict()``: optimizers, LR schedulers,
  ``GradScaler``, ...;
* a torch tensor or numpy array (restored in place);
* a plain ``dict`` or ``list`` (restored in place: cleared and refilled).

Two optional parts make a nested loop skippable on replay (docs/checkpoints.md, loop-carried
state): ``locals``, the user's variables the loop hands to the code after it (tensors, arrays,
scalars, strings, bytes, None and tuples/lists/dicts of them), and ``grads``, the ``.grad``
tensors of registered torch modules (None kept as None) that gradient accumulation leaves behind.
"""

from __future__ import annotations

import time
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from retrolog.checkpoint.codec import Encoder, TensorLeaf, torch_module
from retrolog.checkpoint.errors import CaptureError
from retrolog.checkpoint.kinds import (
    NUMPY_GENERATOR,
    NUMPY_RANDOM_STATE,
    PROTOCOL,
    PYTHON_RANDOM,
    STATE_DICT,
    TORCH_GENERATOR,
    TORCH_MODULE,
    detect_kind,
    type_name,
)
from retrolog.checkpoint.rng import capture_rng


@dataclass
class CapturedState:
    """A snapshot owned by retrolog: safe to serialise while training goes on."""

    objects: dict[str, dict[str, Any]]
    rng: dict[str, Any] | None
    leaves: list[TensorLeaf] = field(repr=False)
    capture_seconds: float
    created: float
    locals: dict[str, Any] | None = None  # encoded {name: value} of the loop-carried variables
    grads: dict[str, Any] | None = None  # encoded {module name: {parameter name: grad or None}}

    @property
    def nbytes(self) -> int:
        """Raw bytes of all tensor and array leaves."""
        total = 0
        for leaf in self.leaves:
            value = leaf.value
            total += int(value.nbytes) if leaf.lib == "numpy" else value.numel() * value.itemsize
        return total


def _state_of(obj: Any, kind: str, record: dict[str, Any], enc: Encoder, name: str) -> Any:
    if kind == PROTOCOL:
        return obj.__retrolog_state__()
    if kind == NUMPY_GENERATOR:
        return obj.bit_generator.state
    if kind in (NUMPY_RANDOM_STATE, TORCH_GENERATOR):
        return obj.get_state()
    if kind == PYTHON_RANDOM:
        return obj.getstate()
    if kind == TORCH_MODULE:
        state = obj.state_dict()
        metadata = getattr(state, "_metadata", None)
        if metadata:
            record["metadata"] = enc.encode(dict(metadata), f"{name}._metadata")
        record["training"] = {sub: m.training for sub, m in obj.named_modules()}
        return state
    if kind == STATE_DICT:
        return obj.state_dict()
    return obj  # tensor, array, dict, list: the encoder copies them


_PLAIN = frozenset({bool, int, float, str, bytes, type(None)})


def uncapturable(value: Any) -> str | None:
    """None when ``value`` can be a loop-carried variable of a checkpoint (restored with its exact
    type): torch tensors, numpy arrays and scalars, Python scalars, str, bytes, None, and tuples,
    lists and dicts of those; else the type name of the first value that cannot."""
    kind = type(value)
    if kind in _PLAIN:
        return None
    if kind is list or kind is tuple:
        for item in value:
            problem = uncapturable(item)
            if problem is not None:
                return problem
        return None
    if kind is dict:
        for key, item in value.items():
            problem = uncapturable(key) or uncapturable(item)
            if problem is not None:
                return problem
        return None
    torch = torch_module()
    if torch is not None and kind is torch.Tensor:
        return None if value.layout == torch.strided else f"{value.layout} tensor"
    if (
        isinstance(value, np.ndarray | np.generic)
        and kind.__module__ == "numpy"
        and not value.dtype.hasobject
        and value.dtype.fields is None
    ):
        return None
    return type_name(value)


def capture(
    objects: Mapping[str, Any],
    *,
    rng: bool = True,
    locals: Mapping[str, Any] | None = None,
    grads: Mapping[str, Any] | None = None,
) -> CapturedState:
    """Snapshot ``objects`` (name -> live object) and, if ``rng``, the global RNG states.

    ``locals`` (variable name -> value) are copied as values; ``grads`` (name -> torch module)
    adds the ``.grad`` of every parameter of those modules.

    Runs on the training thread and returns quickly: the cost is the device-to-host copy of the
    tensors plus a memory copy. Raises :class:`CaptureError` for an unsupported object or value.
    """
    start = time.perf_counter()
    created = time.time()
    enc = Encoder()
    records: dict[str, dict[str, Any]] = {}
    for name, obj in objects.items():
        if not isinstance(name, str) or not name:
            raise CaptureError(f"checkpointed objects need non-empty string names, got {name!r}")
        kind = detect_kind(obj, name)
        record: dict[str, Any] = {"kind": kind, "type": type_name(obj)}
        try:
            state = _state_of(obj, kind, record, enc, name)
        except CaptureError:
            raise
        except Exception as exc:
            raise CaptureError(f"{name}: reading its state failed: {exc!r}") from exc
        record["state"] = enc.encode(state, name)
        records[name] = record
    rng_state = capture_rng(enc) if rng else None
    encoded_locals = None
    if locals is not None:
        encoded_locals = {str(k): enc.encode(v, k) for k, v in locals.items()}
    encoded_grads = None
    if grads is not None:
        encoded_grads = {}
        for name, module in grads.items():
            encoded_grads[name] = {
                pname: enc.encode(param.grad, f"{name}.{pname}.grad")
                for pname, param in module.named_parameters()
            }
    return CapturedState(
        objects=records,
        rng=rng_state,
        leaves=enc.leaves,
        capture_seconds=time.perf_counter() - start,
        created=created,
        locals=encoded_locals,
        grads=encoded_grads,
    )


__all__ = ["CapturedState", "capture"]
