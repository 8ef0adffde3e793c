"""The one object the recording runtime drives: policy + capture + background writer."""

from __future__ import annotations

import time
import warnings
from collections import deque
from collections.abc import Callable, Mapping
from concurrent.futures import Future
from typing import Any

from retrolog._warn import RetrologWarning
from retrolog.checkpoint.capture import capture
from retrolog.checkpoint.errors import CaptureError
from retrolog.checkpoint.format import Manifest
from retrolog.checkpoint.policy import CheckpointPolicy, background_charge
from retrolog.checkpoint.writer import CheckpointWriter
from retrolog.objects.store import ObjectStore


class Checkpointer:
    """Checkpoint registered objects at loop exits, within the policy's budget.

    Call :meth:`opportunity` at every loop exit from the training thread. It returns a future
    resolving to the stored :class:`Manifest` (record its ``digest`` with the loop coordinates),
    or None when the policy skips this opportunity or the objects cannot be captured (warned
    once). It never raises because of a write failure.
    """

    def __init__(
        self,
        store: ObjectStore,
        *,
        policy: CheckpointPolicy | None = None,
        max_pending: int = 2,
        rng: bool = True,
    ) -> None:
        self.store = store
        self.policy = policy if policy is not None else CheckpointPolicy()
        self.writer = CheckpointWriter(store, max_pending=max_pending)
        self.rng = rng
        self.capture_errors: list[CaptureError] = []
        self._finished: deque[float] = deque()  # writer seconds of completed saves, in order

    def opportunity(
        self,
        key: str,
        objects: Mapping[str, Any],
        work_seconds: float,
        *,
        locals: Callable[[], Mapping[str, Any]] | None = None,
        grads: Mapping[str, Any] | None = None,
        priority: bool = False,
        priority_in: int | None = None,
    ) -> Future[Manifest] | None:
        """A loop exited after ``work_seconds`` of training since the previous opportunity.

        ``locals`` returns the loop-carried variables to capture (called only when saving);
        ``grads`` names the torch modules whose ``.grad`` tensors to capture; ``priority``: a
        replay is likely to need this one, or one ``priority_in`` opportunities from now
        (``CheckpointPolicy.should_save``).
        """
        self._drain()
        if not self.policy.should_save(work_seconds, priority=priority, priority_in=priority_in):
            return None
        return self._save(key, objects, locals, grads)

    def save(self, key: str, objects: Mapping[str, Any]) -> Future[Manifest] | None:
        """Checkpoint now, regardless of the policy (its cost is still charged)."""
        self._drain()
        return self._save(key, objects)

    def flush(self) -> None:
        """Wait for all queued checkpoints to be written."""
        self.writer.flush()
        self._drain()

    def close(self) -> None:
        """Flush and stop the writer thread."""
        self.writer.close()
        self._drain()

    def __enter__(self) -> Checkpointer:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def _save(
        self,
        key: str,
        objects: Mapping[str, Any],
        locals: Callable[[], Mapping[str, Any]] | None = None,
        grads: Mapping[str, Any] | None = None,
    ) -> Future[Manifest] | None:
        start = time.perf_counter()
        try:
            carried = locals() if locals is not None else None
            captured = capture(objects, rng=self.rng, locals=carried, grads=grads)
        except CaptureError as exc:
            self.policy.record_save(time.perf_counter() - start, 0.0)
            if not self.capture_errors:
                warnings.warn(
                    f"retrolog: not checkpointing ({exc}); training continues, replay will "
                    "re-execute instead of restoring",
                    RetrologWarning,
                    stacklevel=3,
                )
            self.capture_errors.append(exc)
            return None
        future = self.writer.submit(key, captured)  # may wait for a free slot: foreground time
        self.policy.record_save(time.perf_counter() - start)
        future.add_done_callback(self._on_written)
        return future

    def _on_written(self, future: Future[Manifest]) -> None:
        # Runs on the writer thread: only append; the policy is updated on the training thread.
        seconds = 0.0
        if not future.cancelled() and future.exception() is None:
            stats = future.result().stats
            seconds = background_charge(stats.write_seconds, stats.write_cpu_seconds)
        self._finished.append(seconds)

    def _drain(self) -> None:
        while self._finished:
            self.policy.record_background(self._finished.popleft())
