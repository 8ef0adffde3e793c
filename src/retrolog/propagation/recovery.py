"""GumTree recovery and the extra alignment passes (phase 3 and its companions).

:func:`recover` matches the unmatched children of a matched pair ("simple" recovery of the
reference implementation, plus a label-similarity alignment of statements);
:func:`match_headers` pairs compound statements with a unique equal header;
:func:`match_gaps` aligns the statements lying between matched neighbours;
:func:`realign_loops` corrects loops matched one nesting level off.
"""

from __future__ import annotations

from collections import defaultdict
from collections.abc import Callable, Sequence

from .mapping import (
    HEADER_KINDS,
    MIN_BAG,
    Mapping,
    bag,
    bag_dice,
    header_bag,
)
from .tree import Tree


def _header_key(t: Tree, n: int, fuzzy: bool) -> tuple[object, ...]:
    """A compound statement's kind, label and non-block children classes (its header)."""
    cls = t.fuzzy if fuzzy else t.iso
    return (
        t.group(n),
        t.label[n],
        *[cls[c] for c in t.children[n] if t.node[c] is not None],
    )


_LOOPS = frozenset({"For", "AsyncFor", "While"})


def _unmap_compound(m: Mapping, a: int) -> None:
    """Forget the partners of a compound statement, its header parts and its blocks."""
    t = m.src
    m.remove(a)
    for c in t.children[a]:
        if t.node[c] is None:
            m.remove(c)
        else:
            for d in range(c, c + t.size[c]):
                m.remove(d)


def _map_compound(m: Mapping, a: int, b: int) -> None:
    """Map two compound statements, their same-shape header parts and their blocks by field."""
    t1, t2 = m.src, m.dst
    m.add(a, b)
    blocks2 = {t2.field_name[c]: c for c in t2.children[b] if t2.node[c] is None}
    heads2 = [c for c in t2.children[b] if t2.node[c] is not None]
    heads1 = [c for c in t1.children[a] if t1.node[c] is not None]
    for c in t1.children[a]:
        if t1.node[c] is None:
            other = blocks2.get(t1.field_name[c], -1)
            if other != -1 and m.bwd[other] == -1:
                m.add(c, other)
    if len(heads1) == len(heads2):
        for c1, c2 in zip(heads1, heads2):
            if t1.shape[c1] == t2.shape[c2]:
                m.add_subtree(c1, c2)


def realign_loops(m: Mapping) -> None:
    """Re-pair loops that bottom-up matched one nesting level off.

    When a new loop is wrapped around existing code (a micro-batch loop inside the step loop),
    the new inner loop's body is what the old *outer* loop's body shares most with, so
    bottom-up pairs new inner with old outer, new outer with the old loop above it, and so
    on.  A loop whose header (target and iterable, exactly) is unique in both trees and
    equal to another old loop's than its partner's is re-paired with that loop; the loops
    this frees are left to :func:`match_headers`.
    """
    t1, t2 = m.src, m.dst
    loops1 = [a for a, k in enumerate(t1.kind) if k in _LOOPS]
    loops2 = [b for b, k in enumerate(t2.kind) if k in _LOOPS]
    if not loops1 or not loops2:
        return
    keys1: dict[tuple[object, ...], list[int]] = defaultdict(list)
    keys2: dict[tuple[object, ...], list[int]] = defaultdict(list)
    for a in loops1:
        keys1[_header_key(t1, a, False)].append(a)
    for b in loops2:
        keys2[_header_key(t2, b, False)].append(b)
    for key, g1 in keys1.items():
        g2 = keys2.get(key)
        if g2 is None or len(g1) != 1 or len(g2) != 1:
            continue
        a, b = g1[0], g2[0]
        partner = m.fwd[a]
        if partner == b or (partner != -1 and _header_key(t2, partner, False) == key):
            continue
        if partner == -1 and m.bwd[b] == -1:
            continue  # left to match_headers, as before
        other = m.bwd[b]
        # only the nesting shift: ``a``'s partner encloses ``b``, or ``b``'s partner is in ``a``
        shifted = (partner != -1 and t2.contains(partner, b)) or (
            other != -1 and t1.contains(a, other)
        )
        if not shifted:
            continue
        if partner != -1:
            _unmap_compound(m, a)
        if other != -1:
            _unmap_compound(m, other)
        _map_compound(m, a, b)


def match_loop_bodies(m: Mapping, min_sim: float = MIN_BAG) -> None:
    """Align the statements of a new loop with those of the old block it was wrapped in.

    A micro-step loop added inside the step loop holds what the old step body did once
    (``scaler.scale(loss).backward()`` for ``loss.backward()``); recovery never sees them
    side by side because the new loop has no partner.  Its unmatched statements are aligned
    with the unmatched statements of the old counterpart of the block holding the loop.
    """
    t1, t2 = m.src, m.dst
    fwd = m.fwd
    for a, k in enumerate(t1.kind):
        if k not in _LOOPS or fwd[a] != -1:
            continue
        old_block = fwd[t1.parent[a]]
        if old_block == -1:
            continue
        for body in t1.children[a]:
            if t1.node[body] is not None:
                continue
            xs = _flatten(t1, fwd, [c for c in t1.children[body] if fwd[c] == -1])
            ys = _flatten(t2, m.bwd, [c for c in t2.children[old_block] if m.bwd[c] == -1])
            align(m, xs, ys, min_sim)
        # the rest of the block around the new loop: its order relative to the loop's body
        # changed (``zero_grad`` moved after the step), so gaps did not line it up
        block = t1.parent[a]
        xs = _flatten(t1, fwd, [c for c in t1.children[block] if fwd[c] == -1 and c != a])
        xs = [x for x in xs if not t1.contains(a, x)]
        ys = _flatten(t2, m.bwd, [c for c in t2.children[old_block] if m.bwd[c] == -1])
        align(m, xs, ys, min_sim)
    # and the other way round: a loop of the old version that the new one dropped
    for b, k in enumerate(t2.kind):
        if k not in _LOOPS or m.bwd[b] != -1:
            continue
        new_block = m.bwd[t2.parent[b]]
        if new_block == -1:
            continue
        xs = _flatten(t1, fwd, [c for c in t1.children[new_block] if fwd[c] == -1])
        for body in t2.children[b]:
            if t2.node[body] is None:
                ys = _flatten(t2, m.bwd, [c for c in t2.children[body] if m.bwd[c] == -1])
                align(m, [x for x in xs if fwd[x] == -1], ys, min_sim)


def match_headers(m: Mapping) -> None:
    """Match unmatched compound statements whose header is unique and equal in both trees.

    A loop whose body was extracted into functions keeps its header (``for epoch in
    range(args.epochs)``) while its descendants change; the exact header is tried first, then
    the header with variable names as wildcards.
    """
    t1, t2 = m.src, m.dst
    compounds1 = [a for a, k in enumerate(t1.kind) if k in HEADER_KINDS and m.fwd[a] == -1]
    compounds2 = [b for b, k in enumerate(t2.kind) if k in HEADER_KINDS and m.bwd[b] == -1]
    for fuzzy in (False, True):
        groups1: dict[tuple[object, ...], list[int]] = defaultdict(list)
        groups2: dict[tuple[object, ...], list[int]] = defaultdict(list)
        for a in compounds1:
            groups1[_header_key(t1, a, fuzzy)].append(a)
        for b in compounds2:
            groups2[_header_key(t2, b, fuzzy)].append(b)
        for key, g1 in groups1.items():
            g2 = groups2.get(key)
            if g2 is None or len(g1) != 1 or len(g2) != 1:
                continue
            a, b = g1[0], g2[0]
            if m.fwd[a] != -1 or m.bwd[b] != -1:
                continue
            m.add(a, b)
            for c1, c2 in zip(t1.children[a], t2.children[b]):
                if t1.node[c1] is not None and t1.shape[c1] == t2.shape[c2]:
                    m.add_subtree(c1, c2)
            recover(m, a, b)


def lcs(
    xs: Sequence[int], ys: Sequence[int], eq: Callable[[int, int], bool]
) -> list[tuple[int, int]]:
    """Longest common subsequence of two id lists under ``eq`` (classic dynamic programme)."""
    n, k = len(xs), len(ys)
    if n == 0 or k == 0:
        return []
    table = [[0] * (k + 1) for _ in range(n + 1)]
    for i in range(n - 1, -1, -1):
        row, below = table[i], table[i + 1]
        x = xs[i]
        for j in range(k - 1, -1, -1):
            if eq(x, ys[j]):
                row[j] = below[j + 1] + 1
            else:
                row[j] = max(below[j], row[j + 1])
    out = []
    i = j = 0
    while i < n and j < k:
        if eq(xs[i], ys[j]):
            out.append((xs[i], ys[j]))
            i += 1
            j += 1
        elif table[i + 1][j] >= table[i][j + 1]:
            i += 1
        else:
            j += 1
    return out


def recover(m: Mapping, a: int, b: int) -> None:
    """Phase 3: match the unmatched children of a matched pair ("simple" recovery).

    Longest common subsequence of isomorphic children, then of same-shape children (labels
    ignored: renamed identifiers), then children whose kind is unique on both sides,
    recursively.  Statements (children of a block) need more than a shape to be paired:
    after the isomorphic ones, same-code-but-renamed ones and label-similar ones are aligned,
    and the shape and unique-kind steps require at least one shared label, so that
    ``scaler.update()`` is never paired with ``loss.backward()`` for having the same shape.
    """
    t1, t2 = m.src, m.dst
    if t1.group(a) != t2.group(b):
        return
    fwd, bwd = m.fwd, m.bwd
    is_block = t1.node[a] is None

    def free1() -> list[int]:
        return [c for c in t1.children[a] if fwd[c] == -1]

    def free2() -> list[int]:
        return [c for c in t2.children[b] if bwd[c] == -1]

    def related(x: int, y: int) -> bool:
        # blocks and compound statements hold statements: never mapped wholesale by shape
        if t1.node[x] is None or t1.kind[x] in HEADER_KINDS:
            return False
        if not is_block:
            return True
        return bool(bag(t1, x) & bag(t2, y))

    xs, ys = free1(), free2()
    if not xs or not ys:
        return
    for x, y in lcs(xs, ys, lambda x, y: t1.iso[x] == t2.iso[y]):
        m.add_subtree(x, y)
    if is_block:
        xs, ys = free1(), free2()
        for x, y in lcs(xs, ys, lambda x, y: t1.fuzzy[x] == t2.fuzzy[y]):
            m.add_subtree(x, y)
        _align_statements(m, a, b)
    xs, ys = free1(), free2()
    if not xs or not ys:
        return
    for x, y in lcs(xs, ys, lambda x, y: t1.shape[x] == t2.shape[y] and related(x, y)):
        m.add_subtree(x, y)
    xs, ys = free1(), free2()
    if not xs or not ys:
        return
    count1: dict[str, list[int]] = defaultdict(list)
    count2: dict[str, list[int]] = defaultdict(list)
    for x in xs:
        count1[t1.group(x)].append(x)
    for y in ys:
        count2[t2.group(y)].append(y)
    for key, group1 in count1.items():
        group2 = count2.get(key)
        if (
            group2 is not None
            and len(group1) == 1
            and len(group2) == 1
            and (
                t1.node[group1[0]] is None
                or t1.kind[group1[0]] in HEADER_KINDS
                or (
                    related(group1[0], group2[0])
                    # one shared name in two different statements is not enough
                    # (``labels = labels.to(...)`` vs ``loss = criterion(logits, labels)``)
                    and (
                        not is_block
                        or bag_dice(bag(t1, group1[0]), bag(t2, group2[0])) >= MIN_GAP_BAG
                        or _same_target(t1, t2, group1[0], group2[0])
                    )
                )
            )
        ):
            m.add(group1[0], group2[0])
            recover(m, group1[0], group2[0])
    # same histogram on (kind, label): two functions both called ``train``
    xs, ys = free1(), free2()
    named1: dict[tuple[str, str], list[int]] = defaultdict(list)
    named2: dict[tuple[str, str], list[int]] = defaultdict(list)
    for x in xs:
        if t1.label[x]:
            named1[(t1.group(x), t1.label[x])].append(x)
    for y in ys:
        if t2.label[y]:
            named2[(t2.group(y), t2.label[y])].append(y)
    for key2, g1 in named1.items():
        g2 = named2.get(key2)
        if g2 is not None and len(g1) == 1 and len(g2) == 1:
            m.add(g1[0], g2[0])
            recover(m, g1[0], g2[0])


def _same_target(t1: Tree, t2: Tree, x: int, y: int) -> bool:
    """Whether two assignments assign the same name (``acc = evaluate(...)``, ``acc = c / n``)."""
    if t1.kind[x] not in ("Assign", "AugAssign", "AnnAssign") or t1.kind[x] != t2.kind[y]:
        return False
    kx, ky = t1.children[x], t2.children[y]
    return bool(kx and ky) and t1.label[kx[0]] == t2.label[ky[0]] != ""


def _align_statements(m: Mapping, a: int, b: int) -> None:
    """Match leftover statements of two matched blocks by label similarity, in order."""
    t1 = m.src
    if t1.node[a] is not None:
        return  # only blocks hold statements
    xs = [c for c in t1.children[a] if m.fwd[c] == -1]
    ys = [c for c in m.dst.children[b] if m.bwd[c] == -1]
    align(m, xs, ys, MIN_BAG)


def align(m: Mapping, xs: list[int], ys: list[int], min_sim: float) -> None:
    """Weighted LCS of two statement lists by label-bag dice (>= ``min_sim``, same kind).

    Pairs ``loss.backward()`` with ``scaler.scale(loss).backward()``; each pair is then
    recovered recursively.
    """
    t1, t2 = m.src, m.dst
    if not xs or not ys or len(xs) * len(ys) > 4000:
        return
    n, k = len(xs), len(ys)
    bx = [bag(t1, x) for x in xs]
    by = [bag(t2, y) for y in ys]
    hx = [header_bag(t1, x) for x in xs]
    hy = [header_bag(t2, y) for y in ys]
    sim = [[0.0] * k for _ in range(n)]
    for i in range(n):
        for j in range(k):
            if t1.group(xs[i]) == t2.group(ys[j]):
                s = bag_dice(bx[i], by[j])
                hi, hj = hx[i], hy[j]
                if hi is not None and hj is not None:
                    s = max(s, bag_dice(hi, hj))
                if s >= min_sim:
                    sim[i][j] = s
    best = [[0.0] * (k + 1) for _ in range(n + 1)]
    for i in range(n - 1, -1, -1):
        for j in range(k - 1, -1, -1):
            take = best[i + 1][j + 1] + sim[i][j] if sim[i][j] else 0.0
            best[i][j] = max(best[i + 1][j], best[i][j + 1], take)
    i = j = 0
    while i < n and j < k:
        if sim[i][j] and best[i][j] == best[i + 1][j + 1] + sim[i][j]:
            m.add(xs[i], ys[j])
            recover(m, xs[i], ys[j])
            i += 1
            j += 1
        elif best[i + 1][j] >= best[i][j + 1]:
            i += 1
        else:
            j += 1


MIN_GAP_BAG = 0.3


def match_gaps(m: Mapping, min_sim: float = MIN_GAP_BAG) -> None:
    """Align the unmatched statements lying between two matched neighbours.

    For every block of the new tree, each run of unmatched statements between matched
    statements ``P`` and ``N`` (or a block edge) faces the unmatched statements between
    ``P'`` and ``N'`` in the old tree, if those are in one block; the runs are aligned by
    label similarity (:func:`align`) with a lower threshold, the position being evidence.
    This finds the ``for epoch`` loop of a ``main()`` that was a flat script before.
    """
    t1, t2 = m.src, m.dst
    fwd = m.fwd
    for blk in range(len(t1)):
        if t1.node[blk] is not None:
            continue
        kids = t1.children[blk]
        if all(fwd[c] != -1 for c in kids):
            continue
        anchors = [i for i, c in enumerate(kids) if fwd[c] != -1]
        bounds: list[tuple[int, int]] = []
        if fwd[blk] != -1 or anchors:
            bounds = list(zip([-1, *anchors], [*anchors, len(kids)]))
        for lo, hi in bounds:
            if hi - lo < 2:
                continue
            old_block, start, end = _old_span(m, blk, kids, lo, hi)
            if old_block == -1:
                continue
            xs = _flatten(t1, fwd, [c for c in kids[lo + 1 : hi] if fwd[c] == -1])
            okids = t2.children[old_block]
            ys = _flatten(t2, m.bwd, [c for c in okids[start:end] if m.bwd[c] == -1])
            align(m, xs, ys, min_sim)


_SEE_THROUGH = frozenset({"With", "AsyncWith"})


def _flatten(t: Tree, partner: list[int], stmts: list[int]) -> list[int]:
    """Statements, with unmatched ``with`` blocks replaced by their own statements, in order.

    ``with torch.no_grad():`` added or removed around a statement does not change when it
    runs, so the gap alignment looks through it.
    """
    out: list[int] = []
    for s in stmts:
        if t.kind[s] in _SEE_THROUGH and partner[s] == -1:
            body = [c for c in t.children[s] if t.node[c] is None]
            out.append(s)
            for b in body:
                out.extend(_flatten(t, partner, [c for c in t.children[b] if partner[c] == -1]))
        else:
            out.append(s)
    return out


def _old_span(m: Mapping, blk: int, kids: list[int], lo: int, hi: int) -> tuple[int, int, int]:
    """The old block and index range facing the new gap ``kids[lo + 1 : hi]``."""
    t2 = m.dst
    fwd = m.fwd
    p = fwd[kids[lo]] if lo >= 0 else -1
    n = fwd[kids[hi]] if hi < len(kids) else -1
    if p != -1 and n != -1:
        if t2.parent[p] != t2.parent[n]:
            return -1, 0, 0
        okids = t2.children[t2.parent[p]]
        i, j = okids.index(p), okids.index(n)
        return (t2.parent[p], i + 1, j) if i < j else (-1, 0, 0)
    if p != -1:
        okids = t2.children[t2.parent[p]]
        return t2.parent[p], okids.index(p) + 1, len(okids)
    if n != -1:
        okids = t2.children[t2.parent[n]]
        return t2.parent[n], 0, okids.index(n)
    ob = fwd[blk]
    if ob == -1:
        return -1, 0, 0
    return ob, 0, len(t2.children[ob])
