"""Which identifiers a placed statement must be renamed to, and its text after renaming.

The GumTree mapping pairs identifiers of the new tree with identifiers of the old one; each
pair is a vote. A name of the statement takes the old name most of its matched occurrences in
its function (else in the whole file) map to, unless that would merge two variables of the new
file. ``self.x`` may become a plain ``x`` (and back) the same way. ``unresolved`` lists the
names a statement reads that the old file never has, so the engine can add an import or warn.
"""

from __future__ import annotations

import ast
import builtins
import copy
import re
from collections import Counter, defaultdict

from .matcher import Mapping
from .tree import DEF_KINDS, FUNC_KINDS, IDENT_KINDS, Tree

_IDENT = re.compile(r"[A-Za-z_][A-Za-z0-9_]*")
_ATTR = re.compile(r"([A-Za-z_][A-Za-z0-9_]*)\s*\.\s*([A-Za-z_][A-Za-z0-9_]*)")
_BINDING_KINDS = frozenset({"Name", "arg", "FunctionDef", "AsyncFunctionDef", "ClassDef"})


class Renamer:
    """Rename votes between the new and the old tree, and the renames of one statement.

    The :class:`~.place.Placer` is one (it places and renames with the same mapping).
    """

    def __init__(
        self,
        new: Tree,
        old: Tree,
        m: Mapping,
        frozen_new: dict[int, str] | None = None,
        frozen_old: dict[int, str] | None = None,
    ) -> None:
        self.new, self.old, self.m = new, old, m
        # texts of the unchanged statements that are opaque leaves in the trees
        self.frozen_new = frozen_new or {}
        self.frozen_old = frozen_old or {}
        self._votes_file: dict[str, Counter[str]] | None = None
        self._attr_votes_file: dict[tuple[str, str], Counter[str]] | None = None
        self._old_names: set[str] | None = None
        self._scope_cache: dict[int, set[str]] = {}

    def _scope_of(self, block: int) -> int:
        n = block
        while n > 0 and self.new.kind[n] not in FUNC_KINDS:
            n = self.new.parent[n]
        return max(n, 0)

    def _votes(
        self, root: int
    ) -> tuple[dict[str, Counter[str]], dict[tuple[str, str], Counter[str]]]:
        t, o, fwd = self.new, self.old, self.m.fwd
        names: dict[str, Counter[str]] = defaultdict(Counter)
        attrs: dict[tuple[str, str], Counter[str]] = defaultdict(Counter)
        for n in range(root, root + t.size[root]):
            x = fwd[n]
            if x == -1:
                continue
            k = t.kind[n]
            if k in IDENT_KINDS and o.kind[x] in IDENT_KINDS:
                names[t.label[n]][o.label[x]] += 1
            elif k == "Attribute" and o.kind[x] == "Attribute":
                base, obase = t.children[n][0], o.children[x][0]
                if t.kind[base] == "Name" and o.kind[obase] == "Name":
                    attrs[(t.label[base], t.label[n])][o.label[x]] += 1
            kids, okids = t.children[n], o.children[x]
            if kids and len(kids) == len(okids):
                # ``self.best_acc`` where the old version had a plain ``best_acc`` (or back)
                for c, oc in zip(kids, okids):
                    if fwd[c] != -1 or self.m.bwd[oc] != -1:
                        continue
                    if t.kind[c] == "Attribute" and o.kind[oc] == "Name":
                        base = t.children[c][0]
                        if t.kind[base] == "Name" and t.label[c] == o.label[oc]:
                            attrs[(t.label[base], t.label[c])]["=" + o.label[oc]] += 1
                    elif t.kind[c] == "Name" and o.kind[oc] == "Attribute":
                        obase = o.children[oc][0]
                        if o.kind[obase] == "Name" and o.label[oc] == t.label[c]:
                            names[t.label[c]][f"{o.label[obase]}.{o.label[oc]}"] += 1
        return names, attrs

    def _file_votes(
        self,
    ) -> tuple[dict[str, Counter[str]], dict[tuple[str, str], Counter[str]]]:
        """Rename votes over the whole file, computed once and only when needed.

        Unchanged statements (opaque leaves) vote for keeping each identifier they contain.
        """
        if self._votes_file is None or self._attr_votes_file is None:
            names, attrs = self._votes(0)
            for text in self.frozen_new.values():
                for word in _IDENT.findall(text):
                    names[word][word] += 1
                for base, attr in _ATTR.findall(text):
                    attrs[(base, attr)][attr] += 1
            self._votes_file, self._attr_votes_file = names, attrs
        return self._votes_file, self._attr_votes_file

    def renames(
        self, block: int, stmt: ast.AST
    ) -> tuple[dict[str, str], dict[tuple[str, str], str]]:
        """Identifier renames for ``stmt`` (located in new ``block``): name and attribute maps.

        A name ``x`` of the statement becomes ``y`` when the matched occurrences of ``x`` in the
        statement's function (else in the whole file) mostly map to ``y``.
        """
        scope = self._scope_of(block)
        local_names, local_attrs = self._file_votes() if scope == 0 else self._votes(scope)
        attrs = self._attr_renames(stmt, local_attrs)
        # a base whose attribute is replaced whole (``self.x`` -> ``x``) is not renamed there
        hidden = {
            id(n.value)
            for n in ast.walk(stmt)
            if isinstance(n, ast.Attribute)
            and isinstance(n.value, ast.Name)
            and attrs.get((n.value.id, n.attr), "").startswith("=")
        }
        used = {n.id for n in ast.walk(stmt) if isinstance(n, ast.Name) and id(n) not in hidden}
        names: dict[str, str] = {}
        for name in sorted(used):
            votes = local_names.get(name) or self._file_votes()[0].get(name)
            if not votes:
                continue
            best, count = votes.most_common(1)[0]
            if best != name and count > votes.get(name, 0) and not self._taken(name, best, scope):
                names[name] = best
        return names, attrs

    def _taken(self, name: str, other: str, scope: int) -> bool:
        """Whether renaming ``name`` to ``other`` would merge two variables of the new file.

        ``scaler.step(optimizer)`` matched with ``optimizer.step()`` votes ``scaler`` ->
        ``optimizer``; but the new file has its own ``optimizer`` in the same function (or at
        module level): ``scaler`` is a different object there, not a rename.
        """
        base = other.split(".")[0]
        return base != name and base in self._scope_names(scope)

    def _scope_names(self, scope: int) -> set[str]:
        """Identifiers used directly in one function of the new tree (0: at module level)."""
        got = self._scope_cache.get(scope)
        if got is None:
            t = self.new
            got = set()
            stack = [scope]
            while stack:
                n = stack.pop()
                for c in t.children[n]:
                    if t.kind[c] in DEF_KINDS:
                        if t.kind[c] != "Lambda":
                            got.add(t.label[c])
                        continue
                    if t.kind[c] in IDENT_KINDS:
                        got.add(t.label[c])
                    stack.append(c)
            self._scope_cache[scope] = got
        return got

    def _attr_renames(
        self, stmt: ast.AST, local_attrs: dict[tuple[str, str], Counter[str]]
    ) -> dict[tuple[str, str], str]:
        """``(base, attr) -> new attr`` (or ``"=name"``: the whole attribute becomes a name)."""
        attrs: dict[tuple[str, str], str] = {}
        for n in ast.walk(stmt):
            if isinstance(n, ast.Attribute) and isinstance(n.value, ast.Name):
                key = (n.value.id, n.attr)
                votes = local_attrs.get(key) or self._file_votes()[1].get(key)
                if not votes:
                    continue
                best, count = votes.most_common(1)[0]
                if best != n.attr and count > votes.get(n.attr, 0):
                    attrs[key] = best
        return attrs

    def unresolved(self, stmt: ast.AST, names: dict[str, str]) -> list[str]:
        """Names the statement reads that the old file never binds or uses (after renames)."""
        if self._old_names is None:
            known = set(dir(builtins)) | {"__file__", "__name__"}
            for k, lab in zip(self.old.kind, self.old.label):
                if k in _BINDING_KINDS:
                    known.add(lab)
                elif k == "alias":
                    known.add(lab.split(" as ")[-1].split(".")[0])
                elif k == "ExceptHandler" and lab:
                    known.add(lab)
            for text in self.frozen_old.values():
                known.update(_IDENT.findall(text))
            self._old_names = known
        stored = {
            n.id for n in ast.walk(stmt) if isinstance(n, ast.Name) and isinstance(n.ctx, ast.Store)
        }
        out = []
        for n in ast.walk(stmt):
            if isinstance(n, ast.Name) and isinstance(n.ctx, ast.Load):
                name = names.get(n.id, n.id)
                if name not in self._old_names and n.id not in stored and name not in out:
                    out.append(name)
        return out


def renamed_dump(stmt: ast.AST, names: dict[str, str], attrs: dict[tuple[str, str], str]) -> str:
    """``ast.dump`` of ``stmt`` after renaming, to compare with existing old statements."""
    return ast.dump(renamed(stmt, names, attrs), include_attributes=False)


def renamed(stmt: ast.AST, names: dict[str, str], attrs: dict[tuple[str, str], str]) -> ast.AST:
    """A copy of ``stmt`` with the renames applied (as it will read in the old version)."""
    clone = copy.deepcopy(stmt)

    class _Rename(ast.NodeTransformer):
        def visit_Attribute(self, n: ast.Attribute) -> ast.AST:
            if isinstance(n.value, ast.Name) and (n.value.id, n.attr) in attrs:
                new = attrs[(n.value.id, n.attr)]
                if new.startswith("="):
                    return ast.Name(id=new[1:], ctx=n.ctx)
                n.attr = new
            self.generic_visit(n)
            return n

        def visit_Name(self, n: ast.Name) -> ast.AST:
            new = names.get(n.id, n.id)
            if "." in new:
                expr = ast.parse(new, mode="eval").body
                if isinstance(expr, ast.Attribute):
                    expr.ctx = n.ctx
                return expr
            n.id = new
            return n

    out: ast.AST = _Rename().visit(clone)
    return out
