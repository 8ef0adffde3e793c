"""Loop-carried state: which names a ``for`` loop hands to the code that runs after it.

Replay skips a nested loop by restoring the state captured at its exit. Registered objects
(model, optimizer) are restored in place, but the loop also leaves plain variables behind:
nanoGPT's micro-step loop assigns ``loss`` (read after the loop) and prefetches the next batch
``X, Y`` (read by the loop itself in the next iteration of the main loop). Recording captures
exactly those names, and replay writes them back into the user's frame.

A name is *carried* when the loop binds it (its target, or any assignment in its body, not counting
names local to comprehensions and lambdas) and code that can run after the loop exits, in the same
scope, reads it:

* the rest of the enclosing function (or module) after the loop, its ``else`` clause included;
* when the loop sits in enclosing ``for``/``while`` loops of that scope, their bodies outside
  this loop (and ``while`` tests), and the names this loop's own body reads before assigning them
  (read on its next run). A name the body always assigns before reading (nanoGPT's ``logits``) is
  not carried, which keeps a checkpoint from holding large activations;
* at module level, the functions of the module that read it as a global.

``needs_grads`` says that this code (or, for a loop inside a function, any code of the module:
the caller is not visible) steps an optimizer or reads gradients (``.step(``, ``unscale_(``,
``clip_grad_norm_(``, ``clip_grad_value_(``, ``.grad``): a model's ``state_dict`` does not hold
the ``.grad`` tensors that gradient accumulation leaves behind, so they must be captured too.

Everything is a cheap walk of the syntax tree; parsed files and answers are cached.
"""

from __future__ import annotations

import ast
import linecache
import os
import tokenize
from collections.abc import Iterable, Iterator
from dataclasses import dataclass
from typing import Any

_GRAD_CALLS = frozenset({"step", "unscale_", "clip_grad_norm_", "clip_grad_value_"})
_FUNCTIONS = (ast.FunctionDef, ast.AsyncFunctionDef)
_SCOPES = (*_FUNCTIONS, ast.Lambda, ast.ClassDef)
_COMPREHENSIONS = (ast.ListComp, ast.SetComp, ast.DictComp, ast.GeneratorExp)
_LOOPS = (ast.For, ast.AsyncFor, ast.While)
_TRIES: tuple[Any, ...] = (ast.Try, *([ast.TryStar] if hasattr(ast, "TryStar") else []))


@dataclass(frozen=True)
class Carried:
    """The loop-carried state of one ``for`` loop (see the module docstring)."""

    names: frozenset[str]
    needs_grads: bool
    line: int  # first line of the ``for`` statement
    module_level: bool  # the names are the script's globals
    global_names: frozenset[str] = frozenset()  # declared ``global`` by the enclosing function


def carried_names(source: str, loop_line: int) -> Carried:
    """The carried state of the ``for`` loop whose header contains ``loop_line`` in ``source``.

    Raises ``SyntaxError`` for unparsable source and ``LookupError`` when no ``for`` statement
    starts there.
    """
    tree = ast.parse(source)
    loop = _find_for(tree, loop_line)
    if loop is None:
        raise LookupError(f"no for statement at line {loop_line}")
    return carried_in_tree(tree, loop)


def find_for_loop(source: str, line: int) -> ast.For | ast.AsyncFor | None:
    """The innermost ``for`` statement whose header (``for ... in ...:``) contains ``line``."""
    return _find_for(ast.parse(source), line)


def carried_in_tree(
    tree: ast.Module, loop: ast.For | ast.AsyncFor, parents: dict[int, ast.AST] | None = None
) -> Carried:
    """:func:`carried_names` for a loop node of an already parsed ``tree``."""
    if parents is None:
        parents = _parent_map(tree)
    chain = []  # enclosing nodes, innermost first, up to the scope
    node: ast.AST = loop
    while id(node) in parents:
        node = parents[id(node)]
        chain.append(node)
        if isinstance(node, _SCOPES):
            break
    scope = chain[-1] if chain else tree
    module_level = isinstance(scope, ast.Module)
    enclosing = [n for n in chain if isinstance(n, _LOOPS)]
    bound = _binds([loop.target, *loop.body])
    end = loop.end_lineno or loop.lineno
    after = [*loop.orelse, *_after(scope, end)]
    reads = _reads(after)
    grad_nodes: list[ast.AST] = list(after)
    for outer in enclosing:
        body = [*outer.body, outer.test] if isinstance(outer, ast.While) else outer.body
        reads |= _reads(body, exclude=loop)
        grad_nodes.extend(body)
    if enclosing:
        exposed: set[str] = set()
        _flow(loop.body, _binds([loop.target]), exposed)
        reads |= exposed
    if module_level:
        reads |= _module_function_reads(tree)
        grad_nodes.extend(n for n in ast.walk(tree) if isinstance(n, _FUNCTIONS))
    else:
        grad_nodes = [tree]  # the caller, after the function returns, is not visible here
    declared: frozenset[str] = frozenset()
    if isinstance(scope, _FUNCTIONS):
        declared = frozenset(
            name for n in _walk_scope(scope.body) if isinstance(n, ast.Global) for name in n.names
        )
    names = frozenset(bound & reads)
    return Carried(
        names=names,
        needs_grads=any(_touches_grads(n) for n in grad_nodes),
        line=loop.lineno,
        module_level=module_level,
        global_names=names & declared,
    )


# -- cached, by file ---------------------------------------------------------------------------
_trees: dict[str, tuple[int, ast.Module, dict[int, ast.AST]]] = {}
_answers: dict[tuple[str, int, int], Carried | None] = {}


def carried_at(path: str, line: int) -> Carried | None:
    """:func:`carried_names` for the file at ``path`` (the executing code of a frame), or None
    when the file cannot be read or parsed or has no ``for`` header at ``line``. Cached by
    (path, mtime) for the parsed file and by (path, mtime, line) for the answer."""
    cell = None
    try:
        mtime = os.stat(path).st_mtime_ns
    except OSError:
        cell = _cell_source(path)
        if cell is None:
            return None
        mtime = hash(cell)
    key = (path, mtime, line)
    if key in _answers:
        return _answers[key]
    answer: Carried | None = None
    cached = _trees.get(path)
    if cached is None or cached[0] != mtime:
        try:
            if cell is not None:
                tree = ast.parse(cell, filename=path)
            else:
                with tokenize.open(path) as fh:
                    tree = ast.parse(fh.read(), filename=path)
        except (OSError, SyntaxError, ValueError, UnicodeDecodeError):
            _answers[key] = None
            return None
        cached = (mtime, tree, _parent_map(tree))
        _trees[path] = cached
    _, tree, parents = cached
    loop = _find_for(tree, line)
    if loop is not None:
        answer = carried_in_tree(tree, loop, parents)
    _answers[key] = answer
    return answer


def _cell_source(path: str) -> str | None:
    """The code of an IPython cell (a Jupyter notebook's), which is in no file: IPython keeps it
    in ``linecache`` under the cell's name, with no modification time."""
    entry = linecache.cache.get(path)
    if entry is None or len(entry) != 4 or entry[1] is not None:
        return None
    return "".join(entry[2])


# -- structure ----------------------------------------------------------------------------------
def _parent_map(tree: ast.AST) -> dict[int, ast.AST]:
    return {id(child): node for node in ast.walk(tree) for child in ast.iter_child_nodes(node)}


def _find_for(tree: ast.AST, line: int) -> ast.For | ast.AsyncFor | None:
    best: ast.For | ast.AsyncFor | None = None
    for node in ast.walk(tree):
        if isinstance(node, (ast.For, ast.AsyncFor)):
            header_end = max(node.lineno, node.body[0].lineno - 1)
            if node.lineno <= line <= header_end and (best is None or node.lineno > best.lineno):
                best = node
    return best


def _after(node: ast.AST, end: int) -> Iterator[ast.AST]:
    """The outermost statements of ``node`` that start after line ``end``."""
    for child in ast.iter_child_nodes(node):
        if isinstance(child, (ast.stmt, ast.excepthandler)):
            if child.lineno > end:
                yield child
            elif (child.end_lineno or child.lineno) > end and not isinstance(child, _SCOPES):
                yield from _after(child, end)
        elif isinstance(child, ast.match_case):
            yield from _after(child, end)


def _walk_scope(nodes: Iterable[ast.AST]) -> Iterator[ast.AST]:
    """ast.walk over ``nodes`` that does not enter nested functions, lambdas or classes."""
    stack = list(nodes)
    while stack:
        node = stack.pop()
        yield node
        if not isinstance(node, _SCOPES):
            stack.extend(ast.iter_child_nodes(node))


# -- bindings and reads -------------------------------------------------------------------------
def _binds(nodes: Iterable[ast.AST]) -> set[str]:
    """Names bound in the scope of ``nodes``: assignment targets, ``as`` names, imports, defs,
    walrus targets (also inside comprehensions), but not comprehension variables."""
    names: set[str] = set()
    stack = list(nodes)
    while stack:
        node = stack.pop()
        if isinstance(node, _COMPREHENSIONS):
            # only a walrus inside a comprehension binds in the enclosing scope
            names.update(
                n.target.id
                for n in _walk_scope([node])
                if isinstance(n, ast.NamedExpr) and isinstance(n.target, ast.Name)
            )
            continue
        if isinstance(node, ast.Name) and isinstance(node.ctx, ast.Store):
            names.add(node.id)
        elif isinstance(node, (*_FUNCTIONS, ast.ClassDef)):
            names.add(node.name)
            stack.extend(node.decorator_list)
            continue
        elif isinstance(node, ast.Lambda):
            continue
        elif isinstance(node, (ast.Import, ast.ImportFrom)):
            for alias in node.names:
                if alias.name != "*":
                    names.add(alias.asname or alias.name.split(".")[0])
        elif isinstance(node, (ast.ExceptHandler, ast.MatchAs, ast.MatchStar)) and node.name:
            names.add(node.name)
        elif isinstance(node, ast.MatchMapping) and node.rest:
            names.add(node.rest)
        stack.extend(ast.iter_child_nodes(node))
    return names


def _reads(nodes: Iterable[ast.AST], exclude: ast.AST | None = None) -> set[str]:
    """Names loaded by ``nodes`` (an augmented assignment's target counts), except names local
    to comprehensions, lambdas and functions defined there, and anything inside ``exclude``."""
    names: set[str] = set()
    stack: list[tuple[ast.AST, frozenset[str]]] = [(n, frozenset()) for n in nodes]
    while stack:
        node, hidden = stack.pop()
        if node is exclude:
            continue
        if isinstance(node, ast.Name):
            if isinstance(node.ctx, ast.Load) and node.id not in hidden:
                names.add(node.id)
            continue
        if isinstance(node, ast.AugAssign) and isinstance(node.target, ast.Name):
            if node.target.id not in hidden:
                names.add(node.target.id)
        elif isinstance(node, _COMPREHENSIONS):
            hidden = hidden | {
                n.id for g in node.generators for n in ast.walk(g.target) if isinstance(n, ast.Name)
            }
        elif isinstance(node, (ast.Lambda, *_FUNCTIONS)):
            args = node.args
            hidden = hidden | {
                a.arg
                for a in (*args.posonlyargs, *args.args, *args.kwonlyargs, args.vararg, args.kwarg)
                if a is not None
            }
        stack.extend((child, hidden) for child in ast.iter_child_nodes(node))
    return names


def _module_function_reads(tree: ast.Module) -> set[str]:
    """Globals read by the functions of a module (names they load but do not bind themselves,
    unless they declare them ``global``)."""
    names: set[str] = set()
    for fn in ast.walk(tree):
        if isinstance(fn, _FUNCTIONS):
            declared = {
                n for g in _walk_scope(fn.body) if isinstance(g, ast.Global) for n in g.names
            }
            local = _binds(fn.body) - declared
            args = fn.args
            local |= {
                a.arg
                for a in (*args.posonlyargs, *args.args, *args.kwonlyargs, args.vararg, args.kwarg)
                if a is not None
            }
            names |= _reads(fn.body) - local
    return names


def _flow(stmts: list[ast.stmt], assigned: set[str], exposed: set[str]) -> set[str]:
    """Add to ``exposed`` the names ``stmts`` may read before assigning them (given the names
    ``assigned`` on entry); return the names assigned on every path through them."""
    for stmt in stmts:
        assigned = _flow_stmt(stmt, assigned, exposed)
    return assigned


def _flow_stmt(stmt: ast.stmt, assigned: set[str], exposed: set[str]) -> set[str]:
    if isinstance(stmt, ast.If):
        exposed |= _reads([stmt.test]) - assigned
        yes = _flow(stmt.body, set(assigned), exposed)
        no = _flow(stmt.orelse, set(assigned), exposed)
        return yes & no
    if isinstance(stmt, (ast.For, ast.AsyncFor)):
        exposed |= _reads([stmt.iter]) - assigned
        _flow(stmt.body, assigned | _binds([stmt.target]), exposed)
        _flow(stmt.orelse, set(assigned), exposed)
        return assigned
    if isinstance(stmt, ast.While):
        exposed |= _reads([stmt.test]) - assigned
        _flow(stmt.body, set(assigned), exposed)
        _flow(stmt.orelse, set(assigned), exposed)
        return assigned
    if isinstance(stmt, (ast.With, ast.AsyncWith)):
        for item in stmt.items:
            exposed |= _reads([item.context_expr]) - assigned
            if item.optional_vars is not None:
                exposed |= _reads([item.optional_vars]) - assigned
                assigned = assigned | _binds([item.optional_vars])
        return _flow(stmt.body, assigned, exposed)
    if isinstance(stmt, _TRIES):
        _flow(stmt.body, set(assigned), exposed)
        for handler in stmt.handlers:
            if handler.type is not None:
                exposed |= _reads([handler.type]) - assigned
            caught = {handler.name} if handler.name else set()
            _flow(handler.body, assigned | caught, exposed)
        _flow(stmt.orelse, set(assigned), exposed)
        return _flow(stmt.finalbody, assigned, exposed)
    if isinstance(stmt, (*_FUNCTIONS, ast.ClassDef)):
        outside = [*stmt.decorator_list]
        if not isinstance(stmt, ast.ClassDef):
            outside += [*stmt.args.defaults, *(d for d in stmt.args.kw_defaults if d)]
        exposed |= _reads(outside) - assigned
        return assigned | {stmt.name}
    if isinstance(stmt, ast.Match):
        exposed |= _reads([stmt.subject]) - assigned
        for case in stmt.cases:
            _flow(case.body, assigned | _binds([case.pattern]), exposed)
        return assigned
    exposed |= _reads([stmt]) - assigned
    return assigned | _binds([stmt])


def _touches_grads(node: ast.AST) -> bool:
    """Calls ``.step(``/``unscale_(``/``clip_grad_norm_(``/``clip_grad_value_(`` or reads
    ``.grad`` anywhere inside ``node``."""
    for n in ast.walk(node):
        if isinstance(n, ast.Call):
            func = n.func
            name = (
                func.attr
                if isinstance(func, ast.Attribute)
                else (func.id if isinstance(func, ast.Name) else None)
            )
            if name in _GRAD_CALLS and (name != "step" or isinstance(func, ast.Attribute)):
                return True
        elif isinstance(n, ast.Attribute) and n.attr == "grad" and isinstance(n.ctx, ast.Load):
            return True
    return False
