"""Digests of stored values, so that a changed value can be noticed.

SQLite has no page checksums and ``PRAGMA integrity_check`` passes a flipped bit inside a float;
a digest kept next to the rows catches it. Each run has one digest of its recorded log rows
(scope ``''``) and one per replay that stored values for it (scope: the replay id).

The digest is a sum, modulo 2**64, of a 64-bit check of each row's canonical encoding (seq, loop
context, name, type, number as an IEEE double, text): its CRC-32 and Adler-32 side by side. CRC-32
detects every change of up to 32 consecutive bits of a row for certain, so a flipped bit always
changes the digest; it costs ~1.5 µs per row where a cryptographic hash cost ~4.5 µs. A sum does not depend on the order rows arrive in,
so it is kept up to date inside the very transaction that inserts the rows (at ingest, by the
store writer or the crash recovery, never on the training thread) and is therefore always
consistent with them; ``sealed`` records when the run (or replay) ended. ``retrolog doctor``
recomputes every digest from the stored rows and names each run whose values changed.
It detects accidents (bit rot, a stray UPDATE), not an adversary who can rewrite the digest too.
"""

from __future__ import annotations

import struct
import time
import zlib
from collections.abc import Iterable, Sequence
from typing import Any

MOD = 1 << 64
TABLE = "digests"
RECORDED = ""  # the scope of a run's own rows

LogRow = Sequence[Any]  # (seq, ctx_id, name, vtype, value_num, value_text)


_NUMBERS = struct.Struct("<qqd?")


def row_hash(seq: int, ctx: int, name: str, vtype: str, num: Any, text: Any) -> int:
    """The 64-bit check of one log row's canonical encoding."""
    data = _NUMBERS.pack(seq, ctx, 0.0 if num is None else num, num is None) + (
        f"{name}\x1f{vtype}\x1f" + ("" if text is None else "\x1e" + text)
    ).encode("utf-8", "surrogatepass")
    return zlib.crc32(data) << 32 | zlib.adler32(data)


def fold(rows: Iterable[LogRow], count: int = 0, total: int = 0) -> tuple[int, int]:
    """``(count, sum)`` after adding ``rows`` to a digest that held ``count`` rows summing to
    ``total``."""
    pack, crc32, adler32 = _NUMBERS.pack, zlib.crc32, zlib.adler32
    for seq, ctx, name, vtype, num, text in rows:  # row_hash, inlined (once per stored row)
        data = pack(seq, ctx, 0.0 if num is None else num, num is None) + (
            f"{name}\x1f{vtype}\x1f" + ("" if text is None else "\x1e" + text)
        ).encode("utf-8", "surrogatepass")
        total += crc32(data) << 32 | adler32(data)
        count += 1
    return count, total % MOD


def to_text(total: int) -> str:
    return f"{total % MOD:016x}"


def add_rows(
    cursor: Any,
    mark: str,
    run_key: int,
    scope: str,
    rows: Sequence[LogRow],
    sealed: float | None = None,
) -> None:
    """Add ``rows`` to the (run, scope) digest through a DB-API cursor, in the caller's write
    transaction (which must hold the run's writers off: SQLite's ``BEGIN IMMEDIATE``, the run row
    ``FOR UPDATE`` on PostgreSQL). ``sealed``: the end time, once the run or replay ended."""
    if not rows and sealed is None:
        return
    cursor.execute(
        f"SELECT rows, digest FROM {TABLE} WHERE run = {mark} AND scope = {mark}", (run_key, scope)
    )
    found = cursor.fetchone()
    if found is None:
        count, total = fold(rows)
        cursor.execute(
            f"INSERT INTO {TABLE} (run, scope, rows, digest, sealed) "
            f"VALUES ({mark}, {mark}, {mark}, {mark}, {mark})",
            (run_key, scope, count, to_text(total), sealed),
        )
        return
    count, total = fold(rows, int(found[0]), int(found[1], 16))
    sets = f"rows = {mark}, digest = {mark}" + (f", sealed = {mark}" if sealed is not None else "")
    params: tuple[Any, ...] = (count, to_text(total))
    if sealed is not None:
        params += (sealed,)
    cursor.execute(
        f"UPDATE {TABLE} SET {sets} WHERE run = {mark} AND scope = {mark}",
        (*params, run_key, scope),
    )


def forget_run(cursor: Any, mark: str, run_key: int) -> None:
    """Drop digests left by a deleted run whose key a new run now reuses (SQLite reuses the
    largest rowid after a delete)."""
    cursor.execute(f"DELETE FROM {TABLE} WHERE run = {mark}", (run_key,))


def recompute(rows: Iterable[LogRow]) -> tuple[int, str]:
    """``(count, digest text)`` of stored rows, as ``retrolog doctor`` checks them."""
    count, total = fold(rows)
    return count, to_text(total)


def add_replay_rows(tx: Any, run_key: int, replay_id: str, rows: Sequence[dict[str, Any]]) -> None:
    """Add the rows a replay stores for one run to that (run, replay) digest, inside the
    ``lite.Transaction`` that inserts them (the replay coordinator's ``_store_rows``); ``sealed``
    becomes the time of the replay's latest rows for the run."""
    if not rows:
        return
    found = tx.fetch(
        f"SELECT rows, digest FROM {TABLE} WHERE run = :r AND scope = :s",
        {"r": run_key, "s": replay_id},
    )
    start = (int(found[0][0]), int(found[0][1], 16)) if found else (0, 0)
    count, total = fold(
        (
            (r["seq"], r["ctx_id"], r["name"], r["vtype"], r["value_num"], r["value_text"])
            for r in rows
        ),
        *start,
    )
    params = {"r": run_key, "s": replay_id, "n": count, "d": to_text(total), "t": time.time()}
    if found:
        tx.execute(
            f"UPDATE {TABLE} SET rows = :n, digest = :d, sealed = :t WHERE run = :r AND scope = :s",
            params,
        )
    else:
        tx.execute(
            f"INSERT INTO {TABLE} (run, scope, rows, digest, sealed) VALUES (:r, :s, :n, :d, :t)",
            params,
        )
