"""Opening stores: which implementation serves a URL.

The factories live here, apart from the implementations they choose between (``lite.py``: the
stdlib SQLite store; ``store.py``: the SQLAlchemy store), so neither implementation imports the
other. A project's store, with crash recovery first, is opened by ``project.open_project_db``.
"""

from __future__ import annotations

import atexit
import threading
from typing import TYPE_CHECKING

from .lite import Database, LiteStore

if TYPE_CHECKING:
    from .store import Store

_shared: dict[str, Store] = {}
_shared_lock = threading.Lock()


def open_db(url: str) -> Database:
    """The stdlib store when ``url`` is an existing SQLite store with a current schema (no
    SQLAlchemy import); the SQLAlchemy Store otherwise (first run, other databases)."""
    lite = LiteStore.open(url)
    if lite is not None:
        return lite
    from .store import Store

    return Store(url)


def shared_store(url: str) -> Store:
    """The SQLAlchemy store of ``url``, one per URL and process (its connection pool is reused by
    every query), closed at exit."""
    with _shared_lock:
        store = _shared.get(url)
        if store is None:
            from .store import Store

            if not _shared:
                atexit.register(_close_shared)
            store = Store(url)
            _shared[url] = store
    return store


def _close_shared() -> None:
    """Close pooled connections at exit (a server database would otherwise see them dropped,
    and psycopg warns about connections deleted while open)."""
    with _shared_lock:
        for store in _shared.values():
            store.dispose()
