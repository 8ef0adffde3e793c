"""A checkpoint's manifest: its JSON document, parsed and validated, without numpy or torch.

The manifest names every blob of a checkpoint with its size (see ``format.py`` for the whole
document). Reading one needs only the standard library, so the replay coordinator's cost model
(``replaying.planner.measure_load_speed``), ``retrolog doctor`` and garbage collection read it
here without importing the tensor code that writing and restoring need.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from typing import Any

from retrolog.checkpoint.errors import CheckpointUnavailable
from retrolog.objects.store import ObjectStore, ObjectStoreError, parse_digest

FORMAT = "retrolog.checkpoint/1"


@dataclass(frozen=True)
class CheckpointStats:
    """Size and cost of one checkpoint.

    ``total_bytes``: unique tensor-blob bytes the checkpoint references; ``new_bytes``: the part
    of them this checkpoint actually wrote (the rest was deduplicated); manifest bytes excluded.
    ``capture_seconds`` ran on the training thread; ``write_seconds`` is the writer thread's wall
    time (serialise, hash, write, fsync) and ``write_cpu_seconds`` the CPU time it consumed, the
    part that competes with training (I/O waits do not).
    """

    total_bytes: int
    new_bytes: int
    blobs: int
    new_blobs: int
    capture_seconds: float
    write_seconds: float
    write_cpu_seconds: float = 0.0

    @classmethod
    def from_json(cls, doc: dict[str, Any]) -> CheckpointStats:
        """Build from a manifest's ``stats``, ignoring fields a newer version may add."""
        names = set(cls.__dataclass_fields__)
        return cls(**{k: v for k, v in doc.items() if k in names})


@dataclass(frozen=True)
class Manifest:
    """A stored checkpoint: what :func:`restore` needs, addressed by :attr:`digest`."""

    digest: str
    key: str
    created: float
    objects: dict[str, dict[str, Any]]
    rng: dict[str, Any] | None
    blobs: dict[str, int]
    stats: CheckpointStats
    size: int  # bytes of the manifest blob itself
    locals: dict[str, Any] | None = None  # encoded loop-carried variables (None: not captured)
    grads: dict[str, Any] | None = None  # encoded .grad tensors per module (None: not captured)

    @property
    def object_names(self) -> list[str]:
        """Names of the checkpointed objects."""
        return list(self.objects)

    def to_json(self) -> dict[str, Any]:
        """The manifest document (everything but the digest and size, which derive from it)."""
        doc = {
            "format": FORMAT,
            "key": self.key,
            "created": self.created,
            "objects": self.objects,
            "rng": self.rng,
            "blobs": self.blobs,
            "stats": self.stats.__dict__.copy(),
        }
        return with_optional(doc, self.locals, self.grads)

    @classmethod
    def from_json(cls, digest: str, raw: bytes) -> Manifest:
        """Parse and validate a manifest blob; raise :class:`CheckpointUnavailable` if invalid."""
        try:
            doc = json.loads(raw)
            if not isinstance(doc, dict) or doc.get("format") != FORMAT:
                fmt = doc.get("format") if isinstance(doc, dict) else None
                raise CheckpointUnavailable(
                    f"object {digest} is not a {FORMAT} manifest (format {fmt!r})", digest=digest
                )
            blobs = {str(k): int(v) for k, v in doc["blobs"].items()}
            for blob in blobs:
                parse_digest(blob)
            return cls(
                digest=digest,
                key=str(doc["key"]),
                created=float(doc["created"]),
                objects=dict(doc["objects"]),
                rng=doc.get("rng"),
                blobs=blobs,
                stats=CheckpointStats.from_json(doc["stats"]),
                size=len(raw),
                locals=_optional_dict(doc.get("locals")),
                grads=_optional_dict(doc.get("grads")),
            )
        except CheckpointUnavailable:
            raise
        except (ValueError, KeyError, TypeError, AttributeError, ObjectStoreError) as exc:
            raise CheckpointUnavailable(
                f"checkpoint manifest {digest} is malformed: {exc!r}", digest=digest
            ) from exc


def with_optional(
    doc: dict[str, Any], locals: dict[str, Any] | None, grads: dict[str, Any] | None
) -> dict[str, Any]:
    """Add the optional parts to a manifest document (absent ones stay out of it, so a
    checkpoint without them is byte-identical to one written before they existed)."""
    if locals is not None:
        doc["locals"] = locals
    if grads is not None:
        doc["grads"] = grads
    return doc


def _optional_dict(value: Any) -> dict[str, Any] | None:
    if value is None:
        return None
    if not isinstance(value, dict):
        raise TypeError(f"expected an object, got {type(value).__name__}")
    return value


def read_blob(store: ObjectStore, digest: str, what: str = "blob") -> bytes:
    """``store.get`` that turns every way a blob can be unavailable into CheckpointUnavailable."""
    try:
        return store.get(digest)
    except (ObjectStoreError, OSError) as exc:
        raise CheckpointUnavailable(f"checkpoint {what} unavailable: {exc}", digest=digest) from exc


def load_manifest(store: ObjectStore, digest: str) -> Manifest:
    """Read and validate the manifest stored under ``digest``."""
    return Manifest.from_json(digest, read_blob(store, digest, "manifest"))
