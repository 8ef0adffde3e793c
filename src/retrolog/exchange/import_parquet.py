"""Read a retrolog Parquet export (export.py) back into a store.

Every value comes back as it was exported (typed cells, loop coordinates, the replay that
produced a value and that replay's row); the runs come back with status ``imported`` and no code
version (their code is not part of an export). Tables the export has and this store's schema
lacks are left out, with a note; tables this store has and the export lacks stay empty.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from ..errors import UsageError
from .common import EVENT_FACTS, ImportedRun, ImportResult, insert_ignoring_present, write_runs
from .export import CORE, FORMAT, FORMAT_VERSION, MANIFEST, REPLAY_COLUMNS

# runs columns an import sets itself rather than copying
_RUN_OWN = {"run_id", "status", "version", "end_time", "error", "id", "last_seq"}


def is_export(path: Path) -> bool:
    return (path / MANIFEST).is_file()


def import_parquet(store: Any, path: Path) -> ImportResult:
    """Store the runs of the export in ``path`` (see the module docstring)."""
    try:
        import pyarrow.parquet as pq
    except ImportError:
        raise UsageError(
            "importing a Parquet export needs pyarrow: pip install 'retrolog[export]'"
        ) from None
    from .common import store_tables

    try:
        manifest = json.loads((path / MANIFEST).read_text())
    except (OSError, ValueError) as exc:
        raise UsageError(f"{path} is not a readable retrolog export: {exc}") from None
    if manifest.get("format") != FORMAT or int(manifest.get("format_version", 0)) > FORMAT_VERSION:
        raise UsageError(
            f"{path} holds a retrolog export of format {manifest.get('format_version')!r}; "
            f"this retrolog reads format {FORMAT_VERSION} and older"
        )
    result = ImportResult(source=str(path))
    exported = list(manifest.get("tables", {}))

    def rows(name: str) -> list[dict[str, Any]]:
        if name not in exported or not (path / f"{name}.parquet").is_file():
            return []
        return list(pq.read_table(path / f"{name}.parquet").to_pylist())

    known = store_tables(store)
    runs: dict[str, ImportedRun] = {}
    for row in rows("runs"):
        run = ImportedRun(
            run_id=row["run_id"], end_time=row.get("end_time"), error=row.get("error")
        )
        run.facts = {k: row.get(k) for k in EVENT_FACTS}
        run.run_columns = {
            k: v for k, v in row.items() if k not in _RUN_OWN and k not in EVENT_FACTS
        }
        runs[run.run_id] = run
    for row in rows("args"):
        if row["run_id"] in runs:
            cell = (row["vtype"], row["value_num"], row["value_text"])
            runs[row["run_id"]].args.append((row["name"], cell))
    for row in rows("loops"):
        if row["run_id"] in runs:
            runs[row["run_id"]].loops.append(
                (
                    row["ctx_id"],
                    row["parent_id"],
                    row["depth"],
                    row["name"],
                    row["iteration"],
                    row["value"],
                    row["start_time"],
                )
            )
    for row in rows("metrics"):
        if row["run_id"] in runs:
            runs[row["run_id"]].logs.append(
                (
                    row["seq"],
                    row["ctx_id"],
                    row["name"],
                    row["vtype"],
                    row["value_num"],
                    row["value_text"],
                    row["replay_id"],
                )
            )
    for name in exported:
        if name in CORE or name == "metrics":
            continue
        if name not in known:
            result.notes.append(
                f"table {name} of the export is not in this store's schema: left out"
            )
            continue
        table_rows = rows(name)
        if "run" not in known[name]:
            columns = [c for c in known[name] if table_rows and c in table_rows[0]]
            insert_ignoring_present(store, name, [{c: r[c] for c in columns} for r in table_rows])
            continue
        for row in table_rows:
            run_id = row.pop("run_id", None)
            if run_id in runs:
                runs[run_id].extra.setdefault(name, []).append(row)
    replays = [{c: r.get(c) for c in REPLAY_COLUMNS} for r in rows("replays")]
    insert_ignoring_present(store, "replays", replays)
    write_runs(store, list(runs.values()), result)
    return result
