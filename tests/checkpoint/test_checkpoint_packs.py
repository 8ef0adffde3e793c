"""Small tensors travel in one pack blob per checkpoint (format.PACK_LIMIT), through the writer.

A small transformer's checkpoint has over a hundred small tensors, and creating a file cost ~1 ms
on the VMs we measured; packing them made a checkpoint one file plus the large tensors. What must
hold: restores are exact, an unchanged small tensor points at its earlier pack instead of being
written again, every packed tensor is verified against its own digest, and gc keeps live packs.
"""

from __future__ import annotations

from pathlib import Path

import pytest
import torch

from retrolog.checkpoint import capture
from retrolog.checkpoint.collect import gc
from retrolog.checkpoint.errors import CheckpointUnavailable
from retrolog.checkpoint.format import PACK_LIMIT
from retrolog.checkpoint.restore import restore
from retrolog.checkpoint.writer import CheckpointWriter
from retrolog.objects.store import LocalObjectStore


def model() -> torch.nn.Module:
    torch.manual_seed(0)
    # many small tensors (biases, norms) and one over the pack limit
    return torch.nn.Sequential(
        *(torch.nn.Sequential(torch.nn.Linear(8, 8), torch.nn.LayerNorm(8)) for _ in range(10)),
        torch.nn.Linear(8, PACK_LIMIT // 32 + 1),
    )


def files(store: LocalObjectStore) -> int:
    return sum(1 for p in store.root.rglob("*") if p.is_file())


def test_small_tensors_are_packed_and_restored_exactly(tmp_path: Path) -> None:
    store = LocalObjectStore(tmp_path / "objects")
    writer = CheckpointWriter(store)
    net = model()
    first = writer.submit("a", capture({"net": net}, rng=False)).result()
    state = first.objects["net"]["state"]
    small = [v for v in state.values() if "pack" in v]
    assert len(small) == 41  # 10 x (linear weight, bias, norm weight, bias) + the last bias
    assert len({v["pack"] for v in small}) == 1
    assert files(store) == 3  # the pack, the large weight, the manifest (not 44 files)
    with torch.no_grad():
        net[0][0].bias.add_(1.0)
    second = writer.submit("b", capture({"net": net}, rng=False)).result()
    state2 = second.objects["net"]["state"]
    changed = state2["0.0.bias"]
    unchanged = state2["3.1.weight"]
    assert changed["pack"] != state["0.0.bias"]["pack"]
    # seen unchanged: a blob of its own from now on, shared by later checkpoints
    assert "pack" not in unchanged and unchanged["$tensor"] in second.blobs
    assert state["0.0.bias"]["pack"] not in second.blobs  # no checkpoint points at another's pack
    third = writer.submit("c", capture({"net": net}, rng=False)).result()
    assert third.stats.new_bytes == 0 and third.blobs == second.blobs
    writer.close()
    for manifest, expect in ((first, model()), (second, net)):
        target = model()
        with torch.no_grad():
            for p in target.parameters():
                p.zero_()
        restore(store, manifest, {"net": target})
        for key, value in target.state_dict().items():
            want = expect.state_dict()[key]
            assert torch.equal(value, want), key
    removed, _ = gc(store, [second.digest])
    assert removed == 3  # manifests a and c (not listed as live), and a's pack
    restore(store, second.digest, {"net": model()})


def test_a_corrupt_pack_makes_the_checkpoint_unavailable(tmp_path: Path) -> None:
    store = LocalObjectStore(tmp_path / "objects")
    writer = CheckpointWriter(store)
    manifest = writer.submit("a", capture({"net": model()}, rng=False)).result()
    writer.close()
    pack = manifest.objects["net"]["state"]["0.0.bias"]["pack"]
    path = store.root / pack.split(":")[1][:2] / pack.split(":")[1][2:]
    data = bytearray(path.read_bytes())
    data[-1] ^= 0xFF
    path.write_bytes(bytes(data))
    fresh = model()
    before = {k: v.clone() for k, v in fresh.state_dict().items()}
    with pytest.raises(CheckpointUnavailable):
        restore(store, manifest, {"net": fresh})
    assert all(torch.equal(v, before[k]) for k, v in fresh.state_dict().items())
