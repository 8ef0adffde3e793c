"""Which statements to propagate: the statement at a line, log wrappers, unchanged code.

``find_statement`` maps a line of the new file to its statement (a compound statement when the
line is in its header), ``wrappers`` finds the ``retrolog.log(key, value)`` (or ``loop``) calls
wrapped around an existing expression, and ``frozen_pairs`` finds the top-level statements whose
text did not change, which the trees keep as opaque leaves.
"""

from __future__ import annotations

import ast
from collections import Counter

from .insert import first_line_of

LOG_MODULES = frozenset({"retrolog", "flor", "flordb"})
WRAPPER_FUNCS = frozenset({"log", "loop"})


# ---------------------------------------------------------------------------- statements
def header_end(stmt: ast.stmt) -> int:
    """Last line of a compound statement's header (before its body)."""
    end = stmt.lineno
    parts: list[ast.AST] = list(getattr(stmt, "decorator_list", []) or [])
    for name in ("target", "iter", "test", "items", "args", "returns", "bases", "keywords"):
        value = getattr(stmt, name, None)
        if isinstance(value, list):
            parts.extend(v for v in value if isinstance(v, ast.AST))
        elif isinstance(value, ast.AST):
            parts.append(value)
    for p in parts:
        for n in ast.walk(p):
            end = max(end, getattr(n, "end_lineno", None) or 0)
    return end


def nested_lists(stmt: ast.stmt) -> list[list[ast.stmt]]:
    out: list[list[ast.stmt]] = []
    for name in ("body", "orelse", "finalbody"):
        value = getattr(stmt, name, None)
        if isinstance(value, list) and value and isinstance(value[0], ast.stmt):
            out.append(value)
    for handler in getattr(stmt, "handlers", []) or []:
        out.append(handler.body)
    for case in getattr(stmt, "cases", []) or []:
        out.append(case.body)
    return out


def find_statement(body: list[ast.stmt], line: int) -> ast.stmt | None:
    """The innermost statement that line ``line`` belongs to (a compound: its header lines)."""
    for s in body:
        start, end = first_line_of(s), s.end_lineno or s.lineno
        if not start <= line <= end:
            continue
        nested = nested_lists(s)
        if not nested or line <= header_end(s):
            return s
        for lst in nested:
            got = find_statement(lst, line)
            if got is not None:
                return got
        return None
    return None


def log_names(module: ast.Module) -> tuple[set[str], set[str]]:
    """Names bound to the retrolog/flor modules, and to their bare ``log``/``loop`` functions."""
    mods = {"retrolog", "flor"}
    funcs: set[str] = set()
    # imports live at the top level, sometimes under ``if``/``try``; no need to walk everything
    todo: list[ast.stmt] = list(module.body)
    found: list[ast.stmt] = []
    while todo:
        s = todo.pop()
        if isinstance(s, (ast.Import, ast.ImportFrom)):
            found.append(s)
        elif isinstance(s, (ast.If, ast.Try)):
            todo.extend(s.body)
            todo.extend(s.orelse)
            for h in getattr(s, "handlers", []):
                todo.extend(h.body)
    for node in found:
        if isinstance(node, ast.Import):
            for a in node.names:
                root = a.name.split(".")[0]
                if root in LOG_MODULES:
                    mods.add(a.asname or root)
        elif (
            isinstance(node, ast.ImportFrom)
            and node.module
            and node.module.split(".")[0] in LOG_MODULES
        ):
            for a in node.names:
                if a.name in WRAPPER_FUNCS:
                    funcs.add(a.asname or a.name)
                elif a.name in LOG_MODULES:
                    mods.add(a.asname or a.name)
    return mods, funcs


def wrapped_value(call: ast.Call, names: tuple[set[str], set[str]]) -> ast.expr | None:
    """For ``retrolog.log(key, value)`` (or ``loop``), the wrapped ``value``; else ``None``."""
    f = call.func
    mods, funcs = names
    is_wrapper = (
        isinstance(f, ast.Attribute)
        and f.attr in WRAPPER_FUNCS
        and isinstance(f.value, ast.Name)
        and f.value.id in mods
    ) or (isinstance(f, ast.Name) and f.id in funcs)
    if not is_wrapper:
        return None
    for kw in call.keywords:
        if kw.arg in ("value", "iterable"):
            return kw.value
    if len(call.args) >= 2 and not isinstance(call.args[-1], ast.Starred):
        return call.args[-1]
    return None


def wrappers(stmt: ast.stmt, names: tuple[set[str], set[str]]) -> list[tuple[ast.Call, ast.expr]]:
    """The outermost log/loop wrappers in a statement (its header, for a compound one)."""
    if (
        isinstance(stmt, ast.Expr)
        and isinstance(stmt.value, ast.Call)
        and wrapped_value(stmt.value, names) is not None
    ):
        return []  # a log statement of its own: inserted whole
    roots: list[ast.AST] = []
    if nested_lists(stmt):
        for k in ("target", "iter", "test", "items"):
            value = getattr(stmt, k, None)
            for v in value if isinstance(value, list) else [value]:
                if isinstance(v, ast.AST):
                    roots.append(v)
    else:
        roots = [stmt]
    out: list[tuple[ast.Call, ast.expr]] = []
    stack = list(reversed(roots))
    while stack:
        n = stack.pop()
        if isinstance(n, ast.Call):
            inner = wrapped_value(n, names)
            if inner is not None:
                out.append((n, inner))
                continue
        stack.extend(reversed(list(ast.iter_child_nodes(n))))
    return out


def frozen_pairs(
    new_mod: ast.Module,
    old_mod: ast.Module,
    new_lines: list[str],
    old_lines: list[str],
    keep: set[int],
) -> tuple[dict[int, int], dict[int, int]]:
    """Top-level compound statements whose text is unchanged and unique in both versions.

    They are matched by their text and enter the trees as single opaque leaves (see
    ``build_tree``): GumTree's top-down phase would match them as unique isomorphic subtrees
    anyway, and not expanding them is what keeps a 1,000-line file fast.  Statements holding
    a propagated line (``keep``) are always expanded.
    """

    def texts(mod: ast.Module, lines: list[str]) -> dict[int, str]:
        return {
            id(s): "".join(lines[first_line_of(s) - 1 : s.end_lineno or s.lineno])
            for s in mod.body
            if nested_lists(s) and id(s) not in keep
        }

    new_t, old_t = texts(new_mod, new_lines), texts(old_mod, old_lines)
    new_count = Counter(new_t.values())
    old_by_text: dict[str, list[int]] = {}
    for k, text in old_t.items():
        old_by_text.setdefault(text, []).append(k)
    frozen_new: dict[int, int] = {}
    frozen_old: dict[int, int] = {}
    for k, text in new_t.items():
        olds = old_by_text.get(text)
        if olds is not None and len(olds) == 1 and new_count[text] == 1:
            key = hash(("frozen", text))
            frozen_new[k] = key
            frozen_old[olds[0]] = key
    return frozen_new, frozen_old


def contains_name(outer: ast.AST, name: str) -> bool:
    return any(isinstance(n, ast.Name) and n.id == name for n in ast.walk(outer))


def contains(outer: ast.AST, node: ast.AST) -> bool:
    return any(n is node for n in ast.walk(outer))
