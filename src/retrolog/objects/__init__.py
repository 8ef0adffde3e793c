"""Content-addressed blob store for checkpoints: local directory by default, fsspec for URLs."""

from retrolog.objects.fsspec_store import FsspecObjectStore
from retrolog.objects.open import open_object_store
from retrolog.objects.store import (
    CorruptObjectError,
    InvalidDigestError,
    LocalObjectStore,
    ObjectNotFoundError,
    ObjectStore,
    ObjectStoreError,
    digest_bytes,
    parse_digest,
)

__all__ = [
    "CorruptObjectError",
    "FsspecObjectStore",
    "InvalidDigestError",
    "LocalObjectStore",
    "ObjectNotFoundError",
    "ObjectStore",
    "ObjectStoreError",
    "digest_bytes",
    "open_object_store",
    "parse_digest",
]
