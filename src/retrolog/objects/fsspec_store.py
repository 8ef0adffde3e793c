"""Blob store on any fsspec filesystem (S3, GCS, Azure, memory, SFTP, ...).

Same layout and digests as :class:`~retrolog.objects.store.LocalObjectStore`. On object stores a
PUT becomes visible only once complete, so blobs are written directly under their real name; on
filesystems with real directories (anything not listed in ``_OBJECT_PROTOCOLS``) the blob goes to
a temporary name first and is then moved, as locally. Either way ``get`` verifies the hash.
"""

from __future__ import annotations

import contextlib
import posixpath
import uuid
from collections.abc import Iterator
from typing import Any

from retrolog.objects.store import (
    TEMP_SUFFIX,
    ObjectNotFoundError,
    digest_bytes,
    digest_from_parts,
    parse_digest,
    shard_path,
    verify,
)

_OBJECT_PROTOCOLS = frozenset({"s3", "s3a", "gs", "gcs", "az", "abfs", "abfss", "adl", "memory"})


class FsspecObjectStore:
    """Blobs under ``url`` on an fsspec filesystem; ``storage_options`` go to fsspec."""

    def __init__(self, url: str, *, atomic_rename: bool | None = None, **storage_options: Any):
        import fsspec.core

        self.url = url
        self.fs, root = fsspec.core.url_to_fs(url, **storage_options)
        self.root = root.rstrip("/")
        protocols = self.fs.protocol
        names = {protocols} if isinstance(protocols, str) else set(protocols)
        self.atomic_rename = (
            not (names & _OBJECT_PROTOCOLS) if atomic_rename is None else atomic_rename
        )

    def __repr__(self) -> str:
        return f"FsspecObjectStore({self.url!r})"

    def _path(self, digest: str) -> str:
        shard, rest = shard_path(parse_digest(digest))
        return f"{self.root}/{shard}/{rest}"

    def put(self, data: bytes, *, digest: str | None = None) -> str:
        """Upload ``data`` unless a blob of that digest and size is already there."""
        digest = digest or digest_bytes(data)
        path = self._path(digest)
        try:
            if self.fs.size(path) == len(data):
                return digest
        except FileNotFoundError:
            pass
        if not self.atomic_rename:
            self.fs.pipe_file(path, data)
            return digest
        parent = posixpath.dirname(path)
        self.fs.makedirs(parent, exist_ok=True)
        tmp = f"{parent}/.{posixpath.basename(path)}.{uuid.uuid4().hex}{TEMP_SUFFIX}"
        try:
            self.fs.pipe_file(tmp, data)
            self.fs.mv(tmp, path)
        except BaseException:
            with contextlib.suppress(OSError):
                self.fs.rm_file(tmp)
            raise
        return digest

    def get(self, digest: str) -> bytes:
        """Download a blob and verify its hash."""
        try:
            data = self.fs.cat_file(self._path(digest))
        except FileNotFoundError:
            raise ObjectNotFoundError(digest) from None
        return verify(digest, bytes(data))

    def has(self, digest: str) -> bool:
        """Whether the blob exists."""
        return bool(self.fs.exists(self._path(digest)))

    def delete(self, digest: str) -> None:
        """Remove the blob if present."""
        with contextlib.suppress(FileNotFoundError):
            self.fs.rm_file(self._path(digest))

    def size(self, digest: str) -> int:
        """The blob's size in bytes."""
        try:
            return int(self.fs.size(self._path(digest)))
        except FileNotFoundError:
            raise ObjectNotFoundError(digest) from None

    def iter_digests(self) -> Iterator[str]:
        """List the store (one recursive listing) and yield well-formed blob names only."""
        try:
            paths = self.fs.find(self.root)
        except FileNotFoundError:
            return
        root = self.fs._strip_protocol(self.root).rstrip("/")
        for path in paths:
            rel = path[len(root) :].lstrip("/") if path.startswith(root) else path
            parts = rel.split("/")
            if len(parts) == 2:
                digest = digest_from_parts(parts[0], parts[1])
                if digest is not None:
                    yield digest
