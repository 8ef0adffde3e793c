"""Metadata store: schema, writes, reads (SQLAlchemy Core; SQLite WAL by default)."""

from .store import Store

__all__ = ["Store"]
