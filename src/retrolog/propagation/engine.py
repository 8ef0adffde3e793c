"""Planning one statement's propagation: anchor, renames, text, confidence (internal).

``Engine`` builds the two trees, runs the matcher and, per statement, asks the
:class:`~.place.Placer` where it goes, then prepares the text edit: the
insertion (re-indented, renamed, with any import it needs) or the wrap of an expression.
Where the insertion lands in the old text is ``position.py``; whether what the statement reads
is bound there, and the refusals when it is not, ``requires.py``.
"""

from __future__ import annotations

import ast

from .bindings import Bindings
from .describe import describe, scope_path
from .insert import (
    Edit,
    Wrap,
    cut_statement,
    first_line_of,
    indent_unit,
    newline_of,
    render,
    split_lines,
    strip_eol,
    wrapper_parts,
)
from .matcher import match
from .place import Anchor, Context, Placer, Refusal
from .position import anchor_text, position
from .renames import renamed_dump
from .requires import Requirements
from .targets import contains, contains_name, frozen_pairs, log_names, wrapped_value
from .tree import LOOP_KINDS, Tree, build_tree


# ---------------------------------------------------------------------------- the engine
class Plan:
    """What will be done for one statement (internal)."""

    def __init__(self, new_line: int, subject: ast.stmt, kind: str) -> None:
        self.new_line = new_line
        self.subject = subject  # the statement inserted (an enclosing block when lifted)
        self.offset = 0  # lines from the subject's first line to the statement's own
        self.kind = kind  # "insert" | "wrap" | "present"
        self.anchor: Anchor | None = None
        self.edit: Edit | None = None
        self.wraps: list[Wrap] = []
        self.after_line = 0
        self.block = -1  # old block the statement lands in
        self.anchor_text: str | None = None
        self.names: dict[str, str] = {}
        self.confidence = 1.0
        self.lifted: str | None = None
        self.warnings: list[str] = []
        self.present_line = 0
        self.imports: list[str] = []


class Engine(Requirements):
    """Plans the propagation of one file's statements (the reads checks: ``requires.py``)."""

    def __init__(
        self,
        new_source: str,
        old_source: str,
        new_mod: ast.Module,
        old_mod: ast.Module,
        inserts: list[ast.stmt],
        unwrap: dict[int, ast.expr],
        keep: set[int],
        min_height: int,
        min_dice: float,
    ) -> None:
        self.new_lines = split_lines(new_source)
        self.old_lines = split_lines(old_source)
        self.new_mod, self.old_mod = new_mod, old_mod
        frozen_new, frozen_old = frozen_pairs(
            new_mod, old_mod, self.new_lines, self.old_lines, keep
        )
        self.tn: Tree = build_tree(new_mod, exclude=inserts, unwrap=unwrap, frozen=frozen_new)
        self.to: Tree = build_tree(old_mod, frozen=frozen_old)
        self.m = match(self.tn, self.to, min_height, min_dice)
        self.placer = Placer(
            self.tn,
            self.to,
            self.m,
            {n: self._text(self.new_lines, self.tn, n) for n in self.tn.frozen},
            {n: self._text(self.old_lines, self.to, n) for n in self.to.frozen},
        )
        self.new_bind = Bindings(self.tn)
        self.old_bind = Bindings(self.to)
        self.old_log_names = log_names(old_mod)
        self.log_names = log_names(new_mod)
        self.nl = newline_of(self.old_lines)
        self.new_unit = indent_unit(new_mod, self.new_lines)
        self.old_unit = indent_unit(old_mod, self.old_lines)

    @staticmethod
    def _text(lines: list[str], t: Tree, n: int) -> str:
        stmt = t.node[n]
        assert isinstance(stmt, ast.stmt)
        return "".join(lines[first_line_of(stmt) - 1 : stmt.end_lineno or stmt.lineno])

    # -- insertion of a whole statement -------------------------------------------------
    def plan_insert(self, line: int, stmt: ast.stmt, block: int, index: int) -> Plan:
        placer, tn = self.placer, self.tn
        ctx = placer.context(block, index)
        subject = stmt
        lifted = None
        if ctx.lifted != -1:
            node = ctx.lifted
            subject_node = tn.node[node]
            assert isinstance(subject_node, ast.stmt)
            why = self._unliftable(subject_node)
            if why:
                raise Refusal(
                    f"the statement is inside `{describe(tn, node)}` (new line "
                    f"{subject_node.lineno}), which does not exist in the old version and "
                    f"cannot be inserted with it: {why}" + self._new_producers(stmt, block, index)
                )
            subject = subject_node
            lifted = describe(tn, node)
            block, index = tn.parent[node], tn.children[tn.parent[node]].index(node)
            ctx = placer.context(block, index)
        anchor = placer.anchor(ctx)
        names, attrs = placer.renames(block, subject)
        plan = Plan(line, subject, "insert")
        plan.anchor, plan.lifted = anchor, lifted
        plan.offset = first_line_of(stmt) - first_line_of(subject)
        plan.names = {
            **names,
            **{
                f"{b}.{a}": v[1:] if v.startswith("=") else f"{names.get(b, b)}.{v}"
                for (b, a), v in attrs.items()
            },
        }
        pos, indent, ins_block, next_old = position(self.to, self.old_lines, anchor)
        moved = self._check_reads(subject, names, attrs, block, index, ins_block, next_old, anchor)
        if moved is not None:
            anchor, why = moved
            plan.anchor = anchor
            plan.warnings.append(why)
            pos, indent, ins_block, next_old = position(self.to, self.old_lines, anchor)
        plan.block = ins_block
        plan.after_line = pos
        plan.anchor_text = anchor_text(self.to, self.old_lines, anchor)
        # already there? an unmatched old statement equal to it right at the insertion point
        want = renamed_dump(subject, names, attrs)
        kids = self.to.children[ins_block]
        j = kids.index(next_old) if next_old in kids else len(kids)
        around = []  # the unmatched old statements touching the insertion point
        i = j - 1
        while i >= 0 and self.m.bwd[kids[i]] == -1:
            around.append(kids[i])
            i -= 1
        while j < len(kids) and self.m.bwd[kids[j]] == -1:
            around.append(kids[j])
            j += 1
        for k in around:
            old_stmt = self.to.node[k]
            assert isinstance(old_stmt, ast.stmt)
            if ast.dump(old_stmt, include_attributes=False) == want:
                plan.kind = "present"
                plan.present_line = old_stmt.lineno
                break
        if plan.kind == "insert":
            snippet = cut_statement(self.new_lines, subject, names, attrs)
            plan.warnings.extend(snippet.warnings)
            lines = render(snippet, indent, self.new_unit, self.old_unit, self.nl)
            plan.edit = Edit(pos, (first_line_of(subject), line), lines)
        self._resolve(plan, placer.unresolved(subject, names))
        if lifted:
            plan.warnings.append(f"inserted with its new enclosing `{lifted}`")
        elif ctx.transparent:
            plan.warnings.extend(self._see_through_warnings(ctx, ins_block))
        dropped = self._after_dropped_loop(plan.anchor)
        if dropped:
            plan.warnings.append(dropped)
        # following statement: does its counterpart come right after the insertion point?
        blk, idx = ctx.levels[anchor.depth]
        following = placer.next_mapped(blk, idx)
        if following != -1:
            following = placer.lift(following, ctx.target_block)
        next_ok = following == next_old or (following < 0 and next_old == -1)
        plan.confidence = self._confidence(anchor, ctx.transparent, lifted, next_ok, plan)
        if dropped:
            plan.confidence = round(plan.confidence * 0.85, 3)
        return plan

    def _after_dropped_loop(self, anchor: Anchor | None) -> str:
        """A warning when the statement follows an old loop the new version does not have."""
        to = self.to
        if anchor is None or anchor.mode != "after" or to.kind[anchor.node] not in LOOP_KINDS:
            return ""
        if self.m.bwd[anchor.node] != -1:
            return ""
        return (
            f"loop absent in the new version: placed after the old loop "
            f"`{describe(to, anchor.node)}` (old line {to.line[anchor.node]}), once per "
            "iteration around it, not inside it"
        )

    def _see_through_warnings(self, ctx: Context, ins_block: int) -> list[str]:
        """What the placement left out: new wrappers, and new loops (values logged once per
        iteration of the enclosing old block instead of once per iteration of the loop)."""
        tn = self.tn
        out = []
        wrappers = [w for w in ctx.transparent if w not in ctx.absent_loops]
        if wrappers:
            outer = ", ".join(f"`{describe(tn, w)}`" for w in wrappers)
            out.append(f"inserted without its new enclosing {outer}")
        scope = scope_path(self.to, ins_block) if ins_block >= 0 else []
        where = f"of `{scope[-1]}`" if scope else "of the old code around it"
        for loop in ctx.absent_loops:
            out.append(
                f"loop absent: `{describe(tn, loop)}` (new line {tn.line[loop]}) does not exist "
                f"in the old version; placed at the corresponding point of the enclosing body, "
                f"it runs once per iteration {where}, not once per iteration of that loop"
            )
        return out

    def _resolve(self, plan: Plan, unresolved: list[str]) -> None:
        """Plan imports for names the new file imports at top level; warn about the rest."""
        missing = []
        for name in unresolved:
            text = self._import_for(name)
            if text is None:
                missing.append(name)
            elif text not in plan.imports:
                plan.imports.append(text)
        if missing:
            plan.warnings.append(
                "not defined in the old version: " + ", ".join(f"`{u}`" for u in missing)
            )

    def import_edit(self, imports: list[str]) -> Edit:
        """An edit adding import lines after the old file's last top-level import."""
        last = None
        for stmt in self.old_mod.body:
            if isinstance(stmt, (ast.Import, ast.ImportFrom)):
                last = stmt
        if last is not None:
            pos = last.end_lineno or last.lineno
        else:
            pos = position(self.to, self.old_lines, Anchor("start", 1))[0]
        return Edit(pos, (0, 0), [text + self.nl for text in imports])

    def _confidence(
        self, anchor: Anchor, transparent: list[int], lifted: str | None, next_ok: bool, plan: Plan
    ) -> float:
        c = 1.0
        if anchor.crossed_def:
            c *= 0.75
        elif lifted:
            c *= 0.9
        elif transparent:
            c *= 0.85
        c *= 0.9 ** min(anchor.skipped, 5)
        c *= 1.0 if next_ok else 0.85
        c *= 0.97 ** len(plan.names)
        if any(w.startswith("not defined") for w in plan.warnings):
            c *= 0.7
        return round(max(0.0, min(1.0, c)), 3)

    # -- wrapping an existing expression -------------------------------------------------
    def plan_wrap(
        self, line: int, stmt: ast.stmt, wrappers: list[tuple[ast.Call, ast.expr]]
    ) -> Plan:
        tn, to, m, placer = self.tn, self.to, self.m, self.placer
        node = tn.stmt_ids[id(stmt)]
        block = tn.parent[node]
        index = tn.children[block].index(node)
        partner = m.fwd[node]
        if partner == -1:
            # nothing to wrap in the old version: the statement is new, insert it whole
            return self.plan_insert(line, stmt, block, index)
        ctx = placer.context(block, index)
        if ctx.target_block != -1 and placer.lift(partner, ctx.target_block) < 0:
            raise Refusal(
                f"the statement's counterpart (old line {to.line[partner]}) is in another "
                "context than the statement"
            )
        names, attrs = placer.renames(block, stmt)
        plan = Plan(line, stmt, "wrap")
        if ctx.transparent:
            plan.warnings.extend(self._see_through_warnings(ctx, to.parent[partner]))
        old_stmt = to.node[partner]
        assert isinstance(old_stmt, ast.stmt)
        plan.after_line = old_stmt.lineno
        plan.block = to.parent[partner]
        plan.anchor_text = strip_eol(self.old_lines[old_stmt.lineno - 1]).strip()
        inner_ids = {id(tn.node[i]): i for i in tn.unwrapped}
        used: dict[str, str] = {}
        present = 0
        for call, inner in wrappers:
            e = inner_ids[id(inner)]
            target = m.fwd[e]
            if target == -1 or not to.contains(partner, target):
                target = self._same_role(e, partner)
            if target == -1:
                raise Refusal(
                    f"the expression `{ast.unparse(inner)}` wrapped at new line {inner.lineno} "
                    f"has no counterpart in the old statement at line {old_stmt.lineno}",
                    "no-expression",
                )
            old_expr = to.node[target]
            assert isinstance(old_expr, ast.expr)
            parent_old = to.node[to.parent[target]]
            already = (
                isinstance(parent_old, ast.Call)
                and wrapped_value(parent_old, self.old_log_names) is old_expr
            ) or (
                isinstance(old_expr, ast.Call)
                and wrapped_value(old_expr, self.old_log_names) is not None
            )
            if already:
                present += 1
                continue
            for n in ast.walk(call):
                if isinstance(n, ast.Name) and n.id in names and not contains(inner, n):
                    used[n.id] = names[n.id]
            prefix, suffix = wrapper_parts(self.new_lines, call, inner, names, attrs)
            plan.wraps.append(
                Wrap(
                    (old_expr.lineno, old_expr.col_offset),
                    (old_expr.end_lineno or old_expr.lineno, old_expr.end_col_offset or 0),
                    prefix,
                    suffix,
                )
            )
        plan.names = used
        for call, inner in wrappers:
            outside = ast.Module(body=[ast.Expr(value=call)], type_ignores=[])
            missing = [u for u in placer.unresolved(outside, names) if not contains_name(inner, u)]
            self._resolve(plan, missing)
        if present == len(wrappers):
            plan.kind = "present"
            plan.present_line = old_stmt.lineno
        exact = tn.iso[node] == to.iso[partner]
        seen_through = 0.85 if ctx.transparent else 1.0
        plan.confidence = round((1.0 if exact else 0.9) * 0.97 ** len(used) * seen_through, 3)
        return plan

    def _same_role(self, e: int, partner: int) -> int:
        """The old node in the same field position as new node ``e`` under matched parents."""
        tn, to, m = self.tn, self.to, self.m
        p = tn.parent[e]
        q = m.fwd[p]
        if q == -1 or not to.contains(partner, q):
            return -1
        fname = tn.field_name[e]
        same = [c for c in tn.children[p] if tn.field_name[c] == fname]
        other = [c for c in to.children[q] if to.field_name[c] == fname]
        k = same.index(e)
        if len(same) == len(other) and k < len(other):
            return other[k]
        return -1
