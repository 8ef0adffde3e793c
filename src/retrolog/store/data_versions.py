"""Data versions in the store, and the per-file digest cache that ``retrolog.data`` keeps.

``data_versions`` rows (one per run and data name; docs/data-model.md) are written by ingest
(``data`` journal events); the replay's data check reads them here. The digest cache is a small
SQLite file of its own (``.retrolog/datahash.sqlite``: path, inode, size, mtime_ns, ctime_ns,
algorithm, digest), so re-hashing an unchanged tree costs one ``stat`` per file. Stdlib only:
a recording run uses the cache.
"""

from __future__ import annotations

import sqlite3
from collections.abc import Sequence
from contextlib import suppress
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from .._warn import warn_once
from .binds import Fetches, in_list


def recorded_data_versions(db: Fetches, run_keys: Sequence[int]) -> list[Any]:
    """Rows ``(run, name, path, kind, digest, algo, manifest)`` of ``data_versions`` for the given
    runs, by run and name."""
    if not run_keys:
        return []
    binds, params = in_list("r", [int(k) for k in run_keys])
    return db.fetch(
        "SELECT run, name, path, kind, digest, algo, manifest FROM data_versions "
        f"WHERE run IN ({binds}) ORDER BY run, name",
        params,
    )


@dataclass
class HashCache:
    """The size+mtime cache of file digests; counters say how much was really read."""

    path: Path | None
    files_read: int = 0
    bytes_read: int = 0
    hits: int = 0
    _conn: sqlite3.Connection | None = field(default=None, repr=False)

    def _db(self) -> sqlite3.Connection | None:
        if self._conn is None and self.path is not None:
            try:
                self.path.parent.mkdir(parents=True, exist_ok=True)
                conn = sqlite3.connect(self.path, timeout=10, isolation_level=None)
                conn.execute("PRAGMA journal_mode=WAL")
                conn.execute(
                    "CREATE TABLE IF NOT EXISTS files (path TEXT PRIMARY KEY, ino INTEGER, "
                    "size INTEGER, mtime_ns INTEGER, ctime_ns INTEGER, algo TEXT, digest TEXT)"
                )
                self._conn = conn
            except sqlite3.Error as exc:
                warn_once("datahash-cache", f"retrolog: data hash cache unusable ({exc})")
                self.path = None
        return self._conn

    def known(self, root: str, single: bool, algo: str) -> dict[str, tuple[int, ...]]:
        """Cached entries for one file or every file under a directory: path -> key + digest."""
        db = self._db()
        if db is None:
            return {}
        sql = "SELECT path, ino, size, mtime_ns, ctime_ns, digest FROM files WHERE algo = ? AND "
        try:
            if single:
                rows = db.execute(sql + "path = ?", (algo, root)).fetchall()
            else:  # '/' + 1 == '0': the range holds exactly the paths under root/
                rows = db.execute(
                    sql + "path >= ? AND path < ?", (algo, root + "/", root + "0")
                ).fetchall()
        except sqlite3.Error:
            return {}
        return {r[0]: tuple(r[1:]) for r in rows}

    def save(self, algo: str, fresh: list[tuple[Any, ...]], stale: list[str]) -> None:
        db = self._db()
        if db is None or not (fresh or stale):
            return
        try:
            db.execute("BEGIN IMMEDIATE")
            db.executemany("DELETE FROM files WHERE path = ?", [(p,) for p in stale])
            db.executemany(
                "INSERT OR REPLACE INTO files VALUES (?, ?, ?, ?, ?, ?, ?)",
                [(p, ino, size, m, c, algo, d) for p, ino, size, m, c, d in fresh],
            )
            db.execute("COMMIT")
        except sqlite3.Error:
            with suppress(sqlite3.Error):
                db.execute("ROLLBACK")

    def close(self) -> None:
        if self._conn is not None:
            self._conn.close()
            self._conn = None
