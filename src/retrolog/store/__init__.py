"""Metadata store: schema, writes, reads (SQLAlchemy Core; SQLite WAL by default).

``Store`` is imported on first use: a recording process writing to an existing SQLite store uses
``store.lite.LiteStore`` and never needs SQLAlchemy; so does the replay coordinator. ``open_db``
(``store/open.py``) picks between the two.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from .open import open_db
    from .store import Store

__all__ = ["Store", "open_db"]


def __getattr__(name: str) -> Any:
    if name == "Store":
        from .store import Store

        return Store
    if name == "open_db":
        from .open import open_db

        return open_db
    raise AttributeError(f"module 'retrolog.store' has no attribute {name!r}")
