"""Blob store on any fsspec filesystem (S3, GCS, Azure, memory, SFTP, ...).

Same layout and digests as :class:`~retrolog.objects.store.LocalObjectStore`. On object stores a
PUT becomes visible only once complete, so blobs are written directly under their real name; on
filesystems with real directories (anything not listed in ``_OBJECT_PROTOCOLS``) the blob goes to
a temporary name first and is then moved, as locally. Either way ``get`` verifies the hash.

Several processes share one bucket (writers on many machines, ``gc`` in another), so no answer
about existence comes from fsspec's listings cache: it is dropped before each check, otherwise a
writer could skip uploading a blob another process had just deleted. Transient failures (HTTP
5xx, throttling, dropped connections) are retried by the filesystem's own client (botocore's
retry modes and s3fs's retries for S3; ``storage_options`` or ``AWS_MAX_ATTEMPTS`` tune them);
what still fails reaches the caller, and a blob is never reported present unless it is.

Credentials, region and endpoint come from the usual places of the filesystem's client (for S3:
``AWS_ACCESS_KEY_ID``, ``AWS_SECRET_ACCESS_KEY``, ``AWS_DEFAULT_REGION``, ``AWS_ENDPOINT_URL`` for
MinIO or another S3-compatible server, ``~/.aws/``), so ``RETROLOG_OBJECTS=s3://bucket/prefix``
is all retrolog itself needs.
"""

from __future__ import annotations

import contextlib
import posixpath
import threading
import uuid
from collections.abc import Callable, Iterator, Mapping
from concurrent.futures import Future, ThreadPoolExecutor
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
        _survive_interpreter_shutdown(self.fs)

    def __repr__(self) -> str:
        return f"FsspecObjectStore({self.url!r})"

    def _path(self, digest: str) -> str:
        shard, rest = shard_path(parse_digest(digest))
        return f"{self.root}/{shard}/{rest}"

    def put(self, data: bytes, *, digest: str | None = None) -> str:
        """Upload ``data`` unless a blob of that digest and size is already there."""
        digest = digest or digest_bytes(data)
        path = self._path(digest)
        self._forget(path)
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

    def put_many(self, blobs: Mapping[str, bytes]) -> None:
        """Upload each blob (an object store's writes are durable one by one)."""
        for digest, data in blobs.items():
            self.put(data, digest=digest)

    def get(self, digest: str) -> bytes:
        """Download a blob and verify its hash."""
        try:
            data = self.fs.cat_file(self._path(digest))
        except FileNotFoundError:
            raise ObjectNotFoundError(digest) from None
        return verify(digest, bytes(data))

    def has(self, digest: str) -> bool:
        """Whether the blob exists (asked of the store, not of a cached listing)."""
        path = self._path(digest)
        self._forget(path)
        return bool(self.fs.exists(path))

    def _forget(self, path: str) -> None:
        """Drop cached listings of ``path`` and its shard, so the store itself answers."""
        with contextlib.suppress(Exception):  # a filesystem without a cache has nothing to drop
            self.fs.invalidate_cache(posixpath.dirname(path))

    def delete(self, digest: str) -> None:
        """Remove the blob if present."""
        with contextlib.suppress(FileNotFoundError):
            self.fs.rm_file(self._path(digest))

    def size(self, digest: str) -> int:
        """The blob's size in bytes."""
        path = self._path(digest)
        self._forget(path)
        try:
            return int(self.fs.size(path))
        except FileNotFoundError:
            raise ObjectNotFoundError(digest) from None

    def iter_digests(self) -> Iterator[str]:
        """List the store (one recursive listing) and yield well-formed blob names only."""
        with contextlib.suppress(Exception):
            self.fs.invalidate_cache(self.root)
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


class _ThreadPerCall(ThreadPoolExecutor):
    """An executor that runs each call on a new thread, even while the interpreter shuts down.

    asyncio's default executor (where aiohttp resolves host names) refuses new work once the
    interpreter has begun to exit, and that is exactly when a run's last checkpoints are uploaded
    (the writer drains its queue at exit): every S3 write of a short run failed with "cannot
    schedule new futures after interpreter shutdown". The calls are rare (one per connection).
    """

    def submit(self, fn: Callable[..., Any], /, *args: Any, **kwargs: Any) -> Future[Any]:
        future: Future[Any] = Future()

        def work() -> None:
            if not future.set_running_or_notify_cancel():
                return
            try:
                result = fn(*args, **kwargs)
            except BaseException as exc:  # handed to the awaiting coroutine
                future.set_exception(exc)
            else:
                future.set_result(result)

        threading.Thread(target=work, name="retrolog-fsspec-call", daemon=True).start()
        return future


def _survive_interpreter_shutdown(fs: Any) -> None:
    """Give an async filesystem's event loop an executor that still works at exit."""
    loop = getattr(fs, "loop", None) if getattr(fs, "async_impl", False) else None
    if loop is None or isinstance(getattr(loop, "_default_executor", None), _ThreadPerCall):
        return
    with contextlib.suppress(Exception):  # not an asyncio loop: nothing to adapt
        loop.set_default_executor(_ThreadPerCall(max_workers=1))
