"""Per-run append-only journals, and recovery of the journals that crashed runs leave behind.

A journal is a binary file: a magic line, then one record per flush, ``<length, crc32>`` followed
by a ``marshal`` payload ``(1, first_seq, events, rows)`` holding the training thread's buffers
exactly as they were appended (``shape_batch`` turns them into the documented events). marshal
is the standard library's C serialiser for plain values: it costs ~0.1-0.2 µs per event where
JSON cost 1.5 µs, and the training process does nothing else per event, so the background
thread stays off the training thread's GIL. Only files this tool wrote are ever read back.
The older JSON-lines format (``.jsonl``, one event per line) is still read: rescue files use it.

A running process holds an exclusive ``flock`` on its journal for its whole life. The kernel drops
that lock when the process dies, however it dies (SIGKILL included), so any journal whose lock can
be taken belongs to a run that is gone: its events are ingested (idempotently, above the run's
high-water mark) and the run is marked ``crashed`` unless the journal recorded its end.
"""

from __future__ import annotations

import errno
import hashlib
import json
import marshal
import math
import os
import re
import socket
import struct
import tempfile
import zlib
from collections.abc import Sequence
from contextlib import suppress
from pathlib import Path
from typing import IO, TYPE_CHECKING, Any

from .._warn import warn_once
from . import values as V

try:
    import fcntl
except ImportError:  # pragma: no cover - Windows: no crash detection through locks
    fcntl = None  # type: ignore[assignment]

if TYPE_CHECKING:
    from ..store.lite import Database

SUFFIX = ".journal"
TEXT_SUFFIX = ".jsonl"  # rescue files and journals of earlier versions: one JSON event per line
MAGIC = b"retrolog-journal 1\n"
_HEADER = struct.Struct("<II")  # payload length, crc32 of the payload
_RAW = 1

Batch = tuple[int, list[tuple[Any, ...]], list[tuple[Any, ...]]]  # first seq, events, log rows


class Journal:
    """An open, locked, append-only journal file of one run."""

    def __init__(self, path: Path) -> None:
        self.path = path
        path.parent.mkdir(parents=True, exist_ok=True)
        # Unbuffered: a failed write (a full disk) leaves nothing queued to be written later.
        self._file: IO[bytes] | None = open(path, "ab", buffering=0)  # noqa: SIM115
        if fcntl is not None:
            fcntl.flock(self._file.fileno(), fcntl.LOCK_EX | fcntl.LOCK_NB)
        self._magic = os.fstat(self._file.fileno()).st_size > 0
        with suppress(OSError):  # a full disk: written with the first record that fits
            self._write_magic()

    def _write_magic(self) -> None:
        if not self._magic:
            self._write(MAGIC)
            self._magic = True

    def append(
        self, first_seq: int, events: list[tuple[Any, ...]], rows: list[tuple[Any, ...]]
    ) -> None:
        """Write one flush's buffers and hand them to the OS (survives a process kill)."""
        assert self._file is not None
        try:
            payload = marshal.dumps((_RAW, first_seq, events, rows))
        except ValueError:  # an object marshal cannot write slipped into an event: shape it here
            payload = marshal.dumps(
                (_RAW, first_seq, _plain(shape_batch(first_seq, events, rows)), [])
            )
        self._write_magic()
        self._write(_HEADER.pack(len(payload), zlib.crc32(payload)) + payload)

    def _write(self, data: bytes) -> None:
        """Append ``data`` whole or not at all: after a failed or short write (``ENOSPC``) the
        file is cut back to its last whole record, so later appends, once space returns, follow
        it with no torn record in between (a reader stops at the first torn record)."""
        assert self._file is not None
        fd = self._file.fileno()
        start = os.fstat(fd).st_size  # O_APPEND: every write goes to the end
        view = memoryview(data)
        try:
            while view:
                written = self._file.write(view)
                if not written:
                    raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))
                view = view[written:]
        except OSError:
            with suppress(OSError):
                os.ftruncate(fd, start)
            raise

    def close(self, delete: bool) -> None:
        if self._file is None:
            return
        if delete:
            self.path.unlink(missing_ok=True)
        self._file.close()  # closing releases the lock
        self._file = None


def _plain(events: list[list[Any]]) -> list[tuple[Any, ...]]:
    """Already shaped events, made marshal-safe through JSON, as one pseudo-event each."""
    return [("shaped", json.loads(json.dumps(ev, allow_nan=True, default=repr))) for ev in events]


def shape_batch(
    first_seq: int, events: Sequence[tuple[Any, ...]], rows: Sequence[tuple[Any, ...]]
) -> list[list[Any]]:
    """The documented events ``[seq, kind, ...]`` (docs/data-model.md) of one flush's buffers.

    Events are numbered first, then log rows, in the order the training thread appended them.
    Values that cannot be stored are dropped with one warning per name.
    """
    out: list[list[Any]] = []
    seq = first_seq - 1
    for ev in events:
        seq += 1
        kind = ev[0]
        if (
            kind.__class__ is tuple
        ):  # a nested loop's iteration: (("ctx", parent, depth, name), id, ...)
            _, parent, depth, name = kind
            out.append([seq, "ctx", ev[1], parent, depth, name, ev[2], _item_value(ev[3]), ev[4]])
        elif kind == "ctx":
            out.append([seq, "ctx", *ev[1:6], _item_value(ev[6]), ev[7]])
        elif kind == "shaped":
            out.append(list(ev[1]))
        else:
            out.append([seq, *ev])
    to_cell, unsupported, isfinite = V.to_cell, V.UnsupportedValue, math.isfinite
    for name, value, ctx in rows:
        seq += 1
        kind = value.__class__
        if kind is float and isfinite(value):  # nearly every row: to_cell's answer, inlined
            out.append([seq, "log", ctx, name, "f", value, None])
            continue
        if kind is tuple:
            cell = value
        else:
            try:
                cell = to_cell(value)
            except unsupported as exc:
                warn_once(f"value:{name}", f"retrolog: a value of {name!r} was not recorded: {exc}")
                continue
        out.append([seq, "log", ctx, name, *cell])
    return out


def batch_size(batch: Batch) -> int:
    return len(batch[1]) + len(batch[2])


def _item_value(item: Any) -> str | None:
    """JSON of a loop item worth keeping as the iteration's value (small scalars only)."""
    kind = item.__class__
    if kind is int:
        return str(item)  # JSON of an int, without json.dumps' cost (once per iteration)
    if kind is bool:
        return "true" if item else "false"
    if kind is str and len(item) <= 200:
        return json.dumps(item)
    if kind is float and math.isfinite(item):
        return repr(item)
    return None


class JournalReader:
    """Reads a journal's complete records incrementally (a torn last record waits or is dropped)."""

    def __init__(self, path: Path) -> None:
        self.path = path
        self._offset = 0
        self._text = False  # decided by the file's first bytes, never by its name

    def read_new(self) -> list[list[Any]]:
        """Events appended since the last call, shaped."""
        return [ev for batch in self.read_batches() for ev in shape_batch(*batch)]

    def read_batches(self) -> list[Batch]:
        """The raw batches (``Journal.append``'s arguments) appended since the last call."""
        data = self._read()
        if self._text:
            events = self._read_text(data)
            return [(0, [("shaped", ev) for ev in events], [])] if events else []
        batches: list[Batch] = []
        pos = 0
        if self._offset == 0:
            if len(data) < len(MAGIC):
                return batches
            pos = len(MAGIC)
        while pos + _HEADER.size <= len(data):
            length, crc = _HEADER.unpack_from(data, pos)
            payload = data[pos + _HEADER.size : pos + _HEADER.size + length]
            if len(payload) < length or zlib.crc32(payload) != crc:
                break  # torn (killed mid-write) or still being written
            tag, first_seq, raw_events, rows = marshal.loads(payload)
            if tag != _RAW:
                break
            batches.append((first_seq, raw_events, rows))
            pos += _HEADER.size + length
        self._offset += pos
        return batches

    def _read(self) -> bytes:
        try:
            with open(self.path, "rb") as fh:
                fh.seek(self._offset)
                data = fh.read()
        except FileNotFoundError:
            return b""
        if self._offset == 0 and data and not MAGIC.startswith(data[: len(MAGIC)]):
            self._text = True  # JSON lines (rescue files, earlier versions)
        return data

    def _read_text(self, data: bytes) -> list[list[Any]]:
        events: list[list[Any]] = []
        pos = 0
        while True:
            end = data.find(b"\n", pos)
            if end < 0:
                break
            try:
                events.append(json.loads(data[pos:end].decode("utf-8", "replace")))
            except json.JSONDecodeError:
                break
            pos = end + 1
        self._offset += pos
        return events


def read_events(path: Path) -> list[list[Any]]:
    """All complete events of a journal (binary or JSON lines); a torn last record is dropped."""
    return JournalReader(path).read_new()


def journal_paths(journal_dir: Path) -> list[Path]:
    """Every journal (binary or JSON lines) in ``journal_dir``, sorted."""
    if not journal_dir.is_dir():
        return []
    return sorted([*journal_dir.glob("*" + SUFFIX), *journal_dir.glob("*" + TEXT_SUFFIX)])


def is_orphan(path: Path) -> bool:
    """Whether no live process holds ``path``'s lock (its run is gone)."""
    if fcntl is None:
        return True
    try:
        with open(path, "rb") as fh:
            try:
                fcntl.flock(fh.fileno(), fcntl.LOCK_EX | fcntl.LOCK_NB)
            except OSError:
                return False
            fcntl.flock(fh.fileno(), fcntl.LOCK_UN)
    except OSError:
        return False
    return True


def inspect_journal(path: Path) -> tuple[int, int, int]:
    """``(events, readable bytes, total bytes)`` of a journal: bytes past the readable part are a
    torn or damaged tail that no reader can use (``retrolog doctor`` reports them)."""
    reader = JournalReader(path)
    events = len(reader.read_new())
    try:
        total = path.stat().st_size
    except OSError:
        total = reader._offset
    return events, reader._offset, total


RESCUE_PREFIX = "retrolog-rescue-"


def rescue_path(journal_dir: Path, run_id: str) -> Path:
    """Where a run whose journal and store were unwritable (a full disk) saves what it could not
    write, at its end: the temporary directory, usually another file system, under a name that
    ties it to this project's journals so the next command of this project stores it."""
    return Path(tempfile.gettempdir()) / f"{_rescue_stem(journal_dir)}{run_id}{TEXT_SUFFIX}"


def _rescue_stem(journal_dir: Path) -> str:
    key = hashlib.sha1(str(journal_dir.resolve()).encode(), usedforsecurity=False).hexdigest()
    return f"{RESCUE_PREFIX}{key[:12]}-"


def is_disk_full(exc: BaseException) -> bool:
    """Whether an error means the disk (or quota) is full, from the OS or from SQLite."""
    if isinstance(exc, OSError) and exc.errno in (errno.ENOSPC, errno.EDQUOT):
        return True
    text = str(exc).lower()
    return "disk is full" in text or "no space left" in text or "quota exceeded" in text


def recover_orphans(journal_dir: Path, store: Database) -> list[str]:
    """Ingest journals whose process is gone, then the rescue files of this project's runs that
    ended on a full disk; return the run ids recovered."""
    recovered: list[str] = []
    if journal_dir.is_dir():
        for path in journal_paths(journal_dir):
            if _recover_journal(path, store):
                recovered.append(_run_id_of(path))
    stem = _rescue_stem(journal_dir)
    for path in sorted(Path(tempfile.gettempdir()).glob(f"{stem}*{TEXT_SUFFIX}")):
        run_id = path.name[len(stem) : -len(TEXT_SUFFIX)]
        if _has_journal(journal_dir, run_id):
            continue  # its journal (lower seqs) must be stored first: its run is still alive
        events = read_events(path)
        store.ingest(run_id, events)
        if not any(ev[1] == "end" for ev in events):
            store.set_status(run_id, "crashed", error="process ended without closing the run")
        path.unlink(missing_ok=True)
        if run_id not in recovered:
            recovered.append(run_id)
    if journal_dir.is_dir():
        _close_vanished_runs(journal_dir, store)
    return recovered


def _run_id_of(path: Path) -> str:
    """The run a journal belongs to: its name, less a rescue file's project key when a user
    moved a rescue file into the journals folder."""
    stem = path.name[: -len(path.suffix)]
    moved = re.fullmatch(r"[0-9a-f]{12}-(.+)", stem)
    return moved.group(1) if moved else stem


def _recover_journal(path: Path, store: Database) -> bool:
    """Ingest one journal if its run is gone; True when it was."""
    try:
        fh = open(path, encoding="utf-8")  # noqa: SIM115 - closed by the with below
    except OSError:
        return False  # recovered concurrently by another command
    with fh:
        if fcntl is not None:
            try:
                fcntl.flock(fh.fileno(), fcntl.LOCK_EX | fcntl.LOCK_NB)
            except OSError:
                return False  # its run is alive
        if not path.exists():
            return False
        run_id = _run_id_of(path)
        events = read_events(path)
        store.ingest(run_id, events)
        rescued = rescue_path(path.parent, run_id).exists()  # holds the rest, and maybe the end
        if not rescued and not any(ev[1] == "end" for ev in events):
            end_time = path.stat().st_mtime
            store.set_status(
                run_id,
                "crashed",
                end_time=end_time,
                error="process ended without closing the run",
            )
        path.unlink(missing_ok=True)
        return True


def _close_vanished_runs(journal_dir: Path, store: Database) -> None:
    """Runs marked running on this host whose process and journal are both gone crashed early."""
    host = socket.gethostname()
    for run_id, run_host, pid in store.running_runs():
        if run_host != host or pid is None or _has_journal(journal_dir, run_id):
            continue
        if not _pid_alive(int(pid)):
            store.set_status(run_id, "crashed", error="process ended without closing the run")


def _has_journal(journal_dir: Path, run_id: str) -> bool:
    return any((journal_dir / (run_id + suffix)).exists() for suffix in (SUFFIX, TEXT_SUFFIX))


def _pid_alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True
