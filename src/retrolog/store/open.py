"""Opening stores: which implementation serves a URL.

The factories live here, apart from the implementations they choose between (``lite.py``: the
stdlib SQLite store; ``store.py``: the SQLAlchemy store), so neither implementation imports the
other. A project's store, with crash recovery first, is opened by ``project.open_project_db``.
"""

from __future__ import annotations

import atexit
import threading
from collections import OrderedDict
from typing import TYPE_CHECKING

from .lite import Database, LiteStore

if TYPE_CHECKING:
    from .store import Store

_shared: OrderedDict[str, Store] = OrderedDict()
_shared_lock = threading.Lock()
MAX_SHARED = 8  # stores kept open per process; the least recently used one beyond is closed


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
    every query), closed at exit. At most ``MAX_SHARED`` stay open: a process that queries many
    projects (a notebook, a test session) would otherwise keep every pool's files open."""
    evicted = []
    with _shared_lock:
        store = _shared.get(url)
        if store is None:
            from .store import Store

            if not _shared:
                atexit.register(_close_shared)
            store = Store(url)
            _shared[url] = store
            while len(_shared) > MAX_SHARED:
                evicted.append(_shared.popitem(last=False)[1])
        else:
            _shared.move_to_end(url)
    for old in evicted:  # a query still running on it keeps its connection until it ends
        old.dispose()
    return store


def _close_shared() -> None:
    """Close pooled connections at exit (a server database would otherwise see them dropped,
    and psycopg warns about connections deleted while open)."""
    with _shared_lock:
        for store in _shared.values():
            store.dispose()
