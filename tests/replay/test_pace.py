"""The cost model's pace: recorded seconds scaled by how fast this machine imports the script's
modules now compared with when the runs were recorded."""

import pytest

from retrolog.replaying.plan import CostModel, RunTimings, pace


def test_pace_is_the_import_time_now_over_the_median_recorded_start_up() -> None:
    assert pace(2.0, [4.0, 4.2, 3.8]) == pytest.approx(0.5)  # recorded on a loaded machine
    assert pace(2.0, [9.0, 4.0, 4.0]) == pytest.approx(0.5)  # one cold-cache run does not count
    assert pace(3.0, [2.0, 2.0]) == pytest.approx(1.5)  # slower now
    assert pace(1.0, [10.0]) == pytest.approx(1 / 3)  # bounded
    assert pace(10.0, [1.0]) == pytest.approx(2.0)
    assert pace(None, [4.0]) == 1.0 and pace(2.0, []) == 1.0 and pace(2.0, [0.1]) == 1.0


def test_recorded_work_is_scaled_by_the_pace_and_restores_are_not() -> None:
    timings = RunTimings(startup=4.0, prefix=6.0, iterations={0: 1.0, 1: 1.0})
    timings.nested = {0: {"step": 0.9}, 1: {"step": 0.9}}
    model = CostModel(load_speed=1e9, forked=True)
    at_recorded_pace, _ = model.task(
        timings, "outer", None, 1, {0: {"step": 1000}}, set(), None, False
    )
    model.pace = 0.5
    now, basis = model.task(timings, "outer", None, 1, {0: {"step": 1000}}, set(), None, False)
    restore = model.restore(1000)
    # prefix work 2.0, iteration 0 restored (1.0 - 0.9 of its step loop), iteration 1 in full
    assert at_recorded_pace - now == pytest.approx(0.5 * (2.0 + (1.0 - 0.9) + 1.0))
    assert now > restore and "x0.50 (this machine's pace now)" in basis
