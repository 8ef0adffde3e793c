"""Background half of a checkpoint: serialise, hash and store on one writer thread.

The queue is bounded (``max_pending`` captured states): when the writer falls behind, ``submit``
blocks the training thread rather than letting host memory grow without limit; that wait is
training-thread time and the :class:`~retrolog.checkpoint.Checkpointer` charges it to the policy,
which then spaces checkpoints further apart. Failures never raise on the training thread: each
one is set on its future, and the first one is also reported as a ``RetrologWarning``.
"""

from __future__ import annotations

import atexit
import functools
import queue
import threading
import warnings
import weakref
from concurrent.futures import Future
from typing import Any

from retrolog._warn import RetrologWarning
from retrolog.checkpoint.capture import CapturedState
from retrolog.checkpoint.format import Manifest, PackIndex, write_checkpoint
from retrolog.objects.store import ObjectStore

_STOP = object()


def _close_at_exit(ref: weakref.ref[CheckpointWriter]) -> None:
    """Flush a still-open writer when the interpreter exits (daemon threads die at exit)."""
    writer = ref()
    if writer is not None:
        writer.close()


class CheckpointWriter:
    """Writes captured states to ``store`` on a daemon thread, in submission order."""

    def __init__(self, store: ObjectStore, *, max_pending: int = 2) -> None:
        if max_pending < 1:
            raise ValueError("max_pending must be at least 1")
        self.store = store
        self.max_pending = max_pending
        self.errors: list[BaseException] = []
        self._queue: queue.Queue[Any] = queue.Queue(maxsize=max_pending)
        self._known: set[str] = set()
        self._packs: PackIndex = set()  # small tensors packed by this writer (format.PACK_LIMIT)
        self._thread: threading.Thread | None = None
        self._lock = threading.Lock()
        self._closed = False
        self._warned = False
        self._atexit = functools.partial(_close_at_exit, weakref.ref(self))
        atexit.register(self._atexit)

    def submit(self, key: str, captured: CapturedState) -> Future[Manifest]:
        """Queue a captured state; the future resolves to its stored :class:`Manifest`.

        Blocks only while ``max_pending`` states are already waiting.
        """
        with self._lock:
            if self._closed:
                raise RuntimeError("CheckpointWriter is closed")
            if self._thread is None:
                self._thread = threading.Thread(
                    target=self._run, name="retrolog-checkpoint-writer", daemon=True
                )
                self._thread.start()
        future: Future[Manifest] = Future()
        self._queue.put((key, captured, future))
        return future

    @property
    def pending(self) -> int:
        """Captured states queued or being written."""
        return self._queue.unfinished_tasks

    def flush(self) -> None:
        """Wait until every submitted state is written (or has failed)."""
        if self._thread is not None:
            self._queue.join()

    def close(self) -> None:
        """Flush, stop the thread; idempotent. Also runs at interpreter exit."""
        with self._lock:
            if self._closed:
                return
            self._closed = True
            thread = self._thread
        atexit.unregister(self._atexit)
        if thread is not None:
            self._queue.put(_STOP)
            thread.join()

    def __enter__(self) -> CheckpointWriter:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def _run(self) -> None:
        while True:
            item = self._queue.get()
            try:
                if item is _STOP:
                    return
                self._write(*item)
            finally:
                item = None  # drop the captured tensors before waiting for the next one
                self._queue.task_done()

    def _write(self, key: str, captured: CapturedState, future: Future[Manifest]) -> None:
        if not future.set_running_or_notify_cancel():
            return
        try:
            manifest = write_checkpoint(self.store, key, captured, self._known, self._packs)
        except BaseException as exc:  # reported, never raised on the training thread
            self._report(key, exc)
            future.set_exception(exc)
        else:
            future.set_result(manifest)

    def _report(self, key: str, exc: BaseException) -> None:
        self.errors.append(exc)
        if not self._warned:
            self._warned = True
            warnings.warn(
                f"retrolog: writing checkpoint {key!r} to {self.store!r} failed ({exc!r}); "
                "training continues, replay will re-execute instead of restoring "
                "(further failures are reported on their futures only)",
                RetrologWarning,
                stacklevel=1,
            )
