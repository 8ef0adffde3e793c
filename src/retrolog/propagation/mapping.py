"""The node mapping between two trees, and the similarity measures the phases share."""

from __future__ import annotations

from collections import Counter

from .tree import Tree


class Mapping:
    """A one-to-one mapping between the nodes of two trees (``src`` = new, ``dst`` = old)."""

    def __init__(self, src: Tree, dst: Tree) -> None:
        self.src = src
        self.dst = dst
        self.fwd = [-1] * len(src)
        self.bwd = [-1] * len(dst)

    def add(self, a: int, b: int) -> None:
        """Map ``a`` (in src) to ``b`` (in dst)."""
        self.fwd[a] = b
        self.bwd[b] = a

    def remove(self, a: int) -> None:
        """Forget the partner of ``a``."""
        b = self.fwd[a]
        if b != -1:
            self.bwd[b] = -1
            self.fwd[a] = -1

    def add_subtree(self, a: int, b: int) -> None:
        """Map two isomorphic (or same-shape) subtrees node for node."""
        fwd, bwd = self.fwd, self.bwd
        for i in range(self.src.size[a]):
            if fwd[a + i] == -1 and bwd[b + i] == -1:
                fwd[a + i] = b + i
                bwd[b + i] = a + i

    def __len__(self) -> int:
        return sum(1 for b in self.fwd if b != -1)

    def pairs(self) -> list[tuple[int, int]]:
        """All mapped pairs ``(src, dst)``."""
        return [(a, b) for a, b in enumerate(self.fwd) if b != -1]


def dice(m: Mapping, a: int, b: int) -> float:
    """Dice similarity of the descendants of ``a`` (src) and ``b`` (dst) under ``m``."""
    if a < 0 or b < 0:
        return 0.0
    sa = m.src.size[a] - 1
    sb = m.dst.size[b] - 1
    if sa + sb == 0:
        return 0.0
    lo, hi = b, b + m.dst.size[b]
    fwd = m.fwd
    common = 0
    for d in range(a + 1, a + sa + 1):
        x = fwd[d]
        if lo < x < hi:
            common += 1
    return 2.0 * common / (sa + sb)


HEADER_KINDS = frozenset(
    {
        "For",
        "AsyncFor",
        "While",
        "If",
        "With",
        "AsyncWith",
        "FunctionDef",
        "AsyncFunctionDef",
        "ClassDef",
    }
)


def bag(t: Tree, n: int) -> Counter[str]:
    """The multiset of labels (names, attributes, literals) in a subtree."""
    lab = t.label
    return Counter(lab[d] for d in range(n, n + t.size[n]) if lab[d])


def header_bag(t: Tree, n: int) -> Counter[str] | None:
    """Labels of a compound statement's header (its non-block children); None if simple."""
    if t.kind[n] not in HEADER_KINDS:
        return None
    out: Counter[str] = Counter()
    if t.label[n]:
        out[t.label[n]] += 1
    for c in t.children[n]:
        if t.node[c] is not None:
            out.update(bag(t, c))
    return out


def bag_dice(x: Counter[str], y: Counter[str]) -> float:
    total = sum(x.values()) + sum(y.values())
    return 2.0 * sum((x & y).values()) / total if total else 0.0


MIN_BAG = 0.5
