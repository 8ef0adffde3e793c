"""The cost model's pace (recorded seconds scaled by how fast this machine imports the script's
modules now compared with when the runs were recorded) and the corrections learned from past
replays."""

import json
from pathlib import Path

import pytest

from retrolog.replaying.plan import FORK_SECONDS, CostModel, RunTimings, pace
from retrolog.replaying.planner import correction_key, load_factor, past_corrections
from retrolog.store import Store
from retrolog.store.lite import LiteStore, insert_rows


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
    raw, _ = model.task(timings, "outer", None, 1, {0: {"step": 1000}}, set(), None, False, 1.0)
    assert raw == pytest.approx(at_recorded_pace)  # the raw estimate ignores the model's pace


def test_past_replays_correct_each_run_and_each_level(tmp_path: Path) -> None:
    """A run recorded under load has inflated timings: its own past replays correct its estimate;
    a run replayed once gets the level's factor; applied factors are undone before learning."""
    url = f"sqlite:///{tmp_path / 'retrolog.db'}"
    Store(url).dispose()
    store = LiteStore.open(url)
    assert store is not None
    # (replay, applied corrections, [(run, estimate shown, actual)])
    history = [
        ("r1", {}, [("slow", 4.0, 2.0), ("fair", 2.0, 2.0)]),
        ("r2", {"inner": 0.75}, [("slow", 3.0, 2.2), ("fair", 1.5, 2.0), ("once", 1.5, 1.5)]),
    ]
    with store.transaction() as tx:
        for created, (replay_id, applied, tasks) in enumerate(history):
            plan = json.dumps({"corrections": applied})
            insert_rows(
                tx,
                "replays",
                [
                    {"replay_id": replay_id, "created": created, "status": "finished"}
                    | {"script": "train.py", "plan": plan}
                ],
            )
            insert_rows(
                tx,
                "replay_tasks",
                [
                    {"replay_id": replay_id, "task_id": i, "run_id": run, "level": "inner"}
                    | {"status": "done", "attempts": 1}
                    | {"estimate_seconds": est, "actual_seconds": act}
                    for i, (run, est, act) in enumerate(tasks)
                ],
            )
    found = past_corrections(store, "train.py")
    store.dispose()
    # raw estimates: slow 4.0, 4.0; fair 2.0, 2.0; once 2.0 -> ratios slow .5, .55; fair 1, 1
    assert found["inner@slow"] == pytest.approx(0.55)  # upper median of two
    assert found["inner@fair"] == pytest.approx(1.0)
    assert "inner@once" not in found  # one sample is not enough
    assert found["inner"] == pytest.approx(0.75)  # median of .5, .55, .75, 1, 1
    assert correction_key("inner", "slow", found) == "inner@slow"
    assert correction_key("inner", "once", found) == "inner"
    assert correction_key("outer", "slow", found) is None


def test_lazy_imports_are_scaled_by_each_runs_own_import_speed() -> None:
    """Two runs with the same prefix work (0.1 s), one recorded while the machine imported at half
    speed: once the server's imports now (top-level 2 s, lazy 1 s) are scaled by each run's own
    start-up, both prefixes come out equal."""
    quiet = RunTimings(startup=2.0, prefix=2.0 + 1.0 + 0.1, iterations={0: 1.0})
    loaded = RunTimings(startup=4.0, prefix=4.0 + 2.0 + 0.1, iterations={0: 1.0})
    model = CostModel(load_speed=1e9, forked=True, preloaded_lazy=1.0, imports_now=2.0)
    assert model.lazy_imports_then(4.0) == pytest.approx(2.0)
    estimates = [
        model.task(t, "prefix", None, None, {}, set(), None, False)[0] for t in (quiet, loaded)
    ]
    assert estimates[0] == pytest.approx(estimates[1])
    assert estimates[0] == pytest.approx(0.1 + FORK_SECONDS)
    unknown = CostModel(load_speed=1e9, forked=True, preloaded_lazy=1.0)  # no server measurement
    assert unknown.lazy_imports_then(4.0) == 1.0


def test_corrections_learn_from_the_raw_estimate_and_replace_the_pace(tmp_path: Path) -> None:
    """Plans store each task's raw estimate (recorded pace, no correction): the factor is learned
    against it, so a pace that was measured wrong once does not leak into later estimates."""
    url = f"sqlite:///{tmp_path / 'retrolog.db'}"
    Store(url).dispose()
    store = LiteStore.open(url)
    assert store is not None
    with store.transaction() as tx:
        for created, (replay_id, shown, raw, actual) in enumerate(
            [("r1", 4.0, 2.0, 3.0), ("r2", 1.0, 2.0, 3.2)]  # shown: after some pace/correction
        ):
            plan = {
                "corrections": {"outer": 0.5},
                "runs": [{"tasks": [{"task_id": 1, "raw_seconds": raw}]}],
            }
            insert_rows(
                tx,
                "replays",
                [
                    {"replay_id": replay_id, "created": created, "status": "finished"}
                    | {"script": "train.py", "plan": json.dumps(plan)}
                ],
            )
            insert_rows(
                tx,
                "replay_tasks",
                [
                    {"replay_id": replay_id, "task_id": 1, "run_id": "a", "level": "outer"}
                    | {"status": "done", "attempts": 1}
                    | {"estimate_seconds": shown, "actual_seconds": actual}
                ],
            )
    found = past_corrections(store, "train.py")
    store.dispose()
    assert found["outer@a"] == pytest.approx(1.6)  # actual / raw: 1.5 and 1.6, upper median
    assert found["outer"] == pytest.approx(1.6)


def test_a_correction_learned_under_load_is_normalised_by_that_load(tmp_path: Path) -> None:
    """Replays that ran on a machine twice oversubscribed took twice as long: the factor learned
    from them is the quiet machine's, and today's load multiplies it back when it is applied."""
    url = f"sqlite:///{tmp_path / 'retrolog.db'}"
    Store(url).dispose()
    store = LiteStore.open(url)
    assert store is not None
    with store.transaction() as tx:
        for created, replay_id in enumerate(("r1", "r2")):
            plan = {"load": 2.0, "runs": [{"tasks": [{"task_id": 1, "raw_seconds": 2.0}]}]}
            insert_rows(
                tx,
                "replays",
                [
                    {"replay_id": replay_id, "created": created, "status": "finished"}
                    | {"script": "train.py", "plan": json.dumps(plan)}
                ],
            )
            insert_rows(
                tx,
                "replay_tasks",
                [
                    {"replay_id": replay_id, "task_id": 1, "run_id": "a", "level": "outer"}
                    | {"status": "done", "attempts": 1}
                    | {"estimate_seconds": 2.0, "actual_seconds": 4.4}
                ],
            )
    found = past_corrections(store, "train.py")
    store.dispose()
    assert found["outer"] == pytest.approx(1.1)  # 4.4 / 2.0 / 2.0: the load's share is gone
    assert load_factor(2) >= 1.0 and load_factor(10_000) == 1.0
