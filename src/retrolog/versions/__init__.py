"""Git access: run snapshots on hidden refs, reading files at a commit, materialising commits."""

from .git import GitError, GitRepo, Snapshot

__all__ = ["GitError", "GitRepo", "Snapshot"]
