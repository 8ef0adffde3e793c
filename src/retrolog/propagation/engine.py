"""Planning one statement's propagation: anchor, renames, text, confidence (internal).

``Engine`` builds the two trees, runs the matcher and, per statement, asks the
:class:`~.place.Placer` where it goes, then prepares the text edit: the
insertion (re-indented, renamed, with any import it needs) or the wrap of an expression.
"""

from __future__ import annotations

import ast

from .bindings import BUILTINS, Bindings, binds, producer, reads
from .insert import (
    Edit,
    Wrap,
    char_col,
    cut_statement,
    first_line_of,
    indent_of,
    indent_unit,
    newline_of,
    render,
    split_lines,
    strip_eol,
    wrapper_parts,
)
from .matcher import match
from .place import Anchor, Context, Placer, Refusal, describe, renamed, renamed_dump, scope_path
from .targets import (
    contains,
    contains_name,
    frozen_pairs,
    log_names,
    nested_lists,
    wrapped_value,
)
from .tree import DEF_KINDS, LOOP_KINDS, Tree, build_tree

_ENTERED = frozenset({"With", "AsyncWith", "Try", "TryStar"})


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


class Engine:
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
        pos, indent, ins_block, next_old = self._position(anchor)
        moved = self._check_reads(subject, names, attrs, block, index, ins_block, next_old, anchor)
        if moved is not None:
            anchor, why = moved
            plan.anchor = anchor
            plan.warnings.append(why)
            pos, indent, ins_block, next_old = self._position(anchor)
        plan.block = ins_block
        plan.after_line = pos
        plan.anchor_text = self._anchor_text(anchor)
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

    def _new_producers(self, stmt: ast.stmt, block: int, index: int) -> str:
        """``; it reads `norm`, made by new line 37 (...), new code too`` (or '')."""
        parts = []
        for name in reads(stmt):
            k = producer(self.tn, block, index, name)
            if k != -1 and self.m.fwd[k] == -1 and name not in BUILTINS:
                text = strip_eol(self.new_lines[self.tn.line[k] - 1]).strip()
                if len(text) > 70:
                    text = text[:67] + "..."
                parts.append(f"`{name}`, made by new line {self.tn.line[k]} (`{text}`)")
        if not parts:
            return ""
        return "; it reads " + ", ".join(parts) + ", which the old version does not have"

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

    def _check_reads(
        self,
        subject: ast.stmt,
        names: dict[str, str],
        attrs: dict[tuple[str, str], str],
        block: int,
        index: int,
        ins_block: int,
        next_old: int,
        anchor: Anchor,
    ) -> tuple[Anchor, str] | None:
        """Make sure the names the statement reads are bound where it goes in the old version.

        Only names bound before the statement in the new version count (after renames).
        When a later statement of the old block binds the missing ones, the statement moves
        right after it (its anchor becomes the statement producing what it observes); when
        none does, the statement's defining context is missing: refuse, saying what.
        Returns the new anchor and a warning, or ``None`` when nothing needs to move.
        """
        new_bound = self.new_bind.before(block, index)
        old_module = self.old_bind.module_names()
        # the names as the old version will read them: renamed, ``self.x`` -> ``x`` applied
        old_reads = set(reads(renamed(subject, names, attrs)))
        needed: dict[str, str] = {}  # old name -> new name
        for name in reads(subject):
            if name in BUILTINS or name not in new_bound:
                continue
            old_name = names.get(name, name).split(".")[0]
            if old_name not in old_reads:
                continue  # ``self`` of ``self.x`` -> ``x``: see below
            if old_name not in old_module and self._import_for(name) is not None:
                continue  # an import of it gets added
            needed.setdefault(old_name, name)
        for (base, _attr), new_attr in attrs.items():
            if new_attr.startswith("=") and base in new_bound and new_attr[1:] in old_reads:
                needed.setdefault(new_attr[1:], f"{base}.{_attr}")
        if not needed:
            return None
        kids = self.to.children[ins_block]
        j = kids.index(next_old) if next_old in kids else len(kids)
        bound = self.old_bind.before(ins_block, j)
        missing = [n for n in needed if n not in bound]
        if missing:  # names that come from outside the file count as bound (computed rarely)
            outside = self.old_bind.external(self.old_mod)
            missing = [n for n in missing if n not in outside]
            if "*" in outside:
                return None
        if not missing:
            return None
        later = list(kids[j:])
        # out of a ``with``/``try`` body the statement was placed in: what follows it
        blk = ins_block
        while self.to.kind[self.to.parent[blk]] in _ENTERED and self.to.field_name[blk] == "body":
            owner = self.to.parent[blk]
            blk = self.to.parent[owner]
            siblings = self.to.children[blk]
            later += siblings[siblings.index(owner) + 1 :]
        for k in later:
            node = self.to.node[k]
            if node is not None:
                bound |= binds(node)
            if all(n in bound for n in missing):
                text = strip_eol(self.old_lines[self.to.line[k] - 1]).strip()
                what = ", ".join(f"`{n}`" for n in missing)
                return (
                    Anchor("after", k, 0, anchor.skipped + 1, anchor.crossed_def),
                    f"placed after old line {self.to.line[k]} (`{text}`), which binds {what}",
                )
        name = needed[missing[0]]
        shown = f"`{missing[0]}`" + (
            f" (`{name}` in the new version)" if name != missing[0] else ""
        )
        k = producer(self.tn, block, index, name)
        if k == -1:
            source = ""
        else:
            text = strip_eol(self.new_lines[self.tn.line[k] - 1]).strip()
            if len(text) > 70:
                text = text[:67] + "..."
            where = (
                "which has no counterpart in the old version"
                if self.m.fwd[k] == -1
                else f"whose counterpart (old line {self.to.line[self.m.fwd[k]]}) does not "
                "run before this point"
            )
            source = (
                f": in the new version it comes from new line {self.tn.line[k]} (`{text}`), {where}"
            )
        others = [f"`{n}`" for n in missing[1:]]
        also = f" (nor {', '.join(others)})" if others else ""
        raise Refusal(
            f"the statement reads {shown}, which is not bound at its place in the old "
            f"version{also}{source}"
        )

    def _unliftable(self, block_stmt: ast.stmt) -> str:
        """Why a new ``if``/``with`` block may not be inserted whole ('' if it may).

        Lifting must add logging, not change the old program: the block may hold only log
        statements (``retrolog.log(...)``, ``print(...)``) and nested ``if``/``with`` blocks of
        them, and may use no name the old version does not have.
        """
        for n in ast.walk(block_stmt):
            if isinstance(n, ast.stmt) and not nested_lists(n):
                is_log = (
                    isinstance(n, ast.Expr)
                    and isinstance(n.value, ast.Call)
                    and (
                        wrapped_value(n.value, self.log_names) is not None
                        or (isinstance(n.value.func, ast.Name) and n.value.func.id == "print")
                    )
                )
                if not is_log and not isinstance(n, ast.Pass):
                    return f"it also holds other new code (new line {n.lineno})"
            elif isinstance(n, ast.stmt) and not isinstance(n, (ast.If, ast.With, ast.AsyncWith)):
                return f"it holds a new `{type(n).__name__.lower()}` block (new line {n.lineno})"
        for n in ast.walk(block_stmt):
            if isinstance(n, (ast.Break, ast.Continue, ast.Return, ast.Raise, ast.Yield)):
                return f"it contains `{type(n).__name__.lower()}`"
        missing = [u for u in self.placer.unresolved(block_stmt, {}) if self._import_for(u) is None]
        if missing:
            return "it uses " + ", ".join(f"`{u}`" for u in missing) + ", unknown there"
        return ""

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

    def _import_for(self, name: str) -> str | None:
        """The import statement (text) binding ``name`` at the top of the new file, if any."""
        for stmt in self.new_mod.body:
            if isinstance(stmt, ast.Import):
                for a in stmt.names:
                    if (a.asname or a.name.split(".")[0]) == name:
                        return f"import {a.name}" + (f" as {a.asname}" if a.asname else "")
            elif isinstance(stmt, ast.ImportFrom):
                for a in stmt.names:
                    if (a.asname or a.name) == name:
                        module = "." * (stmt.level or 0) + (stmt.module or "")
                        return f"from {module} import {a.name}" + (
                            f" as {a.asname}" if a.asname else ""
                        )
        return None

    def import_edit(self, imports: list[str]) -> Edit:
        """An edit adding import lines after the old file's last top-level import."""
        last = None
        for stmt in self.old_mod.body:
            if isinstance(stmt, (ast.Import, ast.ImportFrom)):
                last = stmt
        if last is not None:
            pos = last.end_lineno or last.lineno
        else:
            pos = self._position(Anchor("start", 1))[0]
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

    def _position(self, anchor: Anchor) -> tuple[int, str, int, int]:
        """(old line index to insert before, indentation, old block, next old statement)."""
        to, lines = self.to, self.old_lines
        if anchor.mode == "after":
            x = to.node[anchor.node]
            assert isinstance(x, ast.stmt)
            blk = to.parent[anchor.node]
            kids = to.children[blk]
            i = kids.index(anchor.node)
            prev = to.node[kids[i - 1]] if i else None
            after_semicolon = isinstance(prev, ast.stmt) and prev.end_lineno == x.lineno
            if not after_semicolon:
                self._own_line(x, to.parent[blk])
            next_old = kids[i + 1] if i + 1 < len(kids) else -1
            pos = x.end_lineno or x.lineno
            indent = indent_of(lines[first_line_of(x) - 1])
            return pos, indent, blk, next_old
        blk = anchor.node
        kids = to.children[blk]
        owner_id = to.parent[blk]
        j = 0
        if (
            kids
            and (to.kind[owner_id] in DEF_KINDS or owner_id == 0)
            and to.field_name[blk] == "body"
        ):
            first = to.node[kids[0]]
            if (
                isinstance(first, ast.Expr)
                and isinstance(first.value, ast.Constant)
                and isinstance(first.value.value, str)
            ):
                j = 1
            if owner_id == 0:
                while j < len(kids):
                    s = to.node[kids[j]]
                    if isinstance(s, ast.ImportFrom) and s.module == "__future__":
                        j += 1
                    else:
                        break
        if j < len(kids):
            first_stmt = to.node[kids[j]]
            assert isinstance(first_stmt, ast.stmt)
            self._own_line(first_stmt, owner_id)
            pos = first_line_of(first_stmt) - 1
            return pos, indent_of(lines[pos]), blk, kids[j]
        if kids:
            prev = to.node[kids[j - 1]]
            assert isinstance(prev, ast.stmt)
            return prev.end_lineno or prev.lineno, indent_of(lines[prev.lineno - 1]), blk, -1
        return len(lines), "", blk, -1

    def _own_line(self, stmt: ast.stmt, owner_id: int) -> None:
        """Refuse when ``stmt`` shares its line with its block's header (``if x: y``)."""
        line = self.old_lines[stmt.lineno - 1]
        if line[: char_col(line, stmt.col_offset)].strip():
            raise Refusal(
                f"the old block of `{describe(self.to, owner_id)}` holding line {stmt.lineno} "
                "is written on a single line",
                "single-line-block",
            )

    def _anchor_text(self, anchor: Anchor) -> str | None:
        if anchor.mode != "after":
            return None
        x = self.to.node[anchor.node]
        assert isinstance(x, ast.stmt)
        return strip_eol(self.old_lines[x.lineno - 1]).strip()

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
