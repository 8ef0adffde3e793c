"""Recovering a damaged SQLite store into a new file (``retrolog doctor --repair``).

Nothing is deleted: the recovered file takes the store's name and the damaged one is kept next
to it. Only our own files are read; table names come from the file's own schema, quoted.
"""

from __future__ import annotations

import shutil
import sqlite3
import subprocess
import time
from pathlib import Path

from ..errors import StoreError


def recover_sqlite(path: Path) -> list[str]:
    """Recover ``path`` into a new file that takes its place; the old one is kept, renamed.

    Three ways are tried, each into its own new file, and the one that saved the most rows wins:
    ``sqlite3 .recover`` (reads every page it can), ``sqlite3 .dump`` committed despite its
    errors (``.recover`` of older sqlite3 programs gives up on a truncated file) and a
    table-by-table copy in rowid ranges (no sqlite3 program needed)."""
    stamp = time.strftime("%Y%m%d-%H%M%S")
    fresh = path.with_name(f"retrolog.recovered-{stamp}.db")
    kept = path.with_name(f"retrolog.damaged-{stamp}.db")
    candidates: list[tuple[int, str, Path]] = []
    for index, (how, make) in enumerate(
        (
            ("sqlite3 .recover", lambda out: _sqlite_program(path, out, ".recover")),
            ("sqlite3 .dump", lambda out: _sqlite_program(path, out, ".dump")),
            ("a copy of every readable row", lambda out: _copy_tables(path, out)),
        )
    ):
        out = path.with_name(f"retrolog.recovering-{stamp}-{index}.db")
        try:
            if make(out):
                candidates.append((_row_count(out), how, out))
                continue
        except (sqlite3.Error, OSError, subprocess.SubprocessError):
            pass
        out.unlink(missing_ok=True)
    if not candidates:
        raise StoreError(f"could not recover anything from {path}; it is left as it was")
    _rows, how, best = max(candidates, key=lambda c: c[0])
    for _n, _h, other in candidates:
        if other != best:
            other.unlink(missing_ok=True)
    best.rename(fresh)
    for suffix in ("", "-wal", "-shm"):
        old = Path(str(path) + suffix)
        if old.exists():
            old.rename(Path(str(kept) + suffix))
    fresh.rename(path)
    return [f"recovered the damaged SQLite file ({how}); the old file is kept as {kept.name}"]


def _row_count(path: Path) -> int:
    conn = sqlite3.connect(path)
    try:
        total = 0
        for (table,) in conn.execute(
            "SELECT name FROM sqlite_master WHERE type = 'table'"
        ).fetchall():
            total += conn.execute(f'SELECT count(*) FROM "{table}"').fetchone()[0]
        return total
    finally:
        conn.close()


def _sqlite_program(path: Path, out: Path, command: str) -> bool:
    """``sqlite3 OLD <command> | sqlite3 NEW``; False when the sqlite3 program is missing."""
    program = shutil.which("sqlite3")
    if program is None:
        return False
    dump = subprocess.run([program, str(path), command], capture_output=True, timeout=3600)
    script = dump.stdout
    if script.rstrip().endswith(b"ROLLBACK; -- due to errors"):  # keep what could be read
        script = script.rstrip()[: -len(b"ROLLBACK; -- due to errors")] + b"COMMIT;\n"
    load = subprocess.run([program, str(out)], input=script, capture_output=True, timeout=3600)
    return out.exists() and load.returncode in (0, 1)


def _copy_tables(path: Path, fresh: Path) -> bool:
    """Without the sqlite3 program: create the schema in ``fresh`` and copy every readable row of
    each table, in rowid ranges, skipping the ranges that cannot be read."""
    from .store import Store

    Store(f"sqlite:///{fresh}").dispose()
    src = sqlite3.connect(f"{path.resolve().as_uri()}?mode=ro", uri=True)
    dst = sqlite3.connect(fresh)
    try:
        tables = [r[0] for r in dst.execute("SELECT name FROM sqlite_master WHERE type = 'table'")]
        for table in tables:
            _copy_table(src, dst, table)
        dst.commit()
    finally:
        src.close()
        dst.close()
    return True


def _copy_table(src: sqlite3.Connection, dst: sqlite3.Connection, table: str) -> None:
    try:
        columns = [r[1] for r in src.execute(f"PRAGMA table_info({table})")]
        top = src.execute(f"SELECT max(rowid) FROM {table}").fetchone()[0] or 0
    except sqlite3.DatabaseError:
        return
    dst.execute(f"DELETE FROM {table}")
    step = 256
    for start in range(0, int(top) + 1, step):
        try:
            rows = src.execute(
                f"SELECT {', '.join(columns)} FROM {table} WHERE rowid >= ? AND rowid < ?",
                (start, start + step),
            ).fetchall()
        except sqlite3.DatabaseError:
            continue
        dst.executemany(
            f"INSERT OR IGNORE INTO {table} ({', '.join(columns)}) "
            f"VALUES ({', '.join('?' * len(columns))})",
            rows,
        )
