"""Where a line runs relative to the main loop, across the functions and modules of a project.

Real scripts keep the epoch loop in ``main()``, the batch loop in a ``train()`` called from it,
evaluation in ``test()``, and the model in another module. The recorded run says which loop was
the main loop and which loops ran nested in its iterations (by name); this module finds those
loops in the code and answers, for any (file, line), when it runs: before the main loop
(``prefix``), in a main-loop iteration outside nested loops (``outer``), inside a nested loop
(``inner``), after the main loop (``suffix``). A line inside a function runs where the function's
callers run (calls resolved by name across the analysed files); a function that may be called from
where the analysis cannot see (``forward`` through ``model(x)``, a callback) is ``inner`` with the
prefix and suffix included, the level that re-executes everything a selected iteration runs.
"""

from __future__ import annotations

import ast
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field

FunctionNode = ast.FunctionDef | ast.AsyncFunctionDef
# methods called by Python itself or by a framework (torch.nn.Module.__call__ -> forward)
IMPLICIT_METHODS = frozenset({"forward", "__call__", "__iter__", "__next__", "__getitem__"})


class Trees:
    """Syntax trees by source text, so that the files two versions share are parsed once per
    plan (parsing is most of the analysis' cost: ~1 s per MB of source). Trees are read only."""

    def __init__(self) -> None:
        self._trees: dict[str, ast.Module] = {}

    def parse(self, source: str) -> ast.Module:
        tree = self._trees.get(source)
        if tree is None:
            tree = self._trees[source] = ast.parse(source)
        return tree


@dataclass(frozen=True)
class Reach:
    """When a line runs. ``prefix``/``suffix``: it also runs before/after the main loop (as well as
    at ``level``); ``loops``: the nested loops through which an ``inner`` line runs (empty: any);
    ``unresolved``: it is reached through calls the analysis could not follow."""

    level: str
    prefix: bool = False
    suffix: bool = False
    loops: frozenset[str] = frozenset()
    unresolved: bool = False
    why: str = ""


def combine(reaches: Iterable[Reach], why: str = "") -> Reach:
    """One reach for a line with several callers, or for several statements replayed together:
    the level whose task executes every place (inner > outer > suffix > prefix), remembering
    the places before and after the main loop that the level alone would not run."""
    items = list(reaches)
    levels = {r.level for r in items}
    if not items or "full" in levels:
        return Reach("full", why=why)
    unresolved = any(r.unresolved for r in items)
    prefix = any(r.level == "prefix" or r.prefix for r in items)
    suffix = any(r.level == "suffix" or r.suffix for r in items)
    loops = frozenset(n for r in items if r.level == "inner" for n in r.loops)
    if any(r.level == "inner" and not r.loops for r in items):
        loops = frozenset()  # some statement runs in any nested loop
    for level in ("inner", "outer", "suffix", "prefix"):
        if level in levels:
            return Reach(
                level,
                prefix=prefix and level != "prefix",
                suffix=suffix and level not in ("suffix", "prefix"),
                loops=loops if level == "inner" else frozenset(),
                unresolved=unresolved,
                why=why or "; ".join(dict.fromkeys(r.why for r in items if r.why)),
            )
    return Reach("full", why=why)


def _is_loop_call(node: ast.AST, aliases: set[str]) -> bool:
    """``<retrolog alias>.loop(...)``, ``<name>.loop(...)`` or ``loop``/an alias of it called bare."""
    if not isinstance(node, ast.Call):
        return False
    func = node.func
    if isinstance(func, ast.Attribute):
        return func.attr == "loop" and isinstance(func.value, ast.Name)
    return isinstance(func, ast.Name) and (func.id == "loop" or func.id in aliases)


def _loop_call_in(iterable: ast.AST, aliases: set[str]) -> ast.Call | None:
    """The ``loop(...)`` call a ``for`` iterates over, also when wrapped
    (``enumerate(retrolog.loop("step", loader))``, ``tqdm(loop(...))``)."""
    for node in ast.walk(iterable):
        if isinstance(node, ast.Call) and _is_loop_call(node, aliases):
            return node
    return None


def loop_name(call: ast.Call) -> str | None:
    """The constant name given to ``loop(name, ...)`` (positionally or as ``name=``)."""
    candidates = [*call.args[:1], *(k.value for k in call.keywords if k.arg == "name")]
    for arg in candidates:
        if isinstance(arg, ast.Constant) and isinstance(arg.value, str):
            return arg.value
    return None


@dataclass
class Located:
    """A ``for ... in loop(name, ...)`` found in one of the analysed files."""

    path: str
    name: str | None
    node: ast.For
    parents: list[ast.AST]
    function: FunctionNode | None  # innermost enclosing function (None: module level)


@dataclass
class _Module:
    path: str
    tree: ast.Module
    functions: list[FunctionNode] = field(default_factory=list)
    in_class: dict[int, str] = field(default_factory=dict)  # method id -> its class's name
    aliases: dict[str, str] = field(default_factory=dict)  # local name -> imported name


@dataclass
class _Site:
    path: str
    line: int
    called: bool  # False: the function is referenced (passed, stored), not called here


class ProjectCode:
    """The parsed Python files of one version of a project, with loops and call sites indexed."""

    def __init__(self, sources: Mapping[str, str], entry: str, trees: Trees | None = None) -> None:
        self.entry = entry
        self.modules: dict[str, _Module] = {}
        trees = Trees() if trees is None else trees
        for path, source in sources.items():
            try:
                tree = trees.parse(source)
            except SyntaxError:
                if path == entry:
                    raise
                continue  # another module that does not parse cannot be analysed: not indexed
            self.modules[path] = self._index(path, tree)
        self.loops: list[Located] = []
        self.sites: dict[str, list[_Site]] = {}
        for module in self.modules.values():
            self._collect(module, module.tree, [], None)

    # -- indexing --------------------------------------------------------------------------
    @staticmethod
    def _index(path: str, tree: ast.Module) -> _Module:
        module = _Module(path, tree)
        for node in ast.walk(tree):
            if isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef)):
                module.functions.append(node)
            elif isinstance(node, ast.ClassDef):
                module.in_class.update(
                    (id(item), node.name)
                    for item in node.body
                    if isinstance(item, (ast.FunctionDef, ast.AsyncFunctionDef))
                )
            elif isinstance(node, ast.ImportFrom):
                for alias in node.names:
                    if alias.asname and alias.name != "*":
                        module.aliases[alias.asname] = alias.name
        return module

    def _collect(
        self, module: _Module, node: ast.AST, parents: list[ast.AST], function: FunctionNode | None
    ) -> None:
        loop_aliases = {k for k, v in module.aliases.items() if v == "loop"}
        for child in ast.iter_child_nodes(node):
            call = _loop_call_in(child.iter, loop_aliases) if isinstance(child, ast.For) else None
            if call is not None:
                assert isinstance(child, ast.For)
                self.loops.append(
                    Located(module.path, loop_name(call), child, list(parents), function)
                )
            if isinstance(child, ast.Call):
                name = self._callee(module, child.func)
                if name:
                    self.sites.setdefault(name, []).append(_Site(module.path, child.lineno, True))
            elif isinstance(child, ast.Name) and isinstance(child.ctx, ast.Load):
                if not (isinstance(node, ast.Call) and node.func is child):
                    name = module.aliases.get(child.id, child.id)
                    self.sites.setdefault(name, []).append(_Site(module.path, child.lineno, False))
            elif (
                isinstance(child, ast.Attribute)
                and isinstance(child.ctx, ast.Load)
                and not (isinstance(node, ast.Call) and node.func is child)
            ):
                self.sites.setdefault(child.attr, []).append(
                    _Site(module.path, child.lineno, False)
                )
            inner = (
                child if isinstance(child, (ast.FunctionDef, ast.AsyncFunctionDef)) else function
            )
            self._collect(module, child, [*parents, child], inner)

    @staticmethod
    def _callee(module: _Module, func: ast.AST) -> str | None:
        if isinstance(func, ast.Name):
            return module.aliases.get(func.id, func.id)
        if isinstance(func, ast.Attribute):
            return func.attr
        return None

    # -- queries ---------------------------------------------------------------------------
    def function_at(self, path: str, line: int) -> FunctionNode | None:
        """The innermost function of ``path`` whose body holds ``line`` (None: module level)."""
        module = self.modules.get(path)
        if module is None:
            return None
        found = [
            f
            for f in module.functions
            if f.body and f.body[0].lineno <= line <= (f.end_lineno or f.lineno)
        ]
        return max(found, key=lambda f: f.body[0].lineno, default=None)

    def find_loops(self, name: str) -> list[Located]:
        """Loops called ``name``, those of the entry script first."""
        found = [lp for lp in self.loops if lp.name == name]
        return sorted(found, key=lambda lp: (lp.path != self.entry, lp.path, lp.node.lineno))

    def callers(self, path: str, function: FunctionNode) -> tuple[list[_Site], bool]:
        """Call sites of ``function`` by its name in every analysed file, and whether it may also
        be reached where the analysis cannot see (referenced without a call, a method Python or a
        framework calls implicitly, or no call found at all)."""
        module = self.modules[path]
        owner = module.in_class.get(id(function))
        name = function.name
        if owner is not None and name == "__init__":
            name = owner  # a constructor runs where its class is called
        sites = [
            s
            for s in self.sites.get(name, [])
            if not (s.path == path and s.line == function.lineno)
        ]
        called = [s for s in sites if s.called]
        implicit = (owner is not None and name in IMPLICIT_METHODS) or (
            name.startswith("__") and name.endswith("__")
        )
        return called, implicit or not called or len(called) < len(sites)

    def static_main(self) -> Located | None:
        """Without a recorded run: the first loop of the entry script that is neither inside
        another retrolog loop nor in a function called (transitively) from inside one."""
        inside = self._functions_called_from_loops()
        for lp in self.loops:
            if lp.path != self.entry:
                continue
            if any(isinstance(p, (ast.For, ast.AsyncFor)) and self._is_loop(p) for p in lp.parents):
                continue
            if lp.function is not None and lp.function.name in inside:
                continue
            return lp
        return None

    def static_nested(self, main: Located) -> list[Located]:
        """Without a recorded run: loops directly inside ``main`` and the outermost loops of the
        functions called (transitively) from its body."""
        out = [
            lp
            for lp in self.loops
            if lp is not main
            and main.node in lp.parents
            and not any(self._is_loop(p) for p in lp.parents[lp.parents.index(main.node) + 1 :])
        ]
        called = self._called_names([main.node])
        for lp in self.loops:
            if lp is main or lp in out or lp.function is None or lp.function.name not in called:
                continue
            if not any(self._is_loop(p) for p in lp.parents):
                out.append(lp)
        return out

    def _is_loop(self, node: ast.AST) -> bool:
        return any(lp.node is node for lp in self.loops)

    def _functions_called_from_loops(self) -> set[str]:
        bodies: list[ast.AST] = [stmt for lp in self.loops for stmt in lp.node.body]
        return self._called_names(bodies)

    def _called_names(self, roots: list[ast.AST]) -> set[str]:
        """Names of the functions called from ``roots``, transitively through their bodies."""
        by_name: dict[str, list[FunctionNode]] = {}
        for module in self.modules.values():
            for f in module.functions:
                by_name.setdefault(f.name, []).append(f)
        names: set[str] = set()
        todo = list(roots)
        while todo:
            node = todo.pop()
            for sub in ast.walk(node):
                if isinstance(sub, ast.Call):
                    func = sub.func
                    name = (
                        func.id
                        if isinstance(func, ast.Name)
                        else func.attr
                        if isinstance(func, ast.Attribute)
                        else None
                    )
                    if name and name in by_name and name not in names:
                        names.add(name)
                        todo.extend(by_name[name])
        return names


class Levels:
    """Answers ``reach(path, line)`` for one version, given the main loop and its nested loops."""

    def __init__(self, code: ProjectCode, main: Located | None, nested: list[Located]) -> None:
        self.code = code
        self.main = main
        self.nested = nested
        self._memo: dict[tuple[str, int], Reach | None] = {}
        self.anchors: dict[tuple[str, int | None], tuple[int, int]] = {}
        if main is not None:
            self._chain(main)

    def _chain(self, main: Located) -> None:
        """The scopes from which the main loop is reached, each with the line range of the
        statement through which it is reached (the loop itself in its own function)."""
        node = main.node
        self.anchors[(main.path, _key(main.function))] = (
            node.lineno,
            node.end_lineno or node.lineno,
        )
        todo = [(main.path, main.function)]
        while todo:
            path, function = todo.pop()
            if function is None:
                continue
            for site in self.code.sites.get(function.name, []):
                if site.path == path and site.line == function.lineno:
                    continue
                caller = self.code.function_at(site.path, site.line)
                key = (site.path, _key(caller))
                if key in self.anchors:
                    continue
                stmt = _statement_at(self.code.modules[site.path].tree, caller, site.line)
                self.anchors[key] = (
                    (stmt.lineno, stmt.end_lineno or stmt.lineno)
                    if stmt
                    else (
                        site.line,
                        site.line,
                    )
                )
                todo.append((site.path, caller))

    def reach(self, path: str, line: int) -> Reach:
        main = self.main
        if main is None:
            return Reach("full", why="no main loop found")
        function = self.code.function_at(path, line)
        for lp in self.nested:
            node = lp.node
            if (
                lp.path == path
                and lp.function is function
                and node.lineno < line <= (node.end_lineno or node.lineno)
            ):
                return Reach("inner", loops=frozenset({lp.name} if lp.name else ()))
        anchor = self.anchors.get((path, _key(function)))
        if main.path == path and main.function is function:
            node = main.node
            if line == node.lineno:
                return Reach("prefix", why="in the main loop's header")
            if node.lineno < line <= (node.end_lineno or node.lineno):
                return Reach("outer")
        if anchor is not None:
            if line < anchor[0]:
                return Reach("prefix")
            return Reach("suffix")
        if function is None:
            return Reach("prefix", why=f"module level of {path} (runs at import)")
        return self._function_reach(path, function)

    def _function_reach(self, path: str, function: FunctionNode) -> Reach:
        key = (path, function.lineno)
        if key in self._memo:
            return self._memo[key] or _CYCLE  # a recursive call adds no new place
        self._memo[key] = None
        sites, unseen = self.code.callers(path, function)
        reaches = [r for r in (self.reach(s.path, s.line) for s in sites) if r is not _CYCLE]
        if unseen or not reaches:
            why = f"{function.name}() may be called where the analysis cannot see"
            reaches.append(Reach("inner", prefix=True, suffix=True, unresolved=True, why=why))
        result = combine(reaches)
        self._memo[key] = result
        return result


_CYCLE = Reach("cycle")


def _key(function: FunctionNode | None) -> int | None:
    return function.lineno if function is not None else None


def _statement_at(tree: ast.Module, function: FunctionNode | None, line: int) -> ast.stmt | None:
    """The innermost statement of ``function`` (or the module, not entering functions defined
    in it) that holds ``line``."""
    found: ast.stmt | None = None
    body: list[ast.stmt] = list(function.body if function is not None else tree.body)
    while body:
        stmt = body.pop(0)
        if not stmt.lineno <= line <= (stmt.end_lineno or stmt.lineno):
            continue
        found = stmt
        if isinstance(stmt, (ast.FunctionDef, ast.AsyncFunctionDef, ast.ClassDef)):
            break
        body = [c for c in ast.iter_child_nodes(stmt) if isinstance(c, ast.stmt)]
        body += [s for h in getattr(stmt, "handlers", []) for s in h.body]
    return found
