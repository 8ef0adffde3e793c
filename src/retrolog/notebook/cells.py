"""Notebook cells as one Python script: the form in which replay propagates and re-executes them.

A notebook run's version holds the cells the kernel executed, in execution order, as the script
``<notebook>.ipynb.py`` next to the notebook (``script_path``); today's code of that notebook is
its code cells in document order through the same conversion (``notebook_script``), so replay
propagates a statement from one into the other like between two versions of a script.

IPython syntax is first transformed with IPython's own ``TransformerManager`` (the transformation
the kernel applied; without IPython a line-based fallback does the same for the common forms),
then every magic and shell command becomes a ``pass`` with the original as a comment, except
``%time``/``%%time``/``%%capture``, whose Python runs once in the user's namespace and is kept.
``%timeit`` (its statement runs many times), ``!cmd``, ``%run`` and other magics are left out:
replaying them as a script would need IPython, or would run shell commands again.
"""

from __future__ import annotations

import ast
import json
import re
from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import Path

SCRIPT_SUFFIX = ".py"  # train.ipynb -> train.ipynb.py (never a user's train.py)
CELL_MARK = "# %%"
_KEPT_LINE_MAGICS = frozenset({"time"})  # the statement runs once in the user's namespace
_KEPT_CELL_MAGICS = frozenset({"time", "capture"})
_SHELL_CALLS = {"system": "!", "getoutput": "!"}


@dataclass(frozen=True)
class Cell:
    """One executed cell: its raw source and, when it raised, the error (``Kind: message``)."""

    source: str
    error: str | None = None


def script_path(notebook: str) -> str:
    """The name of a notebook's script: the notebook's own path plus ``.py``."""
    return notebook + SCRIPT_SUFFIX


def notebook_of(script: str) -> str | None:
    """The notebook a script name stands for (``x.ipynb.py`` -> ``x.ipynb``), or None."""
    if script.endswith(".ipynb" + SCRIPT_SUFFIX):
        return script[: -len(SCRIPT_SUFFIX)]
    return None


def header(notebook_name: str) -> str:
    """The first lines of a notebook's script, the same for the executed and today's code."""
    return (
        f"# retrolog: the code cells of {notebook_name} as one script (docs/notebooks.md)\n"
        "from retrolog.notebook import display  # noqa: F401  (a builtin in a kernel)\n"
    )


def cells_script(notebook_name: str, cells: Iterable[Cell]) -> str:
    """The script of ``cells``: a header, then each cell after a ``# %%`` line; a cell that
    raised is kept as comments (re-executing it would raise again)."""
    parts = [header(notebook_name)]
    for cell in cells:
        code = cell_to_python(cell.source).rstrip("\n")
        if cell.error is not None:
            first = cell.error.splitlines()[0] if cell.error.strip() else "an error"
            commented = "\n".join("# " + line if line else "#" for line in code.splitlines())
            parts.append(f"{CELL_MARK} left out: this cell raised {first}\n{commented}\n")
        else:
            parts.append(f"{CELL_MARK}\n{code}\n" if code.strip() else f"{CELL_MARK}\n")
    return "\n".join(parts)


def notebook_cells(path: Path) -> list[str]:
    """The sources of the code cells of the ``.ipynb`` file at ``path``, in document order
    (nbformat 4 JSON, read without nbformat: the replay process may not have it)."""
    data = json.loads(path.read_text(encoding="utf-8"))
    if not isinstance(data, dict) or not isinstance(data.get("cells"), list):
        raise ValueError(f"{path.name} is not a Jupyter notebook (nbformat 4)")
    sources = []
    for cell in data["cells"]:
        if not isinstance(cell, dict) or cell.get("cell_type") != "code":
            continue
        source = cell.get("source", "")
        sources.append("".join(source) if isinstance(source, list) else str(source))
    return sources


def notebook_script(path: Path) -> str:
    """Today's code of the notebook at ``path``: its code cells as one script."""
    return cells_script(path.name, (Cell(s) for s in notebook_cells(path)))


# -- IPython syntax ---------------------------------------------------------------------------
def cell_to_python(source: str) -> str:
    """Plain Python for one cell: IPython's transformation, then magics as comments."""
    try:
        from IPython.core.inputtransformer2 import TransformerManager
    except ImportError:
        return _fallback(source)
    try:
        transformed = TransformerManager().transform_cell(source)
    except Exception:  # IPython refused the cell (it raised in the kernel too)
        return source
    return _neutralise(transformed)


def _neutralise(code: str) -> str:
    """Replace each statement that calls ``get_ipython()`` (a magic or shell command) by what
    of it runs once as Python (``%time``, ``%%time``, ``%%capture``) or a commented ``pass``."""
    if "get_ipython()" not in code:
        return code
    try:
        tree = ast.parse(code)
    except SyntaxError:
        return code
    lines = code.splitlines()
    edits: list[tuple[int, int, list[str]]] = []
    for node in ast.walk(tree):
        if not isinstance(node, ast.stmt) or not hasattr(node, "end_lineno"):
            continue
        target, call = _magic_call(node)
        if call is None:
            continue
        indent = lines[node.lineno - 1][: node.col_offset]
        edits.append((node.lineno, node.end_lineno or node.lineno, _replace(call, target, indent)))
    for start, end, new in sorted(edits, reverse=True):
        lines[start - 1 : end] = new
    return "\n".join(lines) + ("\n" if code.endswith("\n") else "")


def _magic_call(node: ast.stmt) -> tuple[str | None, tuple[str, list[str]] | None]:
    """(assigned target, (method, string args)) for ``[x =] get_ipython().method('...', ...)``."""
    value: ast.expr | None = None
    target = None
    if isinstance(node, ast.Expr):
        value = node.value
    elif isinstance(node, ast.Assign) and len(node.targets) == 1:
        value, target = node.value, ast.unparse(node.targets[0])
    if not (
        isinstance(value, ast.Call)
        and isinstance(value.func, ast.Attribute)
        and isinstance(value.func.value, ast.Call)
        and isinstance(value.func.value.func, ast.Name)
        and value.func.value.func.id == "get_ipython"
    ):
        return None, None
    args = [a.value for a in value.args if isinstance(a, ast.Constant) and isinstance(a.value, str)]
    return target, (value.func.attr, args)


def _replace(call: tuple[str, list[str]], target: str | None, indent: str) -> list[str]:
    method, args = call
    if method == "run_line_magic" and len(args) == 2:
        name, line = args
        if name in _KEPT_LINE_MAGICS and target is None:
            return [indent + line]
        shown = f"%{name} {line}".rstrip()
    elif method == "run_cell_magic" and len(args) == 3:
        name, line, body = args
        if name in _KEPT_CELL_MAGICS and not indent:
            return _neutralise(_transform_body(body)).rstrip("\n").splitlines() or ["pass"]
        shown = f"%%{name} {line}".rstrip() + " (cell magic: its body is left out)"
    elif method in _SHELL_CALLS and args:
        shown = _SHELL_CALLS[method] + args[0]
    else:
        shown = f"IPython {method}({', '.join(map(repr, args))})"
    shown = shown.replace("\n", " ")
    if target is not None:
        return [f"{indent}{target} = None  # retrolog: IPython left out: {shown}"]
    return [f"{indent}pass  # retrolog: IPython left out: {shown}"]


def _transform_body(body: str) -> str:
    from IPython.core.inputtransformer2 import TransformerManager

    try:
        return TransformerManager().transform_cell(body)
    except Exception:
        return body


_ASSIGNED = re.compile(r"^(\s*)([\w.\[\]'\", ]+?)\s*=\s*([!%])(.*)$")


def _fallback(source: str) -> str:
    """Line-based stand-in for IPython's transformation (no IPython in this process): lines that
    start with ``%``/``!`` (or assign one) become the same ``pass`` lines ``_neutralise`` writes."""
    lines = source.splitlines()
    if lines and lines[0].startswith("%%"):
        name, _, line = lines[0][2:].partition(" ")
        if name in _KEPT_CELL_MAGICS:
            return _fallback(source.partition("\n")[2])
        shown = f"%%{name} {line}".rstrip() + " (cell magic: its body is left out)"
        return f"pass  # retrolog: IPython left out: {shown}\n"
    out: list[str] = []
    for line in lines:
        stripped = line.lstrip()
        indent = line[: len(line) - len(stripped)]
        assigned = _ASSIGNED.match(line)
        if stripped.startswith("%"):
            name, _, rest = stripped[1:].partition(" ")
            if name in _KEPT_LINE_MAGICS:
                out.append(indent + rest)
                continue
            out.append(f"{indent}pass  # retrolog: IPython left out: %{name} {rest}".rstrip())
        elif stripped.startswith("!"):
            out.append(f"{indent}pass  # retrolog: IPython left out: {stripped}")
        elif assigned and not stripped.startswith(("#", "'", '"')):
            pre, target, sign, rest = assigned.groups()
            out.append(f"{pre}{target} = None  # retrolog: IPython left out: {sign}{rest.strip()}")
        else:
            out.append(line)
    return "\n".join(out) + ("\n" if source.endswith("\n") else "")
