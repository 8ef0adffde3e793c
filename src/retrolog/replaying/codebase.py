"""The project's Python files today and in a run's version, and the new statements placed into them.

A new ``retrolog.log`` may be added to the entry script or to any module of the project
(``model.py``'s ``forward``). Replay finds the statements in today's working tree (the files git
tracks or would track), puts each file's statements into that file as the run's version had it
(unchanged when the rest of the file is the same, by propagation otherwise) and analyses the
version's Python files together (see ``analysis.ScriptStructure``).
"""

from __future__ import annotations

import ast
import inspect
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from ..notebook.cells import notebook_of, notebook_script, script_path
from ..versions import GitRepo
from .analysis import Statement, find_log_statements, logged_names, strip_statements
from .layout import Trees

MAX_FILE_BYTES = 1 << 20  # larger "Python files" are data: not analysed
MAX_FILES = 2000  # a version with more Python files is analysed through the first ones only


def python_files_today(root: Path, repo: GitRepo | None) -> list[str]:
    """Paths (relative, posix) of the project's Python files that git tracks or would track."""
    if repo is None:
        return sorted(p.relative_to(root).as_posix() for p in root.glob("*.py"))
    proc = repo._git(
        "ls-files",
        "-z",
        "--cached",
        "--others",
        "--exclude-standard",
        "--",
        "*.py",
        "*.ipynb",
        check=False,
    )
    if proc.returncode != 0:
        return []
    listed = proc.stdout.decode(errors="replace").split("\0")
    names = {n for n in listed if n.endswith(".py") and not _skipped(n)}
    # a notebook's code is the script <name>.ipynb.py (retrolog/notebook/cells.py)
    names |= {script_path(n) for n in listed if n.endswith(".ipynb") and not _skipped(n)}
    # shallow paths first: an un-ignored virtual environment must not crowd out the project
    ordered = sorted(names, key=lambda n: (n.count("/"), n))
    return sorted(n for n in ordered[:MAX_FILES] if _exists_today(root, n))


def _exists_today(root: Path, path: str) -> bool:
    notebook = notebook_of(path)
    return (root / path).is_file() or (notebook is not None and (root / notebook).is_file())


def today_source(root: Path, path: str) -> str:
    """The text of a project file today; for a notebook's script (``x.ipynb.py`` where only
    ``x.ipynb`` exists), its code cells as one script (``notebook.cells.notebook_script``)."""
    notebook = notebook_of(path)
    if notebook is not None and not (root / path).exists():
        return notebook_script(root / notebook)
    return (root / path).read_text()


_SKIPPED = frozenset({"site-packages", "node_modules", "__pycache__"})


def _skipped(path: str) -> bool:
    """Whether ``path`` is inside a hidden directory (``.venv``), installed packages or a cache."""
    return any(p.startswith(".") or p in _SKIPPED for p in path.split("/")[:-1])


def new_statements(
    root: Path, files: Sequence[str], names: Sequence[str]
) -> dict[str, tuple[str, list[Statement]]]:
    """file -> (today's source, its statements logging one of ``names``), for files that have any."""
    found: dict[str, tuple[str, list[Statement]]] = {}
    for path in files:
        try:
            source = today_source(root, path)
        except (OSError, UnicodeDecodeError, ValueError):
            continue
        if "log" not in source or not any(repr(n)[1:-1] in source for n in names):
            continue  # cheap test before parsing
        try:
            statements = find_log_statements(source, names)
        except SyntaxError:
            continue
        if statements:
            found[path] = (source, statements)
    return found


def files_at(repo: GitRepo, version: str) -> dict[str, str]:
    """The Python files of ``version`` (path -> text), read through one ``git cat-file``."""
    listing = repo._git("ls-tree", "-r", "-z", "-l", version, check=False)
    if listing.returncode != 0:
        return {}
    paths = []
    for entry in listing.stdout.decode(errors="replace").split("\0"):
        meta, _, path = entry.partition("\t")
        parts = meta.split()
        if (
            path.endswith(".py")
            and len(parts) == 4
            and parts[1] == "blob"
            and parts[3].isdigit()
            and int(parts[3]) <= MAX_FILE_BYTES
        ):
            paths.append(path)
    paths = paths[:MAX_FILES]
    if not paths:
        return {}
    request = "".join(f"{version}:{p}\n" for p in paths).encode()
    out = repo._git("cat-file", "--batch", input=request, check=False).stdout
    files: dict[str, str] = {}
    offset = 0
    for path in paths:
        end = out.index(b"\n", offset)
        header = out[offset:end].split()
        offset = end + 1
        if len(header) != 3 or header[1] != b"blob":
            continue
        size = int(header[2])
        files[path] = out[offset : offset + size].decode(errors="replace")
        offset += size + 1
    return files


def imported_files(
    entry: str, files: Mapping[str, str], trees: Trees | None = None
) -> dict[str, str]:
    """The files of ``files`` the entry script imports, directly or through each other (names
    resolved against the repository root and the importing file's directory, as ``sys.path[0]``
    is the script's directory): the code a run can execute, and no unrelated scripts or tests
    whose functions share names with the script's."""
    todo, seen = [entry], {entry}
    while todo:
        path = todo.pop()
        try:
            tree = (trees or Trees()).parse(files[path])
        except (SyntaxError, KeyError, ValueError):
            continue
        here = path.rsplit("/", 1)[0] if "/" in path else ""
        bases = dict.fromkeys(["", entry.rsplit("/", 1)[0] if "/" in entry else ""])
        for name, level in _imports_of(tree):
            roots = list(bases)
            if level:
                parts = here.split("/") if here else []
                roots = (
                    ["/".join(parts[: len(parts) - (level - 1)])] if level - 1 <= len(parts) else []
                )
            for root in roots:
                for candidate in _candidates(root, name):
                    if candidate in files and candidate not in seen:
                        seen.add(candidate)
                        todo.append(candidate)
    return {p: files[p] for p in seen if p in files}


def _imports_of(tree: ast.AST) -> list[tuple[str, int]]:
    """(dotted module name, relative level) for every import of ``tree``; ``from m import x``
    also yields ``m.x`` (``x`` may be a submodule)."""
    out: list[tuple[str, int]] = []
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            out += [(a.name, 0) for a in node.names]
        elif isinstance(node, ast.ImportFrom):
            base = node.module or ""
            out.append((base, node.level))
            out += [(f"{base}.{a.name}".strip("."), node.level) for a in node.names]
    return out


def _candidates(root: str, name: str) -> list[str]:
    """Files that may hold module ``name`` under ``root`` (the module and its packages)."""
    parts = [p for p in name.split(".") if p]
    prefix = f"{root}/" if root else ""
    out = []
    for depth in range(1, len(parts) + 1):
        stem = prefix + "/".join(parts[:depth])
        out += [f"{stem}.py", f"{stem}/__init__.py"]
    return out


@dataclass
class VersionScript:
    """One version's code with today's new statements in it, and how they got there.

    ``source``/``lines``: the entry script and the lines of the new statements in it (kept for
    callers that know only the entry script); ``files``: every file to write into the version's
    directory (path -> text with the statements); ``placed``: path -> lines of the new
    statements; ``modules``: the version's other Python files, for the analysis; ``propagation``:
    the placement report over all files when any differed (``files`` holds one per file).
    """

    source: str
    lines: list[int]
    propagation: dict[str, Any] | None
    refused: str | None = None
    files: dict[str, str] = field(default_factory=dict)
    placed: dict[str, list[int]] = field(default_factory=dict)
    modules: dict[str, str] = field(default_factory=dict)
    already: set[str] = field(default_factory=set)  # requested names the version already logs


def version_script(
    repo: GitRepo,
    statements: Mapping[str, tuple[str, Sequence[Statement]]],
    version: str,
    script: str,
    accept_low_confidence: bool = False,
) -> VersionScript:
    """Today's statements (file -> (today's text, statements)) placed into ``version``: a file
    whose text without the statements equals the version's is taken as it is today, any other
    is propagated (``propagation.propagate``) into the version's text of that file."""
    old_files = files_at(repo, version)
    if script not in old_files:
        old_files[script] = repo.read_file(version, script)
    out = VersionScript(old_files[script], [], None, modules=old_files)
    reports: dict[str, dict[str, Any]] = {}
    for path, (today, found) in statements.items():
        old = old_files.get(path)
        if old is None:
            out.refused = f"{path} does not exist in this version"
            return out
        wanted = {s.name for s in found}
        out.already |= logged_names(old) & wanted
        if strip_statements(today, found) == old:
            out.files[path], out.placed[path] = today, [s.line for s in found]
            continue
        result = _propagate(today, old, [s.line for s in found], accept_low_confidence)
        report = result.to_dict()
        reports[path] = report
        if result.refused:
            out.refused = f"{path}: {result.refused}"
            out.propagation = _merge(reports)
            return out
        out.files[path], out.placed[path] = result.source, [p.line for p in result.placements]
    if reports:
        out.propagation = _merge(reports)
    out.source = out.files.get(script, old_files[script])
    out.lines = out.placed.get(script, [])
    return out


def _propagate(today: str, old: str, lines: list[int], accept_low_confidence: bool) -> Any:
    """``propagate`` with ``min_confidence=0.0`` when low-confidence placements are accepted (if
    this version of the propagation package has the parameter)."""
    from ..propagation import propagate

    options: dict[str, Any] = {}
    if accept_low_confidence and "min_confidence" in inspect.signature(propagate).parameters:
        options["min_confidence"] = 0.0
    return propagate(today, old, lines, **options)


def _merge(reports: dict[str, dict[str, Any]]) -> dict[str, Any]:
    """One report over several files: the lowest confidence, every placement (with its file),
    renames and warnings together, and each file's own report under ``files``."""
    placements = [
        {**p, "file": path} for path, r in reports.items() for p in r.get("placements") or []
    ]
    renames: dict[str, str] = {}
    warnings: list[str] = []
    for path, r in reports.items():
        renames.update(r.get("renames") or {})
        warnings += [f"{path}: {w}" for w in r.get("warnings") or []]
        warnings += [
            f"{path}: {w}" for p in r.get("placements") or [] for w in p.get("warnings") or []
        ]
    refused = next((f"{p}: {r['refused']}" for p, r in reports.items() if r.get("refused")), None)
    return {
        "ok": refused is None,
        "confidence": min(float(r.get("confidence") or 0.0) for r in reports.values()),
        "placements": placements,
        "renames": renames,
        "warnings": list(dict.fromkeys(warnings)),
        "refused": refused,
        "files": reports,
    }
