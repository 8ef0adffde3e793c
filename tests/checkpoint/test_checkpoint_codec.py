"""The JSON encoding of state trees is lossless for everything state_dicts contain."""

from __future__ import annotations

import json
import math
from typing import Any

import numpy as np
import pytest
import torch

from retrolog.checkpoint.codec import Encoder, decode
from retrolog.checkpoint.errors import CaptureError, CheckpointUnavailable


def roundtrip(value: Any) -> Any:
    enc = Encoder()
    tree = enc.encode(value, "v")
    for i, leaf in enumerate(enc.leaves):  # stand-in digests: index into the leaves
        leaf.node["$tensor" if leaf.lib == "torch" else "$ndarray"] = f"leaf{i}"
    text = json.dumps(tree, allow_nan=False)
    values = {f"leaf{i}": leaf.value for i, leaf in enumerate(enc.leaves)}
    return decode(json.loads(text), lambda digest, lib, node: values[digest])


def test_optimizer_like_structure_roundtrips_exactly() -> None:
    value = {
        "state": {0: {"step": 3}, 1: {"step": 4}},
        "param_groups": [
            {
                "lr": 0.001,
                "betas": (0.9, 0.999),
                "foreach": None,
                "amsgrad": False,
                "params": [0, 1],
            }
        ],
    }
    out = roundtrip(value)
    assert out == value
    assert isinstance(out["param_groups"][0]["betas"], tuple)
    assert list(out["state"]) == [0, 1]  # int keys stay ints
    assert out["param_groups"][0]["amsgrad"] is False
    assert out["param_groups"][0]["params"] == [0, 1]


def test_floats_including_non_finite_and_negative_zero() -> None:
    values = [0.1, 1e-310, -0.0, math.inf, -math.inf, 2.0**-1074, 1.7976931348623157e308]
    out = roundtrip(values)
    for a, b in zip(values, out, strict=True):
        assert math.copysign(1, a) == math.copysign(1, b) and a == b
    assert math.isnan(roundtrip(math.nan))


def test_mixed_keys_numpy_scalars_bytes_and_dtypes() -> None:
    value = {
        "$weird": 1,
        (1, "a"): "tuple key",
        None: True,
        "np": [np.float32(1.5), np.int64(7), np.bool_(True), np.float64("nan")],
        "raw": b"\x00\xff",
        "dtypes": (np.dtype("float16"), torch.float32, torch.device("cpu")),
        "big": 2**100,
        "nested": [(), [], {}],
    }
    out = roundtrip(value)
    assert out["$weird"] == 1 and out[(1, "a")] == "tuple key" and out[None] is True
    assert type(out["np"][0]) is np.float32 and out["np"][0] == np.float32(1.5)
    assert type(out["np"][1]) is np.int64 and type(out["np"][2]) is np.bool_
    assert np.isnan(out["np"][3])
    assert out["raw"] == b"\x00\xff"
    assert out["dtypes"] == (np.dtype("float16"), torch.float32, torch.device("cpu"))
    assert out["big"] == 2**100
    assert out["nested"] == [(), [], {}]


def test_tensor_leaves_are_owned_copies() -> None:
    t = torch.arange(6.0).reshape(2, 3).t()  # non-contiguous view
    a = np.arange(4)
    enc = Encoder()
    enc.encode({"t": t, "a": a}, "v")
    leaf_t, leaf_a = (leaf.value for leaf in enc.leaves)
    t.add_(100)
    a += 100
    assert torch.equal(leaf_t, torch.arange(6.0).reshape(2, 3).t())
    assert leaf_t.is_contiguous()
    assert np.array_equal(leaf_a, np.arange(4))


def test_same_tensor_twice_is_copied_once() -> None:
    t = torch.ones(3)
    enc = Encoder()
    tree = enc.encode({"a": t, "b": t.detach()}, "v")
    assert len(enc.leaves) == 1
    assert tree["a"] is tree["b"]


def test_unsupported_values_are_refused_with_their_path() -> None:
    with pytest.raises(CaptureError, match=r"v\['fn'\].*builtins.function"):
        Encoder().encode({"fn": lambda: 0}, "v")
    with pytest.raises(CaptureError, match="dtype object"):
        Encoder().encode(np.array([object()]), "v")
    with pytest.raises(CaptureError, match="sparse"):
        Encoder().encode(torch.eye(2).to_sparse(), "v")


def test_unknown_tag_is_unavailable() -> None:
    with pytest.raises(CheckpointUnavailable, match=r"\$pickle"):
        decode({"$pickle": "x"}, lambda d, lib, node: None)
    with pytest.raises(CheckpointUnavailable):
        decode({"$torch_dtype": "nn"}, lambda d, lib, node: None)
