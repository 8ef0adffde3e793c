"""Names, tags, notes and environments of runs: the writes, for ingest and for the CLI.

One implementation for both writers: journal events (``tag``, ``name``, ``note``, ``env``; see
docs/data-model.md) applied by ``ingest.apply_events`` inside its transaction, and the CLI's
``retrolog tag/note/name`` through ``Store.transaction()``. Both reach these functions as a
``Transaction`` (SQL with ``:name`` parameters); a raw DB-API cursor is adapted by ``Cursor``.
``ON CONFLICT DO NOTHING`` is understood by PostgreSQL and by SQLite (3.24 and later).
"""

from __future__ import annotations

import json
import re
import sqlite3
from collections.abc import Iterable, Sequence
from pathlib import Path
from typing import Any

from ..errors import UsageError

KINDS = frozenset({"tag", "name", "note", "env"})
MAX_NAME = 200
MAX_KEY = 200
_NAMED = re.compile(r":([A-Za-z_][A-Za-z0-9_]*)")


class Cursor:
    """A DB-API cursor as a ``Transaction``: ``:name`` parameters, rewritten for psycopg."""

    def __init__(self, cursor: Any, sqlite: bool) -> None:
        self._cursor = cursor
        self._sqlite = sqlite

    def execute(self, sql: str, params: dict[str, Any] | None = None) -> None:
        if not self._sqlite:
            sql = _NAMED.sub(r"%(\1)s", sql)
        self._cursor.execute(sql, params or {})

    def fetch(self, sql: str, params: dict[str, Any] | None = None) -> list[Any]:
        self.execute(sql, params)
        return list(self._cursor.fetchall())


def check_name(name: Any) -> str | None:
    """Why ``name`` cannot name a run, or None."""
    if not isinstance(name, str) or not name.strip():
        return "a run name is a non-empty string"
    if len(name) > MAX_NAME or any(c in name for c in "\n\r\t"):
        return f"a run name has at most {MAX_NAME} characters and no line breaks or tabs"
    return None


def check_key(key: Any) -> str | None:
    """Why ``key`` cannot be a tag key, or None (keys become ``tag_<key>`` columns)."""
    if not isinstance(key, str) or not re.fullmatch(r"[A-Za-z_][A-Za-z0-9_.\-]*", key):
        return "a tag key starts with a letter or _ and has letters, digits, _, . and - only"
    if len(key) > MAX_KEY:
        return f"a tag key has at most {MAX_KEY} characters"
    return None


def tag_text(value: Any) -> str:
    """Tags are text: strings as they are, booleans as true/false, anything else as str()."""
    if isinstance(value, bool):
        return "true" if value else "false"
    return value if isinstance(value, str) else str(value)


def set_tag(tx: Any, run_key: int, key: str, value: str | None) -> None:
    """Set (or, with None, remove) one tag of a run."""
    tx.execute("DELETE FROM run_tags WHERE run = :r AND key = :k", {"r": run_key, "k": key})
    if value is not None:
        tx.execute(
            "INSERT INTO run_tags (run, key, value) VALUES (:r, :k, :v)",
            {"r": run_key, "k": key, "v": value},
        )


def name_holder(tx: Any, name: str) -> int | None:
    """runs.id of the run called ``name``, or None."""
    rows = tx.fetch("SELECT run FROM run_names WHERE name = :n", {"n": name})
    return int(rows[0][0]) if rows else None


def set_name(tx: Any, run_key: int, name: str | None) -> bool:
    """Name a run (None: remove its name); False, changing nothing, when another run has it."""
    if name is not None:
        holder = name_holder(tx, name)
        if holder is not None and holder != run_key:
            return False
    tx.execute("DELETE FROM run_names WHERE run = :r", {"r": run_key})
    if name is not None:
        tx.execute("INSERT INTO run_names (run, name) VALUES (:r, :n)", {"r": run_key, "n": name})
    return True


def add_note(tx: Any, run_key: int, created: float, text: str) -> None:
    tx.execute(
        "INSERT INTO run_notes (run, created, text) VALUES (:r, :c, :t)",
        {"r": run_key, "c": created, "t": text},
    )


def set_environment(tx: Any, run_key: int, env: dict[str, Any]) -> None:
    """Store a run's environment; its distribution list once per distinct hash."""
    packages = env.get("packages")
    digest = env.get("hash")
    if isinstance(packages, (list, tuple)) and isinstance(digest, str):
        tx.execute(
            "INSERT INTO environments (hash, packages) VALUES (:h, :p) ON CONFLICT DO NOTHING",
            {"h": digest, "p": json.dumps(list(packages))},
        )
    else:
        digest = None
    accelerator = env.get("accelerator")
    tx.execute("DELETE FROM run_environment WHERE run = :r", {"r": run_key})
    tx.execute(
        "INSERT INTO run_environment (run, env_hash, python, platform, host, executable, "
        "accelerator, stdout, stderr) VALUES (:r, :h, :py, :pl, :ho, :ex, :ac, :so, :se)",
        {
            "r": run_key,
            "h": digest,
            "py": env.get("python"),
            "pl": env.get("platform"),
            "ho": env.get("host"),
            "ex": env.get("executable"),
            "ac": json.dumps(accelerator) if accelerator is not None else None,
            "so": env.get("stdout"),
            "se": env.get("stderr"),
        },
    )


def apply(tx: Any, run_key: int, events: Iterable[Sequence[Any]]) -> None:
    """Apply the label and environment events of one ingest batch, in order. A name another run
    holds is left out (the script was warned when it could be; ``retrolog name`` refuses)."""
    for ev in events:
        kind = ev[1]
        if kind == "tag":
            set_tag(tx, run_key, str(ev[2]), None if ev[3] is None else str(ev[3]))
        elif kind == "name":
            set_name(tx, run_key, None if ev[2] is None else str(ev[2]))
        elif kind == "note":
            add_note(tx, run_key, float(ev[2]), str(ev[3]))
        elif kind == "env" and isinstance(ev[2], dict):
            set_environment(tx, run_key, ev[2])


def require_free_name(tx: Any, run_key: int, name: str, shown: str) -> None:
    """UsageError when ``name`` is taken by a run other than ``run_key`` (``shown`` names it)."""
    holder = name_holder(tx, name)
    if holder is not None and holder != run_key:
        rows = tx.fetch("SELECT run_id FROM runs WHERE id = :r", {"r": holder})
        other = rows[0][0] if rows else "another run"
        raise UsageError(
            f"the name {name!r} is taken by run {other}; names are unique per project "
            f"(rename that run first, or choose another name for {shown})"
        )


def name_holder_in_file(db_url: str, name: str) -> str | None:
    """The run id of the run called ``name`` in a SQLite store's file, read-only without opening
    the store (a recording run asks before naming itself); None when no run has the name, the
    store is a server, or the file cannot answer (missing, an older schema, locked)."""
    prefix = "sqlite:///"
    if not db_url.startswith(prefix):
        return None  # a server store: ingest keeps the first holder
    path = Path(db_url[len(prefix) :])
    if not path.is_file():
        return None
    try:
        conn = sqlite3.connect(f"{path.resolve().as_uri()}?mode=ro", uri=True, timeout=5)
        try:
            row = conn.execute(
                "SELECT r.run_id FROM run_names n JOIN runs r ON r.id = n.run WHERE n.name = ?",
                (name,),
            ).fetchone()
        finally:
            conn.close()
    except sqlite3.Error:  # an older schema without names, a locked file: no answer
        return None
    return str(row[0]) if row else None
