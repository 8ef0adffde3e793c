"""On-store format: one safetensors blob per tensor, one JSON manifest blob per checkpoint.

Each tensor or array leaf is written as a single-tensor safetensors file (key ``"t"``), so its
dtype and shape travel with it, and stored under the SHA-256 of those bytes: a tensor that did
not change since any earlier checkpoint (frozen layers, the same value in two objects, an
unchanged model) is stored once. The manifest is compact JSON::

    {"format": "retrolog.checkpoint/1", "key": "...", "created": 1795000000.0,
     "objects": {"model": {"kind": "torch_module", "type": "...", "state": <encoded tree>,
                           "training": {...}, "metadata": {...}}, ...},
     "rng": {"python": ..., "numpy": ..., "torch": {"$tensor": "sha256:..."}},
     "locals": {"loss": {"$tensor": "sha256:..."}, "X": ...},          (optional)
     "grads": {"model": {"0.weight": {"$tensor": "sha256:..."}, "0.bias": null}},  (optional)
     "blobs": {"sha256:...": 4194392, ...},
     "stats": {"total_bytes": ..., "new_bytes": ..., "blobs": ..., "new_blobs": ...,
               "capture_seconds": ..., "write_seconds": ..., "write_cpu_seconds": ...}}

``blobs`` lists every blob the checkpoint references with its size, so garbage collection and
``retrolog du`` need one read per manifest and no per-blob calls. No pickle is involved.
``locals`` and ``grads`` appear only in checkpoints of nested loops whose loop-carried state
was captured (see capture.py); readers that do not know them ignore them.
"""

from __future__ import annotations

import json
import time
from typing import Any

from retrolog.checkpoint.capture import CapturedState
from retrolog.checkpoint.codec import NDARRAY_TAG, TENSOR_TAG
from retrolog.checkpoint.errors import CheckpointUnavailable
from retrolog.checkpoint.manifest import (
    FORMAT,
    CheckpointStats,
    Manifest,
    load_manifest,
    read_blob,
    with_optional,
)
from retrolog.objects.store import ObjectStore, digest_bytes

_KEY = "t"
# Leaves whose blob is smaller go into one pack blob per checkpoint, each node naming the pack
# and its [offset, length] beside its own digest (verified on read). Creating a file cost ~1 ms
# on the VMs we measured, and a small transformer's checkpoint (parameters, grads and AdamW
# state) has over a hundred small tensors: 120 files took 130-220 ms of the writer's CPU, which
# made the adaptive policy save only every 4th-6th micro-step loop exit. Larger tensors keep a
# blob each, so an unchanged one (a frozen layer) is still stored once.
PACK_LIMIT = 256 * 1024
PackIndex = set[str]  # digests of the small tensors a writer has packed


def tensor_to_blob(value: Any, lib: str) -> bytes:
    """Serialise one CPU tensor (``lib="torch"``) or numpy array as a safetensors file."""
    if lib == "torch":
        from safetensors.torch import save as save_torch

        return save_torch({_KEY: value})
    from safetensors.numpy import save as save_numpy

    return save_numpy({_KEY: value})


def tensor_from_blob(data: bytes, lib: str, digest: str = "") -> Any:
    """Load a blob written by :func:`tensor_to_blob` as a torch tensor or a numpy array."""
    try:
        if lib == "torch":
            from safetensors.torch import load as load_torch

            return load_torch(data)[_KEY]
        from safetensors.numpy import load as load_numpy

        return load_numpy(data)[_KEY]
    except Exception as exc:  # safetensors raises its own error type
        raise CheckpointUnavailable(
            f"blob {digest} is not a single-tensor safetensors file: {exc!r}", digest=digest
        ) from exc


def write_checkpoint(
    store: ObjectStore,
    key: str,
    captured: CapturedState,
    known: set[str] | None = None,
    packs: PackIndex | None = None,
) -> Manifest:
    """Serialise, hash and store a captured state, then its manifest; return the manifest.

    ``known`` is a cache of digests already confirmed in ``store`` (the writer keeps one), which
    saves an existence check per unchanged tensor on remote stores. ``packs`` (the writer keeps
    one; None: every tensor gets a blob of its own) turns on packing of small tensors: a small
    tensor seen for the first time goes into this checkpoint's pack; one seen unchanged again (a
    frozen layer's bias) gets a blob of its own then, stored once and shared from there on. So a
    pack is referenced by its own checkpoint only, and deleting a run's checkpoints frees them.
    """
    start = time.perf_counter()
    cpu_start = time.thread_time()
    blobs: dict[str, int] = {}
    fresh: dict[str, bytes] = {}  # written as one batch: one sync, not one per tensor
    packed: list[tuple[dict[str, Any], bytes]] = []
    for leaf in captured.leaves:
        data = tensor_to_blob(leaf.value, leaf.lib)
        digest = digest_bytes(data)
        leaf.node[TENSOR_TAG if leaf.lib == "torch" else NDARRAY_TAG] = digest
        if (
            packs is not None
            and len(data) < PACK_LIMIT
            and digest not in packs
            and not (known is not None and digest in known)
        ):
            packed.append((leaf.node, data))  # first seen: into this checkpoint's pack
            continue
        # a large tensor, or a small one seen unchanged again: a blob of its own, stored once
        if digest not in blobs:
            if not (known is not None and digest in known) and not store.has(digest):
                fresh[digest] = data
            blobs[digest] = len(data)
    if packed and packs is not None:
        pack = b"".join(data for _, data in packed)
        pack_digest = digest_bytes(pack)
        offset = 0
        for node, data in packed:
            node["pack"], node["at"] = pack_digest, [offset, len(data)]
            offset += len(data)
        packs.update(digest_bytes(data) for _, data in packed)
        if not store.has(pack_digest):
            fresh[pack_digest] = pack
        blobs[pack_digest] = len(pack)
    if fresh:
        store.put_many(fresh)
    if known is not None:
        known.update(blobs)
    new_bytes, new_blobs = sum(len(d) for d in fresh.values()), len(fresh)
    stats = CheckpointStats(
        total_bytes=sum(blobs.values()),
        new_bytes=new_bytes,
        blobs=len(blobs),
        new_blobs=new_blobs,
        capture_seconds=captured.capture_seconds,
        write_seconds=time.perf_counter() - start,
        write_cpu_seconds=time.thread_time() - cpu_start,
    )
    doc = {
        "format": FORMAT,
        "key": key,
        "created": captured.created,
        "objects": captured.objects,
        "rng": captured.rng,
        "blobs": blobs,
        "stats": stats.__dict__.copy(),
    }
    with_optional(doc, captured.locals, captured.grads)
    raw = json.dumps(doc, separators=(",", ":"), allow_nan=False).encode("utf-8")
    digest = store.put(raw)
    return Manifest(
        digest=digest,
        key=key,
        created=captured.created,
        objects=captured.objects,
        rng=captured.rng,
        blobs=blobs,
        stats=stats,
        size=len(raw),
        locals=captured.locals,
        grads=captured.grads,
    )


__all__ = [
    "FORMAT",
    "CheckpointStats",
    "Manifest",
    "load_manifest",
    "read_blob",
    "tensor_from_blob",
    "tensor_to_blob",
    "write_checkpoint",
]
