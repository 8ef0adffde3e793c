"""Where a new statement goes in the old tree (its renames: ``renames.py``).

Given the GumTree mapping between the new and the old tree, a statement that sits in block
``B`` at index ``i`` of the new tree is placed:

* after the counterpart of the nearest preceding statement of ``B`` that is mapped *validly*
  (its counterpart lies in the counterpart of ``B``, not inside another loop or function);
* else at the start of the counterpart of ``B`` (after a docstring);
* if ``B`` itself has no counterpart, the search climbs to the statement that owns ``B``:
  ``if``/``with``/``try`` statements are *transparent* (new wrappers around existing code:
  the statement is placed among the existing code, without the wrapper) or, when nothing
  inside them exists in the old version, *lifted* (the whole new ``if``/``with`` block is
  inserted); an unmatched loop around existing code and no existing loop (micro-steps) is
  seen through like a wrapper (the result warns "loop absent"), any other unmatched loop is a
  missing context and the statement is refused; an unmatched function (code extracted into a
  new function) lets the search use the function's statements wherever their counterparts are,
  and refuses if none has one.

The engine then checks that the names the statement reads are bound there (``requires.py``).
"""

from __future__ import annotations

import ast
import re

from .describe import describe
from .matcher import Mapping
from .renames import Renamer
from .tree import DEF_KINDS, FUNC_KINDS, LOOP_KINDS, TRANSPARENT_KINDS, Tree


class Refusal(Exception):
    """Raised inside the placement code when a statement cannot be placed; carries the reason."""

    def __init__(self, reason: str, code: str = "no-context") -> None:
        super().__init__(reason)
        self.reason = reason
        self.code = code


class Anchor:
    """An insertion point in the old tree: ``after`` a statement or at the ``start`` of a block.

    ``depth``: how many new-tree levels were climbed to find it; ``skipped``: preceding
    statements passed over because unmapped or invalid.
    """

    def __init__(
        self, mode: str, node: int, depth: int = 0, skipped: int = 0, crossed_def: bool = False
    ) -> None:
        self.mode = mode  # "after" | "start"
        self.node = node  # old tree id: the statement (after) or the block (start)
        self.depth = depth
        self.skipped = skipped
        self.crossed_def = crossed_def


class Context:
    """The chain of new-tree levels a statement's placement is searched in.

    ``levels``: (new block id, index in that block), innermost first; ``target_block``: the
    old block they resolve to (-1 after an unmatched function); ``crossed``: the unmatched
    function or class the search stopped at; ``transparent``: unmatched wrappers passed
    through; ``lifted``: the outermost unmatched wrapper with nothing matched inside.
    """

    def __init__(self, levels: list[tuple[int, int]], target_block: int) -> None:
        self.levels = levels
        self.target_block = target_block
        self.crossed = -1
        self.transparent: list[int] = []
        self.lifted = -1
        # new loops passed through (transparent, around existing code)
        self.absent_loops: list[int] = []


class Placer(Renamer):
    """Computes anchors, renames (:class:`~.renames.Renamer`) and confidences for statements of
    the new tree."""

    def __init__(
        self,
        new: Tree,
        old: Tree,
        m: Mapping,
        frozen_new: dict[int, str] | None = None,
        frozen_old: dict[int, str] | None = None,
    ) -> None:
        super().__init__(new, old, m, frozen_new, frozen_old)
        self.is_stmt_new = [isinstance(x, ast.stmt) for x in new.node]
        self._defs: dict[str, int] | None = None

    # ------------------------------------------------------------------ context chain
    def context(self, block: int, index: int) -> Context:
        """Climb from (block, index) to the nearest block that has a counterpart."""
        t, fwd = self.new, self.m.fwd
        ctx = Context(levels=[(block, index)], target_block=-1)
        cur = block
        while not self._block_mapped(cur):
            owner = t.parent[cur]
            kind = t.kind[owner]
            stmt = owner
            if kind == "ExceptHandler" or kind == "match_case":
                stmt = t.parent[owner]
            if fwd[owner] != -1 or fwd[stmt] != -1:
                raise Refusal(
                    f"the `{self._branch_name(cur)}` branch of `{describe(t, stmt)}` "
                    f"(new line {t.line[stmt]}) does not exist in the old version"
                )
            if kind in LOOP_KINDS:
                # a loop added around code the old version runs once per enclosing iteration
                # (micro-steps of gradient accumulation): see through it if it wraps existing
                # code, checked below once the target block is known
                ctx.absent_loops.append(owner)
            if kind in DEF_KINDS:
                ctx.crossed = owner
                break
            ctx.transparent.append(stmt)
            cur = t.parent[stmt]
            ctx.levels.append((cur, t.children[cur].index(stmt)))
        else:
            ctx.target_block = fwd[cur]
            if self.old.group(ctx.target_block) != t.group(cur):
                raise Refusal(f"inconsistent match for the block at new line {t.line[cur]}")
        # a wrapper is around existing code only if something in it has a counterpart in the
        # target block; one whose matched statements all went elsewhere is new code
        for wrapper in ctx.transparent:  # innermost first
            if self._wraps_existing(wrapper, ctx.target_block):
                break
            ctx.lifted = wrapper
        for loop in ctx.absent_loops:
            # only a new *inner* loop is seen through: one around an existing loop (epochs
            # around the old step loop, runs around everything) changes what a value means
            wraps_loop = any(t.kind[d] in LOOP_KINDS and fwd[d] != -1 for d in t.descendants(loop))
            if wraps_loop or (ctx.lifted != -1 and t.contains(ctx.lifted, loop)):
                raise Refusal(
                    f"the enclosing loop `{describe(t, loop)}` (new line {t.line[loop]}) "
                    "has no counterpart in the old version"
                )
        return ctx

    def _wraps_existing(self, stmt: int, target_block: int) -> bool:
        """Whether something inside ``stmt`` exists in the target block (directly or as the
        inlined body of a function it calls)."""
        fwd, is_stmt = self.m.fwd, self.is_stmt_new
        for d in self.new.descendants(stmt):
            if not is_stmt[d]:
                continue
            if fwd[d] != -1:
                if self.lift(fwd[d], target_block) >= 0:
                    return True
            elif self._callee(d) != -1 and self._anchor_in(d, target_block) >= 0:
                return True
        return False

    def _block_mapped(self, block: int) -> bool:
        """Whether a new block has a counterpart whose owner is its owner's counterpart.

        A block matched on its own (``if best: torch.save(...)`` against another ``if``'s
        ``torch.save(...)``) while its statement is not matched is no context.
        """
        x = self.m.fwd[block]
        if x == -1:
            return False
        owner = self.new.parent[block]
        return owner <= 0 or self.m.fwd[owner] == self.old.parent[x]

    def _branch_name(self, block: int) -> str:
        fname = self.new.field_name[block]
        return {"orelse": "else", "finalbody": "finally", "handlers": "except"}.get(fname, fname)

    # ------------------------------------------------------------------ anchors
    def lift(self, x: int, target_block: int) -> int:
        """The old statement to insert after, given a counterpart ``x`` of a preceding one.

        Returns -1 when ``x`` is not inside ``target_block`` or only through another loop or
        function. Inside ``target_block``, ``with`` blocks and ``try`` bodies are entered (the
        statement goes right after ``x``); an ``if`` or ``except`` around ``x`` is not (the
        statement goes after the whole ``if``).
        """
        if target_block == -1:
            return x
        o = self.old
        result = x
        y = o.parent[x]
        while y != target_block:
            if y <= 0:
                return -1
            kind = o.kind[y]
            if kind in FUNC_KINDS and self.m.bwd[y] == -1 and self._calls(target_block, o.label[y]):
                # ``x`` is inside a function the target block calls and that has no
                # counterpart: code that the new version inlined.  The statement goes into
                # the function, after ``x``.  (A function both versions have is its own scope:
                # a statement never moves into it from outside.)
                return result
            if kind in LOOP_KINDS and self.m.bwd[y] == -1 and self._innermost_old(y):
                # an old loop the new version dropped (micro-steps): after the whole loop
                result = y
            elif kind in LOOP_KINDS or kind in DEF_KINDS:
                return -1
            if o.is_block(y):
                owner = o.parent[y]
                okind = o.kind[owner]
                if okind == "If":
                    result = owner
                elif okind in ("ExceptHandler", "match_case"):
                    result = o.parent[owner]
                elif okind in ("Try", "TryStar") and o.field_name[y] != "body":
                    result = owner
            y = o.parent[y]
        return result

    def _innermost_old(self, loop: int) -> bool:
        """Whether an old loop holds no loop that has a counterpart (it is not an old outer
        loop whose body the new version restructured)."""
        o = self.old
        return not any(o.kind[d] in LOOP_KINDS and self.m.bwd[d] != -1 for d in o.descendants(loop))

    def _calls(self, block: int, name: str) -> bool:
        """Whether the old subtree ``block`` calls a function or method called ``name``."""
        o = self.old
        for d in o.descendants(block):
            if o.kind[d] == "Call":
                f = o.children[d][0]
                if o.label[f] == name and o.kind[f] in ("Name", "Attribute"):
                    return True
        pattern = re.compile(rf"\b{re.escape(name)}\s*\(")
        return any(
            o.contains(block, n) and pattern.search(text) for n, text in self.frozen_old.items()
        )

    def _callee(self, s: int) -> int:
        """The new-tree function a call statement ``s`` calls (``f(...)``, ``x = f(...)``)."""
        node = self.new.node[s]
        value = getattr(node, "value", None)
        if not isinstance(value, ast.Call):
            return -1
        func = value.func
        name = func.id if isinstance(func, ast.Name) else getattr(func, "attr", None)
        if name is None:
            return -1
        if self._defs is None:
            self._defs = {}
            t = self.new
            for n in range(len(t)):
                if t.kind[n] in FUNC_KINDS:
                    self._defs.setdefault(t.label[n], n)
        return self._defs.get(name, -1)

    def _anchor_in(self, s: int, target_block: int) -> int:
        """Old anchor statement for a preceding new statement ``s``, or -1."""
        t, fwd = self.new, self.m.fwd
        if fwd[s] != -1:
            return self.lift(fwd[s], target_block)
        callee = self._callee(s)
        if callee != -1:
            # a call of a function the old version had inline: after the inlined code,
            # i.e. the last statement of the function that has a counterpart there
            for d in range(callee + t.size[callee] - 1, callee, -1):
                if self.is_stmt_new[d] and fwd[d] != -1 and t.kind[d] != "Return":
                    got = self.lift(fwd[d], target_block)
                    if got >= 0:
                        return got
            return -1
        if t.kind[s] not in TRANSPARENT_KINDS and t.kind[s] not in LOOP_KINDS:
            return -1
        # an unmatched wrapper or new loop: the last matched statement inside it (not inside
        # a loop nested in it)
        for d in range(s + t.size[s] - 1, s, -1):
            if not self.is_stmt_new[d] or fwd[d] == -1:
                continue
            if any(t.kind[a] in LOOP_KINDS or t.kind[a] in DEF_KINDS for a in self._up_to(d, s)):
                continue
            got = self.lift(fwd[d], target_block)
            if got >= 0:
                return got
        return -1

    def _up_to(self, d: int, s: int) -> list[int]:
        """Proper ancestors of ``d`` strictly below ``s``."""
        out = []
        p = self.new.parent[d]
        while p != s and p > 0:
            out.append(p)
            p = self.new.parent[p]
        return out

    def anchor(self, ctx: Context) -> Anchor:
        """Find the insertion point for a statement with the given context chain.

        The nearest preceding statement with a valid counterpart wins, unless the statement
        right before this one is new and the one right after it maps: then the statement
        goes right before that one's counterpart (anchors on both sides, nearest first).
        """
        skipped = 0
        for depth, (blk, idx) in enumerate(ctx.levels):
            for s in reversed(self.new.children[blk][:idx]):
                got = self._anchor_in(s, ctx.target_block)
                if got >= 0:
                    found = Anchor("after", got, depth, skipped, ctx.crossed != -1)
                    if skipped and depth == 0:
                        before = self._before_next(ctx, got)
                        if before is not None:
                            return before
                    return found
                skipped += 1
            if depth == 0 and not self._after_docstring(blk, idx):
                before = self._before_next(ctx)
                if before is not None:
                    return before
        if ctx.crossed != -1:
            raise Refusal(
                f"`{describe(self.new, ctx.crossed)}` (new line {self.new.line[ctx.crossed]}) "
                "has no counterpart in the old version and no statement before this one in it "
                "has one"
            )
        return Anchor("start", ctx.target_block, len(ctx.levels) - 1, skipped)

    def _after_docstring(self, block: int, index: int) -> bool:
        """Whether the statement comes right after its block's docstring (the block start)."""
        if index != 1:
            return False
        first = self.new.node[self.new.children[block][0]]
        return (
            isinstance(first, ast.Expr)
            and isinstance(first.value, ast.Constant)
            and isinstance(first.value.value, str)
        )

    def _before_next(self, ctx: Context, after: int = -1) -> Anchor | None:
        """An anchor right before the counterpart of the statement following this one.

        Only when that statement maps directly into the target block (not lifted out of an
        ``if`` or through a ``with``) and, given the preceding anchor ``after``, comes after
        it in the same old block (when the two disagree on the order, the block was
        reordered and the preceding statement stays the reference); ``None`` otherwise.
        """
        blk, idx = ctx.levels[0]
        kids = self.new.children[blk]
        if idx >= len(kids):
            return None
        x = self.m.fwd[kids[idx]]
        if x == -1 or self.lift(x, ctx.target_block) != x:
            return None
        oblk = self.old.parent[x]
        if ctx.target_block != -1 and oblk != ctx.target_block:
            return None
        okids = self.old.children[oblk]
        i = okids.index(x)
        if after != -1 and (after not in okids or okids.index(after) >= i):
            return None
        crossed = ctx.crossed != -1
        if i > 0:
            return Anchor("after", okids[i - 1], 0, 0, crossed)
        return Anchor("start", oblk, 0, 0, crossed)

    def next_mapped(self, block: int, index: int) -> int:
        """The old counterpart of the first matched statement at or after ``index``."""
        for s in self.new.children[block][index:]:
            if self.m.fwd[s] != -1:
                return self.m.fwd[s]
        return -1
