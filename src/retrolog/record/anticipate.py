"""Checkpoints where a hindsight statement will need them: before a periodic evaluation.

Training scripts evaluate every N iterations (``if iter_num % eval_interval == 0``) and log what
they find in the main loop's body. A hindsight statement placed beside such a value (a perplexity
next to the validation loss) selects exactly those iterations, and its replay restores the state
just before each: the exit of the nested (micro-step) loop of the iteration before. Under a
checkpoint budget that allows only every k-th exit, that checkpoint is usually missing and the
replay re-executes the nested loop from an earlier one.

``Anticipation`` watches which names the main loop's body logs at which iterations (from the
flusher thread, over the rows it drains anyway), predicts the next iteration of each name logged
at a steady period greater than one, and tells the training thread, at a nested loop's exit,
whether the next iteration is predicted: the checkpoint policy then saves there even off its
every-k-th rhythm (``CheckpointPolicy.should_save(priority=True)``), still within the budget's
account. A wrong prediction costs one ordinary checkpoint; a missed one, a re-executed nested loop
at replay.
"""

from __future__ import annotations

from operator import itemgetter
from typing import Any

_CTX = itemgetter(2)
_KEEP = 3  # iterations remembered per name: two equal gaps make a period
_MAX_ROWS = 200_000  # a batch larger than this (a very high logging rate) is not inspected


class Anticipation:
    """Predicts the main-loop iterations whose body logs a value it does not log every iteration.

    Thread use: the training thread calls ``entered`` once per main-loop iteration and reads
    ``wanted``; the flusher thread calls ``observe`` with each drained batch of rows."""

    def __init__(self) -> None:
        self._entered: list[tuple[int, int]] = []  # (context id, index) of recent main iterations
        self._history: dict[str, list[int]] = {}  # name -> last iterations its body logged it at
        self.wanted: frozenset[int] = frozenset()  # predicted iterations (replaced, never mutated)

    def entered(self, context: int, index: int) -> None:
        """The main loop started iteration ``index`` in context ``context`` (training thread)."""
        self._entered.append((context, index))

    def observe(self, rows: list[tuple[str, Any, int]]) -> None:
        """Note which rows were logged directly in a main-loop iteration (flusher thread)."""
        entered = self._entered[:]  # a slice is atomic; the training thread only appends
        if entered and rows and len(rows) <= _MAX_ROWS:
            self._note(dict(entered), rows)
        # every row of an iteration before the current one has been drained by now (pruned on
        # every flush, logged rows or not: a long main loop must not grow the list)
        del self._entered[: max(len(entered) - 1, 0)]

    def _note(self, index_of: dict[int, int], rows: list[tuple[str, Any, int]]) -> None:
        contexts = index_of.keys() & set(map(_CTX, rows))
        if not contexts:
            return
        seen = {(name, index_of[ctx]) for name, _value, ctx in rows if ctx in contexts}
        for name, index in sorted(seen, key=itemgetter(1)):
            past = self._history.setdefault(name, [])
            if not past or past[-1] != index:
                past.append(index)
                del past[:-_KEEP]
        self.wanted = frozenset(self._predictions())

    def _predictions(self) -> set[int]:
        predicted = set()
        for past in self._history.values():
            if len(past) < 2:
                continue
            gap = past[-1] - past[-2]
            steady = len(past) == 2 or past[-2] - past[-3] == gap
            if gap > 1 and steady:
                predicted.add(past[-1] + gap)
        return predicted

    def before_predicted(self, index: int | None) -> tuple[bool, int | None]:
        """At the exit of a nested loop of main iteration ``index`` (training thread): whether
        iteration ``index + 1`` is predicted to log a periodic value, and else in how many
        iterations the next exit before a predicted one comes (None: none predicted)."""
        if index is None:
            return False, None
        ahead = [p - 1 - index for p in self.wanted if p - 1 > index]
        return index + 1 in self.wanted, min(ahead) if ahead else None
