"""put_many: a checkpoint's new blobs written as one durable batch (one sync, not one per blob)."""

from __future__ import annotations

import os
from pathlib import Path

from retrolog.objects import open_object_store
from retrolog.objects.store import LocalObjectStore, digest_bytes


def test_put_many_stores_every_blob_and_leaves_no_temporary_file(tmp_path: Path) -> None:
    store = LocalObjectStore(tmp_path / "objects")
    blobs = {digest_bytes(data): data for data in (os.urandom(n) for n in (1, 100, 70_000))}
    store.put_many(blobs)
    for digest, data in blobs.items():
        assert store.get(digest) == data
    assert sorted(store.iter_digests()) == sorted(blobs)
    assert not list((tmp_path / "objects").rglob("*.tmp"))


def test_put_many_keeps_good_blobs_and_rewrites_a_truncated_one(tmp_path: Path) -> None:
    store = LocalObjectStore(tmp_path / "objects")
    good, torn = b"a" * 1000, b"b" * 1000
    store.put(good)
    store.put(torn)
    torn_path = next(
        p for p in (tmp_path / "objects").rglob("*") if p.is_file() and p.read_bytes() == torn
    )
    torn_path.write_bytes(b"")  # a power loss before the data reached the disk
    good_path = next(
        p for p in (tmp_path / "objects").rglob("*") if p.is_file() and p.read_bytes() == good
    )
    mtime = good_path.stat().st_mtime_ns
    store.put_many({digest_bytes(good): good, digest_bytes(torn): torn})
    assert store.get(digest_bytes(torn)) == torn
    assert good_path.stat().st_mtime_ns == mtime


def test_put_many_on_an_fsspec_store(tmp_path: Path) -> None:
    store = open_object_store(f"memory://{tmp_path.name}/remote")
    blobs = {digest_bytes(b"x" * n): b"x" * n for n in (3, 4)}
    store.put_many(blobs)
    assert {d: store.get(d) for d in blobs} == blobs
