from hypothesis import given
from hypothesis import strategies as st

from retrolog._ids import new_run_id


def test_ids_are_unique_within_one_millisecond() -> None:
    ids = {new_run_id(now=1_700_000_000.0) for _ in range(10_000)}
    assert len(ids) == 10_000


@given(st.floats(min_value=0, max_value=2**40 / 1000), st.floats(min_value=0.002, max_value=1e6))
def test_ids_sort_by_time(t0: float, gap: float) -> None:
    assert new_run_id(now=t0) < new_run_id(now=t0 + gap)
    assert len(new_run_id(now=t0)) == 26
