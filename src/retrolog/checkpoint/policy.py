"""Adaptive checkpoint policy: keep the measured save cost under a budget of training time.

Every loop exit is an *opportunity*. The policy saves the first one, then saves every k-th one,
where ``k = ceil(cost / (budget * work))`` from smoothed per-save cost and per-opportunity
training time, and only while the running account allows it: a save happens when
``charged + estimated_cost <= budget * total_work``. The account makes the budget hold over the
whole run even when iteration times or save costs drift; ``k`` is what it amounts to in steady
state, and is reported.

What is charged for a save: all of its training-thread time (capture, i.e. the device-to-host
copy, plus any wait for a free slot in the writer queue) plus ``background_weight`` times the
writer thread's wall time (serialise, hash, write, fsync), capped at 4x the writer's CPU time
(``background_charge``). The writer runs concurrently; it slows
training only through contention (cores, GIL, memory bandwidth, the kernel's writeback work),
not second for second. Wall time rather than the writer's CPU time because thread CPU time
misses the kernel's writeback work. On our shared 2-core VM (``docs/checkpoints.md``), saving
every step slowed a CPU-bound loop that already used both cores by between ~0 and 0.9x the
writer's wall time (up to 4x its CPU time); the default ``background_weight=0.5`` sits in that
range. On a GPU machine, where the training thread mostly waits for kernels and cores are spare,
the true share is lower. Use 1.0 to count background time in full, 0.0 to ignore it.

The policy is pure arithmetic on the numbers it is given: deterministic and testable with
synthetic timings. It is not thread-safe; call it from the training thread only.
"""

from __future__ import annotations

import math
from collections import deque

_NEVER = 2**31 - 1
CPU_SLOWDOWN_BOUND = 4.0  # measured: a background save slowed training by <= 4x its CPU time


def background_charge(write_seconds: float, write_cpu_seconds: float) -> float:
    """The writer time a save is charged for, before ``background_weight``: its wall time, but at
    most ``CPU_SLOWDOWN_BOUND`` x its CPU time. On a busy machine the writer's wall time grows
    with the time it waits for a core or for fsync, which slows training not at all; the bound
    is the worst slowdown per CPU second measured (docs/checkpoints.md). Without a CPU time
    (0: not measured), the wall time."""
    if write_cpu_seconds <= 0:
        return write_seconds
    return min(write_seconds, CPU_SLOWDOWN_BOUND * write_cpu_seconds)


class CheckpointPolicy:
    """Decide at each opportunity whether to checkpoint, within ``budget`` x training time."""

    def __init__(
        self,
        budget: float = 0.05,
        *,
        background_weight: float = 0.5,
        smoothing: float = 0.3,
        max_interval: int | None = None,
    ) -> None:
        if not budget > 0:
            raise ValueError("budget must be positive (a fraction of training time, e.g. 0.05)")
        if not background_weight >= 0:
            raise ValueError("background_weight must be >= 0")
        if not 0 < smoothing <= 1:
            raise ValueError("smoothing must be in (0, 1]")
        if max_interval is not None and max_interval < 1:
            raise ValueError("max_interval must be >= 1")
        self.budget = float(budget)
        self.background_weight = float(background_weight)
        self.smoothing = float(smoothing)
        self.max_interval = max_interval
        self.opportunities = 0
        self.saves = 0
        self.work_seconds = 0.0
        self.charged_seconds = 0.0
        self._since_save = 0
        self._work_avg: float | None = None
        self._cost_avg: float | None = None
        self._last_foreground = 0.0
        self._awaiting_background: deque[float] = deque()

    def _smooth(self, old: float | None, new: float) -> float:
        return new if old is None else old + self.smoothing * (new - old)

    @property
    def estimated_cost(self) -> float:
        """Smoothed charged cost of one save (seconds); before a full one is known, the last
        foreground cost."""
        return self._cost_avg if self._cost_avg is not None else self._last_foreground

    @property
    def k(self) -> int:
        """Current interval: save every k-th opportunity (1 = every one)."""
        cost = self.estimated_cost
        if cost <= 0 or self._work_avg is None:
            return 1
        if self._work_avg <= 0:
            return self.max_interval or _NEVER
        k = max(1, math.ceil(cost / (self.budget * self._work_avg) - 1e-9))
        return min(k, self.max_interval) if self.max_interval else k

    @property
    def overhead(self) -> float:
        """Measured overhead so far: charged save seconds / training seconds."""
        return self.charged_seconds / self.work_seconds if self.work_seconds > 0 else 0.0

    def should_save(
        self, work_seconds: float, *, priority: bool = False, priority_in: int | None = None
    ) -> bool:
        """Register one opportunity; return whether to checkpoint now.

        ``work_seconds`` is the training time since the previous opportunity (or since the start
        of the run for the first), not counting checkpoint costs. A ``priority`` opportunity (one
        a replay is likely to need, ``record/anticipate.py``) is saved off the every-k-th rhythm
        whenever the account is not overdrawn (it may overdraw it by one save, which the next
        ordinary saves wait out); ``priority_in``: a priority opportunity is expected that many
        opportunities from now, and an ordinary save due before it is held for it when it is
        closer than ``k``.
        """
        if not work_seconds >= 0:
            raise ValueError(f"work_seconds must be >= 0, got {work_seconds}")
        self.opportunities += 1
        self.work_seconds += work_seconds
        self._work_avg = self._smooth(self._work_avg, work_seconds)
        self._since_save += 1
        overdue = self.max_interval is not None and self._since_save >= self.max_interval
        if self.saves == 0 or overdue:  # the first opportunity is always saved
            decision = True
        else:
            allowance = self.budget * self.work_seconds
            affordable = self.charged_seconds + self.estimated_cost <= allowance * (1 + 1e-9)
            k = self.k
            decision = affordable and self._since_save >= k
            if priority and not decision:
                decision = self.charged_seconds <= allowance * (1 + 1e-9)
            elif decision and not priority and priority_in is not None and priority_in < k:
                decision = False  # the priority one comes soon: save there instead
        if decision:
            self.saves += 1
            self._since_save = 0
        return decision

    def record_save(
        self, foreground_seconds: float, background_seconds: float | None = None
    ) -> None:
        """Charge a save's training-thread time; its background time now, or later through
        :meth:`record_background` (saves are matched in order)."""
        self.charged_seconds += foreground_seconds
        self._last_foreground = foreground_seconds
        if background_seconds is None:
            self._awaiting_background.append(foreground_seconds)
        else:
            self._finish(foreground_seconds, background_seconds)

    def record_background(self, seconds: float) -> None:
        """Charge the writer-thread time of the oldest save still awaiting it."""
        foreground = self._awaiting_background.popleft() if self._awaiting_background else 0.0
        self._finish(foreground, seconds)

    def _finish(self, foreground: float, background: float) -> None:
        charged = self.background_weight * background
        self.charged_seconds += charged
        self._cost_avg = self._smooth(self._cost_avg, foreground + charged)

    def __repr__(self) -> str:
        return (
            f"CheckpointPolicy(budget={self.budget}, k={self.k}, saves={self.saves}/"
            f"{self.opportunities}, overhead={self.overhead:.2%})"
        )
