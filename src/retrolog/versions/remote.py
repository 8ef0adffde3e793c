"""Sharing code versions through a git remote: ``retrolog push`` / ``retrolog pull``.

Every run's version sits on its own hidden ref ``refs/retrolog/runs/<run id>`` (see ``git.py``),
including a clean run whose version is the user's HEAD commit, so moving the refs moves every
commit a run needs. Both directions use git itself with one explicit refspec,
``refs/retrolog/*:refs/retrolog/*``: git sends only the objects the other side lacks, and the
user's branches, tags, HEAD, index, working tree and ``FETCH_HEAD`` are never touched. Refs are
never forced: a run id names one run, so a ref that differs on the two sides is reported, not
overwritten.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

from ..errors import MissingVersionError, UsageError
from .git import GitError, GitRepo

REFSPEC = "refs/retrolog/*:refs/retrolog/*"
DEFAULT_REMOTE = "origin"


@dataclass
class Transfer:
    """What a push or pull did: refs created, refs already equal, refs git refused."""

    remote: str
    new: list[str] = field(default_factory=list)
    unchanged: int = 0
    rejected: list[str] = field(default_factory=list)

    def summary(self, verb: str) -> str:
        text = f"{verb} {len(self.new)} new run version(s) ({self.unchanged} already there)"
        if self.rejected:
            text += (
                f"; {len(self.rejected)} ref(s) differ on {self.remote} and were left as they "
                f"are: {', '.join(self.rejected[:5])}"
            )
        return text


def fetch_command(remote: str | None = None) -> str:
    """The command that brings missing versions here (named in every missing-version error)."""
    return f"retrolog pull {remote or DEFAULT_REMOTE}"


def missing_version_message(run_id: str, version: str, remote: str | None = None) -> str:
    """One line naming the run, the commit that is missing and the command that fetches it."""
    return (
        f"run {run_id}: its code version {version[:12]} is not in this repository "
        f"(recorded in another clone?); fetch it with `{fetch_command(remote)}`"
    )


def require_version(root: Path | str, run_id: str, version: str) -> None:
    """Raise :class:`MissingVersionError` unless commit ``version`` exists in the repository."""
    if not GitRepo(root).has_commit(version):
        raise MissingVersionError(missing_version_message(run_id, version))


def _repo(root: Path | str) -> GitRepo:
    repo = GitRepo(root)
    if not GitRepo.available():
        raise UsageError("git is not installed; code versions cannot be shared")
    if repo._git("rev-parse", "--git-dir", check=False).returncode != 0:
        raise UsageError(f"{root} is not a git repository; there are no code versions to share")
    return repo


def resolve_remote(repo: GitRepo, remote: str | None) -> str:
    """``remote`` (default ``origin``) if the repository knows it, else a usage error."""
    name = remote or DEFAULT_REMOTE
    if name.startswith("-"):
        raise UsageError(f"not a git remote: {name!r}")
    known = repo._out("remote").split()
    if name not in known:
        hint = f" (known: {', '.join(known)})" if known else ""
        raise UsageError(
            f"this repository has no git remote named {name!r}{hint}; add one with "
            f"`git remote add {name} URL` or name another: `retrolog push REMOTE`"
        )
    return name


def _parse_porcelain(out: str, transfer: Transfer) -> None:
    """Read ``git push --porcelain`` lines: ``<flag>\\t<from>:<to>\\t<summary>``."""
    for line in out.splitlines():
        parts = line.split("\t")
        if len(parts) < 2 or len(line) < 2 or line[0] not in "*+-=! ":
            continue
        ref = parts[1].rpartition(":")[2]
        flag = line[0]
        if flag == "=":
            transfer.unchanged += 1
        elif flag == "!":
            transfer.rejected.append(ref)
        else:
            transfer.new.append(ref)


def push(root: Path | str, remote: str | None = None, refs: list[str] | None = None) -> Transfer:
    """Push the hidden refs (all of them, or only ``refs``) to ``remote``; never forced."""
    repo = _repo(root)
    name = resolve_remote(repo, remote)
    if refs is None and not _hidden_refs(repo):
        return Transfer(remote=name)  # no run recorded here: git would call the refspec an error
    specs = [f"{ref}:{ref}" for ref in refs] if refs is not None else [REFSPEC]
    proc = repo._git("push", "--porcelain", "--no-verify", name, *specs, check=False)
    transfer = Transfer(remote=name)
    _parse_porcelain(proc.stdout.decode(errors="replace"), transfer)
    if proc.returncode != 0 and not transfer.rejected:
        err = proc.stderr.decode(errors="replace").strip().splitlines()
        raise GitError(f"git push to {name} failed: {err[-1] if err else proc.returncode}")
    return transfer


def pull(root: Path | str, remote: str | None = None) -> Transfer:
    """Fetch the hidden refs of ``remote`` (and the commits they reach) into this repository."""
    repo = _repo(root)
    name = resolve_remote(repo, remote)
    before = _hidden_refs(repo)
    proc = repo._git(
        "fetch", "--no-tags", "--no-write-fetch-head", "--verbose", name, REFSPEC, check=False
    )
    after = _hidden_refs(repo)
    err = proc.stderr.decode(errors="replace")
    transfer = Transfer(remote=name)
    transfer.new = sorted(r for r in after if r not in before or after[r] != before[r])
    transfer.unchanged = sum(1 for line in err.splitlines() if "[up to date]" in line)
    if proc.returncode != 0:
        transfer.rejected = sorted(
            line.split("->")[-1].strip().split()[0]
            for line in err.splitlines()
            if "[rejected]" in line and "->" in line
        )
        if not transfer.rejected:
            lines = err.strip().splitlines()
            raise GitError(f"git fetch from {name} failed: {lines[-1] if lines else ''}")
    return transfer


def _hidden_refs(repo: GitRepo) -> dict[str, str]:
    out = repo._out("for-each-ref", "--format=%(refname) %(objectname)", "refs/retrolog/")
    return dict(line.split(" ", 1) for line in out.splitlines() if " " in line)


def remote_run_refs(root: Path | str, remote: str | None = None) -> dict[str, str] | None:
    """run id -> commit of the run refs ``remote`` holds; None when it cannot be asked."""
    from .git import REF_PREFIX

    repo = GitRepo(root)
    name = remote or DEFAULT_REMOTE
    if name not in repo._out("remote").split():
        return None
    proc = repo._git("ls-remote", "--refs", name, REF_PREFIX + "*", check=False)
    if proc.returncode != 0:
        return None
    refs = {}
    for line in proc.stdout.decode(errors="replace").splitlines():
        sha, _, ref = line.partition("\t")
        if ref.startswith(REF_PREFIX):
            refs[ref[len(REF_PREFIX) :]] = sha
    return refs


__all__ = [
    "DEFAULT_REMOTE",
    "REFSPEC",
    "Transfer",
    "fetch_command",
    "missing_version_message",
    "missing_versions_message",
    "pull",
    "push",
    "remote_run_refs",
    "require_version",
    "resolve_remote",
]


def missing_versions_message(runs: list[tuple[str, str]], remote: str | None = None) -> str:
    """One line for several runs (run id, version) whose versions are all missing."""
    if len(runs) == 1:
        return missing_version_message(*runs[0], remote=remote)
    listed = ", ".join(f"{run} ({version[:12]})" for run, version in runs[:5])
    more = f" and {len(runs) - 5} more" if len(runs) > 5 else ""
    return (
        f"the code versions of {len(runs)} runs are not in this repository (recorded in another "
        f"clone?): {listed}{more}; fetch them with `{fetch_command(remote)}`"
    )
