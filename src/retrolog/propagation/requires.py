"""What a placed statement needs where it lands, and why it is refused when that is missing.

The names it reads must be bound at its place in the old version (else it moves after the old
statement binding them, or is refused naming where the new version gets them); a name the new
file imports at top level gets its import; a new ``if``/``with`` block is inserted whole only
when it holds nothing but logging.
"""

from __future__ import annotations

import ast

from .bindings import BUILTINS, Bindings, binds, producer, reads
from .insert import strip_eol
from .matcher import Mapping
from .place import Anchor, Placer, Refusal
from .renames import renamed
from .targets import nested_lists, wrapped_value
from .tree import Tree

_ENTERED = frozenset({"With", "AsyncWith", "Try", "TryStar"})


class Requirements:
    """The checks of :class:`~.engine.Engine` on what a statement reads (a mixin: the engine
    sets these attributes)."""

    tn: Tree
    to: Tree
    m: Mapping
    placer: Placer
    new_mod: ast.Module
    old_mod: ast.Module
    new_lines: list[str]
    old_lines: list[str]
    new_bind: Bindings
    old_bind: Bindings
    log_names: tuple[set[str], set[str]]

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
