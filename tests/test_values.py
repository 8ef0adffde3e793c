"""Typed value cells: every supported value comes back as it was logged."""

import math

import numpy as np
import pytest
import torch
from hypothesis import given
from hypothesis import strategies as st

from retrolog.record.values import (
    MAX_TEXT_BYTES,
    UnsupportedValue,
    check_name,
    from_cell,
    normalise,
    to_cell,
)

json_leaves = st.none() | st.booleans() | st.integers(-(2**60), 2**60) | st.text(max_size=20)
json_values = st.recursive(
    json_leaves,
    lambda inner: (
        st.lists(inner, max_size=4) | st.dictionaries(st.text(max_size=5), inner, max_size=4)
    ),
)


@given(st.floats(allow_nan=False) | st.integers() | st.booleans() | st.text() | st.none())
def test_scalars_round_trip(value: object) -> None:
    cell = to_cell(value)
    back = from_cell(*cell)
    assert back == value and type(back) is type(value)


@given(json_values.filter(lambda v: isinstance(v, (list, dict))))
def test_containers_round_trip(value: object) -> None:
    assert from_cell(*to_cell(value)) == value


@pytest.mark.parametrize("value", [math.nan, math.inf, -math.inf])
def test_non_finite_floats_survive(value: float) -> None:
    vtype, number, text = to_cell(value)
    assert vtype == "f" and number is None
    back = from_cell(vtype, number, text)
    assert (math.isnan(back) and math.isnan(value)) or back == value


def test_big_integers_are_exact() -> None:
    big = 2**63 + 12345
    assert from_cell(*to_cell(big)) == big


def test_numpy_and_torch_scalars_become_numbers() -> None:
    assert normalise(np.float32(1.5)) == 1.5 and type(normalise(np.float32(1.5))) is float
    assert type(normalise(np.int64(3))) is int
    assert normalise(np.array([[2.0]])) == 2.0
    assert normalise(torch.tensor(0.25)) == 0.25
    assert normalise(torch.tensor([7])) == 7
    big = torch.ones(3)
    assert normalise(big) is big  # not a scalar: left alone, then refused by to_cell


def test_unsupported_values_are_refused_with_a_reason() -> None:
    with pytest.raises(UnsupportedValue, match="torch.Tensor"):
        to_cell(normalise(torch.ones(3)))
    with pytest.raises(UnsupportedValue, match="not JSON"):
        to_cell({"a": object()})
    with pytest.raises(UnsupportedValue, match="1 MiB"):
        to_cell("x" * (MAX_TEXT_BYTES + 1))


def test_unicode_strings_are_kept() -> None:
    text = "损失 🚀 naïve"
    assert from_cell(*to_cell(text)) == text


@pytest.mark.parametrize(
    ("name", "ok"),
    [
        ("loss", True),
        ("val/acc@1", True),
        ("", False),
        ("   ", False),
        (3, False),
        (None, False),
        ("a\nb", False),
        ("x" * 201, False),
    ],
)
def test_name_checks(name: object, ok: bool) -> None:
    assert (check_name(name) is None) is ok
