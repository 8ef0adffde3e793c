"""Architecture rules that code review alone would let drift (issue 13, docs/architecture.md).

Only ``store/`` speaks SQL: every statement and schema object lives there behind named functions,
and other packages call them. This test reads every source file outside ``store/`` and fails,
listing file, line and the text, when a string literal holds SQL or a module imports SQLAlchemy or
the schema. Docstrings and comments may talk about SQL; code may not.
"""

from __future__ import annotations

import ast
import re
from pathlib import Path

SRC = Path(__file__).resolve().parents[1] / "src" / "retrolog"

# Modules whose SQL another change is moving into store/ (issue 13): remove each entry when its
# SQL has moved, until the set is empty. A path is relative to src/retrolog; a folder ends in /.
NOT_YET_MOVED: set[str] = set()

# Statements (a string that is one, or the start of one), and the clauses of fragments that are
# joined into one (``"... FROM logs " f"WHERE run = :r"``). Keywords are matched in upper case,
# as all of our SQL is written; prose in messages does not read like this.
SQL = re.compile(
    r"^[\s(]*(SELECT|INSERT|UPDATE|DELETE|CREATE|DROP|ALTER|PRAGMA|VACUUM|ATTACH|BEGIN|COMMIT"
    r"|ROLLBACK|WITH\s+(RECURSIVE\s+)?\w+(\([^)]*\))?\s+AS)\b"
    r"|\bSELECT\b.+\bFROM\b"
    r"|\bINSERT\s+(OR\s+\w+\s+)?INTO\b"
    r"|\bDELETE\s+FROM\b"
    r"|\bUPDATE\s+\w+\s+SET\b"
    r"|\bCREATE\s+(TABLE|VIEW|INDEX|UNIQUE\s+INDEX)\b"
    r"|\bSET\s+(LOCAL|TRANSACTION)\b"
    r"|\bWHERE\s+\w+(\.\w+)?\s*(=|<|>|IN\b|IS\b|NOT\b|LIKE\b|BETWEEN\b)"
    r"|\b(ORDER|GROUP)\s+BY\s+\w+"
    r"|\bJOIN\s+\w+(\s+\w+)?\s+ON\b",
    re.S,
)
PERSISTENCE_IMPORTS = ("sqlalchemy", "retrolog.store.schema")


def _allowed(relative: str) -> bool:
    return any(relative == a or (a.endswith("/") and relative.startswith(a)) for a in NOT_YET_MOVED)


def _sources() -> list[tuple[str, Path]]:
    out = []
    for path in sorted(SRC.rglob("*.py")):
        relative = path.relative_to(SRC).as_posix()
        if not relative.startswith("store/"):
            out.append((relative, path))
    return out


def _docstrings(tree: ast.AST) -> set[int]:
    """ids of the string constants that are docstrings."""
    out = set()
    for node in ast.walk(tree):
        if not isinstance(node, (ast.Module, ast.ClassDef, ast.FunctionDef, ast.AsyncFunctionDef)):
            continue
        body = node.body
        if body and isinstance(body[0], ast.Expr) and isinstance(body[0].value, ast.Constant):
            out.add(id(body[0].value))
    return out


def _strings(tree: ast.AST) -> list[tuple[int, str]]:
    """(line, text) of every string literal but docstrings; an f-string's replacement fields
    read as ``{}``, so a statement split around them is still seen whole."""
    skip = _docstrings(tree)
    inside_fstrings = set()
    out = []
    for node in ast.walk(tree):
        if isinstance(node, ast.JoinedStr):
            parts = []
            for value in node.values:
                if isinstance(value, ast.Constant) and isinstance(value.value, str):
                    parts.append(value.value)
                    inside_fstrings.add(id(value))
                else:
                    parts.append("{}")
            out.append((node.lineno, "".join(parts)))
    for node in ast.walk(tree):
        if (
            isinstance(node, ast.Constant)
            and isinstance(node.value, str)
            and id(node) not in skip
            and id(node) not in inside_fstrings
        ):
            out.append((node.lineno, node.value))
    return out


def _imports(tree: ast.AST, module: str) -> list[tuple[int, str]]:
    """(line, absolute module name) of every import in ``module``'s tree."""
    package = module.rsplit(".", 1)[0]
    out = []
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            out += [(node.lineno, alias.name) for alias in node.names]
        elif isinstance(node, ast.ImportFrom):
            base = node.module or ""
            if node.level:
                parts = package.split(".")
                parts = parts[: len(parts) - node.level + 1]
                base = ".".join([*parts, base] if base else parts)
            out.append((node.lineno, base))
            out += [(node.lineno, f"{base}.{alias.name}") for alias in node.names]
    return out


def _offenders() -> list[str]:
    found = []
    for relative, path in _sources():
        if _allowed(relative):
            continue
        tree = ast.parse(path.read_text(), filename=str(path))
        for line, text in _strings(tree):
            if SQL.search(text):
                shown = " ".join(text.split())[:80]
                found.append(f"{relative}:{line}: SQL text {shown!r}")
        module = "retrolog." + relative[:-3].replace("/", ".")
        for line, name in _imports(tree, module):
            if any(name == p or name.startswith(p + ".") for p in PERSISTENCE_IMPORTS):
                found.append(f"{relative}:{line}: imports {name}")
    return found


def test_only_store_speaks_sql() -> None:
    offenders = _offenders()
    assert not offenders, (
        "SQL or schema access outside store/ (move it into a store module behind a named "
        "function; see docs/architecture.md):\n" + "\n".join(offenders)
    )


def test_the_allowance_names_existing_modules_that_still_need_it() -> None:
    """An entry whose SQL has moved (or whose file is gone) is removed, so the set only shrinks."""
    stale = []
    for entry in sorted(NOT_YET_MOVED):
        sources = [
            (r, p) for r, p in _sources() if r == entry or r.startswith(entry.rstrip("/") + "/")
        ]
        if not sources:
            stale.append(f"{entry}: no such module")
            continue
        texts = [
            t for _r, p in sources for _l, t in _strings(ast.parse(p.read_text())) if SQL.search(t)
        ]
        if not texts:
            stale.append(f"{entry}: holds no SQL any more")
    assert not stale, "remove from NOT_YET_MOVED:\n" + "\n".join(stale)


def test_the_rule_sees_sql_in_each_form_we_write_it() -> None:
    """The detector itself: statements, f-strings and joined fragments are found; prose is not."""
    code = '''
"""Docstrings may say SELECT name FROM logs."""
a = "SELECT run_id FROM runs"
b = f"UPDATE runs SET {x} WHERE id = :k"
c = ("SELECT ctx_id, name FROM logs " f"WHERE run = :r AND name IN ({binds})")
d = "INSERT OR IGNORE INTO run_tags (run) VALUES (:r)"
e = "PRAGMA integrity_check(20)"
f = "WITH RECURSIVE n(name) AS (SELECT 1)"
g = " ORDER BY created DESC"
h = "a run name is a non-empty string; select a run on the Runs page"
i = "bad --where: use a WHERE clause over the columns"
'''
    tree = ast.parse(code)
    hits = sorted(line for line, text in _strings(tree) if SQL.search(text))
    assert hits == [3, 4, 5, 6, 7, 8, 9]
