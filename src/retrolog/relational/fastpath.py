"""A numeric fast path of ``dataframe`` for SQLite stores (see ``frames.dataframe``).

It reads the log rows of the requested names and the loop rows of the store as integer/float
columns through the standard library's ``sqlite3`` cursor (no strings per row), then deduplicates,
walks the loop ancestry and builds the per-coordinate frame with numpy on int64 keys. It returns
``None`` whenever the general path is needed (non-numeric values, names clashing with loop
names, ...), so its results are those of ``frames._pivot_nested`` by construction.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import numpy as np
import pandas as pd

from ..store import Store
from ..store.columnar import (
    CODE_BITS,
    KEY_BITS,
    MAX_CTX,
    NAME_BITS,
    SEQ_SHIFT,
    CachedRows,
    StoreRows,
    read_numeric,
)

# sorted loop keys (run << 32 | ctx_id), parent keys, iterations, name codes; the names
_LoopTable = tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray, list[str]]


def nested_frames(
    store: Store, names: Sequence[str], reserved: Sequence[str]
) -> tuple[pd.DataFrame | None, pd.DataFrame] | None:
    """``(nested_frame, run_values)`` as ``frames.dataframe`` builds them, or ``None`` (general path)."""
    if not store.is_sqlite or not names or len(names) >= (1 << NAME_BITS):
        return None
    wanted = set(reserved) | set(names)
    return read_numeric(store, lambda source: _compute(source, list(names), wanted))


def _compute(
    source: StoreRows | CachedRows, names: list[str], reserved: set[str]
) -> tuple[pd.DataFrame | None, pd.DataFrame] | None:
    parts = []
    for code, name in enumerate(names):
        part = source.logs(name)
        if len(part) and bool((part["m"] >= 0).all()):
            part["m"] |= code << 2
        parts.append(part)
    rows = np.concatenate(parts)
    if len(rows) == 0 or bool((rows["k"] < 0).any()) or bool((rows["m"] < 0).any()):
        return None  # nothing logged, or ids beyond the packed ranges
    key = rows["k"]
    meta = rows["m"]
    name_code = (meta >> 2) & ((1 << NAME_BITS) - 1)
    sort_key = meta >> SEQ_SHIFT  # recorded << 40 | seq
    # sort_values(["recorded", "seq"], stable) + drop_duplicates([run, ctx_id, name], keep=last)
    order = np.lexsort((sort_key, name_code, key))  # stable: ties keep the fetch order
    k_sorted = key[order]
    n_sorted = name_code[order]
    last = np.ones(len(order), dtype=bool)
    last[:-1] = (k_sorted[1:] != k_sorted[:-1]) | (n_sorted[1:] != n_sorted[:-1])
    keep = order[last]  # survivors, sorted by (run, ctx_id, name)
    vcode = meta[keep] & 3
    if bool((vcode == 2).any()):
        return None  # non-numeric cells: the general path decodes them
    is_int = bool((vcode == 1).all())
    s_key = key[keep]
    s_name = name_code[keep]
    s_value = rows["v"][keep]
    s_rank_key = sort_key[keep]
    s_run = s_key >> KEY_BITS
    s_ctx = s_key & MAX_CTX
    run_level = s_ctx == 0
    names_arr = np.array(names, dtype=object)
    value_dtype = "int64" if is_int else "float64"
    run_values = pd.DataFrame(
        {
            "run": s_run[run_level],
            "name": names_arr[s_name[run_level]],
            "value": s_value[run_level].astype(value_dtype),
        }
    )
    if bool(run_level.all()):
        return None, run_values
    nested = ~run_level
    n_key = s_key[nested]
    n_name = s_name[nested]
    n_value = s_value[nested]
    # rank of each survivor in the (recorded, seq, fetch order) order of the general path
    n_pos = keep[nested]
    rank = np.empty(len(n_key), dtype=np.int64)
    rank[np.lexsort((n_pos, s_rank_key[nested]))] = np.arange(len(n_key))
    starts = np.flatnonzero(np.r_[True, n_key[1:] != n_key[:-1]])
    coord_key = n_key[starts]
    coord_rank = np.minimum.reduceat(rank, starts)
    coord_index = np.repeat(np.arange(len(starts)), np.diff(np.r_[starts, len(n_key)]))
    n_coords = len(coord_key)

    loops = _sorted_loops(source.loops(coord_key >> KEY_BITS))
    if loops is None:
        return None
    loop_key, loop_parent, loop_iter, loop_code, loop_names = loops
    if reserved & set(loop_names):
        return None
    coord_order = np.argsort(coord_rank, kind="stable")
    columns: dict[int, np.ndarray] = {}
    present: dict[int, np.ndarray] = {}
    depth_of: dict[int, int] = {}
    current = coord_key
    depth = 0
    while True:
        pos = np.searchsorted(loop_key, current)
        pos_c = np.minimum(pos, max(len(loop_key) - 1, 0))
        found = (
            (loop_key[pos_c] == current) & (current & MAX_CTX != 0)
            if len(loop_key)
            else np.zeros(n_coords, dtype=bool)
        )
        codes = np.where(found, loop_code[pos_c] if len(loop_key) else -1, -1)
        if bool(found.any()):
            # loop names in order of first appearance (general path: keys in recorded/seq order)
            ordered = codes[coord_order]
            ordered = ordered[ordered >= 0]
            uniq, first = np.unique(ordered, return_index=True)
            for code in uniq[np.argsort(first, kind="stable")].tolist():
                mask = codes == code
                if code not in columns:
                    columns[code] = np.zeros(n_coords, dtype=np.int64)
                    present[code] = np.zeros(n_coords, dtype=bool)
                columns[code][mask] = loop_iter[pos_c[mask]]
                present[code] |= mask
                depth_of[code] = max(depth_of.get(code, 0), depth)
        parent = np.where(found, loop_parent[pos_c] if len(loop_key) else 0, 0)
        if not bool((parent & MAX_CTX != 0).any()):
            break
        current = parent
        depth += 1
    loop_order = sorted(depth_of, key=lambda code: -depth_of[code])
    data: dict[str, Any] = {"run": coord_key >> KEY_BITS}
    for code in loop_order:
        if bool(present[code].all()):
            data[loop_names[code]] = columns[code]
        else:
            data[loop_names[code]] = pd.arrays.IntegerArray(columns[code], ~present[code])
    name_codes = np.unique(n_name).tolist()
    full = len(n_key) == n_coords * len(name_codes)  # pivot without holes keeps int64
    for code in sorted(name_codes, key=lambda c: names[c]):
        mask = n_name == code
        if is_int and full:
            column = np.zeros(n_coords, dtype=np.int64)
        else:
            column = np.full(n_coords, np.nan)
        column[coord_index[mask]] = n_value[mask]
        data[names[code]] = column
    data["_order"] = coord_key & MAX_CTX
    return pd.DataFrame(data), run_values


def _sorted_loops(found: tuple[np.ndarray, list[str]] | None) -> _LoopTable | None:
    if found is None:
        return None
    table, loop_names = found
    if len(loop_names) >= (1 << CODE_BITS):
        return None
    if bool((table["k"] < 0).any()) or bool((table["p"] < 0).any()):
        return None
    order = np.argsort(table["k"], kind="stable")
    return (
        table["k"][order],
        (table["k"][order] & ~MAX_CTX) | (table["p"][order] >> CODE_BITS),
        table["i"][order],
        table["p"][order] & ((1 << CODE_BITS) - 1),
        loop_names,
    )
