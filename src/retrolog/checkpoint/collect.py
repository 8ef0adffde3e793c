"""Garbage collection and disk usage of the object store, from the live manifests."""

from __future__ import annotations

import warnings
from collections.abc import Iterable

from retrolog._warn import RetrologWarning
from retrolog.checkpoint.codec import iter_blob_refs
from retrolog.checkpoint.errors import CheckpointUnavailable
from retrolog.checkpoint.manifest import load_manifest
from retrolog.objects.store import ObjectStore


def reachable(store: ObjectStore, manifest_digests: Iterable[str]) -> dict[str, int]:
    """Every blob reachable from the manifests (the manifests included), with its size.

    Unreadable manifests are skipped with a warning: their blobs are unusable anyway. Any other
    error (e.g. the network) propagates, so :func:`gc` never sweeps on a partial mark.
    """
    live: dict[str, int] = {}
    for digest in dict.fromkeys(manifest_digests):
        try:
            manifest = load_manifest(store, digest)
            blobs = dict(manifest.blobs)
            # The blob table is authoritative; also walk the trees in case it were incomplete.
            for tree in (manifest.objects, manifest.rng, manifest.locals, manifest.grads):
                for ref, _lib in iter_blob_refs(tree):
                    blobs.setdefault(ref, -1)
        except (CheckpointUnavailable, ValueError, KeyError, TypeError, AttributeError) as exc:
            warnings.warn(
                f"retrolog: skipping unreadable manifest {digest}: {exc}",
                RetrologWarning,
                stacklevel=2,
            )
            continue
        live[digest] = manifest.size
        live.update(blobs)
    return live


def usage(store: ObjectStore, manifest_digests: Iterable[str]) -> int:
    """Unique bytes referenced by the manifests (blobs shared between them counted once)."""
    total = 0
    for digest, size in reachable(store, manifest_digests).items():
        total += size if size >= 0 else store.size(digest)
    return total


def gc(
    store: ObjectStore, live_manifest_digests: Iterable[str], *, dry_run: bool = False
) -> tuple[int, int]:
    """Mark and sweep: delete every blob not reachable from the live manifests.

    Returns ``(blobs_removed, bytes_freed)`` (what would be removed, with ``dry_run``). Must not
    run while a recording process writes to the same store: a checkpoint being written has no
    manifest yet, so its new blobs look unreachable. Stale temporary files of a local store
    (older than an hour) are removed too.
    """
    live = reachable(store, live_manifest_digests)
    removed = freed = 0
    for digest in list(store.iter_digests()):
        if digest in live:
            continue
        try:
            size = store.size(digest)
        except KeyError:  # ObjectNotFoundError: deleted concurrently
            continue
        if not dry_run:
            store.delete(digest)
        removed += 1
        freed += size
    remove_stale = getattr(store, "remove_stale_temp", None)
    if callable(remove_stale) and not dry_run:
        remove_stale()
    return removed, freed
