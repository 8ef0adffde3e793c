"""Git access through the git CLI: snapshot a run's code onto a hidden ref, read old files.

The snapshot never touches the user's state: it fills a temporary index (``GIT_INDEX_FILE``) from
HEAD plus the working tree's changed and untracked (not ignored) files, then ``write-tree``,
``commit-tree`` and ``update-ref refs/retrolog/runs/<run id>``. HEAD, branch, index, stash and
working tree stay byte-identical. The snapshot commit's author, date and message depend only on
the code and its parent, so two runs of identical code share one version id.
"""

from __future__ import annotations

import io
import os
import shutil
import subprocess
import tarfile
import tempfile
from dataclasses import dataclass
from pathlib import Path

from ..errors import RetrologError

REF_PREFIX = "refs/retrolog/runs/"
DEFAULT_MAX_FILE_BYTES = 1 << 20  # changed/untracked files above this are left out of snapshots
_IDENTITY = {
    "GIT_AUTHOR_NAME": "retrolog",
    "GIT_AUTHOR_EMAIL": "retrolog@localhost",
    "GIT_COMMITTER_NAME": "retrolog",
    "GIT_COMMITTER_EMAIL": "retrolog@localhost",
}


class GitError(RetrologError, RuntimeError):
    """A git command failed; the message carries git's own words."""


@dataclass(frozen=True)
class Snapshot:
    """What a run's versioning recorded."""

    version: str  # the snapshot commit
    head: str | None  # the user's HEAD commit, None in a repository without commits
    branch: str | None  # None when HEAD is detached
    dirty: bool  # uncommitted or untracked source files were captured
    skipped_large: tuple[str, ...]  # changed files left out for their size


class GitRepo:
    """A git repository driven through the ``git`` executable (no GitPython)."""

    def __init__(self, root: Path | str) -> None:
        self.root = Path(root)

    @staticmethod
    def available() -> bool:
        return shutil.which("git") is not None

    def _git(
        self,
        *args: str,
        env: dict[str, str] | None = None,
        input: bytes | None = None,
        check: bool = True,
    ) -> subprocess.CompletedProcess[bytes]:
        full_env = dict(os.environ)
        full_env.pop("GIT_INDEX_FILE", None)
        full_env["GIT_OPTIONAL_LOCKS"] = "0"  # never refresh the user's index as a side effect
        if env:
            full_env.update(env)
        proc = subprocess.run(
            ["git", "-C", str(self.root), *args],
            env=full_env,
            input=input,
            capture_output=True,
        )
        if check and proc.returncode != 0:
            raise GitError(
                f"git {' '.join(args[:2])} failed: {proc.stderr.decode(errors='replace').strip()}"
            )
        return proc

    def _out(
        self, *args: str, env: dict[str, str] | None = None, input: bytes | None = None
    ) -> str:
        return self._git(*args, env=env, input=input).stdout.decode().strip()

    def head(self) -> str | None:
        proc = self._git("rev-parse", "--verify", "-q", "HEAD^{commit}", check=False)
        return proc.stdout.decode().strip() or None if proc.returncode == 0 else None

    def branch(self) -> str | None:
        proc = self._git("symbolic-ref", "--short", "-q", "HEAD", check=False)
        return proc.stdout.decode().strip() or None if proc.returncode == 0 else None

    # -- snapshot --------------------------------------------------------------------------
    def snapshot(
        self,
        run_id: str,
        message: str = "retrolog snapshot",
        max_file_bytes: int = DEFAULT_MAX_FILE_BYTES,
    ) -> Snapshot:
        """Commit the working tree's source as it is now onto ``refs/retrolog/runs/<run_id>``."""
        head = self.head()
        branch = self.branch()
        # mkdtemp, not TemporaryDirectory: this runs on a thread that may outlive the
        # atexit finalizers which would delete a TemporaryDirectory under it.
        tmp = tempfile.mkdtemp(prefix="retrolog-index-")
        try:
            index = Path(tmp) / "index"
            env = {"GIT_INDEX_FILE": str(index)}
            user_index = self.root / self._out("rev-parse", "--git-path", "index")
            if user_index.is_file():
                # A copy keeps the user's stat cache, so unchanged files are not re-hashed. Its
                # mtime must stay the user index's: git treats an entry modified in the same
                # second as the index was written as "racily clean" and compares contents, and a
                # fresh mtime turned that off (a same-size edit within a second of a commit was
                # recorded as the commit itself: a wrong code version).
                shutil.copy2(user_index, index)
            elif head:
                self._git("read-tree", head, env=env)
            changed = self._git(
                "ls-files", "-z", "--modified", "--others", "--exclude-standard", env=env
            ).stdout.split(b"\0")
            deleted = set(self._git("ls-files", "-z", "--deleted", env=env).stdout.split(b"\0"))
            add: list[bytes] = []
            remove: list[bytes] = []
            skipped: list[str] = []
            for raw in changed:
                if not raw:
                    continue
                path = self.root / os.fsdecode(raw)
                if raw in deleted or not path.exists():
                    remove.append(raw)
                elif path.is_symlink() or not path.is_file():
                    continue
                elif path.stat().st_size > max_file_bytes:
                    skipped.append(os.fsdecode(raw))
                else:
                    add.append(raw)
            remove.extend(p for p in deleted if p and p not in remove)
            if add:
                self._git(
                    "update-index", "--add", "-z", "--stdin", env=env, input=b"\0".join(add) + b"\0"
                )
            if remove:
                self._git(
                    "update-index",
                    "--force-remove",
                    "-z",
                    "--stdin",
                    env=env,
                    input=b"\0".join(remove) + b"\0",
                )
            tree = self._out("write-tree", env=env)
        finally:
            shutil.rmtree(tmp, ignore_errors=True)
        dirty = bool(add or remove)
        version = self._commit_tree(tree, head, message)
        self._git("update-ref", REF_PREFIX + run_id, version)
        return Snapshot(
            version=version, head=head, branch=branch, dirty=dirty, skipped_large=tuple(skipped)
        )

    def add_files(
        self,
        run_id: str,
        base: str,
        parent: str | None,
        files: dict[str, bytes],
        message: str = "retrolog snapshot",
    ) -> str:
        """A version holding ``base``'s tree plus ``files`` (path -> content), committed on
        ``parent`` like a snapshot and put on the run's ref: how a notebook run adds the code
        its kernel executed, which is in no file of the working tree (notebook/kernel.py)."""
        tmp = tempfile.mkdtemp(prefix="retrolog-index-")
        try:
            env = {"GIT_INDEX_FILE": str(Path(tmp) / "index")}
            self._git("read-tree", base, env=env)
            for path, content in files.items():
                blob = self._out("hash-object", "-w", "--stdin", "--path", path, input=content)
                self._git("update-index", "--add", "--cacheinfo", f"100644,{blob},{path}", env=env)
            tree = self._out("write-tree", env=env)
        finally:
            shutil.rmtree(tmp, ignore_errors=True)
        version = self._commit_tree(tree, parent, message)
        self._git("update-ref", REF_PREFIX + run_id, version)
        return version

    def _commit_tree(self, tree: str, parent: str | None, message: str) -> str:
        if parent:
            date = "@" + self._out("show", "-s", "--format=%ct %z", parent)
            if parent and self._out("rev-parse", f"{parent}^{{tree}}") == tree:
                return parent  # clean tree: the version is the user's own commit
        else:
            date = "@1000000000 +0000"  # any fixed date: versions depend on content only
        env = dict(_IDENTITY, GIT_AUTHOR_DATE=date, GIT_COMMITTER_DATE=date)
        args = ["commit-tree", tree, "-m", message]
        if parent:
            args += ["-p", parent]
        return self._out(*args, env=env)

    # -- reading versions ------------------------------------------------------------------
    def has_commit(self, rev: str) -> bool:
        return self._git("cat-file", "-e", f"{rev}^{{commit}}", check=False).returncode == 0

    def read_file(self, rev: str, path: str) -> str:
        """The text of ``path`` (relative to the repo root) at commit ``rev``."""
        return self._git("show", f"{rev}:{path}").stdout.decode()

    def materialise(self, rev: str, dest: Path | str) -> Path:
        """Write the tree of ``rev`` into ``dest`` (``git archive``; never a checkout in the user's tree)."""
        dest = Path(dest)
        dest.mkdir(parents=True, exist_ok=True)
        data = self._git("archive", "--format=tar", rev).stdout
        with tarfile.open(fileobj=io.BytesIO(data)) as tar:
            tar.extractall(dest, filter="data")
        return dest

    def diff(self, old: str, new: str | None = None, paths: tuple[str, ...] = ()) -> str:
        """Unified diff from ``old`` to ``new`` (a commit), or to the working tree when ``new`` is None."""
        args = ["diff", "--no-color", "--no-ext-diff", old]
        if new:
            args.append(new)
        if paths:
            args += ["--", *paths]
        return self._git(*args).stdout.decode(errors="replace")

    def run_refs(self) -> dict[str, str]:
        """run id -> version commit, for every run snapshot ref."""
        out = self._out("for-each-ref", "--format=%(refname) %(objectname)", REF_PREFIX)
        refs = {}
        for line in out.splitlines():
            name, _, sha = line.partition(" ")
            refs[name[len(REF_PREFIX) :]] = sha
        return refs

    def delete_run_ref(self, run_id: str) -> None:
        self._git("update-ref", "-d", REF_PREFIX + run_id, check=False)
