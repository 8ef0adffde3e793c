"""Per-run append-only journals, and recovery of the journals that crashed runs leave behind.

A running process holds an exclusive ``flock`` on its journal for its whole life. The kernel drops
that lock when the process dies, however it dies (SIGKILL included), so any journal whose lock can
be taken belongs to a run that is gone: its events are ingested (idempotently, above the run's
high-water mark) and the run is marked ``crashed`` unless the journal recorded its end.
"""

from __future__ import annotations

import json
import os
import socket
from collections.abc import Iterable, Sequence
from pathlib import Path
from typing import IO, TYPE_CHECKING, Any

try:
    import fcntl
except ImportError:  # pragma: no cover - Windows: no crash detection through locks
    fcntl = None  # type: ignore[assignment]

if TYPE_CHECKING:
    from ..store import Store

SUFFIX = ".jsonl"


class Journal:
    """An open, locked, append-only journal file of one run."""

    def __init__(self, path: Path) -> None:
        self.path = path
        path.parent.mkdir(parents=True, exist_ok=True)
        self._file: IO[str] | None = open(path, "a", encoding="utf-8")  # noqa: SIM115 - held open for the run
        if fcntl is not None:
            fcntl.flock(self._file.fileno(), fcntl.LOCK_EX | fcntl.LOCK_NB)

    def append(self, events: Iterable[Sequence[Any]]) -> None:
        """Write events as JSON lines and hand them to the OS (survives a process kill)."""
        assert self._file is not None
        self._file.write("".join(encode_event(ev) + "\n" for ev in events))
        self._file.flush()

    def close(self, delete: bool) -> None:
        if self._file is None:
            return
        if delete:
            self.path.unlink(missing_ok=True)
        self._file.close()  # closing releases the lock
        self._file = None


_names: dict[str, str] = {}


def _json_name(name: str) -> str:
    encoded = _names.get(name)
    if encoded is None:
        encoded = _names[name] = json.dumps(name)
    return encoded


def encode_event(ev: Sequence[Any]) -> str:
    """One event as a JSON array. Log and loop events (nearly all of them) are formatted directly:
    json.dumps costs several times more and runs once per logged value."""
    kind = ev[1]
    if kind == "log":
        seq, _, ctx, name, vtype, num, text = ev
        number = "null" if num is None else repr(num)  # cells hold finite floats only
        text_json = "null" if text is None else json.dumps(text)
        return f'[{seq},"log",{ctx},{_json_name(name)},"{vtype}",{number},{text_json}]'
    if kind == "ctx":
        seq, _, cid, parent, depth, name, iteration, value, started = ev
        value_json = "null" if value is None else json.dumps(value)
        return f'[{seq},"ctx",{cid},{parent},{depth},{_json_name(name)},{iteration},{value_json},{started!r}]'
    return json.dumps(ev, allow_nan=True)


def read_events(path: Path) -> list[list[Any]]:
    """All complete events of a journal; a torn last line (killed mid-write) is dropped."""
    events = []
    with open(path, encoding="utf-8", errors="replace") as fh:
        for line in fh:
            if not line.endswith("\n"):
                break
            try:
                events.append(json.loads(line))
            except json.JSONDecodeError:
                break
    return events


def recover_orphans(journal_dir: Path, store: Store) -> list[str]:
    """Ingest journals whose process is gone; return the run ids recovered."""
    recovered: list[str] = []
    if not journal_dir.is_dir():
        return recovered
    for path in sorted(journal_dir.glob("*" + SUFFIX)):
        try:
            fh = open(path, encoding="utf-8")  # noqa: SIM115 - closed by the with below
        except OSError:
            continue  # recovered concurrently by another command
        with fh:
            if fcntl is not None:
                try:
                    fcntl.flock(fh.fileno(), fcntl.LOCK_EX | fcntl.LOCK_NB)
                except OSError:
                    continue  # its run is alive
            if not path.exists():
                continue
            run_id = path.name[: -len(SUFFIX)]
            events = read_events(path)
            store.ingest(run_id, events)
            if not any(ev[1] == "end" for ev in events):
                end_time = path.stat().st_mtime
                store.set_status(
                    run_id,
                    "crashed",
                    end_time=end_time,
                    error="process ended without closing the run",
                )
            path.unlink(missing_ok=True)
            recovered.append(run_id)
    _close_vanished_runs(journal_dir, store)
    return recovered


def _close_vanished_runs(journal_dir: Path, store: Store) -> None:
    """Runs marked running on this host whose process and journal are both gone crashed early."""
    host = socket.gethostname()
    for run_id, run_host, pid in store.running_runs():
        if run_host != host or pid is None or (journal_dir / (run_id + SUFFIX)).exists():
            continue
        if not _pid_alive(int(pid)):
            store.set_status(run_id, "crashed", error="process ended without closing the run")


def _pid_alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True
