"""Every run is versioned on a hidden ref, and the user's git state never changes."""

import hashlib
import os
import subprocess
from pathlib import Path

import retrolog
from retrolog.versions import GitRepo

from .conftest import SIMPLE_TRAIN, git, run_python, script_env, write_script


def digest(path: Path) -> str | None:
    return hashlib.sha256(path.read_bytes()).hexdigest() if path.exists() else None


def git_state(repo: Path) -> dict[str, object]:
    """Everything of the user's that a run must leave byte-identical."""
    tree = {
        str(p.relative_to(repo)): digest(p)
        for p in sorted(repo.rglob("*"))
        if p.is_file() and p.relative_to(repo).parts[0] not in (".git", ".retrolog")
    }
    head = subprocess.run(
        ["git", "-C", str(repo), "rev-parse", "-q", "--verify", "HEAD"],
        capture_output=True,
        text=True,
    )
    return {
        "worktree": tree,
        "index": digest(repo / ".git" / "index"),
        "HEAD file": (repo / ".git" / "HEAD").read_text(),
        "HEAD": head.stdout,
        "user refs": git(
            repo, "for-each-ref", "refs/heads", "refs/tags", "refs/stash", "refs/remotes"
        ),
        "stash": git(repo, "stash", "list"),
        "status": git(repo, "status", "--porcelain=v1", "--untracked-files=all"),
    }


def last_run(field: str) -> object:
    return retrolog.runs().iloc[-1][field]


def test_dirty_tree_with_untracked_files_is_captured_and_untouched(project: Path) -> None:
    write_script(project, SIMPLE_TRAIN)
    git(project, "add", "train.py")
    git(project, "commit", "-q", "-m", "train")
    (project / "README.md").write_text("# edited, not committed\n")  # modified
    (project / "model.py").write_text("LAYERS = 3\n")  # untracked
    (project / "staged.py").write_text("X = 1\n")
    git(project, "add", "staged.py")  # staged only
    (project / "data").mkdir()
    (project / "data" / "big.bin").write_bytes(b"ignored by .gitignore")
    (project / "weights.bin").write_bytes(os.urandom(2 << 20))  # untracked but too large
    (project / "notes.txt").write_text("stash me\n")
    git(project, "stash", "push", "-q", "--include-untracked", "--", "notes.txt")
    before = git_state(project)

    run_python(project, "train.py")

    assert git_state(project) == before
    version = str(last_run("version"))
    repo = GitRepo(project)
    assert repo.read_file(version, "README.md") == "# edited, not committed\n"
    assert repo.read_file(version, "model.py") == "LAYERS = 3\n"
    assert repo.read_file(version, "staged.py") == "X = 1\n"
    listed = git(project, "ls-tree", "-r", "--name-only", version).split()
    assert (
        "data/big.bin" not in listed
        and "weights.bin" not in listed
        and not any(".retrolog" in p for p in listed)
    )
    assert last_run("git_dirty") == 1 and last_run("git_branch") == "main"
    assert last_run("git_head") == git(project, "rev-parse", "HEAD").strip()
    run_id = last_run("run_id")
    assert git(project, "rev-parse", f"refs/retrolog/runs/{run_id}").strip() == version


def test_clean_tree_version_is_the_users_commit_and_same_code_shares_a_version(
    project: Path,
) -> None:
    write_script(project, SIMPLE_TRAIN)
    git(project, "add", "train.py")
    git(project, "commit", "-q", "-m", "train")
    run_python(project, "train.py")
    assert (
        last_run("version") == git(project, "rev-parse", "HEAD").strip()
        and last_run("git_dirty") == 0
    )
    (project / "scratch.py").write_text("print(1)\n")
    run_python(project, "train.py")
    run_python(project, "train.py")
    versions = list(retrolog.runs()["version"])
    assert versions[1] == versions[2] != versions[0]


def test_repository_without_commits(project: Path, tmp_path: Path) -> None:
    fresh = tmp_path / "fresh"
    fresh.mkdir()
    git(fresh, "init", "-q")
    write_script(fresh, SIMPLE_TRAIN)
    before = git_state(fresh)
    proc = run_python(fresh, "train.py")
    assert git_state(fresh) == before
    frame = retrolog.runs(project=fresh)
    assert frame.loc[0, "git_head"] is None and isinstance(frame.loc[0, "version"], str)
    assert (
        GitRepo(fresh).read_file(frame.loc[0, "version"], "train.py")
        == (fresh / "train.py").read_text()
    )
    assert "Warning" not in proc.stderr


def test_detached_head(project: Path) -> None:
    write_script(project, SIMPLE_TRAIN)
    git(project, "add", "train.py")
    git(project, "commit", "-q", "-m", "train")
    git(project, "checkout", "-q", "--detach", "HEAD")
    before = git_state(project)
    run_python(project, "train.py")
    assert git_state(project) == before
    assert (
        last_run("git_branch") is None
        and last_run("version") == git(project, "rev-parse", "HEAD").strip()
    )


def test_outside_git_records_without_versions_and_says_so_once(tmp_path: Path) -> None:
    plain = tmp_path / "plain"
    plain.mkdir()
    write_script(plain, SIMPLE_TRAIN)
    proc = run_python(plain, "train.py")
    assert proc.stderr.count("not in a git repository") == 1
    frame = retrolog.runs(project=plain)
    assert frame.loc[0, "status"] == "finished" and frame.loc[0, "version"] is None
    assert len(retrolog.dataframe("loss", project=plain)) == 12


def test_git_missing_warns_and_training_completes(project: Path, tmp_path: Path) -> None:
    write_script(project, SIMPLE_TRAIN)
    bin_dir = tmp_path / "bin"
    bin_dir.mkdir()
    import sys

    os.symlink(sys.executable, bin_dir / "python")
    env = script_env(PATH=str(bin_dir))
    proc = subprocess.run(
        [sys.executable, "train.py"], cwd=project, env=env, capture_output=True, text=True
    )
    assert proc.returncode == 0, proc.stderr
    assert "git is not installed" in proc.stderr
    assert last_run("status") == "finished" and last_run("version") is None


def test_materialise_and_diff(project: Path, tmp_path: Path) -> None:
    write_script(project, SIMPLE_TRAIN)
    run_python(project, "train.py")
    version = str(last_run("version"))
    repo = GitRepo(project)
    out = repo.materialise(version, tmp_path / "old")
    assert (out / "train.py").read_text() == (project / "train.py").read_text()
    assert "+import random" in repo.diff(git(project, "rev-parse", "HEAD").strip(), version)


def test_a_same_size_edit_right_after_a_commit_is_in_the_version(project: Path) -> None:
    """git treats a file changed in the same second as the index was written as "racily clean"
    and compares its content; the snapshot's copy of the index must keep the index's mtime for
    that, or a same-size edit within a second of a commit is recorded as the commit itself."""
    repo = GitRepo(project)
    for attempt in range(5):
        (project / "conf.py").write_text(f"steps = {attempt}0\n")
        git(project, "add", "conf.py")
        git(project, "commit", "-q", "-m", f"steps {attempt}")
        (project / "conf.py").write_text(f"steps = {attempt}1\n")  # same size, same second
        snap = repo.snapshot(f"01RACY{attempt}")
        assert snap.version != snap.head
        shown = git(project, "show", f"{snap.version}:conf.py")
        assert shown == f"steps = {attempt}1\n"
