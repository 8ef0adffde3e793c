"""Contract of the content-addressed object stores (local directory and fsspec memory://)."""

from __future__ import annotations

import hashlib
import os
import uuid
from pathlib import Path

import pytest

from retrolog.objects import (
    CorruptObjectError,
    FsspecObjectStore,
    InvalidDigestError,
    LocalObjectStore,
    ObjectNotFoundError,
    ObjectStore,
    digest_bytes,
    open_object_store,
)


@pytest.fixture(params=["local", "memory"])
def store(request: pytest.FixtureRequest, tmp_path: Path) -> ObjectStore:
    if request.param == "local":
        return LocalObjectStore(tmp_path / "objects")
    return FsspecObjectStore(f"memory://retrolog-test-{uuid.uuid4().hex}/objects")


def test_put_get_roundtrip_and_digest_is_sha256(store: ObjectStore) -> None:
    digest = store.put(b"hello")
    assert digest == "sha256:" + hashlib.sha256(b"hello").hexdigest()
    assert store.get(digest) == b"hello"
    assert store.has(digest)
    assert store.size(digest) == 5
    assert isinstance(store, ObjectStore)


def test_put_is_idempotent_and_listing_has_each_blob_once(store: ObjectStore) -> None:
    a = store.put(b"a" * 100)
    assert store.put(b"a" * 100) == a
    b = store.put(b"")
    assert sorted(store.iter_digests()) == sorted([a, b])


def test_delete_and_missing(store: ObjectStore) -> None:
    digest = store.put(b"x")
    store.delete(digest)
    store.delete(digest)  # absent: no error
    assert not store.has(digest)
    with pytest.raises(ObjectNotFoundError, match="not in the store"):
        store.get(digest)
    with pytest.raises(ObjectNotFoundError):
        store.size(digest)
    assert list(store.iter_digests()) == []


@pytest.mark.parametrize(
    "bad", ["", "sha256:zz", "sha256:" + "0" * 63, "md5:" + "0" * 32, "../etc"]
)
def test_invalid_digests_never_become_paths(store: ObjectStore, bad: str) -> None:
    with pytest.raises(InvalidDigestError):
        store.get(bad)
    with pytest.raises(InvalidDigestError):
        store.has(bad)


def test_local_layout_is_sharded(tmp_path: Path) -> None:
    store = LocalObjectStore(tmp_path)
    digest = store.put(b"payload")
    hexd = digest.split(":")[1]
    assert (tmp_path / hexd[:2] / hexd[2:]).read_bytes() == b"payload"


def test_local_corrupt_blob_is_detected(tmp_path: Path) -> None:
    store = LocalObjectStore(tmp_path)
    digest = store.put(b"payload")
    hexd = digest.split(":")[1]
    (tmp_path / hexd[:2] / hexd[2:]).write_bytes(b"paylaod")
    with pytest.raises(CorruptObjectError, match="corrupt") as info:
        store.get(digest)
    assert info.value.digest == digest
    assert info.value.actual == digest_bytes(b"paylaod")


def test_memory_corrupt_blob_is_detected() -> None:
    store = FsspecObjectStore(f"memory://retrolog-test-{uuid.uuid4().hex}")
    digest = store.put(b"payload")
    store.fs.pipe_file(store._path(digest), b"tampered")
    with pytest.raises(CorruptObjectError):
        store.get(digest)


def test_truncated_blob_under_real_name_is_rewritten_by_put(tmp_path: Path) -> None:
    store = LocalObjectStore(tmp_path)
    digest = store.put(b"0123456789")
    hexd = digest.split(":")[1]
    (tmp_path / hexd[:2] / hexd[2:]).write_bytes(b"")  # e.g. power loss without fsync
    assert store.put(b"0123456789") == digest
    assert store.get(digest) == b"0123456789"


def test_leftover_temp_file_is_ignored_and_cleaned(tmp_path: Path) -> None:
    store = LocalObjectStore(tmp_path)
    data = b"complete blob"
    digest = digest_bytes(data)
    hexd = digest.split(":")[1]
    shard = tmp_path / hexd[:2]
    shard.mkdir()
    leftover = shard / f".{hexd[2:]}.{uuid.uuid4().hex}.tmp"
    leftover.write_bytes(data[:4])  # a writer crashed half-way
    (tmp_path / "README").write_text("not a blob")
    assert list(store.iter_digests()) == []
    assert not store.has(digest)
    assert store.put(data) == digest
    assert list(store.iter_digests()) == [digest]
    assert store.remove_stale_temp(max_age_seconds=3600) == 0  # too young: may be in progress
    old = 1_000_000_000
    os.utime(leftover, (old, old))
    assert store.remove_stale_temp(max_age_seconds=3600) == 1
    assert not leftover.exists()


def test_crash_during_write_leaves_no_blob_under_real_name(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    store = LocalObjectStore(tmp_path)

    def crash(src: object, dst: object) -> None:
        raise OSError("simulated crash before rename")

    monkeypatch.setattr(os, "replace", crash)
    with pytest.raises(OSError, match="simulated"):
        store.put(b"data")
    monkeypatch.undo()
    assert list(store.iter_digests()) == []
    assert [p for p in tmp_path.rglob("*") if p.is_file()] == []  # temp file removed too


def test_open_object_store_dispatch(tmp_path: Path) -> None:
    assert isinstance(open_object_store(tmp_path / "a"), LocalObjectStore)
    assert isinstance(open_object_store(str(tmp_path / "b")), LocalObjectStore)
    local = open_object_store(f"file://{tmp_path / 'c'}")
    assert isinstance(local, LocalObjectStore)
    assert local.root == tmp_path / "c"
    remote = open_object_store(f"memory://retrolog-test-{uuid.uuid4().hex}")
    assert isinstance(remote, FsspecObjectStore)
    assert not remote.atomic_rename  # object stores PUT atomically


def test_fsspec_store_with_rename_on_a_real_filesystem(tmp_path: Path) -> None:
    store = FsspecObjectStore(f"file://{tmp_path}")
    assert store.atomic_rename
    digest = store.put(b"via fsspec")
    assert store.get(digest) == b"via fsspec"
    assert list(store.iter_digests()) == [digest]
    # Same layout as the local store: both can read each other's blobs.
    assert LocalObjectStore(tmp_path).get(digest) == b"via fsspec"


def test_put_with_a_precomputed_digest(store: ObjectStore) -> None:
    data = b"hashed once"
    assert store.put(data, digest=digest_bytes(data)) == digest_bytes(data)
    assert store.get(digest_bytes(data)) == data
    wrong = digest_bytes(b"something else")
    store.put(data, digest=wrong)  # a lying caller gets a blob that reads as corrupt
    with pytest.raises(CorruptObjectError):
        store.get(wrong)
