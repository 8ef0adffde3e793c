"""The adaptive policy, driven by synthetic timings (deterministic)."""

from __future__ import annotations

import pytest

from retrolog.checkpoint import CheckpointPolicy


def simulate(
    policy: CheckpointPolicy,
    n: int,
    work: float,
    foreground: float,
    background: float = 0.0,
    *,
    lag: int = 0,
) -> list[bool]:
    """Run n opportunities; background costs arrive ``lag`` opportunities after the save."""
    decisions: list[bool] = []
    pending: list[tuple[int, float]] = []
    for _ in range(n):
        while pending and pending[0][0] <= 0:
            policy.record_background(pending.pop(0)[1])
        pending = [(t - 1, s) for t, s in pending]
        save = policy.should_save(work)
        decisions.append(save)
        if save:
            policy.record_save(foreground)
            pending.append((lag, background))
    return decisions


def test_first_opportunity_is_always_saved() -> None:
    policy = CheckpointPolicy(budget=0.01)
    assert policy.should_save(0.0)
    assert policy.saves == 1 and policy.k == 1


def test_cheap_saves_happen_every_time() -> None:
    policy = CheckpointPolicy(budget=0.05)
    decisions = simulate(policy, 100, work=1.0, foreground=0.001, background=0.01)
    assert all(decisions)
    assert policy.k == 1
    assert policy.overhead == pytest.approx(0.006, abs=1e-4)


def test_expensive_saves_are_spaced_to_keep_the_budget() -> None:
    policy = CheckpointPolicy(budget=0.05)
    decisions = simulate(policy, 1000, work=0.1, foreground=0.05)
    assert policy.k == 10  # 0.05 s / (5% of 0.1 s)
    assert 95 <= sum(decisions) <= 101
    assert policy.overhead <= 0.05 + 1e-9
    gaps = [i for i, d in enumerate(decisions) if d]
    assert {b - a for a, b in zip(gaps[1:], gaps[2:], strict=False)} == {10}


def test_background_time_is_charged_with_its_weight() -> None:
    policy = CheckpointPolicy(budget=0.05, background_weight=0.5)
    simulate(policy, 1000, work=0.1, foreground=0.01, background=0.08, lag=2)
    # charged per save: 0.01 + 0.5 * 0.08 = 0.05 -> same spacing as above
    assert policy.k == 10
    assert policy.estimated_cost == pytest.approx(0.05)
    assert policy.overhead <= 0.05 + 1e-9
    ignoring = CheckpointPolicy(budget=0.05, background_weight=0.0)
    simulate(ignoring, 100, work=0.1, foreground=0.01, background=0.08)
    assert ignoring.k == 2


def test_policy_adapts_when_iterations_get_longer() -> None:
    policy = CheckpointPolicy(budget=0.05)
    simulate(policy, 200, work=0.1, foreground=0.05)
    assert policy.k == 10
    decisions = simulate(policy, 200, work=2.0, foreground=0.05)
    assert policy.k == 1
    assert all(decisions[5:])


def test_budget_holds_with_a_huge_first_save() -> None:
    policy = CheckpointPolicy(budget=0.05)
    assert policy.should_save(1.0)
    policy.record_save(10.0)  # first save took 10 s
    decisions = [policy.should_save(1.0) for _ in range(500)]
    # The next save must fit too: 10 s + 10 s <= 5% of the work -> 400 s of work.
    assert decisions.index(True) == 398  # the 400th opportunity
    assert policy.overhead <= 0.05 + 1e-9


def test_max_interval_forces_a_save() -> None:
    policy = CheckpointPolicy(budget=0.05, max_interval=4)
    decisions = simulate(policy, 13, work=0.1, foreground=1.0)
    assert decisions == [True, False, False, False] * 3 + [True]
    assert policy.k == 4


def test_decisions_are_deterministic() -> None:
    timings = [(0.1 + 0.01 * (i % 7), 0.02 + 0.005 * (i % 3)) for i in range(300)]

    def run() -> list[bool]:
        policy = CheckpointPolicy(budget=0.05)
        out = []
        for work, cost in timings:
            out.append(policy.should_save(work))
            if out[-1]:
                policy.record_save(cost / 2, cost)
        return out

    assert run() == run()


def test_invalid_arguments() -> None:
    with pytest.raises(ValueError):
        CheckpointPolicy(budget=0)
    with pytest.raises(ValueError):
        CheckpointPolicy(background_weight=-1)
    with pytest.raises(ValueError):
        CheckpointPolicy(max_interval=0)
    with pytest.raises(ValueError):
        CheckpointPolicy().should_save(-1.0)
    assert "k=1" in repr(CheckpointPolicy())


def test_writer_time_is_charged_up_to_four_times_its_cpu() -> None:
    from retrolog.checkpoint.policy import background_charge

    assert background_charge(0.030, 0.010) == pytest.approx(0.030)  # mostly CPU: all of it
    assert background_charge(0.200, 0.010) == pytest.approx(0.040)  # waiting for a core or fsync
    assert background_charge(0.050, 0.0) == pytest.approx(0.050)  # CPU time not measured
    # with the cap, a loaded machine's 10 ms-of-CPU saves fit a 5% budget of 1 s iterations
    policy = CheckpointPolicy(budget=0.05)
    saved = 0
    for _ in range(20):
        if policy.should_save(1.0):
            saved += 1
            policy.record_save(0.002, background_charge(0.200, 0.010))
    assert saved == 20 and policy.overhead <= 0.05
