"""A run's storage back end: where the rows and events a session buffers go.

The training thread only appends tuples to the session's two lists (``rows`` for log values,
``events`` for everything rarer). The back end's flusher thread drains them at least every
``FLUSH_SECONDS`` (two slice copies), appends them to the run's journal and wakes the store
writer, which shapes and ingests them into the store. Any failure there is reported once and
never reaches the training thread; what could not be stored stays in the journal (or, if even
that is impossible, in memory and then a rescue file).

The session makes its back end, gives it its buffers (``open``) and starts it (``start``) once
it is whole: the threads call the back end's own methods, never the session's. Three kinds:
``ProjectBackend`` (a recorded run: the project's journal and store), ``TaskOutputBackend`` (a
replay task: the output file is the journal, the coordinator stores it) and ``DiscardBackend``
(a rank that does not record: nothing is kept).
"""

from __future__ import annotations

import json
import threading
import warnings
from collections.abc import Callable
from pathlib import Path
from typing import TYPE_CHECKING, Any, Protocol

from .. import settings
from .._warn import RetrologWarning, warn_once
from .journal import SUFFIX, Batch, Journal, batch_size, is_disk_full, rescue_path, shape_batch

if TYPE_CHECKING:
    from ..store.lite import Database
    from .follower import Follower

FLUSH_SECONDS = 1.0
DELEGATE_EVENTS = settings.FOLLOWER_EVENTS.default


class Buffers(Protocol):
    """What a back end drains: the session's two lists, read at each drain (an integration swaps
    ``rows`` while it skips batches, under the back end's ``lock``)."""

    rows: list[tuple[str, Any, int]]
    events: list[tuple[Any, ...]]


class Place(Protocol):
    """Where a project keeps its journals and its store (a ``retrolog.project.Project``)."""

    @property
    def journal_dir(self) -> Path: ...

    @property
    def db_url(self) -> str: ...

    def ensure_data_dir(self) -> None: ...


class Backend:
    """What every back end does: number the drained batches and append them to a journal. The
    kinds below say where the journal is (``_open_journal``) and whether the batches also go to
    the project's store (``stores_to_project``)."""

    stores_to_project = False  # only a recorded run ingests into the project's store

    def __init__(self) -> None:
        self.lock = threading.Lock()  # drains; the session's ``_flush_lock``
        self._seq = 0
        self._unstored: list[Batch] = []  # flushed batches not yet in the store (raw)
        self._follower: Follower | None = None  # ingestion handed to a helper process
        self._delegate_events = int(settings.FOLLOWER_EVENTS.get())
        self._store: Database | None = None  # opened on first store (store.open.open_db)
        self._journal: Journal | None = None
        self._journal_backlog: list[Batch] = []  # flushed, not yet written (a full disk)
        self._disk_full = False
        self._broken_journal: Journal | None = None
        self._stop = threading.Event()
        self._store_wanted = threading.Event()
        self._ingest_lock = threading.Lock()
        self._flusher: threading.Thread | None = None
        self._storer: threading.Thread | None = None
        self._observe: Callable[[list[Any]], None] = lambda rows: None

    def open(
        self,
        buffers: Buffers,
        project: Place,
        run_id: str,
        observe: Callable[[list[Any]], None] | None = None,
    ) -> None:
        """Take the session's buffers (``observe`` sees each drained batch of rows) and open the
        journal; a journal that cannot be written keeps the logs in memory."""
        self.buffers, self.project, self.run_id = buffers, project, run_id
        if observe is not None:
            self._observe = observe
        try:
            self._journal = self._open_journal()
        except OSError as exc:
            warn_once(
                "journal",
                f"retrolog: cannot write a journal in {project.journal_dir} ({exc}); "
                "keeping this run's logs in memory until it ends",
            )

    def _open_journal(self) -> Journal | None:
        return None

    def start(self) -> None:
        """Start the store writer (a recorded run's) and the flusher."""
        if self.stores_to_project:
            self._storer = threading.Thread(
                target=self._store_loop, name="retrolog-store", daemon=True
            )
            self._storer.start()
        self._flusher = threading.Thread(
            target=self._flush_loop, name="retrolog-flush", daemon=True
        )
        self._flusher.start()

    def stop(self) -> None:
        """Stop the threads after their last round (the session then adds its last events)."""
        self._stop.set()
        self._store_wanted.set()
        if self._flusher is not None:
            self._flusher.join(timeout=30)
        if self._storer is not None:
            self._storer.join(timeout=60)

    # -- flushing ----------------------------------------------------------------------------
    def _flush_loop(self) -> None:
        while not self._stop.wait(FLUSH_SECONDS):
            self.flush()

    def _drain(self) -> Batch:
        """Take what the training thread buffered: two slice copies, no per-event work here."""
        buffers = self.buffers
        n_events = len(buffers.events)
        n_rows = len(buffers.rows)
        events = buffers.events[:n_events]
        rows = buffers.rows[:n_rows]
        del buffers.events[:n_events]
        del buffers.rows[:n_rows]
        first = self._seq + 1
        self._seq += n_events + n_rows
        return first, events, rows

    def flush(self) -> None:
        """Move buffered rows to the journal and wake the store writer. Never raises.

        Journaling and storing run on separate threads, so a slow store (first import of
        SQLAlchemy, a long lock wait) never delays the journal past its one-second promise.
        When a run logs faster than about DELEGATE_EVENTS events a second, storing moves to a
        helper process that follows the journal (record/follower.py): shaping and inserting cost
        ~5 µs per event of Python, which would otherwise compete with training for the GIL.
        """
        with self.lock:
            try:
                batch = self._drain()
                self._observe(batch[2])
                fresh = batch_size(batch) > 0
                if not fresh and not self._journal_backlog:
                    return
                following = self._follower is not None
                kept = False
                if self._journal is not None:
                    if fresh:
                        self._journal_backlog.append(batch)
                    if not self._write_journal() and following:
                        # A follower stores only what reaches the journal: the rest stays in
                        # memory and goes to a rescue file at the end, above the journal's events.
                        self._unstored.extend(self._journal_backlog)
                        self._journal_backlog.clear()
                        self._broken_journal = self._journal  # still locked: the run is alive
                        self._journal = None
                        kept = True
                if not fresh:
                    return
                # kept for the store writer (a replay task's journal is all there is)
                if self.stores_to_project and not kept and (not following or self._journal is None):
                    self._unstored.append(batch)
                if (
                    not following
                    and self._journal is not None
                    and not self._journal_backlog
                    and batch_size(batch) >= self._delegate_events
                    and self.stores_to_project
                ):
                    self._start_following()
            except Exception as exc:  # the flusher must survive anything
                warn_once("flush", f"retrolog: background flush failed: {exc!r}")
        if self._unstored:
            self._store_wanted.set()

    def _write_journal(self) -> bool:
        """Append the batches waiting for the journal, oldest first; True when none is left.

        A failed write (a full disk) keeps them for the next flush, and the journal is cut back
        to its last whole record, so it stays readable and gapless when space returns."""
        assert self._journal is not None
        while self._journal_backlog:
            try:
                self._journal.append(*self._journal_backlog[0])
            except OSError as exc:
                self._warn_unwritable("journalwrite", exc)
                return False
            del self._journal_backlog[0]
        return True

    def _warn_unwritable(self, key: str, exc: BaseException) -> None:
        """One warning for a full disk, whether the journal or the store noticed it first."""
        if is_disk_full(exc):
            self._disk_full = True
            rescue = rescue_path(self.project.journal_dir, self.run_id)
            warn_once(
                "diskfull",
                f"retrolog: the disk is full ({exc}); training continues, its logs are kept in "
                "memory and written when space returns (if it has not when the run ends, they "
                f"are saved to {rescue} and the next retrolog command stores them)",
            )
        elif key == "journalwrite":
            warn_once(key, f"retrolog: journal write failed ({exc}); keeping logs in memory")
        else:
            warn_once(
                key,
                f"retrolog: cannot write to the store {self.project.db_url} ({exc}); "
                "logs are kept in the journal and stored by the next retrolog command",
            )

    # -- storing -----------------------------------------------------------------------------
    def _start_following(self) -> None:
        from .follower import Follower

        assert self._journal is not None
        try:
            self._follower = Follower.start(self._journal.path, self.project.db_url, self.run_id)
        except OSError as exc:
            warn_once("follower", f"retrolog: storing stays in this process ({exc})")
            return
        self._unstored.clear()  # the follower reads the journal from its start

    def _store_loop(self) -> None:
        while not self._stop.is_set():
            self._store_wanted.wait()
            self._store_wanted.clear()
            self._ingest()

    def _ingest(self) -> None:
        """Write journaled events to the store; on failure keep them for the next try."""
        with self._ingest_lock:
            count = len(self._unstored)
            if not count or self._follower is not None:
                return
            try:
                if self._store is None:
                    from ..store.open import open_db

                    self._store = open_db(self.project.db_url)
                events = [ev for batch in self._unstored[:count] for ev in shape_batch(*batch)]
                self._store.ingest(self.run_id, events)
                del self._unstored[:count]
            except Exception as exc:
                # The journal (or, at the end, a rescue file) holds whatever never reached the store.
                self._warn_unwritable("store", exc)

    # -- end of life -------------------------------------------------------------------------
    def close(self) -> None:
        """After ``stop`` and the session's last events: flush everything, store it, release
        the journal (deleted once everything in it is stored), rescue what nothing took."""
        self.flush()
        self._ingest()
        stored_by_follower = self._finish_following()
        if self._journal is not None:
            disposable = stored_by_follower or self._journal_disposable()
            if not disposable and self._journal_backlog and self.stores_to_project:
                # the disk is still full (a replay task's output is its coordinator's business)
                self._rescue(self._journal_backlog)
            self._journal.close(delete=disposable)
        elif self._unstored:
            self._rescue()
        if self._store is not None:
            self._store.dispose()

    def _finish_following(self) -> bool:
        """Wait for the follower to store the end of the journal; True when it did."""
        if self._follower is None or self._journal is None:
            return False  # no follower, or it cannot see the end: the journal stays for recovery
        return self._follower.finish()

    def _journal_disposable(self) -> bool:
        """The journal may go once everything in it reached the store (a replay task's output
        file is the task's result: it stays)."""
        return self.stores_to_project and not self._unstored and self._follower is None

    def _rescue(self, batches: list[Batch] | None = None) -> None:
        """Save what neither the journal nor the store took (``batches``, default everything
        unstored) where the next command of this project finds it (journal.rescue_path)."""
        path = rescue_path(self.project.journal_dir, self.run_id)
        partial = path.with_name(path.name + ".part")  # renamed whole: never read half-written
        try:
            with open(partial, "w", encoding="utf-8") as fh:
                for batch in self._unstored if batches is None else batches:
                    for ev in shape_batch(*batch):
                        fh.write(json.dumps(ev, allow_nan=True) + "\n")
            partial.rename(path)
            if self._disk_full:
                return  # the one disk-full warning already said where they go
            warnings.warn(
                f"retrolog: the store and journal were unwritable; this run's logs are saved in {path} "
                "(the next retrolog command in this project stores it)",
                RetrologWarning,
                stacklevel=2,
            )
        except OSError as exc:
            warnings.warn(
                f"retrolog: could not save this run's logs anywhere: {exc}",
                RetrologWarning,
                stacklevel=2,
            )


class ProjectBackend(Backend):
    """A recorded run: the journal in the project's journal folder, ingested into its store."""

    stores_to_project = True

    def _open_journal(self) -> Journal | None:
        self.project.ensure_data_dir()
        return Journal(self.project.journal_dir / (self.run_id + SUFFIX))


class TaskOutputBackend(Backend):
    """A replay task: the task's output file is the journal (the coordinator stores it)."""

    def __init__(self, output: str | Path) -> None:
        super().__init__()
        self.output = Path(output)

    def _open_journal(self) -> Journal | None:
        return Journal(self.output)


class DiscardBackend(Backend):
    """A rank that does not record: each flush empties the buffers, nothing is written."""

    def flush(self) -> None:
        del self.buffers.rows[: len(self.buffers.rows)]
        del self.buffers.events[: len(self.buffers.events)]
