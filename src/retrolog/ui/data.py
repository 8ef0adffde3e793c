"""The run page's data card (``retrolog.data``): the other runs to compare with, and the diff."""

from __future__ import annotations

from typing import Any

from ..relational.data_versions import diff_data, run_data
from ..store import views
from ..store.runs import run_key
from .db import Reader


def data_view(reader: Reader, run_id: str, against: str) -> dict[str, Any]:
    """This run's data versions, the runs that recorded data (newest first, at most 200) and,
    when ``against`` names one of them, the per-name diff (with the files that differ)."""
    keys = dict(views.runs_with_data(reader, 200))
    own = run_key(reader, run_id)
    mine = run_data(reader, own, manifest=True) if own is not None else []
    diff = None
    if against in keys and against != run_id:
        diff = {
            "against": against,
            "rows": diff_data(mine, run_data(reader, keys[against], manifest=True)),
        }
    others = [{"value": rid, "label": rid} for rid in keys if rid != run_id]
    return {"run_id": run_id, "versions": mine, "others": others, "diff": diff}
