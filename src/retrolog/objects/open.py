"""Which object store a path or URL names: the factory, apart from the implementations it picks.

A local path or ``file://`` URL gives :class:`LocalObjectStore`; any other URL (``s3://``,
``memory://``, ...) gives :class:`FsspecObjectStore`, imported only then (fsspec is heavy).
"""

from __future__ import annotations

from pathlib import Path

from .store import LocalObjectStore, ObjectStore


def open_object_store(path_or_url: Path | str) -> ObjectStore:
    """Open the store at a local path (or ``file://`` URL) or at any fsspec URL (``s3://...``)."""
    if isinstance(path_or_url, Path):
        return LocalObjectStore(path_or_url)
    text = str(path_or_url)
    if text.startswith("file://"):
        return LocalObjectStore(text[len("file://") :])
    if "://" in text:
        from .fsspec_store import FsspecObjectStore

        return FsspecObjectStore(text)
    return LocalObjectStore(text)
