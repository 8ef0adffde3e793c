"""Names, tags, notes and environments of runs: reading them, and the CLI's edits.

In ``runs()`` (and so ``retrolog runs --where`` and the UI's runs list) a run's name is the
column ``run_name``, each tag key ``k`` a text column ``tag_k`` and its notes, joined by blank
lines, the column ``notes`` (docs/data-model.md).
"""

from __future__ import annotations

import json
import time
from pathlib import Path
from typing import Any

import pandas as pd

from ..errors import StoreError, UsageError
from ..project import Project
from ..store import labels as L
from ..store import query as reads
from .access import open_store, resolve_project
from .runref import find_run

TAG_PREFIX = "tag_"


def labels_frame(store: Any) -> pd.DataFrame:
    """One row per labelled run (index ``run``, the runs.id): run_name, notes, tag_<key>..."""
    frame = pd.DataFrame(index=pd.Index([], name="run", dtype="int64"))
    try:
        names = reads.all_run_names(store)
    except StoreError:  # a store older than schema 3 opened read-only: no labels
        return frame
    if names:
        frame = frame.join(
            pd.DataFrame([tuple(r) for r in names], columns=["run", "run_name"]).set_index("run"),
            how="outer",
        )
    notes = reads.all_notes(store)
    if notes:
        joined: dict[int, list[str]] = {}
        for run, _created, text in notes:
            joined.setdefault(int(run), []).append(text)
        part = pd.DataFrame(
            {"notes": ["\n\n".join(v) for v in joined.values()]},
            index=pd.Index(list(joined), name="run"),
        )
        frame = frame.join(part, how="outer")
    tags = reads.all_tags(store)
    if tags:
        long = pd.DataFrame([tuple(r) for r in tags], columns=["run", "key", "value"])
        wide = long.pivot(index="run", columns="key", values="value")
        wide.columns = [f"{TAG_PREFIX}{c}" for c in wide.columns]
        frame = frame.join(wide, how="outer")
    return frame


def run_names(store: Any) -> list[str]:
    """Every run name of the store, sorted (for completion)."""
    try:
        return sorted(str(r[1]) for r in reads.all_run_names(store))
    except StoreError:
        return []


def run_labels(store: Any, run_key: int) -> dict[str, Any]:
    """name, tags (key -> value) and notes (oldest first) of one run."""
    names = reads.run_name_rows(store, run_key)
    tags = reads.run_tag_rows(store, run_key)
    notes = reads.run_note_rows(store, run_key)
    return {
        "name": names[0][0] if names else None,
        "tags": {k: v for k, v in tags},
        "notes": [
            {"created": pd.Timestamp(c, unit="s", tz="UTC").isoformat(), "text": t}
            for c, t in notes
        ],
    }


def run_environment(store: Any, run_key: int) -> dict[str, Any] | None:
    """The recorded environment of one run (None: recorded before schema 3, or crashed)."""
    rows = reads.environment_row(store, run_key)
    if not rows:
        return None
    digest, python, plat, host, exe, accel, out, err, packages = rows[0]
    return {
        "hash": digest,
        "python": python,
        "platform": plat,
        "host": host,
        "executable": exe,
        "accelerator": json.loads(accel) if accel else None,
        "stdout": out,
        "stderr": err,
        "distributions": json.loads(packages) if packages else [],
    }


def environment_diff(a: dict[str, Any] | None, b: dict[str, Any] | None) -> dict[str, Any]:
    """What differs between two environments: facts, and distributions added, removed or at
    another version (name -> [version in a, version in b])."""
    a, b = a or {}, b or {}
    facts = {
        key: [a.get(key), b.get(key)]
        for key in ("python", "platform", "host", "executable", "accelerator")
        if a.get(key) != b.get(key)
    }

    def versions(env: dict[str, Any]) -> dict[str, str]:
        return dict(line.split("==", 1) for line in env.get("distributions") or [] if "==" in line)

    va, vb = versions(a), versions(b)
    changed = {
        n: [va.get(n), vb.get(n)] for n in sorted(set(va) | set(vb)) if va.get(n) != vb.get(n)
    }
    return {
        "same": a.get("hash") == b.get("hash") and not facts,
        "facts": facts,
        "packages": changed,
    }


# -- the CLI's edits --------------------------------------------------------------------------
def tag_run(
    run: str, tags: dict[str, str | None], project: Project | str | Path | None = None
) -> str:
    """Set tags of a run (a None value removes the tag); returns its id."""
    for key in tags:
        problem = L.check_key(key)
        if problem:
            raise UsageError(f"tag {key!r}: {problem}")
    store = open_store(resolve_project(project))
    row = find_run(store, run)._mapping
    with store.transaction() as tx:
        for key, value in tags.items():
            L.set_tag(tx, int(row["id"]), key, value)
    return str(row["run_id"])


def note_run(run: str, text: str, project: Project | str | Path | None = None) -> str:
    """Add a note to a run; returns its id."""
    if not text.strip():
        raise UsageError("a note needs some text")
    store = open_store(resolve_project(project))
    row = find_run(store, run)._mapping
    with store.transaction() as tx:
        L.add_note(tx, int(row["id"]), time.time(), text)
    return str(row["run_id"])


def name_run(run: str, name: str | None, project: Project | str | Path | None = None) -> str:
    """Name a run (None: remove its name); UsageError when another run has the name."""
    if name is not None:
        problem = L.check_name(name)
        if problem:
            raise UsageError(problem)
    store = open_store(resolve_project(project))
    row = find_run(store, run)._mapping
    with store.transaction() as tx:
        if name is not None:
            L.require_free_name(tx, int(row["id"]), name, str(row["run_id"]))
        L.set_name(tx, int(row["id"]), name)
    return str(row["run_id"])
