"""Storing a fast run's journal from a helper process, so the training process only journals.

A run that logs tens of thousands of values a second (a step loop with per-step logging) would
spend ~5 µs of Python per event shaping and inserting rows, on a thread that shares the GIL with
training. Past ``session.DELEGATE_EVENTS`` events in one flush, the run starts this module as a
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
import time
from pathlib import Path

POLL_SECONDS = 0.2
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
            stdin=subprocess.DEVNULL,
            stdout=subprocess.DEVNULL,
            start_new_session=True,  # a Ctrl-C for the training script must not kill it mid-write
        )
        return cls(process)

    def finish(self) -> bool:
        """Wait until the helper has stored the end of the run; True when it exited cleanly."""
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
    """Ingest ``journal`` as it grows until its run's ``end`` event; 0 when that was stored."""
    from ..store.ingest import open_writer
    from .journal import JournalReader

    with contextlib.suppress(OSError, AttributeError):
        os.nice(10)  # background work: on a busy machine the training process comes first

    reader = JournalReader(journal)
    writer = None
    failures = 0
    parent_gone = False
    try:
        while True:
            events = reader.read_new()
            if events:
                while True:
                    try:
                        if writer is None:
                            writer = open_writer(db_url)
                        writer.ingest(run_id, events)
                        failures = 0
                        break
                    except Exception as exc:
                        failures += 1
                        if failures >= 5:
                            print(f"retrolog follower: cannot store ({exc!r})", file=sys.stderr)
                            return 1
                        time.sleep(min(30.0, 2.0**failures))
                if any(ev[1] == "end" for ev in events):
                    return 0
            elif parent_gone:
                return 2  # the run died: the next retrolog command marks it and keeps the journal's rest
            else:
                parent_gone = os.getppid() != parent_pid
                time.sleep(0 if parent_gone else POLL_SECONDS)
    finally:
        if writer is not None:
            writer.dispose()


def main(argv: list[str] | None = None) -> int:
    args = sys.argv[1:] if argv is None else argv
    journal, db_url, run_id, parent_pid = args
    return follow(Path(journal), db_url, run_id, int(parent_pid))


if __name__ == "__main__":
    sys.exit(main())
