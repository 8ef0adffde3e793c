"""Flat syntax trees for GumTree matching, built from the stdlib :mod:`ast`.

Why stdlib ``ast`` rather than libcst: parsing a 1,000-line script with ``ast`` takes a few
milliseconds, which leaves the whole CLI call inside its 200 ms budget; the old file's text is
never regenerated from the tree (edits are made on the text, line by line), so a lossless tree
is not needed.

A :class:`Tree` stores nodes in pre-order in parallel lists, so the descendants of node ``n``
are exactly the ids ``n + 1 .. n + size[n] - 1`` and two isomorphic subtrees correspond node
for node by their offset from the subtree root.  Every statement list (``body``, ``orelse``,
``finalbody``) becomes an explicit *block* node (kind ``"For.body"``, ``"If.orelse"``...), so
the parent of a statement is always a block and an insertion point is "block, index".
Expression contexts are dropped and operators are folded into their node's label.
"""

from __future__ import annotations

import ast
from collections.abc import Callable, Iterable

TYPE_CHECKING = False
if TYPE_CHECKING:  # typing is not imported at run time: the CLI must start fast
    from typing import Any

_STMT_LIST_FIELDS = ("body", "orelse", "finalbody")
_OPERATORS = (ast.operator, ast.unaryop, ast.cmpop, ast.boolop)
_SKIP_FIELDS = frozenset({"ctx", "type_comment", "kind", "type_ignores", "type_params"})

LOOP_KINDS = frozenset({"For", "AsyncFor", "While"})
DEF_KINDS = frozenset({"FunctionDef", "AsyncFunctionDef", "ClassDef", "Lambda"})
FUNC_KINDS = frozenset({"FunctionDef", "AsyncFunctionDef"})
TRANSPARENT_KINDS = frozenset({"If", "With", "AsyncWith", "Try", "TryStar", "ExceptHandler"})
IDENT_KINDS = frozenset({"Name", "arg"})

# Kinds treated as interchangeable when the bottom-up phase looks for a container's partner:
# a ``for`` loop rewritten as a ``while`` loop (or async) is still the same loop.
KIND_GROUP = {
    "For": "Loop",
    "AsyncFor": "Loop",
    "While": "Loop",
    "For.body": "Loop.body",
    "AsyncFor.body": "Loop.body",
    "While.body": "Loop.body",
    "FunctionDef": "Def",
    "AsyncFunctionDef": "Def",
    "FunctionDef.body": "Def.body",
    "AsyncFunctionDef.body": "Def.body",
    "With": "With",
    "AsyncWith": "With",
    "With.body": "With.body",
    "AsyncWith.body": "With.body",
}


def label_of(node: ast.AST) -> str:
    """Return the GumTree *label* (value) of an ast node: its name, operator or literal."""
    if isinstance(node, ast.Name):
        return node.id
    if isinstance(node, ast.Attribute):
        return node.attr
    if isinstance(node, ast.Constant):
        text = repr(node.value)
        return text if len(text) <= 200 else text[:200] + "..."
    if isinstance(node, ast.arg):
        return node.arg
    if isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef, ast.ClassDef)):
        return node.name
    if isinstance(node, ast.keyword):
        return node.arg or "**"
    if isinstance(node, ast.alias):
        return node.name if node.asname is None else f"{node.name} as {node.asname}"
    if isinstance(node, ast.ImportFrom):
        return "." * (node.level or 0) + (node.module or "")
    if isinstance(node, (ast.BinOp, ast.AugAssign, ast.UnaryOp, ast.BoolOp)):
        return type(node.op).__name__
    if isinstance(node, ast.Compare):
        return ",".join(type(op).__name__ for op in node.ops)
    if isinstance(node, (ast.Global, ast.Nonlocal)):
        return ",".join(node.names)
    if isinstance(node, ast.ExceptHandler):
        return node.name or ""
    if isinstance(node, ast.FormattedValue):
        return str(node.conversion)
    parts = []
    for name, value in ast.iter_fields(node):
        if name in _SKIP_FIELDS or isinstance(value, (ast.AST, list)) or value is None:
            continue
        parts.append(f"{name}={value}")
    return ",".join(parts)


class Tree:
    """A syntax tree in flat pre-order arrays (see the module docstring)."""

    def __init__(self) -> None:
        self.kind: list[str] = []
        self.label: list[str] = []
        self.parent: list[int] = []
        self.children: list[list[int]] = []
        self.node: list[ast.AST | None] = []
        self.field_name: list[str] = []
        self.size: list[int] = []
        self.height: list[int] = []
        self.iso: list[int] = []
        self.fuzzy: list[int] = []
        self.shape: list[int] = []
        self.postorder: list[int] = []
        self.line: list[int] = []
        # statement ast node id() -> tree node id
        self.stmt_ids: dict[int, int] = {}
        # excluded target statements: ast id() -> (block node id, index among its children)
        self.holes: dict[int, tuple[int, int]] = {}
        # wrap targets: tree node id of the kept inner expression -> the removed wrapper Call
        self.unwrapped: dict[int, ast.Call] = {}
        # opaque leaves standing for unchanged top-level statements: node id -> class key
        self.frozen: dict[int, int] = {}

    def __len__(self) -> int:
        return len(self.kind)

    def descendants(self, n: int) -> range:
        """Ids of the strict descendants of ``n`` (pre-order interval)."""
        return range(n + 1, n + self.size[n])

    def contains(self, ancestor: int, n: int) -> bool:
        """Whether ``n`` is ``ancestor`` or one of its descendants."""
        return ancestor <= n < ancestor + self.size[ancestor]

    def ancestors(self, n: int) -> Iterable[int]:
        """Proper ancestors of ``n``, nearest first."""
        p = self.parent[n]
        while p != -1:
            yield p
            p = self.parent[p]

    def is_block(self, n: int) -> bool:
        """Whether ``n`` is a statement-list block node."""
        return self.node[n] is None and n != 0

    def group(self, n: int) -> str:
        """The kind group used when matching containers across kinds (``for`` vs ``while``)."""
        k = self.kind[n]
        return KIND_GROUP.get(k, k)


_NOT_NODES = (ast.expr_context, *_OPERATORS)
_SPECS: dict[type, tuple[str, Callable[[Any], str], tuple[str, ...], bool]] = {}


def _const_label(node: ast.Constant) -> str:
    text = repr(node.value)
    return text if len(text) <= 200 else text[:200] + "..."


def _no_label(node: ast.AST) -> str:
    return ""


_LABELLERS: dict[type, Callable[[Any], str]] = {
    ast.Name: lambda n: n.id,
    ast.Attribute: lambda n: n.attr,
    ast.Constant: _const_label,
    ast.arg: lambda n: n.arg,
    ast.keyword: lambda n: n.arg or "**",
    ast.FunctionDef: lambda n: n.name,
    ast.AsyncFunctionDef: lambda n: n.name,
    ast.ClassDef: lambda n: n.name,
    ast.BinOp: lambda n: type(n.op).__name__,
    ast.AugAssign: lambda n: type(n.op).__name__,
    ast.UnaryOp: lambda n: type(n.op).__name__,
    ast.BoolOp: lambda n: type(n.op).__name__,
}
for _cls in (
    ast.Call,
    ast.Expr,
    ast.Assign,
    ast.Subscript,
    ast.Tuple,
    ast.List,
    ast.For,
    ast.If,
    ast.Return,
    ast.With,
    ast.withitem,
    ast.arguments,
    ast.JoinedStr,
    ast.Dict,
    ast.Slice,
    ast.Starred,
    ast.While,
    ast.IfExp,
    ast.Lambda,
    ast.ListComp,
    ast.GeneratorExp,
    ast.Set,
    ast.DictComp,
    ast.SetComp,
    ast.Try,
    ast.Raise,
    ast.Assert,
    ast.Delete,
    ast.Pass,
    ast.Break,
    ast.Continue,
    ast.Await,
    ast.Yield,
    ast.YieldFrom,
    ast.AnnAssign,
    ast.NamedExpr,
):
    _LABELLERS[_cls] = _no_label


def _spec(cls: type) -> tuple[str, Callable[[Any], str], tuple[str, ...], bool]:
    """Per-class conversion recipe: kind, labeller, child fields, is it a statement."""
    fields = tuple(f for f in cls._fields if f not in _SKIP_FIELDS)  # type: ignore[attr-defined]
    return cls.__name__, _LABELLERS.get(cls, label_of), fields, issubclass(cls, ast.stmt)


def build_tree(
    module: ast.Module,
    exclude: Iterable[ast.stmt] = (),
    unwrap: dict[int, ast.expr] | None = None,
    frozen: dict[int, int] | None = None,
) -> Tree:
    """Convert a parsed module into a :class:`Tree`.

    ``exclude``: statements left out of the tree (the statements being propagated), whose
    would-be position is recorded in ``Tree.holes``.  ``unwrap``: ``id(call) -> inner`` for
    ``retrolog.log(key, inner)`` calls replaced by their ``inner`` expression.  ``frozen``:
    ``id(stmt) -> key`` for top-level statements left unexpanded, each a leaf whose class
    is ``key`` (used for statements whose text is unchanged between the two versions).
    """
    t = Tree()
    excluded = {id(s) for s in exclude}
    unwrap = unwrap or {}
    kind, label, parent, children = t.kind, t.label, t.parent, t.children
    nodes, field_names, line = t.node, t.field_name, t.line

    def new(k: str, lab: str, par: int, n: ast.AST | None, fname: str, lineno: int) -> int:
        i = len(kind)
        kind.append(k)
        label.append(lab)
        parent.append(par)
        children.append([])
        nodes.append(n)
        field_names.append(fname)
        line.append(lineno)
        if par != -1:
            children[par].append(i)
        return i

    stmt_ids = t.stmt_ids

    def visit(n: ast.AST, par: int, fname: str) -> None:
        if unwrap:
            call_inner = unwrap.get(id(n))
            if call_inner is not None:
                inner_id = len(kind)
                visit(call_inner, par, fname)
                t.unwrapped[inner_id] = n  # type: ignore[assignment]
                return
        cls = type(n)
        spec = _SPECS.get(cls)
        if spec is None:
            spec = _SPECS[cls] = _spec(cls)
        k, labeller, fields, is_stmt = spec
        me = len(kind)
        kind.append(k)
        label.append(labeller(n))
        parent.append(par)
        children.append([])
        nodes.append(n)
        field_names.append(fname)
        line.append(getattr(n, "lineno", -1))
        if par != -1:
            children[par].append(me)
        if is_stmt:
            stmt_ids[id(n)] = me
            if frozen:
                key = frozen.get(id(n))
                if key is not None:  # an unchanged top-level statement: one opaque leaf
                    t.frozen[me] = key
                    return
        for fname2 in fields:
            value = getattr(n, fname2, None)
            if value is None:
                continue
            if type(value) is list:
                if not value:
                    continue
                if fname2 in _STMT_LIST_FIELDS and isinstance(value[0], ast.stmt):
                    block = new(f"{k}.{fname2}", "", me, None, fname2, value[0].lineno)
                    index = 0
                    for st in value:
                        if excluded and id(st) in excluded:
                            t.holes[id(st)] = (block, index)
                            continue
                        visit(st, block, fname2)
                        index += 1
                else:
                    for v in value:
                        if isinstance(v, ast.AST) and not isinstance(v, _NOT_NODES):
                            visit(v, me, fname2)
            elif isinstance(value, ast.AST) and not isinstance(value, _NOT_NODES):
                visit(value, me, fname2)

    root = new("Module", "", -1, module, "", 0)
    # the module body is a block too, so that top-level statements have a block parent
    block = new("Module.body", "", root, None, "body", 1)
    index = 0
    for s in module.body:
        if id(s) in excluded:
            t.holes[id(s)] = (block, index)
            continue
        visit(s, block, "body")
        index += 1
    _finish(t)
    return t


def _finish(t: Tree) -> None:
    """Compute sizes, heights, isomorphism, fuzzy and shape classes, and the post-order.

    A class is the hash of (kind, label, children's classes): equal for isomorphic subtrees
    of both trees (built in one process), and a collision between different subtrees would
    need two 64-bit hashes to agree by chance.
    """
    count = len(t.kind)
    size = [1] * count
    height = [1] * count
    iso = [0] * count
    fuzzy = [0] * count
    shape = [0] * count
    kind, label, children = t.kind, t.label, t.children
    idents = IDENT_KINDS
    # reverse pre-order visits every child before its parent
    for n in range(count - 1, -1, -1):
        ch = children[n]
        k = kind[n]
        lab = label[n]
        if ch:
            s = 1
            h = 0
            for c in ch:
                s += size[c]
                if height[c] > h:
                    h = height[c]
            size[n] = s
            height[n] = h + 1
            iso[n] = hash((k, lab, tuple([iso[c] for c in ch])))
            fuzzy[n] = hash((k, "" if k in idents else lab, tuple([fuzzy[c] for c in ch])))
            shape[n] = hash((k, tuple([shape[c] for c in ch])))
        else:
            iso[n] = hash((k, lab))
            fuzzy[n] = hash((k, "")) if k in idents else iso[n]
            shape[n] = hash((k,))
    for n, key in t.frozen.items():
        iso[n] = fuzzy[n] = key
        shape[n] = hash(("frozen", key))
        height[n] = 2  # taken by the top-down phase like any subtree worth matching
    t.size, t.height, t.iso, t.shape, t.fuzzy = size, height, iso, shape, fuzzy
    post: list[int] = []
    stack: list[tuple[int, int]] = [(0, 0)] if count else []
    while stack:
        n, i = stack.pop()
        ch = children[n]
        if i < len(ch):
            stack.append((n, i + 1))
            stack.append((ch[i], 0))
        else:
            post.append(n)
    t.postorder = post
