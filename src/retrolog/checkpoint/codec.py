"""Lossless JSON encoding of state trees whose tensor leaves become content-addressed blobs.

A state tree (a ``state_dict``, RNG state, plain Python state) is encoded into plain JSON. JSON
cannot say everything Python can, so a few values are *tagged*: a JSON object whose first key
starts with ``$``. Plain dicts whose keys are all strings not starting with ``$`` stay plain
objects; every other dict becomes ``$dict`` (this keeps optimizer ``state`` int keys):

==================  =============================================  ============================
``$tuple``          ``{"$tuple": [...]}``                          Adam ``betas``, RNG states
``$dict``           ``{"$dict": [[key, value], ...]}``             non-str or ``$`` keys
``$float``          ``{"$float": "nan" | "inf" | "-inf"}``         non-finite floats
``$np``             ``{"$np": "float32", "v": 1.5}``               numpy scalars
``$bytes``          ``{"$bytes": "<base64>"}``
``$tensor``         ``{"$tensor": "sha256:...", "device": ...}``   torch tensor (blob)
``$ndarray``        ``{"$ndarray": "sha256:..."}``                 numpy array (blob)
``$torch_dtype``    ``{"$torch_dtype": "float32"}``
``$torch_device``   ``{"$torch_device": "cuda:0"}``
``$np_dtype``       ``{"$np_dtype": "<f4"}``
==================  =============================================  ============================

Finite floats use Python's shortest round-trip repr, so they come back bit-identical. Anything
else is refused with a :class:`CaptureError` naming where it sits; no pickle is ever used.
"""

from __future__ import annotations

import base64
import math
import sys
from collections.abc import Callable, Iterator, Mapping
from dataclasses import dataclass
from typing import Any

import numpy as np

from retrolog.checkpoint.errors import CaptureError, CheckpointUnavailable

TENSOR_TAG = "$tensor"
NDARRAY_TAG = "$ndarray"


def torch_module() -> Any:
    """Return the ``torch`` module if the program has imported it, else None (never imports)."""
    return sys.modules.get("torch")


@dataclass
class TensorLeaf:
    """A tensor or array copied off the device at capture time, waiting to be written.

    ``node`` is its placeholder inside the encoded tree; the writer stores the blob digest in it.
    """

    node: dict[str, Any]
    value: Any
    lib: str  # "torch" or "numpy"


def copy_tensor(tensor: Any, torch: Any, path: str) -> Any:
    """Return an owned, contiguous CPU copy of a torch tensor (the only device work of capture)."""
    if tensor.layout != torch.strided:
        raise CaptureError(f"{path}: {tensor.layout} tensors cannot be checkpointed (dense only)")
    t = tensor.detach()
    if t.is_conj():
        t = t.resolve_conj()
    if t.is_neg():
        t = t.resolve_neg()
    return t.to(device="cpu", copy=True, memory_format=torch.contiguous_format)


class Encoder:
    """Encode state trees for one capture, collecting their tensor leaves in :attr:`leaves`."""

    def __init__(self) -> None:
        self.leaves: list[TensorLeaf] = []
        self._torch = torch_module()
        self._memo: dict[tuple[Any, ...], dict[str, Any]] = {}

    def encode(self, value: Any, path: str) -> Any:
        """Return the JSON encoding of ``value``; ``path`` names it in error messages."""
        if value is None or type(value) is bool or type(value) is str:
            return value
        if isinstance(value, np.generic):
            if isinstance(value, np.ndarray) or value.dtype.hasobject:
                raise CaptureError(f"{path}: numpy scalar of dtype {value.dtype} is unsupported")
            return {"$np": value.dtype.name, "v": self.encode(value.item(), path)}
        if isinstance(value, bool):
            return bool(value)
        if isinstance(value, int):
            return int(value)
        if isinstance(value, float):
            v = float(value)
            if math.isfinite(v):
                return v
            return {"$float": "nan" if math.isnan(v) else ("inf" if v > 0 else "-inf")}
        if isinstance(value, str):
            return str(value)
        torch = self._torch
        if torch is not None and isinstance(value, torch.Tensor):
            return self._tensor(value, torch, path)
        if isinstance(value, np.ndarray):
            return self._ndarray(value, path)
        if isinstance(value, Mapping):
            if all(isinstance(k, str) and not k.startswith("$") for k in value):
                return {str(k): self.encode(v, f"{path}[{k!r}]") for k, v in value.items()}
            return {
                "$dict": [
                    [self.encode(k, f"{path}.<key>"), self.encode(v, f"{path}[{k!r}]")]
                    for k, v in value.items()
                ]
            }
        if isinstance(value, list):
            return [self.encode(v, f"{path}[{i}]") for i, v in enumerate(value)]
        if isinstance(value, tuple):
            return {"$tuple": [self.encode(v, f"{path}[{i}]") for i, v in enumerate(value)]}
        if isinstance(value, bytes | bytearray):
            return {"$bytes": base64.b64encode(bytes(value)).decode("ascii")}
        if torch is not None and isinstance(value, torch.dtype):
            return {"$torch_dtype": str(value).removeprefix("torch.")}
        if torch is not None and isinstance(value, torch.device):
            return {"$torch_device": str(value)}
        if isinstance(value, np.dtype):
            return {"$np_dtype": value.str}
        kind = f"{type(value).__module__}.{type(value).__qualname__}"
        raise CaptureError(
            f"{path}: cannot checkpoint a value of type {kind}; state may hold JSON values, "
            "tuples, numpy arrays/scalars and torch tensors (give the object __retrolog_state__ "
            "and __retrolog_restore__ to convert it)"
        )

    def _tensor(self, tensor: Any, torch: Any, path: str) -> dict[str, Any]:
        try:
            key: tuple[Any, ...] | None = (
                tensor.untyped_storage().data_ptr(),
                tensor.storage_offset(),
                tuple(tensor.shape),
                tuple(tensor.stride()),
                tensor.dtype,
                str(tensor.device),
            )
        except (RuntimeError, NotImplementedError):
            key = None
        if key is not None and key in self._memo:  # tied weights: copy once, same blob
            return self._memo[key]
        node: dict[str, Any] = {TENSOR_TAG: None}
        if tensor.device.type != "cpu":
            node["device"] = str(tensor.device)
        self.leaves.append(TensorLeaf(node, copy_tensor(tensor, torch, path), "torch"))
        if key is not None:
            self._memo[key] = node
        return node

    def _ndarray(self, array: np.ndarray, path: str) -> dict[str, Any]:
        if array.dtype.hasobject or array.dtype.fields is not None:
            raise CaptureError(f"{path}: numpy arrays of dtype {array.dtype} are unsupported")
        node: dict[str, Any] = {NDARRAY_TAG: None}
        self.leaves.append(TensorLeaf(node, np.array(array, copy=True, order="C"), "numpy"))
        return node


def iter_blob_refs(node: Any) -> Iterator[tuple[str, str]]:
    """Yield ``(digest, lib)`` of the stored blob of every tensor leaf of an encoded tree: the
    leaf's own blob, or the pack blob that holds it (``"pack"``, see format.PACK_LIMIT)."""
    if isinstance(node, list):
        for item in node:
            yield from iter_blob_refs(item)
    elif isinstance(node, dict):
        if TENSOR_TAG in node:
            yield str(node.get("pack", node[TENSOR_TAG])), "torch"
        elif NDARRAY_TAG in node:
            yield str(node.get("pack", node[NDARRAY_TAG])), "numpy"
        else:
            for value in node.values():
                yield from iter_blob_refs(value)


def decode(node: Any, load: Callable[[str, str, dict[str, Any]], Any]) -> Any:
    """Rebuild a value from its encoding; ``load(digest, lib, node)`` returns a tensor leaf."""
    if isinstance(node, list):
        return [decode(v, load) for v in node]
    if not isinstance(node, dict):
        return node
    tag = next((k for k in node if k.startswith("$")), None)
    if tag is None:
        return {k: decode(v, load) for k, v in node.items()}
    if tag == "$tuple":
        return tuple(decode(v, load) for v in node[tag])
    if tag == "$dict":
        return {decode(k, load): decode(v, load) for k, v in node[tag]}
    if tag == "$float":
        return float(node[tag])
    if tag == TENSOR_TAG:
        return load(node[tag], "torch", node)
    if tag == NDARRAY_TAG:
        return load(node[tag], "numpy", node)
    if tag == "$np":
        return np.dtype(node[tag]).type(decode(node["v"], load))
    if tag == "$bytes":
        return base64.b64decode(node[tag])
    if tag == "$np_dtype":
        return np.dtype(node[tag])
    if tag in ("$torch_dtype", "$torch_device"):
        import torch

        if tag == "$torch_device":
            return torch.device(node[tag])
        dtype = getattr(torch, str(node[tag]), None)
        if isinstance(dtype, torch.dtype):
            return dtype
    raise CheckpointUnavailable(f"cannot decode {tag} value {node[tag]!r} in checkpoint manifest")
