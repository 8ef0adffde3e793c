"""Mark-and-sweep garbage collection and unique-bytes usage."""

from __future__ import annotations

import uuid
from pathlib import Path

import numpy as np
import pytest

from retrolog.checkpoint import capture, gc, load_manifest, restore, usage, write_checkpoint
from retrolog.objects import FsspecObjectStore, LocalObjectStore, ObjectStore


@pytest.fixture(params=["local", "memory"])
def store(request: pytest.FixtureRequest, tmp_path: Path) -> ObjectStore:
    if request.param == "local":
        return LocalObjectStore(tmp_path / "objects", fsync=False)
    return FsspecObjectStore(f"memory://retrolog-gc-{uuid.uuid4().hex}")


def test_gc_keeps_exactly_what_live_manifests_reach(store: ObjectStore) -> None:
    shared = np.arange(1000, dtype=np.float64)  # in both checkpoints, stored once
    a = write_checkpoint(store, "a", capture({"w": shared, "x": np.zeros(10)}, rng=False))
    b = write_checkpoint(store, "b", capture({"w": shared, "x": np.ones(10)}, rng=False))
    orphan = store.put(b"not referenced by anything")
    assert len(set(store.iter_digests())) == 6  # 3 arrays + 2 manifests + orphan

    unique = sum(a.blobs.values()) + b.blobs[b.objects["x"]["state"]["$ndarray"]]
    assert usage(store, [a.digest, b.digest]) == unique + a.size + b.size
    assert usage(store, [a.digest, a.digest]) == sum(a.blobs.values()) + a.size

    assert gc(store, [a.digest, b.digest], dry_run=True) == (1, 26)
    assert store.has(orphan)
    removed, freed = gc(store, [b.digest])
    assert removed == 3  # orphan, manifest a, a's zeros
    assert freed == 26 + a.size + a.blobs[a.objects["x"]["state"]["$ndarray"]]
    assert set(store.iter_digests()) == {b.digest, *b.blobs}
    target = {"w": np.empty(1000), "x": np.empty(10)}
    restore(store, load_manifest(store, b.digest), target)
    assert np.array_equal(target["w"], shared) and np.array_equal(target["x"], np.ones(10))
    assert gc(store, [b.digest]) == (0, 0)


def test_unreadable_live_manifest_is_skipped_with_a_warning(store: ObjectStore) -> None:
    a = write_checkpoint(store, "a", capture({"x": np.zeros(3)}, rng=False))
    store.delete(a.digest)
    with pytest.warns(UserWarning, match="skipping unreadable manifest"):
        removed, _ = gc(store, [a.digest])
    assert removed == 1 and list(store.iter_digests()) == []


def test_gc_removes_stale_temp_files(tmp_path: Path) -> None:
    import os

    store = LocalObjectStore(tmp_path)
    shard = tmp_path / "ab"
    shard.mkdir()
    temp = shard / ".cdef.0123.tmp"
    temp.write_bytes(b"half")
    os.utime(temp, (1, 1))
    assert gc(store, []) == (0, 0)
    assert not temp.exists()
