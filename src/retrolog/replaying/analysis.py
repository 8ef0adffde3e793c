"""Static analysis of a training script for replay: statements, loops, levels, dependencies.

Everything here reads syntax trees only: the entry script's and the project's other modules'.
Where a statement runs relative to the main loop (through the functions that call it) is worked
out in ``layout``; what it cannot see is handled conservatively (level ``inner``, which
re-executes what the selected iterations run).
"""

from __future__ import annotations

import ast
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field

from .layout import Levels, ProjectCode, Reach, Trees, combine


@dataclass(frozen=True)
class Statement:
    """A log statement found in a script.

    ``kind`` is ``statement`` for a whole ``log(...)`` statement and ``wrap`` for a ``log(name,
    expr)`` wrapped around an expression inside a larger statement (``x = log("x", f(y))``);
    ``call`` is the (start line, start byte col, end line, end byte col, inner expression text)
    of a wrapped call.
    """

    name: str
    line: int  # first line of the enclosing statement (1-based)
    end_line: int
    text: str
    kind: str = "statement"
    call: tuple[int, int, int, int, str] | None = None


@dataclass
class LoopInfo:
    """A ``for ... in retrolog.loop(name, ...)`` in the script."""

    name: str | None
    node: ast.For
    parents: list[ast.AST] = field(default_factory=list)  # enclosing nodes, outermost first
    path: str = ""  # the file it is in (the entry script or another module of the project)


def _is_api_call(node: ast.AST, func_name: str) -> bool:
    """``retrolog.<func_name>(...)``, ``<alias>.<func_name>(...)`` or a bare ``<func_name>(...)``."""
    if not isinstance(node, ast.Call):
        return False
    func = node.func
    if isinstance(func, ast.Attribute):
        return func.attr == func_name and isinstance(func.value, ast.Name)
    return isinstance(func, ast.Name) and func.id == func_name


def _first_str_arg(call: ast.Call) -> str | None:
    if call.args and isinstance(call.args[0], ast.Constant) and isinstance(call.args[0].value, str):
        return call.args[0].value
    return None


def find_log_statements(source: str, names: Iterable[str]) -> list[Statement]:
    """The statements of ``source`` that call ``log(<name>, ...)`` for one of ``names``."""
    wanted = set(names)
    tree = ast.parse(source)
    lines = source.splitlines()
    found: list[Statement] = []
    for stmt in _statements(tree):
        for node in ast.walk(stmt):
            if not _is_api_call(node, "log"):
                continue
            assert isinstance(node, ast.Call)
            name = _first_str_arg(node)
            if name not in wanted:
                continue
            end = stmt.end_lineno or stmt.lineno
            text = "\n".join(lines[stmt.lineno - 1 : end])
            if isinstance(stmt, ast.Expr) and stmt.value is node:
                found.append(Statement(name, stmt.lineno, end, text))
            elif len(node.args) >= 2:
                inner = ast.get_source_segment(source, node.args[1]) or ""
                span = (
                    node.lineno,
                    node.col_offset,
                    node.end_lineno or node.lineno,
                    node.end_col_offset or 0,
                    inner,
                )
                found.append(Statement(name, stmt.lineno, end, text, kind="wrap", call=span))
    return found


def _statements(tree: ast.AST) -> Iterable[ast.stmt]:
    for node in ast.walk(tree):
        if isinstance(node, ast.stmt) and not isinstance(
            node,
            (
                ast.For,
                ast.While,
                ast.If,
                ast.With,
                ast.FunctionDef,
                ast.AsyncFunctionDef,
                ast.ClassDef,
                ast.Try,
                ast.AsyncFor,
                ast.AsyncWith,
            ),
        ):
            yield node


def logged_names(source: str) -> set[str]:
    """Every constant name passed to ``log(...)`` in ``source``."""
    names = set()
    for node in ast.walk(ast.parse(source)):
        if _is_api_call(node, "log"):
            assert isinstance(node, ast.Call)
            name = _first_str_arg(node)
            if name is not None:
                names.add(name)
    return names


def strip_statements(source: str, statements: Sequence[Statement]) -> str:
    """``source`` as it was before the given statements were added: whole statements removed,
    wrapped ``log(name, expr)`` calls replaced by ``expr``."""
    lines = [line.encode() for line in source.splitlines(keepends=True)]
    for stmt in sorted(
        statements, key=lambda s: (s.line, s.call[1] if s.call else 0), reverse=True
    ):
        if stmt.kind == "wrap" and stmt.call is not None:
            start_line, start_col, end_line, end_col, inner = stmt.call
            head = lines[start_line - 1][:start_col]
            tail = lines[end_line - 1][end_col:]
            lines[start_line - 1 : end_line] = [head + inner.encode() + tail]
        else:
            del lines[stmt.line - 1 : stmt.end_line]
    return b"".join(lines).decode()


class ScriptStructure:
    """Where the main loop and its nested loops are, and what each region reads and writes.

    ``source`` is the entry script (``path``); ``modules`` the project's other Python files of
    the same version (path -> source), searched for loops and call sites too (``trees``: parsed
    files to reuse, see ``layout.Trees``). ``main_loop`` and
    ``nested_loops`` are the names a recorded run ran at depth 1 and inside main-loop iterations;
    without them (no run recorded yet) the main loop is the first loop of the entry script that
    is not inside another retrolog loop or in a function called from one (see ``layout``).
    """

    def __init__(
        self,
        source: str,
        path: str = "<script>",
        modules: Mapping[str, str] | None = None,
        main_loop: str | None = None,
        nested_loops: Iterable[str] | None = None,
        trees: Trees | None = None,
    ) -> None:
        self.path = path
        self.code = ProjectCode({**(modules or {}), path: source}, path, trees)
        if main_loop is not None:
            found = self.code.find_loops(main_loop)
            located = found[0] if found else None
        else:
            located = self.code.static_main()
        if located is None or nested_loops is None:
            nested = self.code.static_nested(located) if located else []
        else:
            wanted = set(nested_loops)
            nested = [lp for lp in self.code.loops if lp.name in wanted and lp is not located]
        self.levels = Levels(self.code, located, nested)
        # A framework's callback (retrolog.integrations) drives the loops: its hooks set levels.
        self.framework: Levels | None = None
        if located is None and main_loop is not None:
            from ..integrations.layout import framework_levels

            self.framework = framework_levels(self.code, main_loop)
        self.main_path = located.path if located else path
        self.tree = self.code.modules[self.main_path].tree
        self.loops = [LoopInfo(lp.name, lp.node, lp.parents, lp.path) for lp in self.code.loops]
        by_node = {id(info.node): info for info in self.loops}
        self.main: LoopInfo | None = by_node[id(located.node)] if located else None
        self._nested = [by_node[id(lp.node)] for lp in nested]
        self.main_missing = main_loop if main_loop is not None and located is None else None
        self.uses_iteration_blocks = any(_is_api_call(n, "iteration") for n in ast.walk(self.tree))
        self.registered = self._registered_names()
        self.imported = self._imported_names()

    def tree_of(self, loop: LoopInfo) -> ast.Module:
        """The syntax tree of the file ``loop`` is in."""
        module = self.code.modules.get(loop.path)
        return module.tree if module is not None else self.tree

    def _is_loop_node(self, node: ast.AST) -> bool:
        return any(loop.node is node for loop in self.loops)

    @property
    def nested(self) -> list[LoopInfo]:
        """The loops that run inside main-loop iterations (checkpointed at exit), wherever they
        are in the code: in the main loop's body or in a function it calls."""
        return list(self._nested)

    # -- levels ----------------------------------------------------------------------------
    def reach(self, path: str | int, line: int | None = None) -> Reach:
        """When the statement at ``line`` of ``path`` runs (see ``layout.Reach``)."""
        where, at = (self.path, int(path)) if line is None else (str(path), line)
        if self.framework is not None:
            return self.framework.reach(where, at)
        if self.main is None:
            why = (
                f"its main loop {self.main_missing!r} is not a `for ... in loop(...)` in the code"
                if self.main_missing
                else "no main loop found"
            )
            return Reach("full", why=why)
        return self.levels.reach(where, at)

    def reach_all(self, lines: Mapping[str, Sequence[int]]) -> Reach:
        """One reach for statements replayed together (file -> their lines)."""
        return combine(self.reach(path, line) for path, found in lines.items() for line in found)

    def level_of(self, path: str | int, line: int | None = None) -> str:
        """prefix / outer / inner / suffix for the statement at ``line`` of ``path`` (a line alone:
        of the entry script); ``full`` only when no main loop exists."""
        return self.reach(path, line).level

    # -- dependencies ----------------------------------------------------------------------
    def _registered_names(self) -> set[str]:
        names: set[str] = set()
        for node in ast.walk(self.tree):
            if _is_api_call(node, "checkpointing"):
                assert isinstance(node, ast.Call)
                for keyword in node.keywords:
                    if isinstance(keyword.value, ast.Name):
                        names.add(keyword.value.id)
        return names

    def _imported_names(self) -> set[str]:
        names: set[str] = set()
        for node in ast.walk(self.tree):
            if isinstance(node, ast.Import):
                names.update((a.asname or a.name).split(".")[0] for a in node.names)
            elif isinstance(node, ast.ImportFrom):
                names.update(a.asname or a.name for a in node.names)
        return names

    def loops_to_reexecute(self) -> set[str]:
        """Nested loops whose effects code outside them reads and no checkpoint restores.

        A name is an effect of a loop when the loop assigns it, calls a method on it, or stores
        into its items or attributes; module names and checkpointed objects do not count. The
        code that reads effects: the rest of the main loop's body (later iterations included)
        and everything after the main loop. Names the loop hands to that code by assignment
        (``retrolog.code.carried_in_tree``) are captured in its exit checkpoints and written back
        on replay, so they do not count either (replay re-executes when a checkpoint lacks one).
        """
        from ..code import carried_in_tree

        if self.main is None:  # a framework's loops: their effects are the checkpointed state
            return set()
        outside_reads = _reads(self._suffix_nodes())
        needed: set[str] = set()
        for loop in self.nested:
            reads = outside_reads | _reads([self.main.node], exclude=loop.node)
            carried = carried_in_tree(self.tree_of(loop), loop.node).names
            if ((self._effects(loop.node) & reads) - carried) and loop.name:
                needed.add(loop.name)
        return needed

    def before_nested(self, placed: Mapping[str, Sequence[int]]) -> bool:
        """True when every statement at ``placed`` (file -> lines) runs in the main loop's body
        before each of its nested loops, in the same iteration: so what a nested loop does in an
        iteration is never observed by those statements in that iteration (a lazy outer replay
        then skips the selected iterations' own nested loops too). Conservative: a nested loop
        in another file or function, or one inside a loop of the body that also holds a
        statement, answers False."""
        main = self.main
        if main is None or not self.nested or not placed:
            return False
        first = main.node.lineno
        starts = []
        for loop in self.nested:
            inside = any(parent is main.node for parent in loop.parents)
            if loop.path != main.path or not inside:
                return False
            starts.append(loop.node.lineno)
            for parent in loop.parents:  # a loop of the body around the nested loop
                if parent is main.node or not isinstance(parent, (ast.For, ast.While)):
                    continue
                end = parent.end_lineno or parent.lineno
                if any(parent.lineno <= line <= end for line in placed.get(main.path, [])):
                    return False
        for path, lines in placed.items():
            if path != main.path and lines:
                return False
            if any(not first < line < min(starts) for line in lines):
                return False
        return True

    def logged_before_nested(self) -> set[str]:
        """The names the main loop's body logs (``retrolog.log("name", ...)`` with a literal name)
        before its first nested loop: in a lazy replay that skips the selected iterations' own
        nested loops (``before_nested``), the recorded values fidelity can still compare."""
        main = self.main
        if main is None or not self.nested:
            return set()
        start = min(loop.node.lineno for loop in self.nested)
        names = set()
        for node in ast.walk(main.node):
            if (
                _is_api_call(node, "log")
                and isinstance(node, ast.Call)
                and node.lineno < start
                and node.args
                and isinstance(node.args[0], ast.Constant)
                and isinstance(node.args[0].value, str)
            ):
                names.add(node.args[0].value)
        return names

    def suffix_needs_main_loop(self) -> bool:
        """True when code after the main loop reads names the main loop changes (not restorable)."""
        if self.main is None:  # also a framework's loops: never skipped for the suffix
            return True
        return bool(self._effects(self.main.node) & _reads(self._suffix_nodes()))

    def _suffix_nodes(self) -> list[ast.AST]:
        assert self.main is not None
        end = self.main.node.end_lineno or self.main.node.lineno
        return [n for n in ast.walk(self.tree) if isinstance(n, ast.stmt) and n.lineno > end]

    def _effects(self, loop: ast.For) -> set[str]:
        changed = {n.id for n in ast.walk(loop.target) if isinstance(n, ast.Name)}
        for stmt in loop.body + loop.orelse:
            for node, hidden in _walk_scoped(stmt):
                base: str | None = None
                if isinstance(node, ast.Name) and isinstance(node.ctx, (ast.Store, ast.Del)):
                    base = node.id
                elif isinstance(node, ast.Call) and isinstance(node.func, ast.Attribute):
                    base = _base_name(node.func.value)
                elif isinstance(node, (ast.Subscript, ast.Attribute)) and isinstance(
                    node.ctx, (ast.Store, ast.Del)
                ):
                    base = _base_name(node.value)
                elif isinstance(node, (ast.Global, ast.Nonlocal)):
                    changed.update(node.names)
                if base and base not in hidden:
                    changed.add(base)
        return changed - self.registered - self.imported - {"retrolog"}


_SCOPES = (ast.ListComp, ast.SetComp, ast.DictComp, ast.GeneratorExp)


def _walk_scoped(
    node: ast.AST, hidden: frozenset[str] = frozenset()
) -> Iterable[tuple[ast.AST, frozenset[str]]]:
    """ast.walk that also yields the names local to enclosing comprehensions and lambdas, which
    are neither effects nor reads of the code around them."""
    if isinstance(node, _SCOPES):
        hidden = hidden | {
            n.id for g in node.generators for n in ast.walk(g.target) if isinstance(n, ast.Name)
        }
    elif isinstance(node, ast.Lambda):
        hidden = hidden | {
            a.arg for a in (*node.args.posonlyargs, *node.args.args, *node.args.kwonlyargs)
        }
    yield node, hidden
    for child in ast.iter_child_nodes(node):
        yield from _walk_scoped(child, hidden)


def _base_name(node: ast.AST) -> str | None:
    while isinstance(node, (ast.Attribute, ast.Subscript)):
        node = node.value
    return node.id if isinstance(node, ast.Name) else None


def _within(node: ast.AST, line: int) -> bool:
    start = getattr(node, "lineno", None)
    end = getattr(node, "end_lineno", None)
    return start is not None and end is not None and start <= line <= end


def _inside(node: ast.AST, container: ast.AST) -> bool:
    line = getattr(node, "lineno", None)
    return line is not None and _within(container, line)


def _reads(nodes: Iterable[ast.AST], exclude: ast.AST | None = None) -> set[str]:
    """Names read by ``nodes`` (comprehension-local names excluded), outside ``exclude``."""
    names: set[str] = set()
    for top in nodes:
        for node, hidden in _walk_scoped(top):
            if (
                isinstance(node, ast.Name)
                and isinstance(node.ctx, ast.Load)
                and node.id not in hidden
                and (exclude is None or not _inside(node, exclude))
            ):
                names.add(node.id)
    return names
