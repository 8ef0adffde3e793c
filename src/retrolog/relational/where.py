"""``--where`` conditions evaluated on the DataFrame they filter, vectorised with numpy.

``dataframe(where=...)`` used to copy the whole frame into an in-memory SQLite table to run the
condition there (2.4 s at 10^6 rows against a few milliseconds in numpy). This module parses the
common part of SQLite's expression grammar (comparisons, ``AND``/``OR``/``NOT``, ``IN``,
``BETWEEN``, ``IS [NOT] NULL``, ``LIKE``, ``+ - *``, parentheses, number and string literals,
column names bare or quoted, case-insensitive as in SQLite) and evaluates it with SQL's
three-valued logic: a row whose condition is NULL is not selected.

Anything outside that part (functions, ``/`` and ``%`` with SQLite's integer division, ``||``,
comparisons between numbers and text, whose result depends on SQLite's type affinities, columns
of mixed types) is handed to ``access.filter_frame`` with only the columns the condition names,
so the result is SQLite's in every case: the two paths never disagree, one is just faster.
"""

from __future__ import annotations

import re
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import numpy as np
import pandas as pd

from .access import QueryError, filter_frame

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
_NO, _YES = np.False_, np.True_  # numpy booleans: ``~`` on a Python bool is -1 or -2
_KEYWORDS = {"AND", "OR", "NOT", "IN", "BETWEEN", "IS", "NULL", "LIKE", "TRUE", "FALSE"}


class _Unsupported(Exception):
    """The condition is valid SQL this module does not evaluate: SQLite decides it instead."""


@dataclass
class _Tok:
    kind: str  # num, str, id, kw, op, end
    text: str


def _tokens(where: str) -> list[_Tok]:
    out: list[_Tok] = []
    pos = 0
    text = where.rstrip()
    while pos < len(text):
        match = _TOKEN.match(text, pos)
        if match is None or match.end() == pos:
            raise _Unsupported(text[pos:])
        pos = match.end()
        kind = match.lastgroup or ""
        value = match.group(kind)
        if kind == "word":
            upper = value.upper()
            out.append(_Tok("kw", upper) if upper in _KEYWORDS else _Tok("id", value))
        elif kind == "qid":
            quote = value[0]
            inner = value[1:-1]
            out.append(_Tok("qid", inner if quote == "[" else inner.replace(quote * 2, quote)))
        elif kind == "str":
            out.append(_Tok("str", value[1:-1].replace("''", "'")))
        else:
            out.append(_Tok(kind, value))
    out.append(_Tok("end", ""))
    return out


def identifiers(where: str) -> list[str]:
    """The column names a condition mentions, in order (empty if it cannot be tokenised)."""
    try:
        tokens = _tokens(where)
    except _Unsupported:
        return []
    names = [t.text for i, t in enumerate(tokens) if t.kind in ("id", "qid")]
    called = {t.text for t, nxt in zip(tokens, tokens[1:], strict=False) if nxt.text == "("}
    return list(dict.fromkeys(n for n in names if n not in called))


@dataclass
class _Val:
    """A column or literal: ``kind`` is "num" or "str"; ``null`` marks SQL NULLs."""

    kind: str
    data: Any  # ndarray, or a scalar for literals
    null: Any  # bool ndarray, or a bool


@dataclass
class _Bool:
    """A three-valued predicate: ``true`` where it holds, ``null`` where it is NULL."""

    true: Any
    null: Any


class _Parser:
    def __init__(self, tokens: list[_Tok], column: Callable[[str, bool], _Val]) -> None:
        self.tokens = tokens
        self.pos = 0
        self.column = column

    def peek(self, *texts: str) -> bool:
        return self.tokens[self.pos].text in texts and self.tokens[self.pos].kind in ("kw", "op")

    def take(self) -> _Tok:
        tok = self.tokens[self.pos]
        self.pos += 1
        return tok

    def expect(self, text: str) -> None:
        if not self.peek(text):
            raise _Unsupported(text)
        self.pos += 1

    def parse(self) -> _Bool:
        result = _truth(self.or_())
        if self.tokens[self.pos].kind != "end":
            raise _Unsupported(self.tokens[self.pos].text)
        return result

    def or_(self) -> _Val | _Bool:
        left = self.and_()
        while self.peek("OR"):
            self.take()
            a, b = _truth(left), _truth(self.and_())
            true = a.true | b.true
            false = (~a.true & ~a.null) & (~b.true & ~b.null)
            left = _Bool(true, ~true & ~false)
        return left

    def and_(self) -> _Val | _Bool:
        left = self.not_()
        while self.peek("AND"):
            self.take()
            a, b = _truth(left), _truth(self.not_())
            true = a.true & b.true
            false = (~a.true & ~a.null) | (~b.true & ~b.null)
            left = _Bool(true, ~true & ~false)
        return left

    def not_(self) -> _Val | _Bool:
        if self.peek("NOT"):
            self.take()
            inner = _truth(self.not_())
            return _Bool(~inner.true & ~inner.null, inner.null)
        return self.comparison()

    def comparison(self) -> _Val | _Bool:
        left = self.additive()
        if self.peek("=", "==", "!=", "<>", "<", "<=", ">", ">="):
            op = self.take().text
            return _compare(left, op, self.additive())
        if self.peek("IS"):
            self.take()
            negate = self.peek("NOT") and bool(self.take())
            self.expect("NULL")
            return _Bool(~left.null if negate else left.null, _NO)
        negate = self.peek("NOT") and bool(self.take())
        if self.peek("IN"):
            self.take()
            result = self.in_list(left)
        elif self.peek("BETWEEN"):
            self.take()
            low = self.additive()
            self.expect("AND")
            high = self.additive()
            a, b = _compare(left, ">=", low), _compare(left, "<=", high)
            true = a.true & b.true
            false = (~a.true & ~a.null) | (~b.true & ~b.null)
            result = _Bool(true, ~true & ~false)
        elif self.peek("LIKE"):
            self.take()
            result = _like(left, self.additive())
        elif negate:
            raise _Unsupported("NOT")
        else:
            return left
        return _Bool(~result.true & ~result.null, result.null) if negate else result

    def in_list(self, left: _Val) -> _Bool:
        self.expect("(")
        items = [self.additive()]
        while self.peek(","):
            self.take()
            items.append(self.additive())
        self.expect(")")
        if any(not np.isscalar(i.data) for i in items):
            raise _Unsupported("IN with columns")
        values = [i.data for i in items if not i.null]
        if any(_kind_of(v) != left.kind for v in values):
            raise _Unsupported("IN over mixed types")
        if np.ndim(left.data) == 0:
            raise _Unsupported("IN over a literal")
        hit = pd.Series(left.data).isin(values).to_numpy() & ~left.null
        has_null = any(bool(i.null) for i in items)
        null = left.null | (~hit & has_null)
        return _Bool(hit, null)

    def additive(self) -> _Val:
        left = self.multiplicative()
        while self.peek("+", "-"):
            op = self.take().text
            left = _arith(left, op, self.multiplicative())
        return left

    def multiplicative(self) -> _Val:
        left = self.unary()
        while self.peek("*", "/", "%", "||"):
            op = self.take().text
            if op != "*":
                raise _Unsupported(op)  # SQLite's integer division and text concatenation
            left = _arith(left, op, self.unary())
        return left

    def unary(self) -> _Val:
        if self.peek("-", "+"):
            sign = self.take().text
            value = self.unary()
            if value.kind != "num":
                raise _Unsupported("sign of text")
            return _Val("num", -value.data if sign == "-" else value.data, value.null)
        return self.primary()

    def primary(self) -> _Val:
        tok = self.take()
        if tok.kind == "num":
            number = float(tok.text)
            is_int = re.fullmatch(r"\d+", tok.text) is not None and number < 2**62
            return _Val("num", int(tok.text) if is_int else number, _NO)
        if tok.kind == "str":
            return _Val("str", tok.text, _NO)
        if tok.kind == "kw" and tok.text == "NULL":
            return _Val("num", 0, _YES)
        if tok.kind == "kw" and tok.text in ("TRUE", "FALSE"):
            return _Val("num", int(tok.text == "TRUE"), _NO)
        if tok.kind in ("id", "qid"):
            if self.peek("("):
                raise _Unsupported("function call")
            return self.column(tok.text, tok.kind == "qid")
        if tok.kind == "op" and tok.text == "(":
            inner = self.or_()
            self.expect(")")
            if isinstance(inner, _Bool):  # a parenthesised predicate used as a value
                return _Val("num", inner.true.astype(np.int64), inner.null)
            return inner
        raise _Unsupported(tok.text or "end of condition")


def _kind_of(value: Any) -> str:
    return "str" if isinstance(value, str) else "num"


def _truth(value: _Val | _Bool) -> _Bool:
    if isinstance(value, _Bool):
        return value
    if value.kind != "num":
        raise _Unsupported("text as a condition")
    return _Bool((value.data != 0) & ~value.null, value.null)


_OPS: dict[str, Callable[[Any, Any], Any]] = {
    "=": np.equal,
    "==": np.equal,
    "!=": np.not_equal,
    "<>": np.not_equal,
    "<": np.less,
    "<=": np.less_equal,
    ">": np.greater,
    ">=": np.greater_equal,
}


def _compare(left: _Val, op: str, right: _Val) -> _Bool:
    if left.kind != right.kind:
        raise _Unsupported("number compared with text")  # SQLite's affinity rules decide
    null = np.logical_or(left.null, right.null)
    with np.errstate(invalid="ignore"):
        true = np.asarray(_OPS[op](left.data, right.data), dtype=bool) & ~null
    return _Bool(true, null)


_ARITH: dict[str, Callable[[Any, Any], Any]] = {"+": np.add, "-": np.subtract, "*": np.multiply}


def _arith(left: _Val, op: str, right: _Val) -> _Val:
    if left.kind != "num" or right.kind != "num":
        raise _Unsupported("arithmetic on text")
    with np.errstate(all="ignore"):
        approx = _ARITH[op](np.asarray(left.data, np.float64), np.asarray(right.data, np.float64))
        if bool(np.any(np.abs(approx) > 2.0**62)):
            raise _Unsupported("integers past int64")  # SQLite turns them into REALs
        data = _ARITH[op](left.data, right.data)
    return _Val("num", data, np.logical_or(left.null, right.null))


def _like(left: _Val, pattern: _Val) -> _Bool:
    if left.kind != "str" or pattern.kind != "str" or not isinstance(pattern.data, str):
        raise _Unsupported("LIKE")
    regex = "".join(".*" if c == "%" else "." if c == "_" else re.escape(c) for c in pattern.data)
    compiled = re.compile(regex, re.S | re.I)  # SQLite's LIKE ignores ASCII case
    hit = np.fromiter(
        (not n and compiled.fullmatch(v) is not None for v, n in zip(left.data, left.null)),
        dtype=bool,
        count=len(left.data),
    )
    return _Bool(hit, left.null)


def _column_value(series: pd.Series | pd.DataFrame) -> _Val:
    """A column as filter_frame would store it in SQLite: datetimes as epoch seconds."""
    if not isinstance(series, pd.Series):
        raise _Unsupported("a name that labels several columns")
    if pd.api.types.is_datetime64_any_dtype(series):
        null = series.isna().to_numpy()
        return _Val("num", series.astype("int64").to_numpy() / 1e9, null)
    if pd.api.types.is_bool_dtype(series) and series.dtype != object:
        return _Val("num", series.to_numpy(dtype=np.int64), np.zeros(len(series), dtype=bool))
    if pd.api.types.is_numeric_dtype(series):
        null = series.isna().to_numpy()
        data = series.to_numpy(dtype="float64", na_value=np.nan)
        if pd.api.types.is_integer_dtype(series) and not null.any():
            data = series.to_numpy(dtype=np.int64)
        return _Val("num", data, null)
    if series.dtype == object or pd.api.types.is_string_dtype(series):
        values = series.to_numpy(dtype=object)
        null = pd.isna(series).to_numpy()
        present = values[~null]
        if all(isinstance(v, str) for v in present):
            return _Val("str", np.where(null, "", values).astype(object), null)
        if all(isinstance(v, (int, float)) and not isinstance(v, bool) for v in present):
            data = np.where(null, np.nan, values).astype("float64")  # pandas stores them as REAL
            return _Val("num", data, null)
    raise _Unsupported(f"column {series.name!r} of mixed types")


def _resolver(frame: pd.DataFrame, where: str) -> Callable[[str, bool], _Val]:
    lower: dict[str, list[str]] = {}
    for name in frame.columns:
        lower.setdefault(str(name).lower(), []).append(str(name))

    def column(name: str, quoted: bool) -> _Val:
        found = lower.get(name.lower(), [])
        if name in frame.columns:
            return _column_value(frame[name])
        if len(found) == 1:
            return _column_value(frame[found[0]])
        if quoted or found:  # a "quoted" string literal, or an ambiguous name: SQLite decides
            raise _Unsupported(name)
        raise QueryError(f"bad --where {where!r}: no such column: {name}")

    return column


def select_rows(frame: pd.DataFrame, where: str) -> np.ndarray:
    """Positions of the rows of ``frame`` that satisfy ``where`` (an SQL condition)."""
    try:
        mask = _Parser(_tokens(where), _resolver(frame, where)).parse().true
    except _Unsupported:
        return _sqlite_rows(frame, where)
    mask = np.broadcast_to(np.asarray(mask, dtype=bool), (len(frame),))
    return np.flatnonzero(mask)


def _sqlite_rows(frame: pd.DataFrame, where: str) -> np.ndarray:
    """The general path: SQLite over a copy of only the columns ``where`` names."""
    by_lower = {str(c).lower(): c for c in frame.columns}
    wanted = [by_lower[n.lower()] for n in identifiers(where) if n.lower() in by_lower]
    if not wanted:
        wanted = list(frame.columns)
    part = frame[list(dict.fromkeys(wanted))].reset_index(drop=True)
    part.index = pd.RangeIndex(len(part))
    return filter_frame(part, where).index.to_numpy()


def filter_rows(frame: pd.DataFrame, where: str | None) -> pd.DataFrame:
    """Rows of ``frame`` matching the SQL condition ``where`` (all rows when it is empty)."""
    if not where or not where.strip():
        return frame
    return frame.iloc[select_rows(frame, where)]
