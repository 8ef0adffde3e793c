"""Export a history to Parquet files: one documented schema (docs/export.md).

``OUT_DIR`` receives ``runs``, ``args``, ``loops``, ``metrics`` and ``replays`` Parquet files, one
file per table of the store that is keyed by run (timings, names, tags, notes, environments, data
versions: whatever this retrolog's schema has), and ``retrolog-export.json`` (format version,
tables and row counts). Values keep the store's typed cells ``(vtype, value_num, value_text)``,
so every value reads back with its type; ``metrics`` adds each row's loop path (every enclosing
loop's name, iteration index and value) and a plain ``value`` column for other tools.
"""

from __future__ import annotations

import json
import math
import time
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from ..errors import UsageError
from ..store import exchange as stored
from ..store.runs import all_run_keys

FORMAT = "retrolog-export"
FORMAT_VERSION = 1
MANIFEST = "retrolog-export.json"

# Tables exported with their own schema below, or not exported: checkpoints point into the object
# store (not exported, so imported runs cannot be restored), replay bookkeeping and digests are
# rebuilt, the meta table belongs to the store.
CORE = {"runs", "args", "loops", "logs", "replays"}
NOT_EXPORTED = {
    "checkpoints",
    "replay_tasks",
    "replay_runs",
    "propagations",
    "digests",
    "retrolog_meta",
}
RUN_SKIPPED = ("id", "last_seq")  # store-internal runs columns
REPLAY_COLUMNS = (
    "replay_id",
    "created",
    "finished",
    "status",
    "names",
    "statements",
    "script",
    "where_clause",
)


@dataclass
class ExportResult:
    """Where the export went and the rows of each file."""

    out_dir: Path
    tables: dict[str, int] = field(default_factory=dict)

    def lines(self) -> list[str]:
        counts = ", ".join(f"{n} {t}" for t, n in self.tables.items())
        return [f"exported to {self.out_dir}: {counts}"]


def arrow_type(kind: str) -> Any:
    """The Arrow type of a schema column's kind (``store.exchange.column_kinds``): 64-bit
    integers, doubles, or strings."""
    import pyarrow as pa

    if kind == "int":
        return pa.int64()
    if kind == "float":
        return pa.float64()
    return pa.string()


def select_runs(
    project: Any, store: Any, run_ids: Sequence[str] | None, where: str | None
) -> list[tuple[int, str]]:
    """``(runs.id, run_id)`` of the runs to export: those named (ids or unique prefixes), those
    ``where`` selects (over the columns of ``retrolog runs``), both, or all."""
    from ..relational import runs as runs_frame
    from ..relational.describe import find_run

    rows = all_run_keys(store)
    chosen = {r[1] for r in rows}
    if run_ids:
        chosen &= {find_run(store, r)._mapping["run_id"] for r in run_ids}
    if where:
        chosen &= set(runs_frame(project=project, where=where)["run_id"])
    return [(key, run_id) for key, run_id in rows if run_id in chosen]


def export_parquet(
    project: Any,
    out_dir: str | Path,
    run_ids: Sequence[str] | None = None,
    where: str | None = None,
) -> ExportResult:
    """Write the selected runs of ``project`` to Parquet files in ``out_dir`` (created; an existing
    directory must be empty or hold an earlier export, which is replaced)."""
    try:
        import pyarrow as pa
        import pyarrow.parquet as pq
    except ImportError:
        raise UsageError(
            "exporting to Parquet needs pyarrow: pip install 'retrolog[export]'"
        ) from None
    from ..relational import open_store

    out = Path(out_dir)
    if out.exists() and (not out.is_dir() or _foreign_files(out)):
        raise UsageError(f"{out} is not an empty directory nor an earlier retrolog export")
    out.mkdir(parents=True, exist_ok=True)
    store = open_store(project)
    selected = select_runs(project, store, run_ids, where)
    ids = dict(selected)
    result = ExportResult(out.resolve())
    written: list[str] = []

    def write(name: str, columns: dict[str, Any], rows: list[dict[str, Any]]) -> None:
        table_schema = pa.schema([(c, t) for c, t in columns.items()])
        data = {c: [r[c] for r in rows] for c in columns}
        pq.write_table(pa.table(data, schema=table_schema), out / f"{name}.parquet")
        result.tables[name] = len(rows)
        written.append(name)

    kinds = stored.column_kinds()
    run_columns = {c: arrow_type(k) for c, k in kinds["runs"].items() if c not in RUN_SKIPPED}
    run_rows = [{c: row[c] for c in run_columns} for row in stored.run_rows(store, list(ids))]
    write("runs", run_columns, sorted(run_rows, key=lambda r: r["run_id"]))

    cell = {"vtype": pa.string(), "value_num": pa.float64(), "value_text": pa.string()}
    args = _keyed_rows(store, "args", ids, ("name",))
    write("args", {"run_id": pa.string(), "name": pa.string(), **cell}, args)

    loop_columns = {
        "run_id": pa.string(),
        **{c: arrow_type(k) for c, k in kinds["loops"].items() if c != "run"},
    }
    loops = _keyed_rows(store, "loops", ids, ("ctx_id",))
    write("loops", loop_columns, loops)

    metrics = _metrics(store, ids, loops)
    step = pa.struct([("loop", pa.string()), ("iteration", pa.int64()), ("value", pa.string())])
    write(
        "metrics",
        {
            "run_id": pa.string(),
            "seq": pa.int64(),
            "name": pa.string(),
            **cell,
            "value": pa.float64(),
            "replay_id": pa.string(),
            "ctx_id": pa.int64(),
            "path": pa.list_(step),
        },
        metrics,
    )

    replay_ids = sorted({m["replay_id"] for m in metrics if m["replay_id"]})
    replays = stored.replay_rows(store, replay_ids, REPLAY_COLUMNS)
    write(
        "replays",
        {c: arrow_type(k) for c, k in kinds["replays"].items() if c in REPLAY_COLUMNS},
        replays,
    )

    for name, table_kinds in kinds.items():
        if name in CORE or name in NOT_EXPORTED:
            continue
        columns = {c: arrow_type(k) for c, k in table_kinds.items()}
        if "run" in columns:
            del columns["run"]
            rows = _keyed_rows(store, name, ids, ())
            write(name, {"run_id": pa.string(), **columns}, rows)
        else:
            write(name, columns, stored.table_rows(store, name))

    manifest = {
        "format": FORMAT,
        "format_version": FORMAT_VERSION,
        "schema_version": stored.SCHEMA_VERSION,
        "created": time.time(),
        "tables": result.tables,
    }
    (out / MANIFEST).write_text(json.dumps(manifest, indent=2) + "\n")
    return result


def _foreign_files(out: Path) -> bool:
    """Whether ``out`` holds anything but an earlier export (which may be overwritten)."""
    names = {p.name for p in out.iterdir()}
    if not names:
        return False
    if MANIFEST not in names:
        return True
    return any(not (n == MANIFEST or n.endswith(".parquet")) for n in names)


def _keyed_rows(
    store: Any, table: str, ids: dict[int, str], order: tuple[str, ...]
) -> list[dict[str, Any]]:
    """Rows of a table keyed by ``run``, with the run's public id instead of its key."""
    out = []
    for record in stored.rows_of_runs(store, table, list(ids)):
        out.append({"run_id": ids[int(record.pop("run"))], **record})
    out.sort(key=lambda r: (r["run_id"], *(r[c] for c in order)))
    return out


def _metrics(store: Any, ids: dict[int, str], loops: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """Every log row of the runs with its loop path, in each run's sequence order."""
    parents = {(r["run_id"], r["ctx_id"]): r for r in loops}
    paths: dict[tuple[str, int], list[dict[str, Any]]] = {}

    def path(run_id: str, ctx: int) -> list[dict[str, Any]]:
        key = (run_id, ctx)
        if key not in paths:
            loop = parents.get(key)
            if loop is None:
                paths[key] = []
            else:
                step = {
                    "loop": loop["name"],
                    "iteration": loop["iteration"],
                    "value": loop["value"],
                }
                paths[key] = [*path(run_id, loop["parent_id"]), step]
        return paths[key]

    out = []
    for row in stored.log_rows(store, list(ids)):
        run_id = ids[int(row.run)]
        out.append(
            {
                "run_id": run_id,
                "seq": row.seq,
                "name": row.name,
                "vtype": row.vtype,
                "value_num": row.value_num,
                "value_text": row.value_text,
                "value": _number(row.vtype, row.value_num, row.value_text),
                "replay_id": row.replay_id,
                "ctx_id": row.ctx_id,
                "path": path(run_id, int(row.ctx_id)),
            }
        )
    out.sort(key=lambda r: (r["run_id"], r["seq"]))
    return out


def _number(vtype: str, num: float | None, text: str | None) -> float | None:
    """The value as a double for tools that want one number column (NaN and infinities included,
    integers beyond 2**53 approximately); None for strings, None and JSON."""
    if num is not None:
        return float(num)
    if vtype in ("f", "i") and text is not None:
        try:
            return float(text)
        except ValueError:
            return math.nan
    return None
