"""Shared fixtures: real git repositories, real scripts run in real subprocesses."""

from __future__ import annotations

import os
import shutil
import signal
import subprocess
import sys
import tempfile
import textwrap
import time
import uuid
import warnings
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

GIT_ENV = {
    "GIT_AUTHOR_NAME": "Test User",
    "GIT_AUTHOR_EMAIL": "test@example.com",
    "GIT_COMMITTER_NAME": "Test User",
    "GIT_COMMITTER_EMAIL": "test@example.com",
}


def git(repo: Path, *args: str) -> str:
    env = dict(os.environ, **GIT_ENV)
    return subprocess.run(
        ["git", "-C", str(repo), *args], check=True, capture_output=True, text=True, env=env
    ).stdout


def script_env(**extra: str) -> dict[str, str]:
    env = dict(os.environ)
    for key in ("RETROLOG_DB", "RETROLOG_OBJECTS", "GIT_INDEX_FILE", "GIT_DIR"):
        env.pop(key, None)
    env["RETROLOG_PROGRESS"] = "0"
    env["PYTHONWARNINGS"] = "default"
    env.update(extra)
    return env


def write_script(project: Path, code: str, name: str = "train.py") -> Path:
    path = project / name
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(textwrap.dedent(code))
    return path


def run_python(
    project: Path, script: str, *args: str, check: bool = True, timeout: float = 120, **env: str
) -> subprocess.CompletedProcess[str]:
    proc = subprocess.run(
        [sys.executable, script, *args],
        cwd=project,
        capture_output=True,
        text=True,
        env=script_env(**env),
        timeout=timeout,
    )
    if check and proc.returncode != 0:
        raise AssertionError(f"script failed ({proc.returncode}):\n{proc.stdout}\n{proc.stderr}")
    return proc


def kill_after(project: Path, seconds: float, script: str = "train.py", **env: str) -> int:
    """Run ``script`` (which prints a growing integer per line), SIGKILL it after ``seconds``;
    return the last integer it printed."""
    proc = subprocess.Popen(
        [sys.executable, script],
        cwd=project,
        env=script_env(**env),
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    assert proc.stdout is not None
    last = -1
    deadline = time.monotonic() + seconds
    while time.monotonic() < deadline:
        last = int(proc.stdout.readline())
    proc.send_signal(signal.SIGKILL)
    proc.wait()
    return last


@pytest.fixture
def project(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[Path]:
    """A git repository with one commit, as the cwd; the store lives in its .retrolog/."""
    repo = tmp_path / "proj"
    repo.mkdir()
    git(repo, "init", "-q", "-b", "main")
    (repo / "README.md").write_text("# a project\n")
    (repo / ".gitignore").write_text("data/\n")
    git(repo, "add", "README.md", ".gitignore")
    git(repo, "commit", "-q", "-m", "initial")
    monkeypatch.chdir(repo)
    for key in ("RETROLOG_DB", "RETROLOG_OBJECTS"):
        monkeypatch.delenv(key, raising=False)
    yield repo


SIMPLE_TRAIN = """
import random
import retrolog

lr = retrolog.arg("lr", 0.1)
epochs = retrolog.arg("epochs", 3)
random.seed(retrolog.arg("seed", 0))
for epoch in retrolog.loop("epoch", range(epochs)):
    for step in retrolog.loop("step", range(4)):
        retrolog.log("loss", round(random.random() * lr, 6))
    retrolog.log("acc", epoch / 10)
retrolog.log("final", "done")
"""


@pytest.fixture(scope="session", autouse=True)
def private_fork_servers() -> Iterator[str]:
    """Persistent replay fork servers started by any test (directly, or by a CLI or UI replay in a
    subprocess, which inherits the variable) live in a private folder and are stopped at the end
    of the session, so no process outlives the tests."""
    from retrolog.replaying.forkserver import DIR_ENV, shutdown_servers

    folder = tempfile.mkdtemp(prefix="retrolog-test-forkservers-")
    previous = os.environ.get(DIR_ENV)
    os.environ[DIR_ENV] = folder
    try:
        yield folder
    finally:
        shutdown_servers()
        if previous is None:
            os.environ.pop(DIR_ENV, None)
        else:
            os.environ[DIR_ENV] = previous
        shutil.rmtree(folder, ignore_errors=True)


# --- PostgreSQL: one real server per session (tests/test_postgres.py, test_store_backends.py) ---


@pytest.fixture(scope="session")
def pg_server() -> Iterator[Any]:
    """One PostgreSQL server for the whole session (starts in ~2 s), deleted at the end.

    Its data directory is a fresh one right under the temp directory, not under pytest's
    ``pytest-of-<user>``: run as root, pgserver hands the data directory to an unprivileged user
    and opens every parent directory to it, which would loosen pytest's private directory (and a
    concurrent pytest session closing it again would lock the server out)."""
    with warnings.catch_warnings():  # platformdirs: "XDG_RUNTIME_DIR is not set" on bare CI
        warnings.simplefilter("ignore")
        import pgserver

    pgdata = Path(tempfile.mkdtemp(prefix="retrolog-pg-"))
    server = pgserver.get_server(pgdata, cleanup_mode="delete")
    yield server
    server.cleanup()


def fresh_database(server: Any) -> str:
    """A new, empty database on the server; its SQLAlchemy URL (psycopg 3)."""
    import psycopg

    name = "t_" + uuid.uuid4().hex[:16]
    with psycopg.connect(server.get_uri(), autocommit=True) as conn:
        conn.execute(f"CREATE DATABASE {name}")
    return server.get_uri(name).replace("postgresql://", "postgresql+psycopg://", 1)
