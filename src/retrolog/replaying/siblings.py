"""Which main-loop iterations a new statement can log in, from the recorded run itself.

A new ``log`` statement placed in the same block as a statement the run already logged, with
only simple statements between them (no branch, loop, ``with``, ``try`` or jump), runs exactly
when that neighbour ran. So the iterations where the neighbour logged are the only ones the new
statement can log in: nanoGPT's ``val_ppl`` next to ``val_loss`` in the evaluation block runs
every ``eval_interval``-th iteration, not in all of them. Replay then needs the model's state at
those iterations only, and skips the nested loops no selected iteration depends on
(``ReplaySession``), instead of restoring or re-executing every one.
"""

from __future__ import annotations

import ast
from collections.abc import Sequence
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from ..store.lite import Database

_SIMPLE = (
    ast.Assign,
    ast.AnnAssign,
    ast.AugAssign,
    ast.Expr,
    ast.Pass,
    ast.Import,
    ast.ImportFrom,
    ast.Delete,
    ast.Global,
    ast.Nonlocal,
    ast.Assert,
)


def _log_name(stmt: ast.stmt) -> str | None:
    """The constant name of a ``<alias>.log("name", ...)`` / ``log("name", ...)`` statement."""
    if not (isinstance(stmt, ast.Expr) and isinstance(stmt.value, ast.Call)):
        return None
    call = stmt.value
    func = call.func
    named = (isinstance(func, ast.Attribute) and func.attr == "log") or (
        isinstance(func, ast.Name) and func.id == "log"
    )
    if not named or not call.args:
        return None
    first = call.args[0]
    return first.value if isinstance(first, ast.Constant) and isinstance(first.value, str) else None


def _blocks(tree: ast.AST) -> list[list[ast.stmt]]:
    out = []
    for node in ast.walk(tree):
        for field in ("body", "orelse", "finalbody"):
            block = getattr(node, field, None)
            if isinstance(block, list) and block and isinstance(block[0], ast.stmt):
                out.append(block)
        for handler in getattr(node, "handlers", []) or []:
            out.append(handler.body)
        for case in getattr(node, "cases", []) or []:
            out.append(case.body)
    return out


def sibling_names(source: str, lines: Sequence[int], new_names: set[str]) -> list[str] | None:
    """For each new statement starting at one of ``lines``: the nearest recorded ``log`` in its
    block with only simple statements between. None when any new statement has no such
    neighbour (then nothing narrows the iterations)."""
    try:
        tree = ast.parse(source)
    except SyntaxError:
        return None
    found: list[str] = []
    blocks = _blocks(tree)
    for line in lines:
        neighbour = None
        for block in blocks:
            at = next((i for i, s in enumerate(block) if s.lineno == line), None)
            if at is None:
                continue
            for step in (-1, 1):  # look before, then after, stopping at the first non-simple
                i = at + step
                while 0 <= i < len(block) and neighbour is None:
                    stmt = block[i]
                    name = _log_name(stmt)
                    if name is not None and name not in new_names:
                        neighbour = name
                    elif not isinstance(stmt, _SIMPLE):
                        break
                    i += step
            break
        if neighbour is None:
            return None
        found.append(neighbour)
    return found


def logged_iterations(store: Database, data: Any, names: Sequence[str]) -> set[int]:
    """Main-loop iterations in which the recorded run logged any of ``names``."""
    from ..store.replays import recorded_contexts

    out = set()
    for ctx_id in recorded_contexts(store, data.key, names):
        path = data.paths.get(ctx_id)
        if path and path[0][0] == data.main_loop:
            out.add(int(path[0][1]))
    return out


__all__ = ["logged_iterations", "sibling_names"]
