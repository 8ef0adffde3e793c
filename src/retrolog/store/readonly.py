"""The one read-only policy for SQL that users write (``retrolog.query``, ``--where``), for SQLite.

An authorizer that allows only what a SELECT needs: reading, functions (minus those that touch
files or load code) and recursive CTEs. No writes, ATTACH, PRAGMA or schema changes. Kept free of
pandas and SQLAlchemy so the replay coordinator can use it without their import cost.
"""

from __future__ import annotations

import sqlite3

ALLOWED_ACTIONS = frozenset(
    {
        sqlite3.SQLITE_SELECT,
        sqlite3.SQLITE_READ,
        sqlite3.SQLITE_FUNCTION,
        getattr(sqlite3, "SQLITE_RECURSIVE", 33),
    }
)
DENIED_FUNCTIONS = frozenset({"load_extension", "readfile", "writefile", "edit", "fts3_tokenizer"})


def authorize_read_only(
    action: int, arg1: str | None, arg2: str | None, _db: str | None, _trigger: str | None
) -> int:
    """``sqlite3.Connection.set_authorizer`` callback: deny everything a SELECT does not need."""
    if action not in ALLOWED_ACTIONS:
        return sqlite3.SQLITE_DENY
    if action == sqlite3.SQLITE_FUNCTION and (arg2 or "").lower() in DENIED_FUNCTIONS:
        return sqlite3.SQLITE_DENY
    return sqlite3.SQLITE_OK
