"""Storing a fast run's journal from a helper process, so the training process only journals.

A run that logs tens of thousands of values a second (a step loop with per-step logging) would
spend ~5 µs of Python per event shaping and inserting rows, on a thread that shares the GIL with
training. Past ``backend.DELEGATE_EVENTS`` events in one flush, the run starts this module as a
separate process (``python -m retrolog.record.follower``): it follows the journal file, ingests each
complete record (idempotently, above the run's high-water mark, as crash recovery does) and exits
once it has stored the run's ``end`` event. The training process waits for it at the end of the
run and deletes the journal only when the follower stored everything. If either process dies, the
journal stays and the next retrolog command recovers it.
"""

from __future__ import annotations

import contextlib
import os
import subprocess
import sys
import threading
import time
from pathlib import Path
from typing import Any

POLL_SECONDS = 0.2
CHUNK = 20_000  # events per transaction: short write locks for the project's other writers
DUTY = 0.25  # share of the time the follower works while the run is alive
FINISH_NOTICE_SECONDS = 3.0
FINISH_LIMIT_SECONDS = 600.0
_PACKAGE_PARENT = str(Path(__file__).resolve().parents[2])


class Follower:
    """The parent's handle on its helper process."""

    def __init__(self, process: subprocess.Popen[bytes]) -> None:
        self.process = process

    @classmethod
    def start(cls, journal: Path, db_url: str, run_id: str) -> Follower:
        env = dict(os.environ)
        env["PYTHONPATH"] = os.pathsep.join(filter(None, [_PACKAGE_PARENT, env.get("PYTHONPATH")]))
        env.pop("RETROLOG_REPLAY", None)
        process = subprocess.Popen(
            [
                sys.executable,
                "-m",
                "retrolog.record.follower",
                str(journal),
                db_url,
                run_id,
                str(os.getpid()),
            ],
            env=env,
            stdin=subprocess.PIPE,  # closed by finish() or by the parent's death: hurry up
            stdout=subprocess.DEVNULL,
            start_new_session=True,  # a Ctrl-C for the training script must not kill it mid-write
        )
        return cls(process)

    def finish(self) -> bool:
        """Wait until the helper has stored the end of the run; True when it exited cleanly."""
        if self.process.stdin is not None:
            with contextlib.suppress(OSError):
                self.process.stdin.close()  # end of the run: full speed from now on
        try:
            self.process.wait(timeout=FINISH_NOTICE_SECONDS)
        except subprocess.TimeoutExpired:
            print("retrolog: storing the rest of this run's logs...", file=sys.stderr, flush=True)
            try:
                self.process.wait(timeout=FINISH_LIMIT_SECONDS)
            except subprocess.TimeoutExpired:
                print(
                    "retrolog: gave up waiting; the next retrolog command stores the rest",
                    file=sys.stderr,
                )
                return False
        return self.process.returncode == 0


def follow(journal: Path, db_url: str, run_id: str, parent_pid: int) -> int:
    """Ingest ``journal`` as it grows until its run's ``end`` event; 0 when that was stored.

    While the run trains, the follower works at most ``duty`` of the time (it sleeps in between):
    on a machine whose cores share execution units (SMT), any busy neighbour slows the training
    thread by up to ~1.6x, so the backlog is mostly stored once the run ends (the parent then
    closes the follower's stdin and waits) or dies.
    """
    from ..store.open import open_db
    from .journal import JournalReader, shape_batch

    with contextlib.suppress(OSError, AttributeError):
        os.nice(10)  # background work: on a busy machine the training process comes first
    hurry = threading.Event()

    def wait_for_the_end() -> None:
        with contextlib.suppress(OSError, ValueError):
            sys.stdin.buffer.read()  # EOF: the run ended (or its process died)
        hurry.set()

    threading.Thread(target=wait_for_the_end, daemon=True).start()
    duty = _duty()
    reader = JournalReader(journal)
    writer = None
    parent_gone = False

    def store(events: list[list[Any]]) -> None:
        nonlocal writer
        for attempt in range(1, 6):
            try:
                if writer is None:
                    writer = open_db(db_url)
                started = time.perf_counter()
                writer.ingest(run_id, events)
                if not hurry.is_set() and duty < 1.0:
                    hurry.wait((time.perf_counter() - started) * (1.0 - duty) / duty)
                return
            except Exception as exc:
                if attempt == 5:
                    raise
                print(f"retrolog follower: retrying ({exc!r})", file=sys.stderr)
                time.sleep(min(30.0, 2.0**attempt))

    try:
        while True:
            batches = reader.read_batches()
            ended = False
            for first, events, rows in batches:
                for a in range(0, len(events), CHUNK):
                    chunk = shape_batch(first + a, events[a : a + CHUNK], [])
                    ended = ended or any(ev[1] == "end" for ev in chunk)
                    store(chunk)
                for a in range(0, len(rows), CHUNK):
                    store(shape_batch(first + len(events) + a, [], rows[a : a + CHUNK]))
            if ended:
                return 0
            if not batches:
                if parent_gone:
                    return 2  # the run died: the next retrolog command marks it, stores the rest
                parent_gone = os.getppid() != parent_pid
                if parent_gone:
                    hurry.set()
                else:
                    hurry.wait(POLL_SECONDS)
    except Exception as exc:
        print(f"retrolog follower: cannot store ({exc!r})", file=sys.stderr)
        return 1
    finally:
        if writer is not None:
            writer.dispose()


def _duty() -> float:
    from ..settings import FOLLOWER_DUTY

    return float(FOLLOWER_DUTY.get())


def main(argv: list[str] | None = None) -> int:
    args = sys.argv[1:] if argv is None else argv
    journal, db_url, run_id, parent_pid = args
    return follow(Path(journal), db_url, run_id, int(parent_pid))


if __name__ == "__main__":
    sys.exit(main())
