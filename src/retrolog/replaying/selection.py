"""Which runs and iterations a replay works on: the rows ``--where`` selects from (run facts,
args, data versions, loop coordinates and values recorded per main iteration), evaluated by the
one ``--where`` implementation (``store.where``) without pandas."""

from __future__ import annotations

from collections.abc import Sequence
from typing import TYPE_CHECKING, Any

from ..record.values import from_cell
from ..store import planning as reads
from ..store.where import select_rows
from .codebase import VersionScript
from .layout import Reach
from .plan import RunPlan
from .rundata import RunData, Structures

if TYPE_CHECKING:
    from ..store.lite import Database

NOT_SELECTED = "no row of this run matches --where"


def select_coordinates(
    store: Database,
    plans: Sequence[RunPlan],
    runs: dict[str, RunData],
    structures: Structures,
    reaches: dict[str, Reach],
    where: str | None,
) -> dict[str, set[tuple[int, ...]]]:
    """Selected coordinates per run: () for a whole run, (main,) or (main, nested) iterations."""
    table: list[dict[str, Any]] = []
    levels: dict[str, str | None] = {}
    out: dict[str, set[tuple[int, ...]]] = {}
    by_run = data_columns(store, [runs[p.run_id].key for p in plans]) if where else {}
    for plan in plans:
        data = runs[plan.run_id]
        assert plan.version is not None
        main_name = data.main_loop
        base = {
            "run_id": data.run_id,
            "version": data.version,
            "script": data.script,
            **data.args,
            **by_run.get(data.key, {}),
        }
        rows: list[dict[str, Any]]
        if plan.level == "inner":
            inner_names = set(reaches[plan.run_id].loops) or data.nested_loops
            rows = [
                {
                    **base,
                    main_name: path[0][1],
                    path[1][0]: path[1][1],
                    "_coord": (path[0][1], path[1][1]),
                }
                for path in data.paths.values()
                if len(path) == 2 and path[0][0] == main_name and path[1][0] in inner_names
            ]
        elif data.main_ctx and main_name:
            rows = [{**base, main_name: i, "_coord": (i,)} for i in sorted(data.main_ctx)]
        else:
            rows = [{**base, "_coord": ()}]
        levels[data.run_id] = plan.level
        if where and data.main_ctx and main_name is not None:
            add_epoch_metrics(store, data, rows, main_name)
        table.extend(rows)
    chosen = select_rows(table, where, skip=("_coord",)) if where else range(len(table))
    for index in chosen:
        row = table[index]
        coord = () if levels[row["run_id"]] in ("prefix", "suffix") else tuple(row["_coord"])
        out.setdefault(row["run_id"], set()).add(coord)
    return out


def data_columns(store: Database, run_keys: Sequence[int]) -> dict[int, dict[str, str]]:
    """Per run key, its data versions as the columns ``runs()`` and ``dataframe()`` show
    (``data.<name>``: the digest's first hex digits, or "missing"), for ``--where``."""
    from ..record.data import SHORT
    from .datacheck import recorded_versions

    columns: dict[int, dict[str, str]] = {}
    for key, rows in recorded_versions(store, run_keys).items():
        for _run, name, _path, kind, digest, _algo, _manifest in rows:
            shown = "missing" if kind == "missing" else str(digest)[:SHORT]
            columns.setdefault(key, {})[f"data.{name}"] = shown
    return columns


def narrow_to_siblings(
    store: Database,
    data: RunData,
    vs: VersionScript,
    names: Sequence[str],
    coords: set[tuple[int, ...]],
) -> set[tuple[int, ...]]:
    """Keep the main iterations where the new statements can run: those in which the recorded
    neighbour of each (same block, nothing but simple statements between) logged
    (replaying/siblings.py). Unchanged when a statement has no such neighbour."""
    from .siblings import logged_iterations, sibling_names

    neighbours = sibling_names(vs.source, vs.lines, set(names)) if vs.lines else None
    if not neighbours:
        return coords
    ran = logged_iterations(store, data, sorted(set(neighbours)))
    return {c for c in coords if not c or c[0] in ran}


def check_where(store: Database, where: str) -> None:
    """Raise the ``--where`` error a bad clause would get, over the columns any run could have
    (facts, args, loop names, logged names), when there are no rows to filter."""
    columns = ["run_id", "version", "script", *reads.column_names(store)]
    select_rows([dict.fromkeys(columns)], where)


def add_epoch_metrics(
    store: Database, data: RunData, rows: list[dict[str, Any]], main_name: str
) -> None:
    """Add the values the run recorded at main-loop level to its rows, so --where can use them."""
    ctx_to_main = {ctx: i for i, ctx in data.main_ctx.items()}
    found = reads.main_loop_values(store, data.key)
    taken = {name for row in rows for name in row}
    values: dict[int, dict[str, Any]] = {}
    for ctx_id, name, t, n, x in found:
        if ctx_id in ctx_to_main and name not in taken:
            values.setdefault(ctx_to_main[ctx_id], {})[name] = from_cell(t, n, x)
    for row in rows:
        row.update(values.get(row.get(main_name), {}))  # type: ignore[arg-type]
