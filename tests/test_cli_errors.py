"""Bad input to every command, as a user types it: one line on stderr, no traceback, and the exit
code docs/cli.md documents (2 for bad input: unknown run or name, ambiguous prefix, bad --where or
SQL, missing project directory or store)."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from .conftest import SIMPLE_TRAIN, git, run_python, script_env, write_script


def cli(cwd: Path, *args: str, **env: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "retrolog", *args],
        cwd=cwd,
        capture_output=True,
        text=True,
        env=script_env(COLUMNS="200", **env),
        timeout=120,
    )


def assert_one_line_error(proc: subprocess.CompletedProcess[str], code: int, *words: str) -> str:
    """The command failed with ``code`` and said why in one line; returns that line."""
    lines = proc.stderr.strip().splitlines()
    assert proc.returncode == code, (proc.returncode, proc.stderr)
    assert "Traceback" not in proc.stderr
    assert len(lines) == 1 and lines[0].startswith("retrolog"), proc.stderr
    for word in words:
        assert word in lines[0], (word, lines[0])
    return lines[0]


@pytest.fixture(scope="module")
def two_runs(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, list[str]]:
    """A project with two recorded runs, and their ids."""
    repo = tmp_path_factory.mktemp("errors") / "proj"
    repo.mkdir()
    git(repo, "init", "-q", "-b", "main")
    write_script(repo, SIMPLE_TRAIN)
    git(repo, "add", "train.py")
    git(repo, "commit", "-q", "-m", "train")
    for lr in ("0.1", "0.01"):
        run_python(repo, "train.py", "--kwargs", f"lr={lr}", "epochs=2")
    ids = [row["run_id"] for row in json.loads(cli(repo, "runs", "-f", "json").stdout)]
    return repo, ids


@pytest.fixture(scope="module")
def no_runs(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A git repository where nothing was ever recorded."""
    repo = tmp_path_factory.mktemp("empty") / "proj"
    repo.mkdir()
    git(repo, "init", "-q", "-b", "main")
    (repo / "README.md").write_text("nothing here\n")
    git(repo, "add", "README.md")
    git(repo, "commit", "-q", "-m", "initial")
    return repo


BAD_INPUT = [
    (["show", "ZZZZZZZZ"], "no run"),
    (["rm", "--yes", "ZZZZZZZZ"], "no run"),
    (["runs", "--where", "nosuch > 1"], "no such column: nosuch"),
    (["runs", "--where", "lr >"], "bad --where"),
    (["df", "loss", "--where", "nosuch > 1"], "no such column: nosuch"),
    (["df", "loss", "--where", "nope("], "bad --where"),
    (["df", "los"], "did you mean 'loss'"),
    (["df", "lr_decay"], "unknown name 'lr_decay'"),
    (["sql", "SELEC run_id FROM runs"], "syntax error"),
    (["sql", "SELECT nosuch FROM runs"], "no such column"),
    (["sql", "DELETE FROM runs"], "read-only"),
    (["sql", ""], "empty query"),
    (["replay", "loss", "--where", "nosuch > 1", "--dry-run"], "nosuch"),
    (["runs", "--format", "xml"], "xml"),
    (["runs", "--bogus"], "--bogus"),
    (["nosuchcommand"], "nosuchcommand"),
    (["propagate"], "required"),
    (["propagate", "--line", "x", "train.py", "train.py"], "invalid int"),
    (["propagate", "--line", "1", "nofile.py", "train.py"], "No such file"),
]


@pytest.mark.parametrize(("args", "says"), BAD_INPUT, ids=[" ".join(a) for a, _ in BAD_INPUT])
def test_bad_input_is_one_line_and_exit_2(
    two_runs: tuple[Path, list[str]], args: list[str], says: str
) -> None:
    repo, _ = two_runs
    assert_one_line_error(cli(repo, *args), 2, says)


@pytest.mark.parametrize("command", ["show", "rm"])
def test_ambiguous_prefix_lists_the_candidates(
    two_runs: tuple[Path, list[str]], command: str
) -> None:
    repo, ids = two_runs
    prefix = os.path.commonprefix(ids)
    assert prefix  # every run id starts with its start time: two runs share at least "0"
    args = [command, "--yes", prefix] if command == "rm" else [command, prefix]
    line = assert_one_line_error(cli(repo, *args), 2, "ambiguous", "2 runs")
    listed = line.split("(")[1].split(")")[0].split(", ")
    assert sorted(ids) == sorted(next(i for i in ids if i.startswith(p)) for p in listed)
    assert len(cli(repo, "runs", "-f", "json").stdout) > 2  # nothing was deleted


COMMANDS = [
    ["runs"],
    ["df", "loss"],
    ["sql", "SELECT 1"],
    ["show", "01"],
    ["du"],
    ["rm", "--yes", "01"],
    ["gc"],
    ["replay", "loss", "--dry-run"],
    ["ui"],
]


@pytest.mark.parametrize("args", COMMANDS, ids=[a[0] for a in COMMANDS])
def test_a_missing_project_directory_fails_and_creates_nothing(
    tmp_path: Path, args: list[str]
) -> None:
    missing = tmp_path / "no" / "such" / "dir"
    assert_one_line_error(cli(tmp_path, *args, "-C", str(missing)), 2, "no such project directory")
    assert not (tmp_path / "no").exists()


@pytest.mark.parametrize("args", COMMANDS[:7], ids=[a[0] for a in COMMANDS[:7]])
def test_a_repository_without_runs_says_so_and_creates_no_store(
    no_runs: Path, args: list[str]
) -> None:
    assert_one_line_error(cli(no_runs, *args), 2, "no runs recorded")
    assert not (no_runs / ".retrolog").exists()
    assert git(no_runs, "status", "--porcelain") == ""


def test_version_and_completion(two_runs: tuple[Path, list[str]]) -> None:
    repo, ids = two_runs
    from retrolog import __version__

    version = cli(repo, "--version")
    assert version.returncode == 0 and version.stdout.strip() == f"retrolog {__version__}"
    env = {"_RETROLOG_COMPLETE": "complete_bash", "COMP_CWORD": "2"}
    runs = cli(repo, **env, COMP_WORDS=f"retrolog show {ids[1][:3]}")
    assert sorted(runs.stdout.split()) == sorted(ids)
    names = cli(repo, **env, COMP_WORDS="retrolog df lo")
    assert names.stdout.split() == ["loss"]
    commands = cli(
        repo, _RETROLOG_COMPLETE="complete_bash", COMP_CWORD="1", COMP_WORDS="retrolog s"
    )
    assert set(commands.stdout.split()) == {"show", "sql"}


def test_ui_on_a_bad_or_taken_port(two_runs: tuple[Path, list[str]]) -> None:
    import socket

    repo, _ = two_runs
    assert_one_line_error(cli(repo, "ui", "--port", "99999"), 2, "--port")
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        port = taken.getsockname()[1]
        assert_one_line_error(cli(repo, "ui", "--port", str(port)), 2, "cannot serve", str(port))
