"""Read-only git facts for the UI: commit summaries of versions, and diffs between them.

Revisions are validated before they reach git: only full or abbreviated hex ids that the store
knows, or ``HEAD``; never a user string that git could read as an option.
"""

from __future__ import annotations

import os
import re
import subprocess
from typing import Any

from ..project import Project
from ..versions import GitError, GitRepo, fetch_command

_HEX = re.compile(r"^[0-9a-f]{4,64}$")
MAX_DIFF_LINES = 20_000


def is_revision(value: str) -> bool:
    """A hex commit id or ``HEAD`` (what the UI lets reach git)."""
    return value == "HEAD" or bool(_HEX.match(value))


def commit_info(project: Project, shas: list[str]) -> dict[str, dict[str, Any]]:
    """sha -> {parents, time, subject, snapshot} for the commits that exist (one git call)."""
    wanted = [s for s in shas if s and _HEX.match(s)]
    if not wanted or not project.in_git or not GitRepo.available():
        return {}
    env = dict(os.environ, GIT_OPTIONAL_LOCKS="0")
    env.pop("GIT_INDEX_FILE", None)
    proc = subprocess.run(
        [
            "git",
            "-C",
            str(project.root),
            "log",
            "--no-walk=unsorted",
            "--ignore-missing",
            "--format=%x1e%H%x1f%P%x1f%ct%x1f%s",
            *wanted,
        ],
        capture_output=True,
        env=env,
    )
    out: dict[str, dict[str, Any]] = {}
    for record in proc.stdout.decode(errors="replace").split("\x1e"):
        parts = record.strip("\n").split("\x1f")
        if len(parts) != 4:
            continue
        sha, parents, when, subject = parts
        out[sha] = {
            "parents": parents.split(),
            "time": float(when) if when else None,
            "subject": subject,
            "snapshot": subject.startswith("retrolog"),
        }
    return out


def head(project: Project) -> str | None:
    """The repository's HEAD commit, or None."""
    if not project.in_git or not GitRepo.available():
        return None
    return GitRepo(project.root).head()


def diff(project: Project, old: str, new: str) -> tuple[str | None, str | None]:
    """(unified diff from ``old`` to ``new``, None) or (None, why there is none)."""
    if not project.in_git:
        return None, "the project is not a git repository"
    if not (is_revision(old) and is_revision(new)):
        return None, "not a known version"
    repo = GitRepo(project.root)
    resolved = []
    for rev in (old, new):
        if rev == "HEAD":
            sha = repo.head()
            if sha is None:
                return None, "the repository has no commits to compare with"
            rev = sha
        if not repo.has_commit(rev):
            return None, (
                f"commit {rev[:10]} is not in this repository (recorded in another clone, or "
                f"pruned); fetch it with `{fetch_command()}`"
            )
        resolved.append(rev)
    try:
        return repo.diff(resolved[0], resolved[1]), None
    except GitError as exc:
        return None, str(exc)


def diff_lines(text: str) -> tuple[list[tuple[str, str]], bool]:
    """Classify diff lines for display: file, hunk, add, del, meta, ctx; and whether cut short."""
    lines = text.splitlines()
    cut = len(lines) > MAX_DIFF_LINES
    out = []
    for line in lines[:MAX_DIFF_LINES]:
        if line.startswith("diff --git"):
            kind = "file"
        elif line.startswith("@@"):
            kind = "hunk"
        elif line.startswith(("+++", "---", "index ", "new file", "deleted file", "similarity")):
            kind = "meta"
        elif line.startswith("+"):
            kind = "add"
        elif line.startswith("-"):
            kind = "del"
        else:
            kind = "ctx"
        out.append((kind, line))
    return out, cut


def diff_files(text: str) -> list[str]:
    """The paths a unified diff touches."""
    return [m.group(1) for m in re.finditer(r"^diff --git a/(.*?) b/", text, re.MULTILINE)]


__all__ = ["commit_info", "diff", "diff_files", "diff_lines", "head", "is_revision"]
