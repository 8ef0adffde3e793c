"""A replay never writes the user's files: per-task scratch trees and the worker's guard.

The guard tests run real scripts in real subprocesses (``python guard.py SCRIPT``, as the plain
subprocess executor starts them) inside a scratch tree built by ``Sandboxes`` from a real user
directory, and check the user's files byte for byte afterwards. The end-to-end test records real
torch runs in a real git repository and replays them with the fork server.
"""

from __future__ import annotations

import hashlib
import json
import os
import sqlite3
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest

import retrolog
from retrolog.replaying import replay
from retrolog.replaying.executor import Job, LocalProcessExecutor
from retrolog.replaying.guard import GUARD_FILE
from retrolog.replaying.sandbox import SANDBOX_ENV, Sandboxes, TaskSandbox

from ..conftest import git, run_python, script_env, write_script
from ..test_versions import git_state

REFUSED = "retrolog replay: refusing to"


def tree_digest(root: Path) -> dict[str, str]:
    """Every path under ``root`` (but .git and .retrolog): file -> sha256, link -> its text."""
    out = {}
    for path in sorted(root.rglob("*")):
        rel = path.relative_to(root)
        if rel.parts[0] in (".git", ".retrolog"):
            continue
        if path.is_symlink():
            out[str(rel)] = "link:" + os.readlink(path)
        elif path.is_file():
            out[str(rel)] = hashlib.sha256(path.read_bytes()).hexdigest()
        else:
            out[str(rel)] = "dir"
    return out


@pytest.fixture
def user(tmp_path: Path) -> Path:
    """A user's project: data to read, outputs of earlier runs, a directory too big to mirror."""
    root = tmp_path / "user"
    (root / "data").mkdir(parents=True)
    (root / "data" / "train.csv").write_text("1,2\n3,4\n")
    (root / "out").mkdir()
    for name in ("log.txt", "a.txt", "b.txt", "c.txt", "trunc.txt", "mode.txt", "old.txt"):
        (root / "out" / name).write_text(f"user {name}\n")
    (root / "out" / "ckpt.pt").write_bytes(b"user checkpoint")
    (root / "out" / "arr.npy").write_bytes(b"user array")
    (root / "model.pt").write_bytes(b"user model")
    (root / "out" / "table.csv").write_text("user table\n")
    (root / "out" / "raw.bin").write_bytes(b"user raw")
    with sqlite3.connect(root / "out" / "runs.db") as db:
        db.execute("CREATE TABLE runs (lr REAL)")
    db.close()
    (root / "big").mkdir()
    for i in range(30):
        (root / "big" / f"f{i:02}.bin").write_bytes(b"x" * i)
    (root / ".git").mkdir()
    (root / ".git" / "HEAD").write_text("ref: refs/heads/main\n")
    (root / "__pycache__").mkdir()
    return root


def sandbox(
    user: Path, tmp_path: Path, cap: int = 25, eager: int = 25
) -> tuple[Sandboxes, TaskSandbox]:
    version = tmp_path / "version"
    version.mkdir(exist_ok=True)
    (version / "train.py").write_text("print('version')\n")
    work = tmp_path / "work"
    work.mkdir(exist_ok=True)
    boxes = Sandboxes(user, {"v1": version}, work, cap=cap, eager=eager)
    return boxes, boxes.create(1, "v1")


def run_guarded(box: TaskSandbox, code: str) -> subprocess.CompletedProcess[str]:
    script = box.root / "check.py"
    script.write_text(textwrap.dedent(code))
    return subprocess.run(
        [sys.executable, GUARD_FILE, str(script)],
        cwd=box.root,
        env=script_env(**{SANDBOX_ENV: str(box.manifest)}),
        capture_output=True,
        text=True,
        timeout=120,
    )


def test_the_scratch_tree_mirrors_the_users_entries(user: Path, tmp_path: Path) -> None:
    (user / "latest.pt").symlink_to("out/ckpt.pt")
    (user / "venv").mkdir()
    (user / "venv" / "pyvenv.cfg").write_text("home = /usr\n")
    boxes, box = sandbox(user, tmp_path)
    root = box.root
    assert (root / "train.py").read_text() == "print('version')\n"
    assert (root / "out").is_dir() and not (root / "out").is_symlink()
    assert os.readlink(root / "out" / "ckpt.pt") == str(user / "out" / "ckpt.pt")
    assert (root / "data" / "train.csv").read_text() == "1,2\n3,4\n"
    assert os.readlink(root / "latest.pt") == "out/ckpt.pt"  # relative link kept
    assert os.readlink(root / "venv") == str(user / "venv")  # an environment stays one link
    assert os.readlink(root / "big") == str(user / "big")  # 30 entries do not fit the cap
    for skipped in (".git", "__pycache__", ".retrolog"):
        assert not os.path.lexists(root / skipped)
    assert boxes.seconds > 0
    # a second task gets a tree of its own
    other = boxes.create(2, "v1").root
    assert other != root and (other / "out").is_dir() and (other / "train.py").is_file()


def test_writes_through_links_stay_in_scratch(user: Path, tmp_path: Path) -> None:
    before = tree_digest(user)
    _boxes, box = sandbox(user, tmp_path)
    proc = run_guarded(
        box,
        """
        import json, os, shutil
        import numpy as np
        import torch

        seen = {}

        with open("out/log.txt", "w") as fh:
            fh.write("replay\\n")
        with open("out/a.txt", "a") as fh:
            fh.write("appended\\n")
        with open("out/b.txt", "r+") as fh:
            fh.write("R")
        fd = os.open("out/trunc.txt", os.O_WRONLY | os.O_TRUNC)
        os.write(fd, b"os.open")
        os.close(fd)
        os.truncate("out/c.txt", 2)
        os.chmod("out/mode.txt", 0o600)
        os.utime("out/mode.txt", (1, 1))
        torch.save({"w": torch.ones(2)}, "out/ckpt.pt")
        np.save("out/arr.npy", np.arange(3))
        shutil.copy("data/train.csv", "model.pt")
        np.arange(2, dtype=np.uint8).tofile("out/raw.bin")
        import pandas as pd
        pd.DataFrame({"a": [1]}).to_csv("out/table.csv", index=False)
        import sqlite3
        db = sqlite3.connect("out/runs.db")
        db.execute("INSERT INTO runs VALUES (0.1)")
        db.commit()
        seen["rows"] = db.execute("SELECT count(*) FROM runs").fetchone()[0]
        db.close()
        os.remove("out/old.txt")
        os.rename("out/log.txt", "out/renamed.txt")
        seen.update({p: open(p, "rb").read().decode("latin-1") for p in
                ("out/renamed.txt", "out/a.txt", "out/b.txt", "out/trunc.txt", "out/c.txt",
                 "model.pt", "out/raw.bin", "out/table.csv")})
        seen["links"] = sorted(p for p in os.listdir("out") if os.path.islink("out/" + p))
        seen["ckpt"] = torch.load("out/ckpt.pt")["w"].tolist()
        seen["arr"] = np.load("out/arr.npy").tolist()
        seen["data"] = open("data/train.csv").read()
        print(json.dumps(seen))
        """,
    )
    assert proc.returncode == 0, proc.stderr
    seen = json.loads(proc.stdout.splitlines()[-1])
    assert seen["out/renamed.txt"] == "replay\n"
    assert seen["out/a.txt"] == "user a.txt\nappended\n"  # copy-on-write keeps the content
    assert seen["out/b.txt"] == "Rser b.txt\n"
    assert seen["out/trunc.txt"] == "os.open"
    assert seen["out/c.txt"] == "us"
    assert seen["model.pt"] == "1,2\n3,4\n"
    assert seen["out/raw.bin"] == "\x00\x01" and seen["out/table.csv"] == "a\n1\n"
    assert seen["rows"] == 1
    assert seen["ckpt"] == [1.0, 1.0] and seen["arr"] == [0, 1, 2]
    assert seen["data"] == "1,2\n3,4\n"  # read in place
    assert seen["links"] == []  # old.txt's link deleted, every written link made private
    assert tree_digest(user) == before
    assert (user / "out" / "mode.txt").stat().st_mtime > 1


def test_a_directory_left_as_a_link_is_mirrored_when_written_under(
    user: Path, tmp_path: Path
) -> None:
    (user / "big" / "sub").mkdir()
    (user / "big" / "sub" / "deep.txt").write_text("deep\n")
    (user / "big" / "other").mkdir()
    external = tmp_path / "external"  # the user's link to data outside the project
    external.mkdir()
    (external / "e.txt").write_text("external\n")
    (user / "big" / "elsewhere").symlink_to(external)
    before, external_before = tree_digest(user), tree_digest(external)
    _boxes, box = sandbox(user, tmp_path, cap=100, eager=5)
    assert (box.root / "big").is_symlink() and (box.root / "out").is_symlink()
    proc = run_guarded(
        box,
        """
        import os
        import torch

        with open("big/sub/deep.txt", "a") as fh:
            fh.write("replay\\n")
        torch.save({}, "out/ckpt.pt")
        with open("out/new.txt", "w") as fh:
            fh.write("new\\n")
        print(open("big/sub/deep.txt").read().split(), open("big/f03.bin", "rb").read())
        print(sorted(os.listdir("big")) == sorted(os.listdir(USER_BIG)))
        with open("big/elsewhere/e.txt", "a") as fh:
            fh.write("replay\\n")
        print(open("big/elsewhere/e.txt").read().split())
        try:
            open(EXTERNAL + "/new.txt", "w")
        except PermissionError as exc:
            print(str(exc).split(": it lies")[0])
        os.chdir("big/other")  # still a link: the guard makes it a real directory first
        with open("here.txt", "w") as fh:
            fh.write("written after chdir")
        """.replace("USER_BIG", repr(str(user / "big"))).replace("EXTERNAL", repr(str(external))),
    )
    assert proc.returncode == 0, proc.stderr
    assert proc.stdout.splitlines() == [
        "['deep', 'replay'] b'xxx'",
        "True",
        "['external', 'replay']",
        f"{REFUSED} write {external / 'new.txt'}",
    ]
    assert tree_digest(external) == external_before
    assert (box.root / "big" / "other" / "here.txt").read_text() == "written after chdir"
    for path in ("big", "big/sub", "out"):
        assert not (box.root / path).is_symlink() and (box.root / path).is_dir()
    assert os.readlink(box.root / "big" / "f03.bin") == str(user / "big" / "f03.bin")
    assert (box.root / "out" / "new.txt").read_text() == "new\n"
    assert tree_digest(user) == before


def test_a_working_directory_under_a_linked_directory_becomes_real(
    user: Path, tmp_path: Path
) -> None:
    """A run started in an ignored subdirectory: a process there must see a scratch path."""
    (user / "big" / "sub").mkdir()
    boxes, box = sandbox(user, tmp_path, cap=100, eager=5)
    cwd = box.root / "big" / "sub"
    assert cwd.is_dir() and (box.root / "big").is_symlink()
    env = boxes.env(box.task_id, cwd)
    assert env == {SANDBOX_ENV: str(box.manifest)}
    assert not (box.root / "big").is_symlink() and not cwd.is_symlink()
    assert os.path.realpath(cwd).startswith(os.path.realpath(box.root))
    assert (box.root / "big" / "f03.bin").is_file()


def test_exclusive_create_on_a_link_fails_as_in_the_users_tree(user: Path, tmp_path: Path) -> None:
    before = tree_digest(user)
    _boxes, box = sandbox(user, tmp_path)
    proc = run_guarded(
        box,
        """
        try:
            open("out/a.txt", "x")
        except FileExistsError:
            print("exists")
        with open("out/new.txt", "x") as fh:
            fh.write("new")
        """,
    )
    assert proc.returncode == 0, proc.stderr
    assert proc.stdout.split() == ["exists"]
    assert (box.root / "out" / "new.txt").read_text() == "new"
    assert tree_digest(user) == before


def test_writes_into_the_users_tree_are_refused(user: Path, tmp_path: Path) -> None:
    before = tree_digest(user)
    _boxes, box = sandbox(user, tmp_path)
    proc = run_guarded(
        box,
        f"""
        import os, shutil
        import torch

        attempts = {{
            "absolute": lambda: open({str(user / "out" / "a.txt")!r}, "w"),
            "new absolute": lambda: open({str(user / "out" / "new.txt")!r}, "w"),
            "dotdot": lambda: open("big/../big/f01.bin", "a"),
            "capped": lambda: open("big/f01.bin", "w"),
            "capped new": lambda: open("big/new.bin", "wb"),
            "capped os.open": lambda: os.open("big/f02.bin", os.O_WRONLY | os.O_TRUNC),
            "capped torch": lambda: torch.save({{}}, "big/f03.bin"),
            "capped remove": lambda: os.remove("big/f04.bin"),
            "capped rename": lambda: os.rename("big/f05.bin", "out/stolen.bin"),
            "capped mkdir": lambda: os.mkdir("big/sub"),
            "capped truncate": lambda: os.truncate("big/f06.bin", 0),
            "rmtree": lambda: shutil.rmtree({str(user / "out")!r}),
            "copy onto": lambda: shutil.copy("data/train.csv", {str(user / "model.pt")!r}),
        }}
        for name, attempt in attempts.items():
            try:
                attempt()
                print("ALLOWED", name)
            except PermissionError as exc:
                assert str(exc).startswith({REFUSED!r}), exc
                print("refused", name)
        os.remove("big")  # removing the directory link itself only removes the link
        print("link removed", not os.path.lexists("big"))
        """,
    )
    assert proc.returncode == 0, proc.stderr
    assert "ALLOWED" not in proc.stdout, proc.stdout
    assert proc.stdout.count("refused") == 13
    assert "link removed True" in proc.stdout
    assert tree_digest(user) == before


def test_plain_subprocess_executor_runs_tasks_under_the_guard(user: Path, tmp_path: Path) -> None:
    before = tree_digest(user)
    _boxes, box = sandbox(user, tmp_path)
    (box.root / "train.py").write_text(
        "import sys\nopen('out/a.txt', 'w').write(sys.argv[1])\nopen('big/f01.bin', 'w')\n"
    )
    log = tmp_path / "work" / "task.log"
    job = Job(
        1,
        [sys.executable, str(box.root / "train.py"), "replayed"],
        box.root,
        script_env(**{SANDBOX_ENV: str(box.manifest)}),
        log,
        tmp_path / "work" / "task.progress",
        tmp_path / "work" / "task.out",
    )
    [result] = LocalProcessExecutor(1, retries=0, poll_seconds=0.05).run([job], lambda *a: None)
    assert result.returncode == 1 and REFUSED in log.read_text()
    assert (box.root / "out" / "a.txt").read_text() == "replayed"
    assert tree_digest(user) == before


def test_fork_server_children_run_under_the_guard_forked_or_exec_d(
    user: Path, tmp_path: Path
) -> None:
    """A forked child installs the guard itself; one that must exec a fresh interpreter (here:
    another PYTHONHASHSEED) starts it through guard.py."""
    from retrolog.replaying.forkserver import ForkServerExecutor

    before = tree_digest(user)
    boxes, _box = sandbox(user, tmp_path)
    jobs = []
    for task_id, extra in ((1, {}), (2, {"PYTHONHASHSEED": "123"})):
        box = boxes.create(task_id, "v1") if task_id != 1 else boxes.tasks[1]
        (box.root / "train.py").write_text(
            "import torch\n"
            "torch.save({}, 'out/ckpt.pt')\n"
            "open('out/a.txt', 'a').write('task')\n"
            "try:\n    open('big/f01.bin', 'w')\nexcept PermissionError as exc:\n    print(exc)\n"
        )
        env = script_env(**{SANDBOX_ENV: str(box.manifest)}, **extra)
        work = tmp_path / "work"
        jobs.append(
            Job(
                task_id,
                [sys.executable, str(box.root / "train.py")],
                box.root,
                env,
                work / f"t{task_id}.log",
                work / f"t{task_id}.progress",
                work / f"t{task_id}.out",
            )
        )
    executor = ForkServerExecutor(2, retries=0, preload=["torch"], persist=False)
    results = executor.run(jobs, lambda *a: None)
    assert [r.returncode for r in results] == [0, 0], [r.log_tail for r in results]
    assert set(executor.exec_reasons) == {2}
    for job in jobs:
        assert REFUSED in job.log_path.read_text()
        assert (job.cwd / "out" / "a.txt").read_text() == "user a.txt\ntask"
        assert not (job.cwd / "out" / "ckpt.pt").is_symlink()
    assert tree_digest(user) == before


def test_a_changed_user_file_fails_the_task(user: Path, tmp_path: Path) -> None:
    from retrolog.replaying.executor import JobResult

    boxes, box = sandbox(user, tmp_path)
    assert boxes.finished(box.task_id) == []
    (user / "out" / "a.txt").write_text("changed behind the guard's back\n")
    (user / "big" / "new.bin").write_bytes(b"created in a linked directory")
    result = JobResult(box.task_id, 0, 1.0, 1, "task output")
    boxes.apply([result])
    assert not result.ok
    assert f"replay changed the user's file {user / 'out' / 'a.txt'}" in result.log_tail
    assert f"replay changed the user's directory {user / 'big'}" in result.log_tail


TRAIN_FILES = """\
import os

import torch
from torch import nn

import retrolog

torch.set_num_threads(1)
lr = retrolog.arg("lr", 0.1)
torch.manual_seed(0)
rows = [[float(v) for v in line.split(",")] for line in open("data/train.csv")]
data = torch.tensor(rows)
X, y = data[:, :3], data[:, 3:]
model = nn.Linear(3, 1)
opt = torch.optim.SGD(model.parameters(), lr=lr)
if os.path.exists("out/old.txt"):
    os.remove("out/old.txt")
with retrolog.checkpointing(model=model, optimizer=opt):
    for epoch in retrolog.loop("epoch", range(3)):
        for step in retrolog.loop("step", range(2)):
            opt.zero_grad()
            loss = ((model(X) - y) ** 2).mean()
            loss.backward()
            opt.step()
        norm = model.weight.norm().item()
        retrolog.log("wn", norm)
        # NEW
        torch.save(model.state_dict(), "out/ckpt.pt")
        torch.save(model.state_dict(), "model.pt")
        with open("out/log.txt", "a") as fh:
            fh.write(f"{lr} {epoch} {norm}\\n")
        with open("out/old.txt", "w") as fh:
            fh.write(f"written by lr={lr}\\n")
"""


@pytest.mark.slow
def test_replay_leaves_every_user_file_byte_identical(project: Path) -> None:
    (project / ".gitignore").write_text("data/\nout/\n")
    git(project, "add", ".gitignore")
    git(project, "commit", "-q", "-m", "ignore outputs")
    (project / "data").mkdir()
    (project / "data" / "train.csv").write_text(
        "".join(f"{i % 3},{i % 5},{i % 7},{i % 2}\n" for i in range(12))
    )
    (project / "out").mkdir()
    write_script(project, TRAIN_FILES)
    git(project, "add", "train.py")
    git(project, "commit", "-q", "-m", "train")
    for lr in ("0.1", "0.05", "0.02"):
        run_python(project, "train.py", "--kwargs", f"lr={lr}")
    write_script(
        project,
        TRAIN_FILES.replace(
            "        # NEW\n",
            '        # NEW\n        retrolog.log("wn2", model.weight.norm().item() + 1)\n',
        ),
    )
    before = git_state(project)
    paths_before = tree_digest(project)
    assert {"out/ckpt.pt", "out/log.txt", "out/old.txt", "model.pt"} <= set(paths_before)

    report = replay("wn2", workers=2)

    assert all(job.ok for job in report.jobs), [job.log_tail for job in report.jobs]
    assert [r.fidelity for r in report.runs] == ["reproduced"] * 3
    assert report.stored == 9
    assert tree_digest(project) == paths_before
    assert git_state(project) == before
    frame = retrolog.dataframe("lr", "wn", "wn2", project=project)
    frame = frame[frame["wn"].notna()]
    assert len(frame) == 9 and sorted(frame["lr"].unique()) == [0.02, 0.05, 0.1]
    assert (frame["wn2"] - frame["wn"] - 1).abs().max() < 1e-9
