"""Which run a user means: an id, a name (``retrolog.name``) or a unique id prefix, and the
shortest unique prefixes ``retrolog runs`` shows (as git abbreviates commits)."""

from __future__ import annotations

import os
from collections.abc import Iterable
from typing import Any

from ..errors import NotFoundError, StoreError
from ..store import query as reads

MIN_PREFIX = 8  # characters of a run id `retrolog runs` shows at least (40 bits of its time)


def find_run(store: Any, run_id: str) -> Any:
    """The runs row whose id is ``run_id``, whose name is ``run_id`` (``retrolog.name``), or whose
    id starts with it (ids are upper case; a lower-case prefix is accepted), in that order.
    NotFoundError (a LookupError) if none, or if the prefix is ambiguous: the message lists the
    candidates."""
    rows = reads.run_by_id(store, run_id)
    if not rows and run_id:
        rows = _named(store, run_id)
    for prefix in dict.fromkeys((run_id, run_id.upper())):
        if rows or not prefix:
            break
        rows = reads.runs_by_prefix(store, prefix)
    if not rows:
        raise NotFoundError(f"no run {run_id!r} (see `retrolog runs`)")
    if len(rows) > 1:
        ids = [row._mapping["run_id"] for row in rows]
        short = unique_prefixes(ids)
        listed = ", ".join(short[i] for i in ids[:8]) + (", ..." if len(ids) > 8 else "")
        raise NotFoundError(
            f"run id prefix {run_id!r} is ambiguous: it matches {len(ids)} runs ({listed}); "
            "give more characters"
        )
    return rows[0]


def _named(store: Any, name: str) -> list[Any]:
    """The run called ``name`` (a store from before run names has none)."""
    try:
        return list(reads.runs_named(store, name))
    except StoreError:
        return []


def unique_prefixes(ids: Iterable[str], minimum: int = MIN_PREFIX) -> dict[str, str]:
    """Each id's shortest prefix (at least ``minimum`` characters) that no other id starts with,
    as git abbreviates commits: neighbours in sorted order are the only ids that can clash."""
    ordered = sorted(set(ids))
    out: dict[str, str] = {}
    for index, run_id in enumerate(ordered):
        need = minimum
        for other in ordered[max(index - 1, 0) : index + 2]:
            if other != run_id:
                need = max(need, len(os.path.commonprefix([run_id, other])) + 1)
        out[run_id] = run_id[:need]
    return out
