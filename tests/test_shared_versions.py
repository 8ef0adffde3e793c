"""Code versions shared through a git remote: two clones of one repository, one store.

Clone A records runs whose versions exist only in A (a local commit and two dirty snapshots);
clone B sees the runs through the shared store but not their code until `retrolog pull`.
"""

from __future__ import annotations

import json
import subprocess
import sys
import time
from pathlib import Path

import pytest

from tests.conftest import git, script_env

TRAIN = """
import random
import retrolog

lr = retrolog.arg("lr", 0.1)
random.seed(retrolog.arg("seed", 0))
for epoch in retrolog.loop("epoch", range(2)):
    for step in retrolog.loop("step", range(3)):
        retrolog.log("loss", round(random.random() * lr, 6))
    retrolog.log("acc", epoch / 10)
"""


def cli(cwd: Path, *args: str, **env: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "retrolog", *args],
        cwd=cwd,
        capture_output=True,
        text=True,
        env=script_env(**env),
        timeout=120,
    )


def record(cwd: Path, *args: str, **env: str) -> None:
    proc = subprocess.run(
        [sys.executable, "train.py", *args],
        cwd=cwd,
        capture_output=True,
        text=True,
        env=script_env(**env),
        timeout=120,
    )
    assert proc.returncode == 0, proc.stderr


def user_state(repo: Path) -> tuple[str, str, str, str]:
    """What retrolog must never change: branches and tags, HEAD, index, working tree."""
    index = (repo / ".git" / "index").read_bytes()
    return (
        git(repo, "for-each-ref", "refs/heads", "refs/tags", "refs/remotes"),
        git(repo, "rev-parse", "HEAD"),
        str(hash(index)),
        git(repo, "status", "--porcelain", "--untracked-files=all"),
    )


@pytest.fixture
def clones(tmp_path: Path) -> dict[str, Path]:
    """A bare remote, clone A (with 3 recorded runs) and clone B (cloned before them)."""
    remote = tmp_path / "remote.git"
    git(tmp_path, "init", "-q", "--bare", "-b", "main", str(remote))
    a = tmp_path / "a"
    git(tmp_path, "clone", "-q", str(remote), str(a))
    (a / ".gitignore").write_text(".retrolog/\n")
    (a / "train.py").write_text(TRAIN)
    git(a, "add", ".gitignore", "train.py")
    git(a, "commit", "-q", "-m", "train v1")
    git(a, "push", "-q", "origin", "main")
    b = tmp_path / "b"
    git(tmp_path, "clone", "-q", str(remote), str(b))
    # Versions B lacks: a local commit (a clean run's version is that commit) and dirty trees.
    (a / "train.py").write_text(TRAIN.replace("range(3)", "range(4)"))
    git(a, "commit", "-q", "-am", "four steps, not pushed")
    env = {
        "RETROLOG_DB": f"sqlite:///{tmp_path / 'shared.db'}",
        "RETROLOG_OBJECTS": str(tmp_path / "objects"),
    }
    record(a, "--kwargs", "lr=0.1", **env)
    (a / "train.py").write_text(TRAIN.replace("range(3)", "range(5)"))
    record(a, "--kwargs", "lr=0.2", **env)
    (a / "train.py").write_text(TRAIN.replace("range(3)", "range(2)"))
    record(a, "--kwargs", "lr=0.3", **env)
    return {"remote": remote, "a": a, "b": b, "env": env}  # type: ignore[dict-item]


def run_ids(cwd: Path, env: dict[str, str]) -> list[str]:
    proc = cli(cwd, "runs", "-f", "json", **env)
    assert proc.returncode == 0, proc.stderr
    return sorted(r["run_id"] for r in json.loads(proc.stdout))


NEW_STATEMENT = 'lr = retrolog.arg("lr", 0.1)\nretrolog.log("lr_x2", lr * 2)\n'


@pytest.mark.slow
def ui_diff(b: Path, run_id: str) -> dict:
    """The UI's diff of a run against HEAD, as its JSON API serves it in clone ``b``."""
    from fastapi.testclient import TestClient

    from retrolog.ui import create_app

    client = TestClient(create_app(b), base_url="http://127.0.0.1")
    response = client.get(f"/api/runs/{run_id}/diff")
    assert response.status_code == 200, response.text
    return response.json()


def test_push_then_pull_shares_versions(clones: dict, monkeypatch: pytest.MonkeyPatch) -> None:
    a, b, env = clones["a"], clones["b"], clones["env"]
    for key, value in env.items():  # the UI runs in this process
        monkeypatch.setenv(key, value)
    ids = run_ids(b, env)
    assert len(ids) == 3
    versions = {r: git(a, "rev-parse", f"refs/retrolog/runs/{r}").strip() for r in ids}
    assert len(set(versions.values())) == 3
    assert versions[ids[0]] == git(a, "rev-parse", "HEAD").strip()  # the clean run: HEAD itself

    # Without the versions, B's commands that need them fail with the fetch command.
    shown = cli(b, "show", ids[0], **env)
    assert shown.returncode == 4, shown.stderr
    assert ids[0] in shown.stderr and versions[ids[0]][:12] in shown.stderr
    assert "retrolog pull origin" in shown.stderr
    assert "fatal" not in shown.stderr and "Traceback" not in shown.stderr
    (b / "train.py").write_text(TRAIN.replace('lr = retrolog.arg("lr", 0.1)\n', NEW_STATEMENT))
    replayed = cli(b, "replay", "lr_x2", "--yes", **env)
    assert replayed.returncode == 4, replayed.stdout + replayed.stderr
    assert "retrolog pull origin" in replayed.stderr and "3 runs" in replayed.stderr
    view = ui_diff(b, ids[1])
    assert view["text"] is None and "retrolog pull origin" in view["note"]
    frame = cli(b, "df", "loss", "-f", "json", **env)  # no version needed
    assert frame.returncode == 0 and len(json.loads(frame.stdout)) == 4 * 2 + 5 * 2 + 2 * 2

    before_a = user_state(a)
    pushed = cli(a, "push", **env)
    assert pushed.returncode == 0, pushed.stderr
    assert "3 new" in pushed.stdout
    assert user_state(a) == before_a
    remote_refs = git(clones["remote"], "for-each-ref", "--format=%(refname)", "refs/retrolog")
    assert sorted(remote_refs.split()) == sorted(f"refs/retrolog/runs/{r}" for r in ids)
    assert "refs/heads/main" in git(clones["remote"], "for-each-ref")  # still only v1 on main
    assert git(clones["remote"], "rev-parse", "main") != git(a, "rev-parse", "HEAD")

    before_b = user_state(b)
    pulled = cli(b, "pull", "origin", **env)
    assert pulled.returncode == 0, pulled.stderr
    assert "3 new" in pulled.stdout
    assert user_state(b) == before_b  # branches, HEAD, index, working tree untouched
    again = cli(b, "pull", **env)
    assert again.returncode == 0 and "0 new" in again.stdout and "3 already" in again.stdout

    shown = cli(b, "show", ids[1], "-f", "json", **env)
    assert shown.returncode == 0, shown.stderr
    assert "range(5)" in json.loads(shown.stdout)["diff"]
    assert "range(5)" in ui_diff(b, ids[1])["text"]
    replayed = cli(b, "replay", "lr_x2", "--yes", **env)
    assert replayed.returncode == 0, replayed.stdout + replayed.stderr
    values = cli(b, "df", "lr_x2", "-f", "json", **env)
    assert values.returncode == 0, values.stderr
    got = {row["run_id"]: row["lr_x2"] for row in json.loads(values.stdout)}
    assert got == pytest.approx({ids[0]: 0.2, ids[1]: 0.4, ids[2]: 0.6})
    # A, sharing the store, sees the values B replayed on its runs.
    seen = cli(a, "df", "lr_x2", "-f", "json", **env)
    assert sorted(r["run_id"] for r in json.loads(seen.stdout)) == ids

    # Deleting a run in A: the remote and B keep its version ref, and both commands say so.
    removed = cli(a, "rm", ids[2], "--yes", **env)
    assert removed.returncode == 0, removed.stderr
    assert "still on origin" in removed.stderr and ids[2] in removed.stderr
    gc = cli(b, "gc", **env)
    assert gc.returncode == 0, gc.stderr
    assert "kept 1 code-version ref(s)" in gc.stderr and ids[2] in gc.stderr
    assert git(b, "rev-parse", f"refs/retrolog/runs/{ids[2]}").strip() == versions[ids[2]]


def test_ui_diff_names_the_fetch_command(clones: dict) -> None:
    from retrolog.project import find_project
    from retrolog.ui import gitinfo

    a, b = clones["a"], clones["b"]
    version = git(a, "rev-parse", "HEAD").strip()
    text, note = gitinfo.diff(find_project(b), version, "HEAD")
    assert text is None and note is not None
    assert version[:10] in note and "retrolog pull origin" in note


def test_push_without_a_remote_is_one_line(project: Path) -> None:
    proc = cli(project, "push")
    assert proc.returncode == 2
    assert "no git remote named 'origin'" in proc.stderr and "Traceback" not in proc.stderr
    proc = cli(project, "pull", "upstream")
    assert proc.returncode == 2 and "'upstream'" in proc.stderr


def test_auto_push_after_each_run(tmp_path: Path) -> None:
    remote = tmp_path / "remote.git"
    git(tmp_path, "init", "-q", "--bare", "-b", "main", str(remote))
    repo = tmp_path / "c"
    git(tmp_path, "clone", "-q", str(remote), str(repo))
    (repo / ".gitignore").write_text(".retrolog/\n")
    (repo / "train.py").write_text(TRAIN)
    git(repo, "add", ".gitignore", "train.py")
    git(repo, "commit", "-q", "-m", "v1")
    before = user_state(repo)
    record(repo, RETROLOG_AUTO_PUSH="1")
    (run_ref,) = git(repo, "for-each-ref", "--format=%(refname)", "refs/retrolog").split()
    deadline = time.monotonic() + 30
    while time.monotonic() < deadline:
        if run_ref in git(remote, "for-each-ref", "--format=%(refname)"):
            break
        time.sleep(0.2)
    else:
        raise AssertionError("the run's version never reached the remote")
    assert git(remote, "rev-parse", run_ref) == git(repo, "rev-parse", "HEAD")
    assert git(remote, "for-each-ref", "refs/heads") == ""  # the branch was not pushed
    assert user_state(repo) == before

    # A remote that does not exist: the run still succeeds, with one warning.
    proc = subprocess.run(
        [sys.executable, "train.py"],
        cwd=repo,
        capture_output=True,
        text=True,
        env=script_env(RETROLOG_AUTO_PUSH="nowhere"),
        timeout=120,
    )
    assert proc.returncode == 0, proc.stderr
    assert proc.stderr.count("RETROLOG_AUTO_PUSH names the git remote 'nowhere'") == 1


def test_push_pull_edge_cases(tmp_path: Path) -> None:
    """Nothing recorded yet: 0 new, exit 0. A run ref that differs on the two sides is never
    forced either way: both commands name it and exit 1, and neither side's ref moves."""
    remote = tmp_path / "remote.git"
    git(tmp_path, "init", "-q", "--bare", "-b", "main", str(remote))
    repo = tmp_path / "c"
    git(tmp_path, "clone", "-q", str(remote), str(repo))
    git(repo, "commit", "-q", "--allow-empty", "-m", "one")
    first = git(repo, "rev-parse", "HEAD").strip()
    pushed = cli(repo, "push")
    assert pushed.returncode == 0 and "0 new" in pushed.stdout, pushed.stderr
    git(repo, "update-ref", "refs/retrolog/runs/R1", first)
    assert "1 new" in cli(repo, "push").stdout
    git(repo, "checkout", "-q", "--orphan", "other")
    git(repo, "commit", "-q", "--allow-empty", "-m", "unrelated")
    other = git(repo, "rev-parse", "HEAD").strip()
    git(repo, "update-ref", "refs/retrolog/runs/R1", other)
    for command in ("push", "pull"):
        proc = cli(repo, command)
        assert proc.returncode == 1, proc.stdout + proc.stderr
        assert "differ on origin" in proc.stdout and "refs/retrolog/runs/R1" in proc.stdout
    assert git(remote, "rev-parse", "refs/retrolog/runs/R1").strip() == first
    assert git(repo, "rev-parse", "refs/retrolog/runs/R1").strip() == other
