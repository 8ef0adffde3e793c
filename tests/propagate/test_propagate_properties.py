"""Properties of propagate() over generated scripts (hypothesis).

The scripts are random nests of functions, loops, ``if`` and ``with`` blocks whose simple
statements are all distinct (each carries its own counter), which is the setting the
properties are stated for: with two identical statements in one block, "where it belongs"
has no single answer.
"""

from __future__ import annotations

import ast
import difflib
import os
import re

from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from retrolog.propagation import propagate

SETTINGS = settings(
    max_examples=int(os.environ.get("PROPAGATE_EXAMPLES", "60")),
    deadline=None,
    suppress_health_check=[HealthCheck.too_slow],
)


@st.composite
def programs(draw: st.DrawFn, min_funcs: int = 1) -> str:
    """A random, parseable script of 1 to 3 functions with distinct simple statements."""
    counter = iter(range(10_000))

    def simple(indent: str) -> list[str]:
        k = next(counter)
        form = draw(st.sampled_from(["assign", "call", "aug", "log"]))
        text = {
            "assign": f"v{k} = f{k % 4}(a, {k})",
            "call": f"emit_{k}(a, b)",
            "aug": f"b += {k}",
            "log": f'retrolog.log("m{k}", b * {k})',
        }[form]
        return [indent + text]

    def block(indent: str, depth: int) -> list[str]:
        lines: list[str] = []
        for _ in range(draw(st.integers(1, 4))):
            kinds = ["simple", "simple"] + (["for", "if", "with"] if depth < 3 else [])
            kind = draw(st.sampled_from(kinds))
            if kind == "simple":
                lines += simple(indent)
                continue
            k = next(counter)
            header = {
                "for": f"for i{k} in range({k} + 1):",
                "if": f"if a > {k}:",
                "with": f"with ctx({k}):",
            }[kind]
            lines.append(indent + header)
            lines += block(indent + "    ", depth + 1)
        return lines

    lines = ["import retrolog", ""]
    for j in range(draw(st.integers(min_funcs, 3))):
        lines += ["", f"def fn{j}(a, b):"]
        lines += block("    ", 1)
    return "\n".join(lines) + "\n"


def simple_statements(source: str, removable: bool = False) -> list[tuple[int, ast.stmt, list]]:
    """(line, statement, its statement list) for every simple statement inside a function."""
    out = []

    def walk(body: list[ast.stmt]) -> None:
        for s in body:
            for name in ("body", "orelse"):
                inner = getattr(s, name, None)
                if isinstance(inner, list) and inner and isinstance(inner[0], ast.stmt):
                    walk(inner)
            simple = not hasattr(s, "body") and not isinstance(s, (ast.Import, ast.ImportFrom))
            if simple and (not removable or len(body) >= 2):
                out.append((s.lineno, s, body))

    walk(ast.parse(source).body)
    return out


def without_line(source: str, line: int) -> str:
    lines = source.splitlines(keepends=True)
    return "".join(lines[: line - 1] + lines[line:])


def only_insertions(old: str, new: str) -> bool:
    a, b = old.splitlines(keepends=True), new.splitlines(keepends=True)
    ops = difflib.SequenceMatcher(None, a, b, autojunk=False).get_opcodes()
    return all(tag in ("equal", "insert") for tag, *_ in ops)


@SETTINGS
@given(programs(), st.data())
def test_identical_file_is_a_no_op(source: str, data: st.DataObject) -> None:
    line, _stmt, _body = data.draw(st.sampled_from(simple_statements(source)))
    r = propagate(source, source, line)
    assert r.ok, r.refused
    assert r.source == source
    assert r.placement is not None and r.placement.kind == "present"
    assert r.placement.line == line


@SETTINGS
@given(programs(), st.data())
def test_removed_statement_is_inserted_back_exactly(source: str, data: st.DataObject) -> None:
    candidates = simple_statements(source, removable=True)
    if not candidates:
        return
    line, _stmt, _body = data.draw(st.sampled_from(candidates))
    old = without_line(source, line)
    r = propagate(source, old, line)
    assert r.ok, r.refused
    assert r.source == source
    assert r.placement is not None and r.placement.line == line


@st.composite
def mutated(draw: st.DrawFn) -> tuple[str, str, int]:
    """(new, old, line): old is new without the statement at line, then mutated."""
    source = draw(programs())
    candidates = simple_statements(source, removable=True)
    if not candidates:
        return source, source, simple_statements(source)[0][0]
    line, _stmt, _body = draw(st.sampled_from(candidates))
    old = without_line(source, line)
    for _ in range(draw(st.integers(0, 3))):
        mutation = draw(st.sampled_from(["rename", "drop", "wrap", "constant"]))
        stmts = simple_statements(old, removable=True)
        if mutation == "rename":
            old = old.replace("(a, ", "(alpha, ").replace("a > ", "alpha > ")
            old = old.replace("(a, b):", "(alpha, b):")
        elif mutation == "constant":
            old = old.replace("range(", "range(2 * ", 1)
        elif stmts and mutation == "drop":
            old = without_line(old, draw(st.sampled_from(stmts))[0])
        elif stmts and mutation == "wrap":
            at = draw(st.sampled_from(stmts))[0]
            lines = old.splitlines(keepends=True)
            text = lines[at - 1]
            indent = text[: len(text) - len(text.lstrip())]
            lines[at - 1 : at] = [f"{indent}if flag:\n", "    " + text]
            old = "".join(lines)
    ast.parse(old)
    return source, old, line


@SETTINGS
@given(mutated())
def test_outputs_always_parse_and_only_insert(case: tuple[str, str, int]) -> None:
    new, old, line = case
    r = propagate(new, old, line)
    if not r.ok:
        assert r.source == old and r.refused
        return
    ast.parse(r.source)
    assert only_insertions(old, r.source)
    assert r.placement is not None
    assert 0.0 <= r.confidence <= 1.0


@SETTINGS
@given(programs(min_funcs=2), st.data())
def test_unrelated_edits_elsewhere_do_not_move_the_placement(
    source: str, data: st.DataObject
) -> None:
    tree = ast.parse(source)
    first_fn = tree.body[1]
    assert isinstance(first_fn, ast.FunctionDef) and first_fn.end_lineno is not None
    inside = [c for c in simple_statements(source, removable=True) if c[0] <= first_fn.end_lineno]
    if not inside:
        return
    line, _stmt, _body = data.draw(st.sampled_from(inside))
    old = without_line(source, line)
    # edits in the other functions only: change constants, add statements at their ends
    lines = old.splitlines(keepends=True)
    cut = first_fn.end_lineno - 1  # the first function ends here in ``old``
    head, tail = lines[:cut], lines[cut:]
    tail_text = re.sub(r"(f\d)\(a, ", r"\1(a, 7 + ", "".join(tail))
    extra = data.draw(st.sampled_from(["    extra = compute(a)\n", "    # a comment\n", ""]))
    old2 = "".join(head) + tail_text + extra
    ast.parse(old2)
    r1, r2 = propagate(source, old, line), propagate(source, old2, line)
    assert r1.ok and r2.ok, (r1.refused, r2.refused)
    p1, p2 = r1.placement, r2.placement
    assert p1 is not None and p2 is not None
    assert (p1.anchor, p1.scope, p1.after_line) == (p2.anchor, p2.scope, p2.after_line)
    assert r2.source.splitlines()[: cut + 1] == r1.source.splitlines()[: cut + 1]
