"""The GumTree matcher (Falleri et al., ASE 2014) over :class:`~retrolog.propagation.tree.Tree`.

Three phases, each a public function so that it can be tested on its own:

1. :func:`top_down` -- greedy matching of the largest isomorphic subtrees, highest first, down
   to ``min_height``; a subtree with several isomorphic partners is kept as a candidate and the
   candidates are resolved best first by the dice similarity of their parents (ties: the
   candidates' relative position in their files).
   A second pass does the same with variable names as wildcards (renamed locals), and
   :func:`match_headers` pairs compound statements whose header is unique and equal.
2. :func:`bottom_up` -- in post-order, an unmatched container is matched with the unmatched
   node of the same kind (group) in the other tree that shares the most matched descendants,
   if their dice similarity is at least ``min_dice``.
3. :func:`recover` -- after each bottom-up match (and for the roots), the unmatched children
   of the pair are matched by the "simple" recovery of the reference implementation: longest
   common subsequence of isomorphic children, then of children with the same shape (labels
   ignored: this is where renamed identifiers are matched), then children whose kind is unique
   on both sides, recursively.

:func:`match` runs the three phases and returns the :class:`Mapping`.
"""

from __future__ import annotations

import ast
from collections import Counter, defaultdict

from .mapping import (
    HEADER_KINDS,
    MIN_BAG,
    Mapping,
    bag,
    bag_dice,
    dice,
    header_bag,
)
from .recovery import (
    lcs,
    match_gaps,
    match_headers,
    match_loop_bodies,
    realign_loops,
    recover,
)
from .tree import IDENT_KINDS, LOOP_KINDS, Tree

__all__ = [
    "Mapping",
    "bottom_up",
    "dice",
    "lcs",
    "mapped_dice",
    "match",
    "match_gaps",
    "match_headers",
    "recover",
    "top_down",
]

MIN_HEIGHT = 2
MIN_DICE = 0.5
MAX_CANDIDATES = 2500  # pairs of one isomorphism class beyond which top-down gives up on it


class _HeightQueue:
    """Nodes bucketed by height, popped highest first."""

    def __init__(self, t: Tree, min_height: int) -> None:
        self.t = t
        self.min_height = min_height
        self.buckets: dict[int, list[int]] = defaultdict(list)

    def push(self, n: int) -> None:
        if self.t.height[n] >= self.min_height:
            self.buckets[self.t.height[n]].append(n)

    def open(self, n: int) -> None:
        for c in self.t.children[n]:
            self.push(c)

    def peek(self) -> int:
        while self.buckets:
            h = max(self.buckets)
            if self.buckets[h]:
                return h
            del self.buckets[h]
        return -1

    def pop(self) -> list[int]:
        h = self.peek()
        return self.buckets.pop(h, [])


def top_down(m: Mapping, min_height: int = MIN_HEIGHT, fuzzy: bool = False) -> None:
    """Phase 1: greedy top-down matching of isomorphic subtrees of height >= ``min_height``.

    With ``fuzzy``, subtrees are compared with their variable names (``Name``, ``arg``) taken
    as wildcards, and only subtrees not matched yet take part: the second pass that finds the
    statements whose local variables were renamed.
    """
    t1, t2 = m.src, m.dst
    cls1 = t1.fuzzy if fuzzy else t1.iso
    cls2 = t2.fuzzy if fuzzy else t2.iso
    fwd, bwd = m.fwd, m.bwd
    q1, q2 = _HeightQueue(t1, min_height), _HeightQueue(t2, min_height)
    q1.push(0)
    q2.push(0)
    candidates: list[tuple[int, int, int]] = []
    while True:
        h1, h2 = q1.peek(), q2.peek()
        if h1 < 0 or h2 < 0:
            break
        if h1 != h2:
            if h1 > h2:
                for n in q1.pop():
                    q1.open(n)
            else:
                for n in q2.pop():
                    q2.open(n)
            continue
        nodes1, nodes2 = q1.pop(), q2.pop()
        by_iso1: dict[int, list[int]] = defaultdict(list)
        by_iso2: dict[int, list[int]] = defaultdict(list)
        for n in nodes1:
            if fwd[n] == -1:
                by_iso1[cls1[n]].append(n)
            elif fuzzy:
                q1.open(n)
        for n in nodes2:
            if bwd[n] == -1:
                by_iso2[cls2[n]].append(n)
            elif fuzzy:
                q2.open(n)
        for key, group1 in by_iso1.items():
            group2 = by_iso2.get(key)
            if group2 is None:
                for n in group1:
                    q1.open(n)
            elif len(group1) == 1 and len(group2) == 1:
                if fuzzy and not _consistent(t1, t2, group1[0], group2[0]):
                    q1.open(group1[0])
                    q2.open(group2[0])
                else:
                    m.add_subtree(group1[0], group2[0])
            elif len(group1) * len(group2) > MAX_CANDIDATES:
                pass  # e.g. hundreds of ``x = 0``: left to the recovery of their blocks
            else:
                g1, g2 = sorted(group1), sorted(group2)
                candidates.extend(
                    (a, b, abs(i - j)) for i, a in enumerate(g1) for j, b in enumerate(g2)
                )
        for key, group2 in by_iso2.items():
            if key not in by_iso1:
                for n in group2:
                    q2.open(n)
    _resolve_candidates(m, candidates, fuzzy)


def _consistent(t1: Tree, t2: Tree, a: int, b: int) -> bool:
    """Whether two fuzzy-equal subtrees rename their variables one-to-one.

    ``gen.apply(); disc.apply()`` against ``netD.apply(); netG.apply()`` is fuzzy-equal as a
    block, but only statement by statement can ``gen`` consistently be ``netG``.
    """
    fwd: dict[str, str] = {}
    bwd: dict[str, str] = {}
    kind, lab1, lab2 = t1.kind, t1.label, t2.label
    for i in range(t1.size[a]):
        if kind[a + i] in IDENT_KINDS:
            x, y = lab1[a + i], lab2[b + i]
            if fwd.setdefault(x, y) != y or bwd.setdefault(y, x) != x:
                return False
    # nothing but variables, every one of them different (``acc = evaluate(net, loader)``
    # against ``loss = criterion(logits, labels)``): the same shape, not the same statement
    return len(fwd) < 3 or any(x == y for x, y in fwd.items())


def _position_distance(m: Mapping, a: int, b: int) -> float:
    """Distance between the relative positions of ``a`` and ``b`` in their files."""
    la, lb = m.src.line, m.dst.line
    n1 = max(la[-1] if la else 1, 1)
    n2 = max(lb[-1] if lb else 1, 1)
    return abs(a / max(len(m.src), 1) - b / max(len(m.dst), 1)) + abs(
        max(la[a], 0) / n1 - max(lb[b], 0) / n2
    )


def _resolve_candidates(m: Mapping, candidates: list[tuple[int, int, int]], fuzzy: bool) -> None:
    """Map ambiguous isomorphic pairs, most similar context first.

    The score is the dice of the parents; in the fuzzy pass also the candidates' own label
    similarity (``loss = loss_fn(out, y)`` prefers ``loss = loss_fn(output, y)`` over
    ``acc = accuracy(output, y)``) and their agreement with the renames already matched
    (``gen.apply(...)`` prefers ``netG.apply(...)`` once ``gen = Generator()`` matched
    ``netG = Generator()``).  Ties go to the pair whose ranks among their isomorphic
    siblings are closest (code order is mostly kept), then to the nearest positions.
    """
    if not candidates:
        return
    t1, t2 = m.src, m.dst
    p1, p2 = t1.parent, t2.parent
    scored = []
    bags1: dict[int, Counter[str]] = {}
    bags2: dict[int, Counter[str]] = {}
    names: dict[str, Counter[str]] = defaultdict(Counter)
    if fuzzy:
        for a, b in m.pairs():
            if t1.kind[a] in IDENT_KINDS and t2.kind[b] in IDENT_KINDS:
                names[t1.label[a]][t2.label[b]] += 1
    parents: dict[tuple[int, int], float] = {}

    def cached_dice(x: int, y: int) -> float:
        got = parents.get((x, y))
        if got is None:
            got = parents[(x, y)] = dice(m, x, y)
        return got

    looped: dict[tuple[int, int], bool] = {}

    def in_loop(t: Tree, which: int, n: int) -> bool:
        got = looped.get((which, n))
        if got is None:
            got = looped[(which, n)] = any(t.kind[x] in LOOP_KINDS for x in t.ancestors(n))
        return got

    for a, b, rank in candidates:
        pa, pb = p1[a], p2[b]
        score = cached_dice(pa, pb)
        # a statement inside a loop is not the copy of it run once before the loop (the
        # prefetched first batch ``X, Y = get_batch("train")`` above the training loop)
        mismatch = in_loop(t1, 1, a) != in_loop(t2, 2, b)
        if fuzzy:
            if a not in bags1:
                bags1[a] = bag(t1, a)
            if b not in bags2:
                bags2[b] = bag(t2, b)
            score += bag_dice(bags1[a], bags2[b])
            score += 0.5 * _rename_agreement(t1, t2, a, b, names)
        # grandparents break the frequent tie between two unmatched parent expressions
        gpa = p1[pa] if pa >= 0 else -1
        gpb = p2[pb] if pb >= 0 else -1
        score2 = cached_dice(gpa, gpb) if gpa >= 0 and gpb >= 0 else 0.0
        scored.append(
            (mismatch, -round(score, 6), -round(score2, 6), rank, _position_distance(m, a, b), a, b)
        )
    scored.sort()
    fwd, bwd = m.fwd, m.bwd
    for *_k, a, b in scored:
        if fwd[a] == -1 and bwd[b] == -1:
            m.add_subtree(a, b)


def _rename_agreement(t1: Tree, t2: Tree, a: int, b: int, names: dict[str, Counter[str]]) -> float:
    """In [-1, 1]: how well the identifier pairs of two same-shape subtrees fit known renames."""
    agree = total = 0
    for i in range(t1.size[a]):
        if t1.kind[a + i] in IDENT_KINDS:
            known = names.get(t1.label[a + i])
            if known:
                total += 1
                agree += known.most_common(1)[0][0] == t2.label[b + i]
    return (2.0 * agree - total) / total if total else 0.0


def _dst_candidates(m: Mapping, a: int) -> list[int]:
    """Unmatched dst nodes of ``a``'s kind group that contain a partner of a descendant of ``a``."""
    t1, t2 = m.src, m.dst
    group = t1.group(a)
    seen: set[int] = set()
    out: list[int] = []
    fwd, bwd, par2 = m.fwd, m.bwd, t2.parent
    for d in range(a + 1, a + t1.size[a]):
        x = fwd[d]
        if x < 0:
            continue
        p = par2[x]
        while p > 0 and p not in seen:
            seen.add(p)
            if bwd[p] == -1 and t2.group(p) == group:
                out.append(p)
            p = par2[p]
    return out


def mapped_dice(m: Mapping, a: int, b: int) -> tuple[float, int]:
    """Dice of ``a`` and ``b`` counted over their *matched* descendants only, and the overlap.

    Unlike :func:`dice`, added and deleted code does not dilute it: a loop whose body gained
    five new statements still shares most of its matched statements with its old self.
    """
    t1, t2 = m.src, m.dst
    lo, hi = b, b + t2.size[b]
    fwd, bwd = m.fwd, m.bwd
    common = mapped_a = 0
    for d in range(a + 1, a + t1.size[a]):
        x = fwd[d]
        if x != -1:
            mapped_a += 1
            if lo < x < hi:
                common += 1
    mapped_b = sum(1 for d in range(b + 1, hi) if bwd[d] != -1)
    if mapped_a + mapped_b == 0:
        return 0.0, 0
    return 2.0 * common / (mapped_a + mapped_b), common


# containers for which the matched-descendants criterion is also tried
_COMPOUND_GROUPS = frozenset({"Loop", "With", "If", "Try", "Loop.body", "With.body"})
MIN_COMMON = 4


def _plausible(m: Mapping, a: int, b: int) -> bool:
    """Extra conditions for a bottom-up match of statements.

    Simple statements must share half their labels: a small common subexpression
    (``X.shape[1]``) otherwise drags two unrelated statements together
    (``model = LinearModel(X.shape[1])`` and ``w = np.zeros(X.shape[1])``).  An ``if`` or
    ``while`` must share at least one label of its condition: ``if val_iou > best:`` is not
    ``if rank == 0:`` even when the same ``torch.save(...)`` sits in both.
    """
    node = m.src.node[a]
    kind = m.src.kind[a]
    if kind in _CONDITIONAL:
        ha, hb = header_bag(m.src, a), header_bag(m.dst, b)
        return ha is None or hb is None or bool(ha & hb)
    if node is None or kind in HEADER_KINDS or not isinstance(node, ast.stmt):
        return True
    return bag_dice(bag(m.src, a), bag(m.dst, b)) >= MIN_BAG


_CONDITIONAL = frozenset({"If", "While"})


def bottom_up(m: Mapping, min_dice: float = MIN_DICE) -> None:
    """Phase 2: match containers by the dice similarity of their matched descendants.

    A compound statement or block that fails the dice threshold is still matched when the
    dice over matched descendants only (:func:`mapped_dice`) passes it with at least
    ``MIN_COMMON`` shared nodes: code added around existing code does not hide it.
    """
    t1 = m.src
    fwd = m.fwd
    for a in t1.postorder:
        if a == 0:
            if fwd[0] == -1 and m.bwd[0] == -1:
                m.add(0, 0)
            recover(m, 0, fwd[0])
            continue
        if fwd[a] != -1 or not t1.children[a]:
            continue
        best, best_score, best_dist = -1, -1.0, 0.0
        cands = _dst_candidates(m, a)
        for b in cands:
            score = dice(m, a, b)
            if score > best_score or (
                score == best_score and _position_distance(m, a, b) < best_dist
            ):
                best, best_score = b, score
                best_dist = _position_distance(m, a, b)
        if best != -1 and best_score >= min_dice and _plausible(m, a, best):
            m.add(a, best)
            recover(m, a, best)
            continue
        if t1.group(a) not in _COMPOUND_GROUPS and not (
            t1.kind[a].endswith(".body") and t1.group(a) != "Def.body"
        ):
            continue
        best, best_score = -1, -1.0
        for b in cands:
            score, common = mapped_dice(m, a, b)
            if common >= MIN_COMMON and score > best_score and _plausible(m, a, b):
                best, best_score = b, score
        if best != -1 and best_score >= min_dice:
            m.add(a, best)
            recover(m, a, best)


def match(
    new: Tree, old: Tree, min_height: int = MIN_HEIGHT, min_dice: float = MIN_DICE
) -> Mapping:
    """Run the three GumTree phases and return the mapping from ``new`` to ``old``."""
    m = Mapping(new, old)
    top_down(m, min_height)
    top_down(m, min_height + 1, fuzzy=True)
    bottom_up(m, min_dice)
    realign_loops(m)
    match_headers(m)
    match_loop_bodies(m)
    match_gaps(m)
    return m
