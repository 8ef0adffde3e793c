"""The propagation corpus: script families, their versions and the labelled statements.

Layout: ``corpus/<family>/v0.py.txt .. vN.py.txt`` (oldest first; ``.txt`` keeps linters and
formatters away from scripts whose formatting is part of the test) and ``corpus/<family>/spec.json``::

    {"statements": [{"id": "...", "code": "retrolog.log(...)", "kind": "insert" | "wrap",
                     "line_offset": 0,
                     "at": {"v0": {"after": "<text>"} | {"first_in": "<text>"} |
                                  {"wrap": "<text>", "code": "<wrapped line>"} | "refuse",
                            ...}}]}

``after``: the statement belongs right after the statement whose first line contains the
text (``nth`` picks among several matching lines); ``first_in``: it is the first statement of
the block of the compound statement whose header contains the text; ``wrap``: the statement
on that line gets its value wrapped, giving ``code``; ``refuse``: its context does not exist in
that version; ``skip``: no clear ground truth (the statement's value does not exist there),
the pair is not evaluated.  ``code`` may be overridden per version (the identifiers that version uses).

Each pair also has a *category* for the per-kind tables: a statement's ``kinds`` list
(``{"new": [versions], "old": [versions], "kind": "loop-absent"}``, first match wins), else its
``category``, else ``absent-context`` for refusal pairs and ``regular`` for the rest.  Kinds used:
``loop-absent`` (the statement is in a loop the old version does not have), ``anchor-after``
(the line before it is new; the line after it maps), ``names-bound`` (the nearest mapped line
before it comes, in the old version, before the line that binds a name it reads), ``rename``
(identifiers it uses are called differently there), ``absent-context`` (must be refused).

A *pair* takes version k with the statement added at its label (the "new" file) and another
version j (the "old" file): the expected result is j's label.  Backward pairs (j < k) are the
real use; forward pairs (j > k) are reported separately.
"""

from __future__ import annotations

import ast
import json
from dataclasses import dataclass, field
from pathlib import Path

CORPUS = Path(__file__).with_name("corpus")


@dataclass
class Pair:
    """One (statement, new version, old version) evaluation case."""

    family: str
    statement: str
    kind: str
    new_version: str
    old_version: str
    new_source: str
    old_source: str
    line: int
    expected: dict | str
    direction: str
    extra: dict = field(default_factory=dict)

    @property
    def name(self) -> str:
        return f"{self.family}/{self.statement}/{self.new_version}->{self.old_version}"

    @property
    def refuse(self) -> bool:
        return self.expected == "refuse"

    @property
    def category(self) -> str:
        return str(self.extra.get("category", "regular"))


def _line_of(source: str, text: str, nth: int | None) -> int:
    """1-based line containing ``text`` (the ``nth`` one; it must be unique without ``nth``)."""
    hits = [i + 1 for i, line in enumerate(source.splitlines()) if text in line]
    if not hits:
        raise ValueError(f"anchor text not found: {text!r}")
    if nth is None:
        if len(hits) > 1:
            raise ValueError(f"anchor text not unique: {text!r} (lines {hits})")
        return hits[0]
    return hits[nth]


def _first_line(stmt: ast.stmt) -> int:
    decorators = getattr(stmt, "decorator_list", None) or []
    return min([stmt.lineno] + [d.lineno for d in decorators])


def statement_lists(node: ast.AST):
    """Yield (field, index_or_None, list) for every statement list directly under ``node``."""
    for name in ("body", "orelse", "finalbody"):
        value = getattr(node, name, None)
        if isinstance(value, list) and value and isinstance(value[0], ast.stmt):
            yield name, None, value
    for i, h in enumerate(getattr(node, "handlers", []) or []):
        yield "handlers", i, h.body


def locate(mod: ast.Module, lineno: int) -> list[tuple[str, int | None, int]]:
    """Path (field, handler index, statement index) to the outermost statement at ``lineno``."""

    def search(node: ast.AST, path: list) -> list | None:
        for fname, hidx, lst in statement_lists(node):
            for i, s in enumerate(lst):
                if _first_line(s) == lineno:
                    return [*path, (fname, hidx, i)]
                if _first_line(s) <= lineno <= (s.end_lineno or s.lineno):
                    got = search(s, [*path, (fname, hidx, i)])
                    if got is not None:
                        return got
        return None

    got = search(mod, [])
    if got is None:
        raise ValueError(f"no statement starts at line {lineno}")
    return got


def resolve(mod: ast.AST, path: list[tuple[str, int | None, int]]) -> tuple[list, int]:
    """The statement list and index a path points to."""
    node = mod
    for fname, hidx, i in path[:-1]:
        lst = getattr(node, fname) if hidx is None else node.handlers[hidx].body
        node = lst[i]
    fname, hidx, i = path[-1]
    lst = getattr(node, fname) if hidx is None else node.handlers[hidx].body
    return lst, i


def _indent(line: str) -> str:
    return line[: len(line) - len(line.lstrip(" \t"))]


def _render(code: str, indent: str) -> list[str]:
    return [(indent + c if c.strip() else "") + "\n" for c in code.split("\n")]


def expected_position(source: str, label: dict) -> tuple[list, str]:
    """(path of the inserted statement, indentation) for an ``after``/``first_in`` label."""
    mod = ast.parse(source)
    lines = source.splitlines(keepends=True)
    if "after" in label:
        ln = _line_of(source, label["after"], label.get("nth"))
        path = locate(mod, ln)
        fname, hidx, i = path[-1]
        return [*path[:-1], (fname, hidx, i + 1)], _indent(lines[ln - 1])
    ln = _line_of(source, label["first_in"], label.get("nth"))
    path = locate(mod, ln)
    lst, i = resolve(mod, path)
    compound = lst[i]
    body = compound.body
    j = 0
    if (
        isinstance(compound, (ast.FunctionDef, ast.AsyncFunctionDef, ast.ClassDef))
        and isinstance(body[0], ast.Expr)
        and isinstance(body[0].value, ast.Constant)
        and isinstance(body[0].value.value, str)
    ):
        j = 1
    return [*path, ("body", None, j)], _indent(lines[_first_line(body[j]) - 1])


def add_statement(source: str, label: dict, code: str) -> tuple[str, int]:
    """The version with ``code`` inserted at ``label``; returns (source, first line of code)."""
    lines = source.splitlines(keepends=True)
    mod = ast.parse(source)
    path, indent = expected_position(source, label)
    if "after" in label:
        ln = _line_of(source, label["after"], label.get("nth"))
        lst, i = resolve(mod, locate(mod, ln))
        at = lst[i].end_lineno or lst[i].lineno  # insert after this line
    else:
        lst, i = resolve(mod, path)
        at = _first_line(lst[i]) - 1
    new_lines = lines[:at] + _render(code, indent) + lines[at:]
    return "".join(new_lines), at + 1


def wrap_statement(source: str, label: dict) -> tuple[str, int]:
    """The version with the ``wrap`` line's statement replaced by ``label['code']``.

    For a compound statement (``for epoch in retrolog.loop(...)``) only its header line is
    replaced.
    """
    lines = source.splitlines(keepends=True)
    mod = ast.parse(source)
    ln = _line_of(source, label["wrap"], label.get("nth"))
    lst, i = resolve(mod, locate(mod, ln))
    stmt = lst[i]
    end = ln if hasattr(stmt, "body") else (stmt.end_lineno or ln)
    indent = _indent(lines[ln - 1])
    new_lines = lines[: ln - 1] + _render(label["code"], indent) + lines[end:]
    return "".join(new_lines), ln


def load_family(path: Path) -> tuple[dict[str, str], dict]:
    """(version name -> source, spec) for one family directory."""
    versions = {}
    for p in sorted(path.glob("v*.py.txt")):
        with open(p, encoding="utf-8", newline="") as f:  # keep CRLF files as they are
            versions[p.name.split(".")[0]] = f.read()
    spec = json.loads((path / "spec.json").read_text())
    return versions, spec


def families(root: Path = CORPUS) -> list[Path]:
    """The family directories of the corpus."""
    return sorted(p for p in root.iterdir() if (p / "spec.json").exists())


def code_for(stmt: dict, label: dict | str) -> str:
    """The statement's text as written in one version."""
    if isinstance(label, dict) and "code" in label:
        return label["code"]
    return stmt.get("code", "")


def category_of(stmt: dict, new_v: str, old_v: str, refuse: bool) -> str:
    """The kind of one pair, for the per-kind tables (see the module docstring)."""
    for rule in stmt.get("kinds", []):
        if new_v in rule["new"] and old_v in rule["old"]:
            return str(rule["kind"])
    if refuse:
        return "absent-context"
    return str(stmt.get("category", "regular"))


def make_pairs(root: Path = CORPUS, directions: tuple[str, ...] = ("backward",)) -> list[Pair]:
    """Every (statement, new version, old version) pair of the corpus, in a stable order."""
    out: list[Pair] = []
    for fam in families(root):
        versions, spec = load_family(fam)
        names = list(versions)
        for stmt in spec["statements"]:
            kind = stmt.get("kind", "insert")
            for k, new_v in enumerate(names):
                label_new = stmt["at"][new_v]
                if label_new in ("refuse", "skip"):
                    continue
                if kind == "wrap":
                    new_source, line = wrap_statement(versions[new_v], label_new)
                else:
                    new_source, line = add_statement(
                        versions[new_v], label_new, code_for(stmt, label_new)
                    )
                    line += stmt.get("line_offset", 0)
                for j, old_v in enumerate(names):
                    if j == k:
                        continue
                    direction = "backward" if j < k else "forward"
                    if direction not in directions:
                        continue
                    label_old = stmt["at"][old_v]
                    if label_old == "skip":  # no clear ground truth (see the spec)
                        continue
                    out.append(
                        Pair(
                            family=fam.name,
                            statement=stmt["id"],
                            kind=kind,
                            new_version=new_v,
                            old_version=old_v,
                            new_source=new_source,
                            old_source=versions[old_v],
                            line=line,
                            expected=label_old,
                            direction=direction,
                            extra={
                                "code": code_for(stmt, label_old)
                                if label_old != "refuse"
                                else None,
                                "category": category_of(stmt, new_v, old_v, label_old == "refuse"),
                            },
                        )
                    )
    return out


def _strip_added_imports(out_mod: ast.Module, old_mod: ast.Module) -> None:
    """Remove top-level imports the tool added (the old file's own imports stay)."""
    old_imports = {ast.dump(s) for s in old_mod.body if isinstance(s, (ast.Import, ast.ImportFrom))}
    out_mod.body = [
        s
        for s in out_mod.body
        if not (isinstance(s, (ast.Import, ast.ImportFrom)) and ast.dump(s) not in old_imports)
    ]


def check(pair: Pair, out_source: str | None) -> dict:
    """Judge one tool output: placement, exactness (renames) and parse status.

    ``out_source`` is ``None`` when the tool refused (or failed).  Placement is judged on the
    syntax tree (comments and formatting do not matter here; byte preservation is separate).
    """
    if out_source is None:
        return {"status": "refused_ok" if pair.refuse else "false_refusal", "exact": False}
    try:
        out_mod = ast.parse(out_source)
    except SyntaxError:
        return {"status": "unparsable", "exact": False}
    old_mod = ast.parse(pair.old_source)
    _strip_added_imports(out_mod, old_mod)
    if pair.refuse:
        same = ast.dump(out_mod) == ast.dump(old_mod)
        return {"status": "refused_ok" if same else "wrong", "exact": False}
    label = pair.expected
    assert isinstance(label, dict)
    if "wrap" in label:
        expected_source, _ = wrap_statement(pair.old_source, {**label, "code": pair.extra["code"]})
        exact = ast.dump(out_mod) == ast.dump(ast.parse(expected_source))
        return {"status": "correct" if exact else "wrong", "exact": exact}
    path, _ = expected_position(pair.old_source, label)
    try:
        lst, i = resolve(out_mod, path)
        got = lst.pop(i)
    except (IndexError, AttributeError, TypeError):
        return {"status": "wrong", "exact": False}
    if ast.dump(out_mod) != ast.dump(old_mod):
        return {"status": "wrong", "exact": False}
    exact = ast.dump(got) == ast.dump(ast.parse(pair.extra["code"]).body[0])
    return {"status": "correct", "exact": exact}


def only_insertions(old: str, out: str) -> bool:
    """Whether ``out`` is ``old`` with text inserted and nothing else changed, byte for byte."""
    import difflib

    a, b = old.splitlines(keepends=True), out.splitlines(keepends=True)
    sm = difflib.SequenceMatcher(None, a, b, autojunk=False)
    for tag, i1, i2, j1, j2 in sm.get_opcodes():
        if tag in ("equal", "insert"):
            continue
        if tag == "delete":
            return False
        x, y = "".join(a[i1:i2]), "".join(b[j1:j2])
        inner = difflib.SequenceMatcher(None, x, y, autojunk=False)
        if any(t not in ("equal", "insert") for t, *_ in inner.get_opcodes()):
            return False
    return True
