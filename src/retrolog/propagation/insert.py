"""Text-level edits of the old file: insert lines, wrap an expression, keep every other byte.

Nothing here regenerates code from a tree: the inserted statement is the new file's own text
(renamed identifiers substituted at their exact positions, re-indented to the old block's
indentation string, tabs included), and the old file is only ever split into lines and joined
back with the new lines in between.  Positions from :mod:`ast` are UTF-8 byte offsets; they are
converted to character offsets line by line.
"""

from __future__ import annotations

import ast
import re

_LINE_RE = re.compile(r"[^\r\n]*(?:\r\n|\r|\n)|[^\r\n]+\Z")
_WS_RE = re.compile(r"[ \t\f]*")
_NEWLINE_RUN = re.compile(r"[ \t\f]*(?:\r\n|\r|\n)[ \t\f\r\n]*")


def split_lines(source: str) -> list[str]:
    """Split like the Python tokenizer (``\\r\\n``, ``\\r``, ``\\n``), keeping line ends."""
    return _LINE_RE.findall(source)


def newline_of(lines: list[str]) -> str:
    """The file's line-ending convention (that of its first line that has one)."""
    for line in lines:
        if line.endswith("\r\n"):
            return "\r\n"
        if line.endswith("\n"):
            return "\n"
        if line.endswith("\r"):
            return "\r"
    return "\n"


def indent_of(line: str) -> str:
    """The leading whitespace of a line."""
    m = _WS_RE.match(line)
    return m.group(0) if m else ""


def strip_eol(line: str) -> str:
    """A line without its line ending."""
    return line.rstrip("\r\n")


def char_col(line: str, byte_col: int) -> int:
    """Convert an ast UTF-8 byte column into a character index of ``line``."""
    if line.isascii():
        return byte_col
    return len(line.encode("utf-8")[:byte_col].decode("utf-8", errors="ignore"))


def indent_unit(module: ast.Module, lines: list[str]) -> str:
    """The file's indentation step: what its first nested block adds to its header's indent."""
    for node in ast.walk(module):
        body = getattr(node, "body", None)
        if not isinstance(body, list) or not body or not isinstance(node, ast.stmt):
            continue
        first = body[0]
        if first.lineno == node.lineno or first.lineno > len(lines):
            continue
        outer = indent_of(lines[node.lineno - 1])
        inner = indent_of(lines[first.lineno - 1])
        if inner.startswith(outer) and len(inner) > len(outer):
            return inner[len(outer) :]
    return "    "


def first_line_of(stmt: ast.stmt) -> int:
    """First line of a statement, decorators included."""
    decorators = getattr(stmt, "decorator_list", None) or []
    return min([stmt.lineno] + [d.lineno for d in decorators])


class Snippet:
    """A statement's text cut out of the new file: lines relative to its own indentation.

    ``first``: first line without indentation; ``rest``: the following raw lines (no line
    end) with "inside a multi-line string" flags; ``indent``: the statement's indentation in
    the new file.
    """

    def __init__(
        self, first: str, rest: list[tuple[str, bool]], indent: str, warnings: list[str]
    ) -> None:
        self.first = first
        self.rest = rest
        self.indent = indent
        self.warnings = warnings


def _replacements(
    stmt: ast.AST, names: dict[str, str], attrs: dict[tuple[str, str], str]
) -> list[tuple[int, int, int, str, str]]:
    """(line, byte start, byte end, expected text, replacement) for every renamed identifier."""
    out = []
    replaced: set[int] = set()  # Name nodes inside attributes replaced whole
    for n in ast.walk(stmt):
        if (
            isinstance(n, ast.Attribute)
            and isinstance(n.value, ast.Name)
            and (n.value.id, n.attr) in attrs
            and n.end_lineno is not None
            and n.end_col_offset is not None
        ):
            new = attrs[(n.value.id, n.attr)]
            end = n.end_col_offset
            if new.startswith("="):
                if n.lineno == n.end_lineno:
                    replaced.add(id(n.value))
                    text = f"{n.value.id}.{n.attr}"
                    out.append((n.lineno, n.col_offset, end, text, new[1:]))
            else:
                out.append((n.end_lineno, end - len(n.attr.encode()), end, n.attr, new))
    for n in ast.walk(stmt):
        if isinstance(n, ast.Name) and n.id in names and id(n) not in replaced:
            out.append((n.lineno, n.col_offset, n.end_col_offset or 0, n.id, names[n.id]))
    return out


def _rename_lines(
    lines: dict[int, bytes], repl: list[tuple[int, int, int, str, str]], warnings: list[str]
) -> None:
    """Apply identifier replacements to byte lines in place, right to left."""
    for lineno, start, end, expect, new in sorted(repl, key=lambda r: (r[0], -r[1])):
        line = lines.get(lineno)
        if line is None:
            continue
        if line[start:end] != expect.encode():
            warnings.append(f"could not rename `{expect}` at line {lineno}")
            continue
        lines[lineno] = line[:start] + new.encode() + line[end:]


def cut_statement(
    lines: list[str],
    stmt: ast.stmt,
    names: dict[str, str],
    attrs: dict[tuple[str, str], str],
) -> Snippet:
    """Cut ``stmt`` (with its trailing comment) out of ``lines``, renaming identifiers."""
    first = first_line_of(stmt)
    last = stmt.end_lineno or stmt.lineno
    start_col = stmt.col_offset if first == stmt.lineno else None
    raw = {i: strip_eol(lines[i - 1]).encode("utf-8") for i in range(first, last + 1)}
    warnings: list[str] = []
    # the end position must be cut before renaming shifts it
    end_col = stmt.end_col_offset or len(raw[last])
    tail = raw[last][end_col:]
    keep_tail = tail.strip().startswith(b"#")
    cut_end = len(raw[last]) if keep_tail else end_col
    raw[last] = raw[last][:cut_end]
    _rename_lines(raw, _replacements(stmt, names, attrs), warnings)
    # lines strictly inside a multi-line string literal are copied verbatim
    interior: set[int] = set()
    for n in ast.walk(stmt):
        if isinstance(n, (ast.Constant, ast.JoinedStr)) and (n.end_lineno or 0) > n.lineno:
            interior.update(range(n.lineno + 1, (n.end_lineno or 0) + 1))
    first_text = raw[first].decode("utf-8")
    indent = indent_of(first_text)
    if start_col is not None:
        # a statement after ``;`` starts mid-line: keep only its own text
        first_text = raw[first][start_col:].decode("utf-8")
    else:
        first_text = first_text[len(indent) :]
    rest = [(raw[i].decode("utf-8"), i in interior) for i in range(first + 1, last + 1)]
    return Snippet(first_text.rstrip(), rest, indent, warnings)


def render(snippet: Snippet, indent: str, new_unit: str, old_unit: str, nl: str) -> list[str]:
    """The snippet's lines at the old block's indentation, each ending with ``nl``."""
    out = [indent + snippet.first + nl]
    base = snippet.indent
    for text, interior in snippet.rest:
        if interior:
            out.append(text + nl)
            continue
        if not text.strip():
            out.append(nl)
            continue
        if text.startswith(base):
            rel = text[len(base) :]
            lead = indent_of(rel)
            if (
                new_unit
                and lead
                and new_unit != old_unit
                and lead == new_unit * (len(lead) // len(new_unit))
            ):
                lead = old_unit * (len(lead) // len(new_unit))
            out.append(indent + lead + rel[len(indent_of(rel)) :].rstrip() + nl)
        else:
            out.append(text.rstrip() + nl)
    return out


def wrapper_parts(
    lines: list[str],
    call: ast.Call,
    inner: ast.expr,
    names: dict[str, str],
    attrs: dict[tuple[str, str], str],
) -> tuple[str, str]:
    """The text of a ``log(key, <inner>)`` wrapper before and after ``inner``, renamed."""
    raw = {
        i: strip_eol(lines[i - 1]).encode("utf-8")
        for i in range(call.lineno, (call.end_lineno or call.lineno) + 1)
    }
    # rename only identifiers outside the inner expression
    repl = [r for r in _replacements(call, names, attrs) if not _inside(r[0], r[1], inner)]
    # compute the cut points before renaming shifts offsets: use markers
    marks = {
        "a": (call.lineno, call.col_offset),
        "b": (inner.lineno, inner.col_offset),
        "c": (inner.end_lineno or inner.lineno, inner.end_col_offset or 0),
        "d": (call.end_lineno or call.lineno, call.end_col_offset or 0),
    }
    warnings: list[str] = []
    pieces = _segments(raw, marks, repl, warnings)
    return _one_line(pieces[0]), _one_line(pieces[1])


def _inside(lineno: int, col: int, node: ast.expr) -> bool:
    start = (node.lineno, node.col_offset)
    end = (node.end_lineno or node.lineno, node.end_col_offset or 0)
    return start <= (lineno, col) < end


def _segments(
    raw: dict[int, bytes],
    marks: dict[str, tuple[int, int]],
    repl: list[tuple[int, int, int, str, str]],
    warnings: list[str],
) -> tuple[str, str]:
    """Text between marks a..b and c..d, with replacements applied inside them."""

    def text(lo: tuple[int, int], hi: tuple[int, int]) -> str:
        parts = []
        for i in range(lo[0], hi[0] + 1):
            line = raw[i]
            s = lo[1] if i == lo[0] else 0
            e = hi[1] if i == hi[0] else len(line)
            chunk = line[s:e]
            for lineno, rs, re_, expect, new in sorted(repl, key=lambda r: -r[1]):
                if lineno == i and s <= rs and re_ <= e:
                    if chunk[rs - s : re_ - s] == expect.encode():
                        chunk = chunk[: rs - s] + new.encode() + chunk[re_ - s :]
                    else:
                        warnings.append(f"could not rename `{expect}`")
            parts.append(chunk.decode("utf-8"))
        return "\n".join(parts)

    return text(marks["a"], marks["b"]), text(marks["c"], marks["d"])


def _one_line(text: str) -> str:
    """Collapse a wrapper fragment that spans lines onto one line."""
    if "\n" not in text:
        return text
    text = _NEWLINE_RUN.sub(" ", text)
    text = re.sub(r"([(\[{]) ", r"\1", text)
    return re.sub(r" ([)\]}])", r"\1", text).replace(", )", ")")


class Edit:
    """An insertion of whole lines before old line index ``pos`` (0-based)."""

    def __init__(self, pos: int, order: tuple[int, int], lines: list[str]) -> None:
        self.pos = pos
        self.order = order
        self.lines = lines


class Wrap:
    """Insert ``prefix`` before and ``suffix`` after an old expression (1-based line, byte cols)."""

    def __init__(
        self, start: tuple[int, int], end: tuple[int, int], prefix: str, suffix: str
    ) -> None:
        self.start = start
        self.end = end
        self.prefix = prefix
        self.suffix = suffix


def apply_edits(
    old_lines: list[str], edits: list[Edit], wraps: list[Wrap]
) -> tuple[str, list[int]]:
    """Return the edited text and, per edit (in the given order), its first output line."""
    lines = list(old_lines)
    points: list[tuple[int, int, str]] = []
    for w in wraps:
        points.append((w.end[0], w.end[1], w.suffix))
        points.append((w.start[0], w.start[1], w.prefix))
    # right to left so that earlier byte offsets stay valid
    for lineno, col, text in sorted(points, key=lambda p: (p[0], p[1]), reverse=True):
        cur = lines[lineno - 1]
        c = char_col(old_lines[lineno - 1], col)
        lines[lineno - 1] = cur[:c] + text + cur[c:]
    nl = newline_of(old_lines)
    order = sorted(range(len(edits)), key=lambda i: (edits[i].pos, edits[i].order))
    first_line = [0] * len(edits)
    out: list[str] = []
    count = 0  # complete lines emitted so far
    k = 0
    for i in range(len(lines) + 1):
        while k < len(order) and edits[order[k]].pos == i:
            e = edits[order[k]]
            chunk = e.lines
            if i == len(lines) and lines and not lines[-1].endswith(("\n", "\r")):
                # old file without a final newline: the insertion brings its own
                text = "".join(chunk)
                chunk = [nl + (text[: -len(nl)] if text.endswith(nl) else text)]
            first_line[order[k]] = count + 1
            count += len(e.lines)
            out.extend(chunk)
            k += 1
        if i < len(lines):
            out.append(lines[i])
            count += 1
    return "".join(out), first_line
