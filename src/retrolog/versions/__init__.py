"""Git access: run snapshots on hidden refs, reading files at a commit, materialising commits,
and sharing the hidden refs through a git remote (``remote``, ``autopush``)."""

from .git import GitError, GitRepo, Snapshot
from .remote import fetch_command, missing_version_message, pull, push, require_version

__all__ = [
    "GitError",
    "GitRepo",
    "Snapshot",
    "fetch_command",
    "missing_version_message",
    "pull",
    "push",
    "require_version",
]
