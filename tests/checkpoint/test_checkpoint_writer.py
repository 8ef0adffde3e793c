"""The background writer: ordering, backpressure, and failures that never reach training."""

from __future__ import annotations

import shutil
import threading
import warnings
from pathlib import Path

import numpy as np
import pytest
import torch

from retrolog.checkpoint import (
    Checkpointer,
    CheckpointPolicy,
    CheckpointWriter,
    capture,
    load_manifest,
)
from retrolog.objects import LocalObjectStore


class GatedStore(LocalObjectStore):
    """A local store whose puts wait for a gate: a slow remote store."""

    def __init__(self, root: Path) -> None:
        super().__init__(root, fsync=False)
        self.gate = threading.Event()

    def put(self, data: bytes, *, digest: str | None = None) -> str:
        assert self.gate.wait(10)
        return super().put(data, digest=digest)


def test_writes_in_order_and_flush_waits(tmp_path: Path) -> None:
    store = LocalObjectStore(tmp_path)
    arr = np.zeros(4)
    with CheckpointWriter(store, max_pending=1) as writer:
        futures = []
        for i in range(5):
            arr[0] = i
            futures.append(writer.submit(f"k{i}", capture({"arr": arr}, rng=False)))
        writer.flush()
        assert writer.pending == 0
        assert all(f.done() for f in futures)
    keys = [load_manifest(store, f.result().digest).key for f in futures]
    assert keys == [f"k{i}" for i in range(5)]
    with pytest.raises(RuntimeError, match="closed"):
        writer.submit("late", capture({"arr": arr}, rng=False))
    writer.close()  # idempotent


def test_submit_blocks_only_when_queue_is_full(tmp_path: Path) -> None:
    store = GatedStore(tmp_path)
    writer = CheckpointWriter(store, max_pending=1)
    state = capture({"arr": np.ones(3)}, rng=False)
    first = writer.submit("a", state)  # taken by the thread, blocked in put
    second = writer.submit("b", state)  # waits in the queue
    third_submitted = threading.Event()

    def third() -> None:
        writer.submit("c", state)
        third_submitted.set()

    thread = threading.Thread(target=third)
    thread.start()
    assert not third_submitted.wait(0.3)  # backpressure: queue full
    store.gate.set()
    assert third_submitted.wait(10)
    thread.join()
    writer.close()
    assert first.result().digest and second.result().digest


def test_write_failure_is_reported_on_the_future_and_warned_once(tmp_path: Path) -> None:
    root = tmp_path / "objects"
    store = LocalObjectStore(root)
    shutil.rmtree(root)
    root.write_text("the store directory is gone")  # every write now fails (even as root)
    model = torch.nn.Linear(4, 4)
    writer = CheckpointWriter(store)
    with pytest.warns(RuntimeWarning, match="training continues"):
        f1 = writer.submit("a", capture({"model": model}))  # does not raise
        writer.flush()
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # a second warning would fail the test
        f2 = writer.submit("b", capture({"model": model}))
        writer.flush()
    assert isinstance(f1.exception(), OSError)
    assert isinstance(f2.exception(), OSError)
    assert len(writer.errors) == 2
    # The writer keeps working once the store is back.
    root.unlink()
    root.mkdir()
    f3 = writer.submit("c", capture({"model": model}))
    writer.close()
    assert load_manifest(store, f3.result().digest).key == "c"


def test_checkpointer_follows_policy_and_reports_capture_errors(tmp_path: Path) -> None:
    store = LocalObjectStore(tmp_path, fsync=False)
    policy = CheckpointPolicy(budget=0.05)
    model = torch.nn.Linear(8, 8)
    digests = []
    with Checkpointer(store, policy=policy) as ckpt:
        for i in range(30):
            future = ckpt.opportunity(f"it={i}", {"model": model}, work_seconds=0.0001)
            if future is not None:
                digests.append(future.result().digest)
        assert digests  # the first opportunity is always saved
        assert policy.saves == len(digests) < 30  # saving costs far more than 5% of 0.1 ms
        assert policy.k > 1
        with pytest.warns(RuntimeWarning, match="not checkpointing"):
            assert ckpt.save("bad", {"thing": object()}) is None
        assert len(ckpt.capture_errors) == 1
    assert policy.opportunities == 30
    assert all(load_manifest(store, d).object_names == ["model"] for d in digests)
