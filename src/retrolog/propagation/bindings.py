"""Which names a statement reads, and which names are bound at a point of a syntax tree.

A statement placed in an older version must find the names it reads bound there, by the
code that ran before it: ``retrolog.log("grad_norm", norm)`` after ``optimizer.zero_grad()``
logs nothing useful (and raises) when the old version computes ``norm`` only further down.
The analysis is flow-insensitive inside a statement (a name bound anywhere in an earlier
``if`` counts as bound) and ignores loop-carried values (a name bound later in the enclosing
loop body is not bound *before*): both as a user reads the code.
"""

from __future__ import annotations

import ast
import builtins

from .tree import Tree

BUILTINS = frozenset(dir(builtins)) | {"__file__", "__name__", "__builtins__"}
_SCOPES = (ast.FunctionDef, ast.AsyncFunctionDef, ast.ClassDef, ast.Lambda)


def _target_names(node: ast.AST | None, out: set[str]) -> None:
    if node is None:
        return
    for n in ast.walk(node):
        if isinstance(n, ast.Name):
            out.add(n.id)
        elif isinstance(n, ast.Starred) and isinstance(n.value, ast.Name):
            out.add(n.value.id)


def binds(stmt: ast.AST) -> set[str]:
    """Names a statement binds when it runs (nested function and class bodies excluded)."""
    out: set[str] = set()
    stack: list[ast.AST] = [stmt]
    while stack:
        n = stack.pop()
        if isinstance(n, (ast.FunctionDef, ast.AsyncFunctionDef, ast.ClassDef)):
            out.add(n.name)  # its body runs later (or in the class's own scope)
            continue
        elif isinstance(n, ast.Lambda):
            continue
        elif isinstance(n, ast.Name) and isinstance(n.ctx, ast.Store):
            out.add(n.id)
        elif isinstance(n, ast.alias):
            out.add((n.asname or n.name).split(".")[0])
        elif isinstance(n, ast.ExceptHandler) and n.name:
            out.add(n.name)
        elif isinstance(n, (ast.Global, ast.Nonlocal)):
            out.update(n.names)
        elif isinstance(n, ast.MatchAs) and n.name:
            out.add(n.name)
        elif isinstance(n, ast.comprehension):
            continue  # comprehension variables stay inside the comprehension
        stack.extend(ast.iter_child_nodes(n))
    return out


def reads(stmt: ast.AST) -> list[str]:
    """Free names the statement reads (minus those it binds itself), in first-use order."""
    local: set[str] = set()
    for n in ast.walk(stmt):
        if isinstance(n, ast.comprehension):
            _target_names(n.target, local)
        elif isinstance(n, ast.Lambda):
            local.update(a.arg for a in ast.walk(n.args) if isinstance(a, ast.arg))
        elif isinstance(n, ast.NamedExpr):
            _target_names(n.target, local)
        elif isinstance(n, ast.Name) and isinstance(n.ctx, ast.Store):
            local.add(n.id)
    out: list[str] = []
    for n in ast.walk(stmt):
        if not isinstance(n, ast.Name) or not isinstance(n.ctx, ast.Load):
            continue
        if n.id not in local and n.id not in out:
            out.append(n.id)
    return out


def _args(node: ast.AST | None) -> set[str]:
    args = getattr(node, "args", None)
    if not isinstance(args, ast.arguments):
        return set()
    every = [*args.posonlyargs, *args.args, *args.kwonlyargs]
    every += [a for a in (args.vararg, args.kwarg) if a is not None]
    return {a.arg for a in every}


class Bindings:
    """Names bound at insertion points of one tree; module-level names computed once."""

    def __init__(self, t: Tree) -> None:
        self.t = t
        self._module: set[str] | None = None
        self._external: set[str] | None = None

    def external(self, module: ast.Module) -> set[str]:
        """Names the file reads but never binds: they come from outside (a notebook's
        globals, ``exec``), so they count as bound everywhere.  A ``from m import *`` makes
        every name possibly bound: the result then holds ``"*"`` and :meth:`before` callers
        treat any name as bound."""
        if self._external is None:
            bound: set[str] = set()
            used: set[str] = set()
            star = False
            for n in ast.walk(module):
                if isinstance(n, ast.Name):
                    (bound if isinstance(n.ctx, ast.Store) else used).add(n.id)
                elif isinstance(n, ast.arg):
                    bound.add(n.arg)
                elif isinstance(n, (ast.FunctionDef, ast.AsyncFunctionDef, ast.ClassDef)):
                    bound.add(n.name)
                elif isinstance(n, ast.alias):
                    star = star or n.name == "*"
                    bound.add((n.asname or n.name).split(".")[0])
                elif isinstance(n, ast.ExceptHandler) and n.name:
                    bound.add(n.name)
            self._external = (used - bound) | ({"*"} if star else set())
        return self._external

    def module_names(self) -> set[str]:
        """Every name the module binds at top level (what a function body can see)."""
        if self._module is None:
            t = self.t
            out: set[str] = set()
            for k in t.children[1] if len(t) > 1 else []:
                node = t.node[k]
                if node is not None:
                    out |= binds(node)
            self._module = out
        return self._module

    def before(self, block: int, index: int) -> set[str]:
        """Names bound before position ``index`` of ``block`` (builtins not included)."""
        t = self.t
        out: set[str] = set()
        n, idx = block, index
        while True:
            for k in t.children[n][:idx]:
                node = t.node[k]
                if node is not None:
                    out |= binds(node)
            owner = t.parent[n]
            if owner <= 0:
                return out
            node = t.node[owner]
            if isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef, ast.Lambda)):
                return out | _args(node) | self.module_names()
            if isinstance(node, (ast.For, ast.AsyncFor)):
                _target_names(node.target, out)
            elif isinstance(node, (ast.With, ast.AsyncWith)):
                for item in node.items:
                    _target_names(item.optional_vars, out)
            elif isinstance(node, ast.ExceptHandler) and node.name:
                out.add(node.name)
            elif isinstance(node, ast.match_case):
                out |= binds(node.pattern)
            stmt, p = owner, t.parent[owner]
            while p > 0 and not t.is_block(p):
                stmt, p = p, t.parent[p]
            if p <= 0:
                return out
            n, idx = p, t.children[p].index(stmt)


def producer(t: Tree, block: int, index: int, name: str) -> int:
    """The nearest statement before (block, index) that binds ``name`` (-1 if none)."""
    n, idx = block, index
    while n > 0:
        for k in reversed(t.children[n][:idx]):
            node = t.node[k]
            if node is not None and name in binds(node):
                return k
        owner = t.parent[n]
        if owner <= 0:
            return -1
        header: set[str] = set()
        node = t.node[owner]
        if isinstance(node, (ast.For, ast.AsyncFor)):
            _target_names(node.target, header)
        elif isinstance(node, (ast.With, ast.AsyncWith)):
            for item in node.items:
                _target_names(item.optional_vars, header)
        if name in header or name in _args(node):
            return owner
        stmt, p = owner, t.parent[owner]
        while p > 0 and not t.is_block(p):
            stmt, p = p, t.parent[p]
        if p <= 0:
            return -1
        n, idx = p, t.children[p].index(stmt)
    return -1


__all__ = ["BUILTINS", "Bindings", "binds", "producer", "reads"]
