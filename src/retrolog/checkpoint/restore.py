"""Load a checkpoint back into live objects, in place, and restore the RNG states.

Restore works in two phases so that an unavailable checkpoint leaves the live objects untouched
whenever possible: first every needed blob is fetched and verified, every state decoded and
checked against its object (kind, module keys and shapes, array shapes and dtypes); only then
are objects modified. Any failure raises :class:`CheckpointUnavailable`, which replay catches to
re-execute instead; ``partial`` on it says whether objects had already been modified.
"""

from __future__ import annotations

import warnings
from collections import OrderedDict
from collections.abc import Mapping
from typing import Any

import numpy as np

from retrolog._warn import RetrologWarning
from retrolog.checkpoint import kinds
from retrolog.checkpoint.codec import decode, iter_blob_refs
from retrolog.checkpoint.errors import CaptureError, CheckpointUnavailable
from retrolog.checkpoint.format import Manifest, load_manifest, read_blob, tensor_from_blob
from retrolog.checkpoint.rng import restore_rng
from retrolog.objects.store import ObjectStore, digest_bytes


class _Loader:
    """Fetches each blob once; builds a fresh tensor per leaf (shared ones would alias)."""

    def __init__(self, store: ObjectStore) -> None:
        self.store = store
        self.raw: dict[str, bytes] = {}
        self._warned_device = False

    def fetch(self, tree: Any) -> None:
        for digest, _lib in iter_blob_refs(tree):
            if digest not in self.raw:
                self.raw[digest] = read_blob(self.store, digest)

    def __call__(self, digest: str, lib: str, node: dict[str, Any]) -> Any:
        value = tensor_from_blob(self._bytes(digest, node), lib, digest)
        device = node.get("device")
        if lib == "torch" and device:
            try:
                value = value.to(device)
            except (RuntimeError, AssertionError) as exc:
                if not self._warned_device:
                    self._warned_device = True
                    warnings.warn(
                        f"retrolog: checkpointed tensors lived on {device}, which is not "
                        f"available here ({exc}); they are restored on the CPU",
                        RetrologWarning,
                        stacklevel=4,
                    )
        return value

    def _bytes(self, digest: str, node: dict[str, Any]) -> bytes:
        """A leaf's blob: its own, or its slice of a pack, verified against its digest."""
        if "pack" not in node:
            return self.raw[digest]
        try:
            offset, length = (int(x) for x in node["at"])
            data = self.raw[node["pack"]][offset : offset + length]
        except (KeyError, TypeError, ValueError) as exc:
            raise CheckpointUnavailable(f"bad pack reference for {digest}: {exc!r}") from exc
        if digest_bytes(data) != digest:
            raise CheckpointUnavailable(
                f"tensor {digest} does not match its bytes in pack {node['pack']}", digest=digest
            )
        return data


def _check(name: str, obj: Any, record: dict[str, Any], state: Any) -> None:
    """Raise CheckpointUnavailable if ``state`` cannot be loaded into ``obj`` (nothing modified)."""
    kind = record.get("kind")
    try:
        live_kind = kinds.detect_kind(obj, name)
    except CaptureError as exc:
        raise CheckpointUnavailable(str(exc)) from exc
    if live_kind != kind:
        raise CheckpointUnavailable(
            f"{name!r} was checkpointed as {kind} ({record.get('type')}) but the live object is "
            f"{live_kind} ({kinds.type_name(obj)})"
        )
    if kind == kinds.TORCH_MODULE:
        live = obj.state_dict()
        if set(live) != set(state):
            extra, missing = sorted(set(state) - set(live)), sorted(set(live) - set(state))
            raise CheckpointUnavailable(
                f"{name!r}: state_dict keys differ (unexpected {extra[:5]}, missing {missing[:5]})"
            )
        for key, value in live.items():
            saved = state[key]
            if hasattr(value, "shape") and tuple(saved.shape) != tuple(value.shape):
                raise CheckpointUnavailable(
                    f"{name!r}: {key} has shape {tuple(saved.shape)} in the checkpoint but "
                    f"{tuple(value.shape)} in the live module"
                )
    elif kind in (kinds.NDARRAY, kinds.TORCH_TENSOR) and (
        tuple(obj.shape) != tuple(state.shape) or obj.dtype != state.dtype
    ):
        raise CheckpointUnavailable(
            f"{name!r}: checkpoint holds {state.dtype}{tuple(state.shape)}, live object is "
            f"{obj.dtype}{tuple(obj.shape)}"
        )


def _apply(obj: Any, record: dict[str, Any], state: Any, extra: dict[str, Any]) -> None:
    kind = record["kind"]
    if kind == kinds.PROTOCOL:
        obj.__retrolog_restore__(state)
    elif kind == kinds.NUMPY_GENERATOR:
        obj.bit_generator.state = state
    elif kind in (kinds.NUMPY_RANDOM_STATE, kinds.TORCH_GENERATOR):
        obj.set_state(state)
    elif kind == kinds.PYTHON_RANDOM:
        obj.setstate(state)
    elif kind == kinds.TORCH_MODULE:
        state_dict: Any = OrderedDict(state)
        state_dict._metadata = OrderedDict(extra.get("metadata") or {})
        obj.load_state_dict(state_dict)
        flags = record.get("training") or {}
        for sub, module in obj.named_modules():
            if sub in flags:
                module.training = bool(flags[sub])
    elif kind == kinds.STATE_DICT:
        if state == {} and type(obj).__name__ == "GradScaler":
            return  # a disabled GradScaler saves {} and refuses to load it
        obj.load_state_dict(state)
    elif kind == kinds.TORCH_TENSOR:
        import torch

        with torch.no_grad():
            obj.copy_(state)
    elif kind == kinds.NDARRAY:
        np.copyto(obj, state, casting="no")
    elif kind == kinds.DICT:
        obj.clear()
        obj.update(state)
    elif kind == kinds.LIST:
        obj[:] = state
    else:
        raise CheckpointUnavailable(f"unknown object kind {kind!r}")


def restore(
    store: ObjectStore,
    manifest: Manifest | str,
    objects: Mapping[str, Any],
    *,
    rng: bool = True,
) -> dict[str, Any] | None:
    """Load the checkpoint's state into ``objects`` (name -> live object) in place.

    Every name in ``objects`` must be in the checkpoint; checkpointed objects not passed are
    ignored. With ``rng`` the global RNG states are restored too (last, after all objects).
    ``manifest`` may be a :class:`Manifest` or its digest. Gradients captured for a module in
    ``objects`` are set on its parameters. Returns the decoded loop-carried variables (name ->
    value) for the caller to put back where they live, or None when none were captured.
    """
    if isinstance(manifest, str):
        manifest = load_manifest(store, manifest)
    missing = [name for name in objects if name not in manifest.objects]
    if missing:
        raise CheckpointUnavailable(
            f"checkpoint {manifest.key!r} ({manifest.digest}) has no state for {missing}; "
            f"it holds {manifest.object_names}",
            digest=manifest.digest,
        )
    loader = _Loader(store)
    records = {name: manifest.objects[name] for name in objects}
    try:
        grads = {name: g for name, g in (manifest.grads or {}).items() if name in objects}
        for record in records.values():
            loader.fetch(record.get("state"))
            loader.fetch(record.get("metadata"))
        loader.fetch(grads)
        loader.fetch(manifest.locals)
        if rng and manifest.rng:
            loader.fetch(manifest.rng)
        states: dict[str, Any] = {}
        extras: dict[str, dict[str, Any]] = {}
        for name, record in records.items():
            states[name] = decode(record.get("state"), loader)
            extras[name] = {"metadata": decode(record.get("metadata"), loader)}
            _check(name, objects[name], record, states[name])
        rng_state = decode(manifest.rng, loader) if rng and manifest.rng else None
        grad_states = {name: decode(tree, loader) for name, tree in grads.items()}
        for name, state in grad_states.items():
            _check_grads(name, objects[name], state)
        carried = decode(manifest.locals, loader) if manifest.locals is not None else None
    except CheckpointUnavailable as exc:
        exc.digest = exc.digest or manifest.digest
        raise
    except Exception as exc:
        raise CheckpointUnavailable(
            f"checkpoint {manifest.key!r} ({manifest.digest}) cannot be decoded: {exc!r}",
            digest=manifest.digest,
        ) from exc
    for name, obj in objects.items():
        try:
            _apply(obj, records[name], states[name], extras[name])
        except Exception as exc:
            raise CheckpointUnavailable(
                f"restoring {name!r} from checkpoint {manifest.key!r} failed: {exc!r}",
                digest=manifest.digest,
                partial=True,
            ) from exc
    for name, state in grad_states.items():
        try:
            _apply_grads(objects[name], state)
        except Exception as exc:
            raise CheckpointUnavailable(
                f"restoring the gradients of {name!r} from checkpoint {manifest.key!r} failed: "
                f"{exc!r}",
                digest=manifest.digest,
                partial=True,
            ) from exc
    if rng_state is not None:
        restore_rng(rng_state)
    return carried


def _check_grads(name: str, module: Any, state: Any) -> None:
    """Raise CheckpointUnavailable unless ``state`` has a gradient (or None) of the right shape
    for every parameter of ``module``."""
    params = dict(module.named_parameters()) if hasattr(module, "named_parameters") else None
    if params is None or not isinstance(state, dict) or set(params) != set(state):
        raise CheckpointUnavailable(f"{name!r}: the checkpointed gradients do not fit the module")
    for pname, grad in state.items():
        if grad is not None and tuple(grad.shape) != tuple(params[pname].shape):
            raise CheckpointUnavailable(
                f"{name!r}: the gradient of {pname} has shape {tuple(grad.shape)} in the "
                f"checkpoint but the parameter has {tuple(params[pname].shape)}"
            )


def _apply_grads(module: Any, state: dict[str, Any]) -> None:
    for pname, param in module.named_parameters():
        grad = state[pname]
        param.grad = None if grad is None else grad.to(device=param.device, dtype=param.dtype)
