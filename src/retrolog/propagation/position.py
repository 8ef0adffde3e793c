"""Where an anchor is in the old file's text: line, indentation, block, next statement.

An insertion goes after the anchor statement's last line, or at the start of a block (after a
docstring and, at module level, ``from __future__`` imports). A block written on its header's
line (``if x: y``) has no line of its own to insert on: the statement is refused there.
"""

from __future__ import annotations

import ast

from .describe import describe
from .insert import char_col, first_line_of, indent_of, strip_eol
from .place import Anchor, Refusal
from .tree import DEF_KINDS, Tree


def position(to: Tree, lines: list[str], anchor: Anchor) -> tuple[int, str, int, int]:
    """(old line index to insert before, indentation, old block, next old statement)."""
    if anchor.mode == "after":
        x = to.node[anchor.node]
        assert isinstance(x, ast.stmt)
        blk = to.parent[anchor.node]
        kids = to.children[blk]
        i = kids.index(anchor.node)
        prev = to.node[kids[i - 1]] if i else None
        after_semicolon = isinstance(prev, ast.stmt) and prev.end_lineno == x.lineno
        if not after_semicolon:
            own_line(to, lines, x, to.parent[blk])
        next_old = kids[i + 1] if i + 1 < len(kids) else -1
        pos = x.end_lineno or x.lineno
        indent = indent_of(lines[first_line_of(x) - 1])
        return pos, indent, blk, next_old
    blk = anchor.node
    kids = to.children[blk]
    owner_id = to.parent[blk]
    j = 0
    if kids and (to.kind[owner_id] in DEF_KINDS or owner_id == 0) and to.field_name[blk] == "body":
        first = to.node[kids[0]]
        if (
            isinstance(first, ast.Expr)
            and isinstance(first.value, ast.Constant)
            and isinstance(first.value.value, str)
        ):
            j = 1
        if owner_id == 0:
            while j < len(kids):
                s = to.node[kids[j]]
                if isinstance(s, ast.ImportFrom) and s.module == "__future__":
                    j += 1
                else:
                    break
    if j < len(kids):
        first_stmt = to.node[kids[j]]
        assert isinstance(first_stmt, ast.stmt)
        own_line(to, lines, first_stmt, owner_id)
        pos = first_line_of(first_stmt) - 1
        return pos, indent_of(lines[pos]), blk, kids[j]
    if kids:
        prev = to.node[kids[j - 1]]
        assert isinstance(prev, ast.stmt)
        return prev.end_lineno or prev.lineno, indent_of(lines[prev.lineno - 1]), blk, -1
    return len(lines), "", blk, -1


def own_line(to: Tree, lines: list[str], stmt: ast.stmt, owner_id: int) -> None:
    """Refuse when ``stmt`` shares its line with its block's header (``if x: y``)."""
    line = lines[stmt.lineno - 1]
    if line[: char_col(line, stmt.col_offset)].strip():
        raise Refusal(
            f"the old block of `{describe(to, owner_id)}` holding line {stmt.lineno} "
            "is written on a single line",
            "single-line-block",
        )


def anchor_text(to: Tree, lines: list[str], anchor: Anchor) -> str | None:
    """The old line a statement is placed after, stripped (``None`` at a block start)."""
    if anchor.mode != "after":
        return None
    x = to.node[anchor.node]
    assert isinstance(x, ast.stmt)
    return strip_eol(lines[x.lineno - 1]).strip()
