"""The framework-neutral half of the integrations: retrolog's ``epoch`` and ``step`` loops driven
from a framework's hooks, the end-of-epoch checkpoint, and replay's decision per epoch.

A framework owns its loops, so nothing in the user's code is a ``for ... in retrolog.loop(...)``.
The callback tells the driver when an epoch and a batch start and end; the driver opens the same
loop contexts ``retrolog.loop`` would (the main loop ``epoch``, the nested loop ``step``), records
their timings, and offers a checkpoint of the registered objects where the step loop of an epoch
ends (key ``(epoch, "step")``, as for a script's nested loop). Under replay it reads the task's
spec: stop where the task's work ends, and for each epoch decide whether its batches run or are
skipped (restoring that epoch's checkpoint at the epoch's end, or, for a lazy outer replay, not
even that). Rows logged while batches are being skipped are dropped.

Standard library only: torch is touched only through ``sys.modules`` (RNG states).
"""

from __future__ import annotations

import atexit
import random
import shutil
import sys
import tempfile
import time
from collections.abc import Callable
from typing import Any

from .._warn import warn_once
from ..record import api
from ..record import values as V
from ..record.args import ArgumentError
from ..record.replay_session import ReplayDone, ReplaySession
from ..record.session import RunSession

MAIN = "epoch"
NESTED = "step"
PENDING = 256  # batch tensors read at once
LAZY = "lazy"  # skip an epoch's batches without restoring anything (nothing selected observes it)


class _Discard(list[Any]):
    """Where rows go while an epoch's batches are skipped: nowhere."""

    def append(self, item: Any) -> None:
        return None


class IntegrationError(RuntimeError):
    """A replay cannot go on (the batches were skipped and the state cannot be restored)."""


class LoopDriver:
    """Loop contexts, timings, checkpoints and replay decisions for one framework run."""

    def __init__(self, framework: str) -> None:
        self.framework = framework
        self.session: RunSession | None = None
        self.replay: ReplaySession | None = None
        self.broken = False  # retrolog failed here: the callback does nothing more
        self.epoch: int | None = None
        self.epoch_ctx = 0
        self._epoch_t0 = 0.0
        self._main_t0 = 0.0
        self.epochs = 0
        self.steps = 0  # steps opened in the current epoch
        self.step_open = False
        self._steps_t0 = 0.0
        self._steps_t1 = 0.0
        self.skip: str | None = None  # None: run the epoch's batches; LAZY; or a manifest digest
        self.skipping = False  # batches of the current epoch are being skipped right now
        self._rows: Any = None
        self._pending: list[tuple[str, Any, int]] = []  # batch tensors, converted in bulk
        self._pending_since = 0.0
        self._instance: tuple[str, int, int, str] = ("ctx", 0, 2, NESTED)

    # -- session -----------------------------------------------------------------------------
    def start(self) -> RunSession | None:
        """Begin the run (or join the one in progress); None when retrolog cannot record."""
        if self.session is not None or self.broken:
            return self.session
        try:
            session = api._session or api._begin()
        except ArgumentError:
            raise
        except Exception as exc:
            self.fail("start", exc)
            return None
        self.session = session
        self.replay = session if isinstance(session, ReplaySession) else None
        return session

    def guard(self, where: str, action: Callable[[], None]) -> None:
        """Run a hook's work unless recording already stopped here; a failure stops it (``fail``),
        except the user's own ``--kwargs`` error, which must stop training as it does a script."""
        if self.broken:
            return
        try:
            action()
        except ArgumentError:
            raise
        except Exception as exc:  # a run never dies because retrolog failed (replay re-raises)
            self.fail(where, exc)

    def fail(self, where: str, exc: BaseException) -> None:
        """Record mode: warn once and stop driving (training goes on). Replay: re-raise, since
        a replay that silently stops skipping or restoring would store wrong values."""
        if self.replay is not None:
            raise exc
        self.broken = True
        warn_once(
            f"{self.framework}:{where}",
            f"retrolog: the {self.framework} callback stopped recording ({where}: {exc!r}); "
            "training continues",
        )

    # -- loops -------------------------------------------------------------------------------
    def start_epoch(self, index: int) -> None:
        """A main-loop iteration begins (before the epoch's first batch)."""
        s = self.session
        if s is None:
            return
        if self.epoch is not None:
            self.end_epoch()
        if not s.main_loop_started:
            api._record_parsed(s, strict=True)
            s._start_main_loop()
            self._main_t0 = time.perf_counter()
        r = self.replay
        if r is not None:
            spec = r.spec
            if spec.stop_at_main_loop:
                self._done(r)
            if spec.last_iteration is not None and index > spec.last_iteration:
                self._done(r)
            total = spec.last_iteration + 1 if spec.last_iteration is not None else None
            r._progress(index, total)
        cid = s.new_context(MAIN, index, index)
        s.ctx, s.depth, s.main_index = cid, 1, index
        self.epoch, self.epoch_ctx, self._epoch_t0 = index, cid, time.perf_counter()
        self.steps = 0
        self.skip = self._decide(r) if r is not None else None

    def _decide(self, r: ReplaySession) -> str | None:
        """Whether this epoch's batches run (None), are skipped lazily, or are skipped and the
        epoch's checkpoint restored at its end (the manifest's digest)."""
        if not r._may_skip(NESTED):
            return None
        if r._not_needed(NESTED):
            return LAZY
        assert r.main_index is not None
        digest = r._checkpoint_by_iteration.get((r.main_index, NESTED))
        if digest is None:
            r.fallbacks.append(f"{NESTED}@{r.main_index}: no checkpoint, re-executed")
        return digest

    def start_step(self, index: int) -> None:
        """A batch (an optimizer step for the HF Trainer) begins."""
        s = self.session
        if s is None or self.epoch is None:
            return
        if self.step_open:
            self.end_step()
        if self.steps == 0:
            self._steps_t0 = time.perf_counter()
            # shared by the epoch's step events, as in a nested retrolog.loop (session.py)
            self._instance = ("ctx", self.epoch_ctx, 2, NESTED)
        self.steps += 1
        cid = s._next_ctx = s._next_ctx + 1
        s.events.append((self._instance, cid, index, index, time.time()))
        s.ctx, s.depth = cid, 2
        self.step_open = True

    def end_step(self) -> None:
        """Back to the epoch's context (called lazily: hooks after a batch still log in it)."""
        s = self.session
        if s is None or not self.step_open:
            return
        s.ctx, s.depth = self.epoch_ctx, 1
        self.step_open = False
        self._steps_t1 = time.perf_counter()

    def begin_skip(self) -> None:
        """The epoch's batches are about to be skipped: drop what gets logged until its end."""
        s = self.session
        if s is None or self.skipping:
            return
        with s._flush_lock:  # the flusher must not drain half of a swapped buffer
            self._rows, s.rows = s.rows, _Discard()
        self.skipping = True

    def end_skip(self) -> bool:
        """The skipped batches' place is reached (the epoch's end): restore the epoch's
        checkpoint. True when state was restored (False: a lazy skip restores nothing)."""
        s, r = self.session, self.replay
        if s is None or r is None or not self.skipping:
            return False
        with s._flush_lock:
            s.rows = self._rows
        self.skipping = False
        if self.skip is None or self.skip == LAZY:
            return False
        what = f"{NESTED}@{self.epoch}"
        if not r._restore(self.skip, what):
            raise IntegrationError(
                f"retrolog replay: the batches of epoch {self.epoch} were skipped but its "
                f"checkpoint cannot be restored ({'; '.join(r.fallbacks[-1:])})"
            )
        return True

    def end_step_loop(self) -> None:
        """The epoch's batches are over (at the epoch's end hooks): time the step loop and, when
        recording, offer the checkpoint replay restores to skip them."""
        s = self.session
        if s is None or self.epoch is None:
            return
        self.end_step()
        self.flush_tensors()
        if self.steps:
            elapsed = self._steps_t1 - self._steps_t0
            s.events.append(("timing", "nested", NESTED, self.epoch_ctx, None, elapsed, self.steps))
        if self.replay is None and s.checkpoint_objects:
            self._checkpoint(s)

    def _checkpoint(self, s: RunSession) -> None:
        now = time.perf_counter()
        work, s._last_opportunity = now - s._last_opportunity, now
        checkpointer = s._get_checkpointer()
        if checkpointer is None:
            return
        parent, index = self.epoch_ctx, self.epoch
        try:
            future = checkpointer.opportunity(
                f"{s.run_id}/{NESTED}@{parent}", dict(s.checkpoint_objects), work
            )
        except Exception as exc:
            warn_once(
                "checkpoint",
                f"retrolog: checkpointing failed ({exc!r}); training continues without it",
            )
            return
        if future is not None:
            future.add_done_callback(lambda f: s._checkpoint_written(f, parent, NESTED, index))
        s._last_opportunity = time.perf_counter()

    def end_epoch(self) -> None:
        """The main-loop iteration ends (the next epoch starts, or training ends)."""
        s = self.session
        if s is None or self.epoch is None:
            return
        self.end_step()
        self.flush_tensors()
        elapsed = time.perf_counter() - self._epoch_t0
        s.events.append(("timing", "iteration", MAIN, self.epoch_ctx, self.epoch, elapsed, None))
        s.ctx, s.depth = 0, 0
        self.epoch = None
        self.epochs += 1

    def end_main(self) -> None:
        """Training ends: the main loop's exit (a replay whose work ends here stops)."""
        s = self.session
        if s is None or not s.main_loop_started:
            return
        self.end_epoch()
        if s._main_loop_end is None:
            elapsed = time.perf_counter() - self._main_t0
            s.events.append(("timing", "main", MAIN, 0, None, elapsed, self.epochs))
            s._main_loop_end = time.perf_counter()
        if self.replay is not None and self.replay.spec.stop_after_main_loop:
            self._done(self.replay)

    def _done(self, r: ReplaySession) -> None:
        r.close("finished")
        raise ReplayDone()

    # -- values ------------------------------------------------------------------------------
    def log_tensor(self, name: str, value: Any) -> None:
        """Record a one-element tensor logged in a batch without reading it now: ``.item()`` per
        batch would wait for the device each time. Read in bulk (one wait) every PENDING rows,
        every second, and where the batches end, at the coordinates where it was logged."""
        s = self.session
        if s is None or self.broken:
            return
        if not value.is_cuda:  # reading a CPU tensor waits for nothing
            api.log(name, value.item())
            return
        pending = self._pending
        if not pending:
            self._pending_since = time.perf_counter()
        pending.append((name, value.detach(), s.ctx))
        if len(pending) >= PENDING or time.perf_counter() - self._pending_since > 1.0:
            self.flush_tensors()

    def flush_tensors(self) -> None:
        """Turn the pending tensors into rows of the run (see log_tensor)."""
        pending, self._pending = self._pending, []
        s = self.session
        if not pending or s is None:
            return
        try:
            numbers = _read_all([value for _, value, _ in pending])
        except Exception as exc:
            warn_once(f"{self.framework}:tensors", f"retrolog: logged values lost: {exc!r}")
            return
        rows = s.rows
        for (name, _, ctx), number in zip(pending, numbers, strict=True):
            if name not in s.valid_names:
                problem = V.check_name(name)
                if problem:
                    warn_once(f"name:{name!r}", f"retrolog: {name!r} not recorded: {problem}")
                    continue
                s.valid_names.add(name)
            rows.append((name, number, ctx))

    def log(self, name: str, value: Any) -> None:
        """Record a value the framework logged, at the current loop coordinates."""
        if self.session is None or self.broken:
            return
        try:
            api.log(name, value)
        except Exception as exc:
            warn_once(f"{self.framework}:log:{name}", f"retrolog: {name!r} not recorded: {exc!r}")


def _read_all(tensors: list[Any]) -> list[Any]:
    """Python numbers of one-element tensors: one device read for those of one dtype."""
    torch = sys.modules["torch"]
    if len({(t.dtype, t.device) for t in tensors}) == 1:
        values: list[Any] = torch.stack([t.reshape(()) for t in tensors]).tolist()
        return values
    return [t.item() for t in tensors]


def rng_state() -> dict[str, Any]:
    """The global RNG states (python, numpy, torch CPU and CUDA), to put back later."""
    state: dict[str, Any] = {"python": random.getstate()}
    numpy = sys.modules.get("numpy")
    if numpy is not None:
        state["numpy"] = numpy.random.get_state()
    torch = sys.modules.get("torch")
    if torch is not None:
        state["torch"] = torch.get_rng_state()
        if torch.cuda.is_available() and torch.cuda.is_initialized():
            state["cuda"] = torch.cuda.get_rng_state_all()
    return state


def set_rng_state(state: dict[str, Any]) -> None:
    random.setstate(state["python"])
    if "numpy" in state:
        sys.modules["numpy"].random.set_state(state["numpy"])
    if "torch" in state:
        torch = sys.modules["torch"]
        torch.set_rng_state(state["torch"])
        if "cuda" in state:
            torch.cuda.set_rng_state_all(state["cuda"])


def scratch_dir(framework: str) -> str:
    """A directory for what a framework writes during a replay (checkpoints, logs): never the
    user's files. Removed when the replay task ends."""
    path = tempfile.mkdtemp(prefix=f"retrolog-replay-{framework}-")
    atexit.register(shutil.rmtree, path, True)
    return path
