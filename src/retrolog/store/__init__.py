"""Metadata store: schema, writes, reads (SQLAlchemy Core; SQLite WAL by default).

``Store`` is imported on first use: a recording process writing to an existing SQLite store uses
``store.lite.LiteStore`` and never needs SQLAlchemy; so does the replay coordinator.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from .store import Store

__all__ = ["Store"]


def __getattr__(name: str) -> Any:
    if name == "Store":
        from .store import Store

        return Store
    raise AttributeError(f"module 'retrolog.store' has no attribute {name!r}")
