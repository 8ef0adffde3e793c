"""The run page's data card (``retrolog.data``): the other runs to compare with, and the diff."""

from __future__ import annotations

from typing import Any

from ..relational.data_versions import diff_data, run_data
from .db import Reader


class _Fetch:
    """``Reader.rows`` as the ``fetch`` that relational/data_versions.py reads through."""

    def __init__(self, reader: Reader) -> None:
        self._reader = reader

    def fetch(self, sql: str, params: dict[str, Any] | None = None) -> list[Any]:
        return self._reader.rows(sql, params)


def data_view(reader: Reader, run_id: str, against: str) -> dict[str, Any]:
    """This run's data versions, the runs that recorded data (newest first, at most 200) and,
    when ``against`` names one of them, the per-name diff (with the files that differ)."""
    rows = reader.rows(
        "SELECT r.run_id, r.id FROM runs r WHERE r.id IN (SELECT DISTINCT run FROM data_versions) "
        "ORDER BY r.run_id DESC LIMIT 200"
    )
    keys = {rid: int(key) for rid, key in rows}
    own = reader.rows("SELECT id FROM runs WHERE run_id = :r", {"r": run_id})
    mine = run_data(_Fetch(reader), int(own[0][0]), manifest=True) if own else []
    diff = None
    if against in keys and against != run_id:
        diff = {
            "against": against,
            "rows": diff_data(mine, run_data(_Fetch(reader), keys[against], manifest=True)),
        }
    others = [{"value": rid, "label": rid} for rid in keys if rid != run_id]
    return {"run_id": run_id, "versions": mine, "others": others, "diff": diff}
