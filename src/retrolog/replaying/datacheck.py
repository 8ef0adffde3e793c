"""Before a replay works: is the data each run recorded (``retrolog.data``) still the same?

Every recorded data path is re-hashed once (through the size+mtime cache of record/data.py, so an
unchanged dataset costs a ``stat`` per file) and compared with each run's recorded digest. A run
whose data is missing or changed is refused, the plan naming the files, unless the caller allows
it (``--allow-changed-data``); then the run is replayed and its fidelity report attributes a
divergence to the data (``RunPlan.data_changed``).
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any

from ..record.data import cache_for, hash_path
from ..store.data_versions import recorded_data_versions

if TYPE_CHECKING:
    from ..project import Project
    from ..store.lite import Database
    from .plan import RunPlan

MAX_NAMED = 5  # changed files named per data path; the rest are counted


def recorded_versions(store: Database, run_keys: Sequence[int]) -> dict[int, list[Any]]:
    """run key -> its recorded data versions (rows of ``data_versions``)."""
    out: dict[int, list[Any]] = {}
    for row in recorded_data_versions(store, run_keys):
        out.setdefault(int(row[0]), []).append(row)
    return out


def changed_files(recorded: dict[str, Any] | None, now: dict[str, Any] | None) -> list[str]:
    """Relative paths that were added, removed or changed between two directory manifests."""
    if recorded is None or now is None:
        return []
    names = sorted(set(recorded) | set(now))
    return [n for n in names if recorded.get(n) != now.get(n)]


def _describe(path: str, kind: str, manifest: Any, now: tuple[Any, ...]) -> str:
    """What changed in one data path: the path, or the files in it that changed when the
    directory's manifest was recorded; ``(missing)`` when it is gone."""
    now_kind, _digest, _files, _bytes, now_manifest = now
    if now_kind == "missing":
        return f"{path} (missing)"
    if kind == "dir" and now_kind == "dir":
        recorded = json.loads(manifest) if manifest else None
        files = changed_files(recorded, now_manifest)
        if files:
            named = ", ".join(f"{path.rstrip('/')}/{f}" for f in files[:MAX_NAMED])
            more = f" and {len(files) - MAX_NAMED} more" if len(files) > MAX_NAMED else ""
            return named + more
    return path


def check_data(
    project: Project,
    store: Database,
    plans: Sequence[RunPlan],
    run_keys: dict[str, int],
    allow_changed: bool,
) -> None:
    """Refuse (``plan.skipped``) or mark (``plan.data_changed``) the runs whose recorded data is
    missing or changed now. Plans already skipped are left alone."""
    todo = [p for p in plans if not p.skipped and p.run_id in run_keys]
    versions = recorded_versions(store, [run_keys[p.run_id] for p in todo])
    if not versions:
        return
    cache = cache_for(project.data_dir)
    current: dict[tuple[str, str], tuple[Any, ...] | str] = {}
    try:
        for plan in todo:
            problems: list[str] = []
            for row in versions.get(run_keys[plan.run_id], []):
                _run, _name, path, kind, digest, algo, manifest = tuple(row)
                if kind == "missing":
                    continue  # it was not there when the run recorded it either
                if (path, algo) not in current:
                    target = Path(path) if Path(path).is_absolute() else project.root / path
                    try:
                        current[(path, algo)] = hash_path(target, cache, algo)
                    except (LookupError, OSError) as exc:
                        current[(path, algo)] = f"{path} (cannot be checked: {exc})"
                now = current[(path, algo)]
                if isinstance(now, str):
                    problems.append(now)
                elif now[0] != kind or now[1] != digest:
                    problems.append(_describe(path, kind, manifest, now))
            if not problems:
                continue
            if allow_changed:
                plan.data_changed = problems
            else:
                plan.skipped = (
                    f"its data changed since it ran: {', '.join(problems)} "
                    "(--allow-changed-data replays it anyway)"
                )
    finally:
        cache.close()


def attribute(detail: str, data_changed: Sequence[str], fidelity: str) -> str:
    """A run result's detail with the changed data named first when the replay diverged."""
    if not data_changed:
        return detail
    if fidelity == "diverged":
        note = f"diverged (data changed: {', '.join(data_changed)})"
    else:
        note = f"data changed ({', '.join(data_changed)}), replayed with --allow-changed-data"
    return note + ("\n" + detail if detail else "")
