"""Capture -> store -> restore of every supported object kind, in place, plus dedup."""

from __future__ import annotations

import random
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import torch

from retrolog.checkpoint import (
    CaptureError,
    CheckpointUnavailable,
    Manifest,
    capture,
    load_manifest,
    restore,
    write_checkpoint,
)
from retrolog.objects import LocalObjectStore


def save(store: LocalObjectStore, objects: dict[str, Any], *, rng: bool = False) -> Manifest:
    return write_checkpoint(store, "test", capture(objects, rng=rng))


@pytest.fixture
def store(tmp_path: Path) -> LocalObjectStore:
    return LocalObjectStore(tmp_path / "objects")


class Counter:
    """Plain Python state through the documented protocol."""

    def __init__(self) -> None:
        self.count = 0
        self.history: list[float] = []

    def __retrolog_state__(self) -> dict[str, Any]:
        return {"count": self.count, "history": list(self.history)}

    def __retrolog_restore__(self, state: dict[str, Any]) -> None:
        self.count = state["count"]
        self.history = list(state["history"])


def make_net() -> torch.nn.Sequential:
    return torch.nn.Sequential(
        torch.nn.Linear(4, 8), torch.nn.BatchNorm1d(8), torch.nn.Dropout(0.5), torch.nn.Linear(8, 2)
    )


def test_module_optimizer_scheduler_scaler_roundtrip(store: LocalObjectStore) -> None:
    torch.manual_seed(0)
    net = make_net()
    opt = torch.optim.Adam(net.parameters(), lr=0.01, betas=(0.8, 0.9))
    sched = torch.optim.lr_scheduler.ReduceLROnPlateau(opt)  # holds inf floats
    scaler = torch.amp.GradScaler("cpu", init_scale=1024.0)
    for _ in range(3):
        loss = net(torch.randn(5, 4)).sum()
        opt.zero_grad()
        scaler.scale(loss).backward()
        scaler.step(opt)
        scaler.update()
        sched.step(loss.item())
    net.eval()
    net[2].train()  # mixed training flags must come back
    manifest = load_manifest(
        store, save(store, {"n": net, "o": opt, "s": sched, "g": scaler}).digest
    )

    net2 = make_net()
    opt2 = torch.optim.Adam(net2.parameters(), lr=0.5)
    sched2 = torch.optim.lr_scheduler.ReduceLROnPlateau(opt2)
    scaler2 = torch.amp.GradScaler("cpu")
    params_before = [id(p) for p in net2.parameters()]
    restore(store, manifest, {"n": net2, "o": opt2, "s": sched2, "g": scaler2})

    assert [id(p) for p in net2.parameters()] == params_before  # loaded in place
    for (k, a), (_, b) in zip(net.state_dict().items(), net2.state_dict().items(), strict=True):
        assert torch.equal(a, b), k
    assert [m.training for m in net2.modules()] == [m.training for m in net.modules()]
    sd, sd2 = opt.state_dict(), opt2.state_dict()
    assert sd["param_groups"] == sd2["param_groups"]
    assert sd2["param_groups"][0]["betas"] == (0.8, 0.9)
    for i in sd["state"]:
        for key in sd["state"][i]:
            assert torch.equal(sd["state"][i][key], sd2["state"][i][key])
    assert sched.state_dict() == sched2.state_dict()
    assert scaler.state_dict() == scaler2.state_dict()


def test_arrays_tensors_dicts_lists_and_protocol_restore_in_place(store: LocalObjectStore) -> None:
    arr = np.arange(12, dtype=np.float32).reshape(3, 4)
    ten = torch.arange(5, dtype=torch.int64)
    cfg: dict[Any, Any] = {"epoch": 3, 7: (1, 2), "best": float("-inf"), "w": np.ones(2)}
    seq: list[Any] = [1, "two", None, [3.5]]
    counter = Counter()
    counter.count, counter.history = 4, [0.5, 0.25]
    objects = {"arr": arr, "ten": ten, "cfg": cfg, "seq": seq, "counter": counter}
    manifest = save(store, objects)

    arr *= 0
    ten.zero_()
    cfg.clear()
    cfg["junk"] = 1
    seq.append("junk")
    counter.count, counter.history = 0, []
    restore(store, manifest, objects)

    assert np.array_equal(arr, np.arange(12, dtype=np.float32).reshape(3, 4))
    assert torch.equal(ten, torch.arange(5))
    assert cfg.keys() == {"epoch", 7, "best", "w"} and cfg[7] == (1, 2)
    assert cfg["best"] == float("-inf") and np.array_equal(cfg["w"], np.ones(2))
    assert seq == [1, "two", None, [3.5]]
    assert (counter.count, counter.history) == (4, [0.5, 0.25])


def test_private_generators_roundtrip(store: LocalObjectStore) -> None:
    gens: dict[str, Any] = {
        "np_gen": np.random.default_rng(1),
        "np_rs": np.random.RandomState(2),
        "py": random.Random(3),
        "torch": torch.Generator().manual_seed(4),
    }
    manifest = save(store, gens)
    expected = (
        gens["np_gen"].random(3).tolist(),
        gens["np_rs"].rand(3).tolist(),
        [gens["py"].random() for _ in range(3)],
        torch.rand(3, generator=gens["torch"]).tolist(),
    )
    restore(store, manifest, gens)
    got = (
        gens["np_gen"].random(3).tolist(),
        gens["np_rs"].rand(3).tolist(),
        [gens["py"].random() for _ in range(3)],
        torch.rand(3, generator=gens["torch"]).tolist(),
    )
    assert got == expected


def test_unchanged_state_is_stored_once(store: LocalObjectStore) -> None:
    net = torch.nn.Linear(64, 64)
    first = save(store, {"net": net})
    assert first.stats.new_blobs == first.stats.blobs == 2
    assert first.stats.new_bytes == first.stats.total_bytes > 64 * 64 * 4
    second = save(store, {"net": net})
    assert second.stats.new_blobs == 0 and second.stats.new_bytes == 0
    assert second.blobs == first.blobs
    with torch.no_grad():
        net.bias.add_(1)
    third = save(store, {"net": net})
    assert third.stats.new_blobs == 1  # only the bias changed
    assert third.stats.new_bytes < 64 * 4 + 200


def test_missing_and_corrupt_blobs_are_unavailable_and_leave_objects_untouched(
    store: LocalObjectStore,
) -> None:
    net = torch.nn.Linear(3, 3)
    manifest = save(store, {"net": net})
    fresh = torch.nn.Linear(3, 3)
    before = {k: v.clone() for k, v in fresh.state_dict().items()}
    weight_digest = manifest.objects["net"]["state"]["weight"]["$tensor"]
    hexd = weight_digest.split(":")[1]
    blob = store.root / hexd[:2] / hexd[2:]
    blob.write_bytes(blob.read_bytes()[:-1] + b"\x00")
    with pytest.raises(CheckpointUnavailable, match="corrupt") as info:
        restore(store, manifest, {"net": fresh})
    assert not info.value.partial
    blob.unlink()
    with pytest.raises(CheckpointUnavailable, match="not in the store"):
        restore(store, manifest.digest, {"net": fresh})
    for key, value in fresh.state_dict().items():
        assert torch.equal(value, before[key])
    store.delete(manifest.digest)
    with pytest.raises(CheckpointUnavailable, match="manifest"):
        load_manifest(store, manifest.digest)
    with pytest.raises(CheckpointUnavailable, match="format"):
        load_manifest(store, store.put(b'{"format": "something else"}'))


def test_mismatched_live_objects_are_unavailable(store: LocalObjectStore) -> None:
    manifest = save(store, {"net": torch.nn.Linear(3, 3), "arr": np.zeros(3)})
    with pytest.raises(CheckpointUnavailable, match="shape"):
        restore(store, manifest, {"net": torch.nn.Linear(3, 4)})
    with pytest.raises(CheckpointUnavailable, match="keys differ"):
        restore(store, manifest, {"net": torch.nn.Sequential(torch.nn.Linear(3, 3))})
    with pytest.raises(CheckpointUnavailable, match="checkpointed as torch_module"):
        restore(store, manifest, {"net": {}})
    with pytest.raises(CheckpointUnavailable, match="float64"):
        restore(store, manifest, {"arr": np.zeros(3, dtype=np.float32)})
    with pytest.raises(CheckpointUnavailable, match="no state for"):
        restore(store, manifest, {"other": {}})


def test_unsupported_object_is_a_capture_error() -> None:
    with pytest.raises(CaptureError, match="'thing'.*object"):
        capture({"thing": object()})


def test_manifest_is_small_json_without_pickle(store: LocalObjectStore) -> None:
    net = torch.nn.Linear(100, 100)
    opt = torch.optim.SGD(net.parameters(), lr=0.1, momentum=0.9)
    net(torch.randn(2, 100)).sum().backward()
    opt.step()
    manifest = save(store, {"net": net, "opt": opt}, rng=True)
    raw = store.get(manifest.digest)
    assert raw.startswith(b'{"format":"retrolog.checkpoint/1"')
    assert manifest.size == len(raw) < 10_000
    assert set(manifest.rng or {}) == {"python", "numpy", "torch"}
    assert set(manifest.blobs) <= set(store.iter_digests())


def test_tensor_from_a_missing_device_comes_back_on_cpu_with_a_warning(
    store: LocalObjectStore,
) -> None:
    state: dict[str, Any] = {"t": torch.arange(3.0)}
    manifest = save(store, {"state": state})
    manifest.objects["state"]["state"]["t"]["device"] = "cuda:7"  # as if recorded on a GPU
    state.clear()
    with pytest.warns(RuntimeWarning, match="cuda:7"):
        restore(store, manifest, {"state": state})
    assert torch.equal(state["t"], torch.arange(3.0))
