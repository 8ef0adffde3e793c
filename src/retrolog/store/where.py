"""The one ``--where`` grammar and its reference evaluation, standard library only.

A ``--where`` clause is an SQL condition over the columns of a table (``dataframe``, ``runs()``,
the UI's tables, the rows the replay planner selects from). This module owns it:

- ``parse``: the common part of SQLite's expression grammar (comparisons, ``AND``/``OR``/``NOT``,
  ``IN``, ``BETWEEN``, ``IS [NOT] NULL``, ``LIKE``, ``+ - *``, parentheses, number and string
  literals, column names bare or quoted) as a small syntax tree, which
  ``relational.where`` evaluates vectorised over a DataFrame (the fast path). Anything else
  raises ``Unsupported``: valid SQL the fast path leaves to SQLite.
- ``select``: the reference evaluation, SQLite itself over an in-memory table built from plain
  column values (bound, never formatted into SQL), read-only (``store.readonly``) and bounded
  by the current query time limit (``store.limits``). Every clause the fast path declines runs
  here, and the replay coordinator uses it directly (it must not import pandas or numpy).
- ``rows_columns``: dict rows typed the way a DataFrame of them would be stored, so a clause
  selects the same rows from the planner's rows as from the equivalent frame.
"""

from __future__ import annotations

import re
import sqlite3
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

from ..errors import QueryTimeout, UsageError
from .limits import bound_sqlite, current_limit
from .readonly import authorize_read_only

READ_ONLY_HINT = "queries are read-only (SELECT only; no ATTACH, PRAGMA or writes)"


class QueryError(UsageError):
    """User SQL was rejected or failed; the message says why."""


class QueryTimedOut(QueryError, QueryTimeout):
    """User SQL ran past its time limit or lost its client (both ``QueryError`` and
    ``errors.QueryTimeout``, so every handler of either reports it in one line)."""


class Unsupported(Exception):
    """The condition is valid SQL the fast path does not evaluate: SQLite decides it instead."""


def explain(exc: Exception) -> str:
    """An SQLite error as a user reads it (the read-only rule named when it was the cause)."""
    message = str(exc)
    if "not authorized" in message:
        return f"{message}: {READ_ONLY_HINT}"
    return message


# --- tokens ---------------------------------------------------------------------------------

_TOKEN = re.compile(
    r"""\s*(?:
      (?P<num>(?:\d+\.?\d*|\.\d+)(?:[eE][+-]?\d+)?)
    | (?P<str>'(?:[^']|'')*')
    | (?P<qid>"(?:[^"]|"")*"|`(?:[^`]|``)*`|\[[^\]]*\])
    | (?P<word>[A-Za-z_][A-Za-z0-9_$]*)
    | (?P<op><=|>=|==|!=|<>|\|\||[=<>+\-*/%(),])
    )""",
    re.X,
)
_KEYWORDS = {"AND", "OR", "NOT", "IN", "BETWEEN", "IS", "NULL", "LIKE", "TRUE", "FALSE"}


@dataclass
class Tok:
    kind: str  # num, str, id, qid, kw, op, end
    text: str


def tokens(where: str) -> list[Tok]:
    """The clause as tokens (``Unsupported`` for text outside the grammar's alphabet)."""
    out: list[Tok] = []
    pos = 0
    text = where.rstrip()
    while pos < len(text):
        match = _TOKEN.match(text, pos)
        if match is None or match.end() == pos:
            raise Unsupported(text[pos:])
        pos = match.end()
        kind = match.lastgroup or ""
        value = match.group(kind)
        if kind == "word":
            upper = value.upper()
            out.append(Tok("kw", upper) if upper in _KEYWORDS else Tok("id", value))
        elif kind == "qid":
            quote = value[0]
            inner = value[1:-1]
            out.append(Tok("qid", inner if quote == "[" else inner.replace(quote * 2, quote)))
        elif kind == "str":
            out.append(Tok("str", value[1:-1].replace("''", "'")))
        else:
            out.append(Tok(kind, value))
    out.append(Tok("end", ""))
    return out


def identifiers(where: str) -> list[str]:
    """The column names a condition mentions, in order (empty if it cannot be tokenised)."""
    try:
        toks = tokens(where)
    except Unsupported:
        return []
    names = [t.text for t in toks if t.kind in ("id", "qid")]
    called = {t.text for t, nxt in zip(toks, toks[1:], strict=False) if nxt.text == "("}
    return list(dict.fromkeys(n for n in names if n not in called))


# --- syntax tree ----------------------------------------------------------------------------
# Nodes are tuples, first item the kind:
#   ("or"|"and", left, right)         ("not", operand)
#   ("cmp", op, left, right)          ("isnull", operand, negated)
#   ("in", operand, [items], negated) ("between", operand, low, high, negated)
#   ("like", operand, pattern, negated)
#   ("arith", op, left, right)        ("sign", "-"|"+", operand)
#   ("num", int|float)  ("str", text)  ("null",)  ("col", name, quoted)  ("group", inner)
Node = tuple[Any, ...]

COMPARISONS = ("=", "==", "!=", "<>", "<", "<=", ">", ">=")


class _Parser:
    def __init__(self, toks: list[Tok]) -> None:
        self.toks = toks
        self.pos = 0

    def peek(self, *texts: str) -> bool:
        tok = self.toks[self.pos]
        return tok.text in texts and tok.kind in ("kw", "op")

    def take(self) -> Tok:
        tok = self.toks[self.pos]
        self.pos += 1
        return tok

    def expect(self, text: str) -> None:
        if not self.peek(text):
            raise Unsupported(text)
        self.pos += 1

    def clause(self) -> Node:
        node = self.or_()
        if self.toks[self.pos].kind != "end":
            raise Unsupported(self.toks[self.pos].text)
        return node

    def or_(self) -> Node:
        left = self.and_()
        while self.peek("OR"):
            self.take()
            left = ("or", left, self.and_())
        return left

    def and_(self) -> Node:
        left = self.not_()
        while self.peek("AND"):
            self.take()
            left = ("and", left, self.not_())
        return left

    def not_(self) -> Node:
        if self.peek("NOT"):
            self.take()
            return ("not", self.not_())
        return self.comparison()

    def comparison(self) -> Node:
        left = self.additive()
        if self.peek(*COMPARISONS):
            op = self.take().text
            return ("cmp", op, left, self.additive())
        if self.peek("IS"):
            self.take()
            negated = self.peek("NOT") and bool(self.take())
            self.expect("NULL")
            return ("isnull", left, negated)
        negated = self.peek("NOT") and bool(self.take())
        if self.peek("IN"):
            self.take()
            self.expect("(")
            items = [self.additive()]
            while self.peek(","):
                self.take()
                items.append(self.additive())
            self.expect(")")
            return ("in", left, items, negated)
        if self.peek("BETWEEN"):
            self.take()
            low = self.additive()
            self.expect("AND")
            return ("between", left, low, self.additive(), negated)
        if self.peek("LIKE"):
            self.take()
            return ("like", left, self.additive(), negated)
        if negated:
            raise Unsupported("NOT")
        return left

    def additive(self) -> Node:
        left = self.multiplicative()
        while self.peek("+", "-"):
            op = self.take().text
            left = ("arith", op, left, self.multiplicative())
        return left

    def multiplicative(self) -> Node:
        left = self.unary()
        while self.peek("*", "/", "%", "||"):
            op = self.take().text
            if op != "*":
                raise Unsupported(op)  # SQLite's integer division and text concatenation
            left = ("arith", op, left, self.unary())
        return left

    def unary(self) -> Node:
        if self.peek("-", "+"):
            sign = self.take().text
            return ("sign", sign, self.unary())
        return self.primary()

    def primary(self) -> Node:
        tok = self.take()
        if tok.kind == "num":
            number = float(tok.text)
            is_int = re.fullmatch(r"\d+", tok.text) is not None and number < 2**62
            return ("num", int(tok.text) if is_int else number)
        if tok.kind == "str":
            return ("str", tok.text)
        if tok.kind == "kw" and tok.text == "NULL":
            return ("null",)
        if tok.kind == "kw" and tok.text in ("TRUE", "FALSE"):
            return ("num", int(tok.text == "TRUE"))
        if tok.kind in ("id", "qid"):
            if self.peek("("):
                raise Unsupported("function call")
            return ("col", tok.text, tok.kind == "qid")
        if tok.kind == "op" and tok.text == "(":
            inner = self.or_()
            self.expect(")")
            return ("group", inner)
        raise Unsupported(tok.text or "end of condition")


def parse(where: str) -> Node:
    """The clause's syntax tree, or ``Unsupported`` when it uses SQL beyond the common part."""
    return _Parser(tokens(where)).clause()


# --- the reference evaluation: SQLite over plain values -------------------------------------


@dataclass
class Column:
    """One column of the table a clause filters: its SQLite type and its values (None: NULL)."""

    sql_type: str  # INTEGER, REAL, TEXT (or any type name SQLite accepts)
    values: Sequence[Any]


def _quote(name: str) -> str:
    return '"' + name.replace('"', '""') + '"'


def select(columns: Mapping[str, Column], n_rows: int, where: str) -> list[int]:
    """Indexes of the rows (0..n_rows-1) matching ``where``, evaluated by SQLite in an in-memory
    table of ``columns``: values are bound, the connection can only read and stops at the
    current query time limit. ``QueryError`` for a bad clause, ``QueryTimedOut`` past the limit."""
    if not where or not where.strip():
        return list(range(n_rows))
    names = list(columns)
    conn = sqlite3.connect(":memory:")
    try:
        declared = ", ".join(f"{_quote(name)} {columns[name].sql_type}" for name in names)
        try:
            conn.execute(f"CREATE TABLE frame ({declared}{', ' if names else ''}__row__ INTEGER)")
        except sqlite3.Error as exc:  # e.g. two columns whose names differ only in case
            raise QueryError(f"bad --where {where!r}: {explain(exc)}") from None
        marks = ", ".join("?" * (len(names) + 1))
        data = [columns[name].values for name in names]
        conn.executemany(
            f"INSERT INTO frame VALUES ({marks})",
            zip(*data, range(n_rows), strict=True) if data else ((i,) for i in range(n_rows)),
        )
        conn.set_authorizer(authorize_read_only)
        limit = current_limit()
        bound_sqlite(conn, limit)
        try:
            return [r[0] for r in conn.execute(f"SELECT __row__ FROM frame WHERE {where}")]
        except sqlite3.Error as exc:
            if limit.fired:
                raise QueryTimedOut(str(limit.error())) from None
            raise QueryError(f"bad --where {where!r}: {explain(exc)}") from None
    finally:
        conn.close()


def _missing(value: Any) -> bool:
    return value is None or (isinstance(value, float) and value != value)


def sql_type(values: Sequence[Any]) -> str:
    """The column type a DataFrame built from these values would be stored with (``to_sql``):
    whole numbers without gaps INTEGER, numbers REAL (a gap makes pandas use floats), else TEXT."""
    present = [v for v in values if not _missing(v)]
    if all(isinstance(v, (bool, int)) for v in present):
        return "INTEGER" if present and len(present) == len(values) else "REAL"
    if all(isinstance(v, (bool, int, float)) for v in present):
        return "REAL"
    return "TEXT"


def sql_cell(value: Any, declared: str) -> Any:
    """A value as it is bound into a column of type ``declared`` (None for NULL; objects of
    other types as their text in TEXT columns)."""
    if _missing(value):
        return None
    if declared == "TEXT" and not isinstance(value, (int, float, str, bytes)):
        return str(value)
    return value


def rows_columns(
    rows: Sequence[Mapping[str, Any]], skip: tuple[str, ...] = ()
) -> dict[str, Column]:
    """Dict rows as typed columns (``skip``: keys that are not columns), for ``select``."""
    names = list(dict.fromkeys(k for row in rows for k in row if k not in skip))
    out: dict[str, Column] = {}
    for name in names:
        raw = [row.get(name) for row in rows]
        declared = sql_type(raw)
        out[name] = Column(declared, [sql_cell(v, declared) for v in raw])
    return out


def select_rows(
    rows: Sequence[Mapping[str, Any]], where: str, skip: tuple[str, ...] = ()
) -> list[int]:
    """Indexes of dict ``rows`` matching ``where`` (all of them when it is empty)."""
    if not where or not where.strip():
        return list(range(len(rows)))
    return select(rows_columns(rows, skip), len(rows), where)
