"""Training continued after restore is bit-for-bit the training continued after capture (CPU)."""

from __future__ import annotations

import random
from pathlib import Path

import numpy as np
import torch

from retrolog.checkpoint import Checkpointer, CheckpointPolicy, load_manifest, restore
from retrolog.objects import LocalObjectStore

DATA = torch.linspace(-1, 1, 64 * 10).reshape(64, 10)


def build() -> tuple[torch.nn.Module, torch.optim.Optimizer, torch.optim.lr_scheduler.StepLR]:
    model = torch.nn.Sequential(
        torch.nn.Linear(10, 32), torch.nn.ReLU(), torch.nn.Dropout(0.3), torch.nn.Linear(32, 1)
    )
    opt = torch.optim.Adam(model.parameters(), lr=0.01)
    sched = torch.optim.lr_scheduler.StepLR(opt, step_size=3, gamma=0.5)
    return model, opt, sched


def train_step(model: torch.nn.Module, opt: torch.optim.Optimizer, sched: object) -> float:
    rows = np.random.permutation(64)[:16]  # numpy RNG: batch selection
    noise = random.gauss(0, 0.1)  # python RNG: augmentation
    x = DATA[torch.as_tensor(rows)] + noise + 0.01 * torch.randn(16, 10)  # torch RNG
    loss = model(x).pow(2).mean()  # dropout: torch RNG
    opt.zero_grad()
    loss.backward()
    opt.step()
    sched.step()  # type: ignore[attr-defined]
    return loss.item()


def seed_all(seed: int) -> None:
    random.seed(seed)
    np.random.seed(seed)
    torch.manual_seed(seed)


def continue_from_restore(store: LocalObjectStore, digest: str, *, rng: bool) -> list[float]:
    seed_all(999)  # a different process state: everything must come from the checkpoint
    model, opt, sched = build()
    restore(
        store, load_manifest(store, digest), {"model": model, "opt": opt, "sched": sched}, rng=rng
    )
    return [train_step(model, opt, sched) for _ in range(6)]


def test_restore_continues_bit_for_bit(tmp_path: Path) -> None:
    store = LocalObjectStore(tmp_path)
    seed_all(0)
    model, opt, sched = build()
    for _ in range(5):
        train_step(model, opt, sched)
    with Checkpointer(store, policy=CheckpointPolicy(budget=1.0)) as ckpt:
        future = ckpt.save("epoch=5", {"model": model, "opt": opt, "sched": sched})
        assert future is not None
        # Training goes on while the writer serialises: the snapshot must not see it.
        expected = [train_step(model, opt, sched) for _ in range(6)]
        digest = future.result().digest

    assert continue_from_restore(store, digest, rng=True) == expected
    # Sanity: the test is sensitive to RNG state (dropout, permutation, gauss).
    assert continue_from_restore(store, digest, rng=False) != expected
