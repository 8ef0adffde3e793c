"""Bound ``IN (...)`` lists and the read interface the store's query modules take.

Every list of values a query filters on goes through :func:`in_list` (or :func:`fetch_in`,
which also splits long lists into chunks), so values are always bound parameters, never
formatted into SQL. Stdlib only: the replay coordinator and recording runs import it.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any, Protocol

Params = Mapping[str, Any]
CHUNK = 500  # values per IN list: well under SQLite's and psycopg's parameter limits


class Fetches(Protocol):
    """What a read needs of a store: run one of our SELECTs with bound ``:name`` values."""

    def fetch(self, sql: str, params: Params | None = None) -> list[Any]: ...


class Reads(Fetches, Protocol):
    """A store whose engine a query may depend on (SQLite's skip-scans, PostgreSQL's windows)."""

    @property
    def is_sqlite(self) -> bool: ...


def in_list(prefix: str, items: Sequence[Any]) -> tuple[str, dict[str, Any]]:
    """``(":p0, :p1", {"p0": a, "p1": b})`` for an ``IN (...)`` list of bound values; an empty
    list gives ``NULL`` (``x IN (NULL)`` holds for no row)."""
    if not items:
        return "NULL", {}
    names = [f"{prefix}{i}" for i in range(len(items))]
    return ", ".join(":" + n for n in names), dict(zip(names, items))


def chunks(items: Sequence[Any], size: int = CHUNK) -> list[list[Any]]:
    """``items`` in lists of at most ``size``."""
    values = list(items)
    return [values[start : start + size] for start in range(0, len(values), size)]


def fetch_in(
    db: Fetches,
    sql: str,
    values: Sequence[Any],
    params: Params | None = None,
    chunk: int = CHUNK,
) -> list[Any]:
    """Rows of ``sql``, whose ``{in}`` marks where the bound list of ``values`` goes, run once
    per chunk of values (none when ``values`` is empty). ``sql`` is the caller's constant."""
    out: list[Any] = []
    for part in chunks(values, chunk):
        binds, bound = in_list("v", part)
        out.extend(db.fetch(sql.replace("{in}", binds), {**(params or {}), **bound}))
    return out
