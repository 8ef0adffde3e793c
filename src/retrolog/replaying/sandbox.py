"""Per-task scratch trees for replay tasks (coordinator side; the worker side is ``guard.py``).

A replayed script must read the user's ignored data in place but never write the user's files
(DESIGN.md, "Replay sandbox"). Each task gets its own tree under the replay's work directory:

- the old version's files, hard linked from the version's materialised tree (the guard makes a
  hard-linked file private before a write, so tasks never share a written file);
- a mirror of what the user's project has and the version lacks (ignored data and output
  directories, untracked files, large files): directories become real directories, files
  become symlinks to the user's files, relative symlinks that stay inside the project are kept
  as they are. ``.git``, ``.retrolog`` and ``__pycache__`` are skipped; virtual environments
  and tool caches stay directory symlinks (read-only for the guard).
- up to ``eager`` entries are mirrored up front, breadth first; a directory whose entries no
  longer fit stays a directory symlink, which the guard turns into a directory of links, one
  level at a time, when the script writes under it, up to ``cap`` entries per task in all; a
  write that would need more is refused.

The layout is computed once per version (one walk of the user's tree) and laid out per task.
Defence in depth: the (size, mtime_ns, inode) of every user file a tree links to, and of every
user directory it links to, is taken before the tasks start and compared when each task
finishes; a change fails that task with the path.
"""

from __future__ import annotations

import json
import os
import shutil
import time
from collections import deque
from collections.abc import Iterable
from dataclasses import dataclass, field
from pathlib import Path

from .executor import JobResult
from .guard import ENV as SANDBOX_ENV

DEFAULT_CAP = 20_000  # mirrored entries per task, up front and by the guard together
DEFAULT_EAGER = 1_000  # mirrored up front (a symlink costs 5-100 us, more on a busy disk)
SKIP_TOP = frozenset({".git", ".retrolog"})
SKIP_ANY = frozenset({"__pycache__"})
LINKED_DIRS = frozenset(
    {"node_modules", ".tox", ".nox", ".mypy_cache", ".pytest_cache", ".ruff_cache", ".hg", ".svn"}
)
Fingerprint = tuple[int, int, int]  # size, mtime_ns, inode


@dataclass
class Layout:
    """What a task tree of one version consists of; paths relative to the tree's root."""

    dirs: dict[str, None] = field(default_factory=dict)  # ordered: parents first
    hardlinks: list[tuple[str, str]] = field(default_factory=list)  # version files
    symlinks: list[tuple[str, str]] = field(default_factory=list)  # link text kept as is
    mirrored: list[tuple[str, str]] = field(default_factory=list)  # user files, linked
    dir_links: list[tuple[str, str]] = field(default_factory=list)  # user dirs left as links
    protected: list[str] = field(default_factory=list)  # real roots of mirrored user dirs
    files: list[str] = field(default_factory=list)  # real user files outside those roots
    capped: list[str] = field(default_factory=list)  # real paths of dir_links
    seconds: float = 0.0

    @property
    def entries(self) -> int:
        return len(self.mirrored) + len(self.dir_links) + len(self.symlinks)


def plan_layout(project_root: Path, version_root: Path, eager: int = DEFAULT_EAGER) -> Layout:
    """Walk the version tree and the user's tree once: the operations that build a task tree."""
    started = time.perf_counter()
    layout = Layout()
    version = str(version_root)
    version_real = os.path.realpath(version)
    for folder, dirnames, filenames in os.walk(version):
        rel = os.path.relpath(folder, version)
        if rel != ".":
            layout.dirs[rel] = None
        for name in [*dirnames, *filenames]:
            path = os.path.join(folder, name)
            r = name if rel == "." else os.path.join(rel, name)
            if os.path.islink(path):
                layout.symlinks.append((r, os.readlink(path)))
                real = os.path.realpath(path)
                if not _inside(real, version_real):  # a committed link to data elsewhere
                    layout.protected.append(real)
            elif name in filenames:
                layout.hardlinks.append((r, path))
    _mirror(layout, Path(project_root), version, eager)
    layout.seconds = time.perf_counter() - started
    return layout


def _mirror(layout: Layout, project_root: Path, version: str, cap: int) -> None:
    root = str(project_root)
    root_real = os.path.realpath(root)
    budget = cap
    visited = {root_real}
    queue: deque[tuple[str, bool]] = deque([("", False)])  # (relative dir, wholly mirrored)
    while queue:
        rel, mirrored = queue.popleft()
        udir = os.path.join(root, rel) if rel else root
        try:
            with os.scandir(udir) as it:
                entries = sorted(it, key=lambda e: e.name)
        except OSError:
            continue
        if mirrored and len(entries) > budget:
            del layout.dirs[rel]  # planned as a real directory, not expanded yet: a link instead
            layout.dir_links.append((rel, udir))
            layout.capped.append(os.path.realpath(udir))
            continue
        for entry in entries:
            name = entry.name
            if name in SKIP_ANY or not rel and name in SKIP_TOP:
                continue
            r = os.path.join(rel, name) if rel else name
            if not mirrored:
                mine = os.path.join(version, r)
                if os.path.lexists(mine):  # the version's own file or directory wins
                    if _real_dir(entry) and os.path.isdir(mine) and not os.path.islink(mine):
                        queue.append((r, False))
                    continue
            budget -= 1
            if entry.is_symlink():
                text = os.readlink(entry.path)
                if not os.path.isabs(text) and _inside(os.path.realpath(entry.path), root_real):
                    layout.symlinks.append((r, text))  # resolves inside the scratch tree too
                    continue
            if _is_dir(entry):
                real = os.path.realpath(entry.path)
                if real in visited or budget <= 0 or _linked_dir(name, entry.path):
                    layout.dir_links.append((r, entry.path))
                    layout.capped.append(real)
                    continue
                visited.add(real)
                if not _inside(real, root_real):
                    layout.protected.append(real)
                layout.dirs[r] = None
                queue.append((r, True))
            else:
                layout.mirrored.append((r, entry.path))
                real = os.path.realpath(entry.path)
                if not _inside(real, root_real):
                    layout.files.append(real)


def _is_dir(entry: os.DirEntry[str]) -> bool:
    try:
        return entry.is_dir()
    except OSError:
        return False


def _real_dir(entry: os.DirEntry[str]) -> bool:
    return _is_dir(entry) and not entry.is_symlink()


def _linked_dir(name: str, path: str) -> bool:
    """Directories nobody writes during a replay and that are large: keep them as one link."""
    return name in LINKED_DIRS or os.path.isfile(os.path.join(path, "pyvenv.cfg"))


def _inside(path: str, root: str) -> bool:
    return path == root or path.startswith(root.rstrip(os.sep) + os.sep)


def build(layout: Layout, dest: Path) -> None:
    """Lay ``layout`` out under ``dest`` (which must not exist)."""
    base = str(dest)
    os.mkdir(base)
    for rel in layout.dirs:
        os.mkdir(os.path.join(base, rel))
    for rel, source in layout.hardlinks:
        target = os.path.join(base, rel)
        try:
            os.link(source, target)
        except OSError:
            shutil.copy2(source, target)
    for rel, text in layout.symlinks:
        os.symlink(text, os.path.join(base, rel))
    for rel, source in layout.mirrored:
        os.symlink(source, os.path.join(base, rel))
    for rel, source in layout.dir_links:
        os.symlink(source, os.path.join(base, rel), target_is_directory=True)


def _unlink_dir(link: str) -> None:
    """Replace a directory link of a task tree by a real directory of links to its entries."""
    source = os.readlink(link)
    with os.scandir(source) as it:
        entries = [(e.name, _is_dir(e)) for e in it]
    os.unlink(link)
    os.mkdir(link)
    for name, is_dir in entries:
        os.symlink(os.path.join(source, name), os.path.join(link, name), is_dir)


def fingerprint(path: str) -> Fingerprint | None:
    try:
        st = os.stat(path)
    except OSError:
        return None
    return (st.st_size, st.st_mtime_ns, st.st_ino)


def _kind(path: str) -> str:
    return "directory" if os.path.isdir(path) else "file"


@dataclass
class TaskSandbox:
    task_id: int
    version: str
    root: Path
    manifest: Path


class Sandboxes:
    """The scratch trees of one replay: ``create`` one per task, ``finished`` when it ends,
    ``apply`` to fail the tasks during which a linked user file changed."""

    def __init__(
        self,
        project_root: Path,
        version_roots: dict[str, Path],
        workdir: Path,
        allowed: Iterable[Path] = (),
        cap: int = DEFAULT_CAP,
        eager: int = DEFAULT_EAGER,
    ) -> None:
        self.project_root = Path(project_root)
        self.workdir = Path(workdir)
        self.version_roots = version_roots
        self.allowed = [str(p) for p in allowed] + [str(workdir)]
        self.cap = cap
        eager = min(eager, cap)
        self.layouts = {
            v: plan_layout(self.project_root, r, eager) for v, r in version_roots.items()
        }
        started = time.perf_counter()
        targets = {
            source
            for layout in self.layouts.values()
            for _r, source in [*layout.mirrored, *layout.dir_links]
        }
        self.baseline = {path: fingerprint(path) for path in targets}
        self.seconds = sum(lay.seconds for lay in self.layouts.values())
        self.seconds += time.perf_counter() - started
        self.tasks: dict[int, TaskSandbox] = {}
        self.problems: dict[int, list[str]] = {}
        self._reported: set[str] = set()

    def create(self, task_id: int, version: str) -> TaskSandbox:
        """The task's own tree and the manifest its guard reads (``$RETROLOG_SANDBOX``)."""
        started = time.perf_counter()
        layout = self.layouts[version]
        root = self.workdir / f"scratch-{task_id}"
        build(layout, root)
        manifest = self.workdir / f"scratch-{task_id}.json"
        manifest.write_text(
            json.dumps(
                {
                    "scratch": str(root),
                    "protected": [str(self.project_root), *layout.protected],
                    "allowed": self.allowed,
                    "files": layout.files,
                    "capped": layout.capped,
                    "cap": self.cap,
                    "mirrored": layout.entries,
                }
            )
        )
        self.seconds += time.perf_counter() - started
        sandbox = TaskSandbox(task_id, version, root, manifest)
        self.tasks[task_id] = sandbox
        return sandbox

    def env(self, task_id: int, cwd: Path | None = None) -> dict[str, str]:
        """The task's environment additions. ``cwd``: its working directory, which must be a real
        directory of the tree (a process in a linked directory sees the user's real path)."""
        root = self.tasks[task_id].root
        if cwd is not None and cwd != root and _inside(str(cwd), str(root)):
            current = str(root)
            for part in Path(cwd).relative_to(root).parts:
                current = os.path.join(current, part)
                if os.path.islink(current) and os.path.isdir(current):
                    if _inside(os.path.realpath(current), os.path.realpath(root)):
                        break  # a relative link the mirror kept: its target is in the tree
                    _unlink_dir(current)
        return {SANDBOX_ENV: str(self.tasks[task_id].manifest)}

    def finished(self, task_id: int) -> list[str]:
        """Compare the user files this task's tree links to with the baseline; a changed file
        is blamed on the first task that finishes after the change."""
        sandbox = self.tasks.get(task_id)
        if sandbox is None:
            return []
        changed = []
        layout = self.layouts[sandbox.version]
        for _rel, source in [*layout.mirrored, *layout.dir_links]:
            if source not in self._reported and fingerprint(source) != self.baseline[source]:
                self._reported.add(source)
                changed.append(source)
        if changed:
            self.problems[task_id] = changed
        return changed

    def apply(self, results: list[JobResult]) -> None:
        """Fail the tasks during which a user file changed, with the paths, in their logs."""
        for result in results:
            if result.task_id not in self.problems and result.task_id in self.tasks:
                self.finished(result.task_id)
            changed = self.problems.get(result.task_id)
            if not changed:
                continue
            lines = [
                f"retrolog: replay changed the user's {_kind(path)} {path} (or another process "
                "did while this task ran); the task's values are not kept"
                for path in changed
            ]
            result.returncode = result.returncode or 1
            result.log_tail = "\n".join([result.log_tail.rstrip(), *lines]).lstrip("\n")


__all__ = [
    "DEFAULT_CAP",
    "SANDBOX_ENV",
    "Layout",
    "Sandboxes",
    "TaskSandbox",
    "build",
    "fingerprint",
    "plan_layout",
]
