"""Short human descriptions of new- and old-tree statements, for warnings and refusals.

``describe`` names a compound statement (``for batch``, ``train``, ``with autocast()``);
``scope_path`` lists the statements enclosing an old block, as a placement reports it.
"""

from __future__ import annotations

import ast

from .tree import Tree


def describe(t: Tree, n: int) -> str:
    """A short human description of a compound statement (``for batch``, ``train``...)."""
    node = t.node[n]
    kind = t.kind[n]
    if node is None:
        return kind
    text = ""
    try:
        if isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef)):
            return node.name
        if isinstance(node, ast.ClassDef):
            return f"class {node.name}"
        if isinstance(node, (ast.For, ast.AsyncFor)):
            target = node.target
            if isinstance(target, ast.Tuple) and target.elts:
                text = "for " + ", ".join(ast.unparse(e) for e in target.elts)
            else:
                text = f"for {ast.unparse(target)}"
        elif isinstance(node, ast.While):
            text = f"while {ast.unparse(node.test)}"
        elif isinstance(node, ast.If):
            text = f"if {ast.unparse(node.test)}"
        elif isinstance(node, (ast.With, ast.AsyncWith)):
            text = "with " + ", ".join(ast.unparse(i) for i in node.items)
        elif isinstance(node, ast.ExceptHandler):
            text = "except" + (f" {ast.unparse(node.type)}" if node.type else "")
        elif isinstance(node, (ast.Try,)):
            text = "try"
        else:
            text = ast.unparse(node).splitlines()[0]
    except Exception:  # pragma: no cover - unparse of odd nodes
        text = kind
    return text if len(text) <= 60 else text[:57] + "..."


def scope_path(t: Tree, block: int) -> list[str]:
    """Enclosing compound statements of an old-tree block, outermost first."""
    out: list[str] = []
    n = block
    while n > 0:
        if t.is_block(n):
            owner = t.parent[n]
            if owner > 0:
                fname = t.field_name[n]
                if t.kind[owner] == "If" and fname == "orelse":
                    out.append("else")
                elif fname in ("orelse", "finalbody") and t.kind[owner] != "If":
                    out.append("else" if fname == "orelse" else "finally")
                elif t.kind[owner] != "Try":
                    out.append(describe(t, owner))
                elif fname == "body":
                    out.append("try")
        n = t.parent[n]
    out.reverse()
    return out
