"""The README's query examples, executed as written over a small real project (a doc test: when
the README and the code disagree, this fails)."""

from __future__ import annotations

import re
import shlex
import subprocess
import sys
from pathlib import Path

import pandas as pd
import pytest

from .conftest import git, run_python, script_env, write_script

README = Path(__file__).resolve().parents[1] / "README.md"

# The README's recording example, with a tiny model in place of `net`, `opt` and `loader`.
TRAIN = """
import torch
import retrolog

torch.set_num_threads(1)
torch.manual_seed(0)
lr = retrolog.arg("lr", 1e-3)
epochs = retrolog.arg("epochs", 10)
net = torch.nn.Linear(4, 1)
opt = torch.optim.SGD(net.parameters(), lr=lr)
sched = torch.optim.lr_scheduler.StepLR(opt, step_size=5)
loader = [(torch.randn(8, 4), torch.randn(8, 1)) for _ in range(3)]


def evaluate(model):
    with torch.no_grad():
        return float(-torch.nn.functional.mse_loss(model(loader[0][0]), loader[0][1]))


with retrolog.checkpointing(model=net, optimizer=opt, scheduler=sched):
    for epoch in retrolog.loop("epoch", range(epochs)):
        for x, y in retrolog.loop("step", loader):
            loss = torch.nn.functional.mse_loss(net(x), y)
            opt.zero_grad()
            loss.backward()
            opt.step()
            retrolog.log("loss", loss.item())
        sched.step()
        retrolog.log("val_acc", evaluate(net))
"""


def _block(section: str, language: str) -> str:
    """The first ``language`` code block after the heading ``section`` of the README."""
    text = README.read_text()
    start = text.index(f"## {section}\n")
    match = re.compile(rf"```{language}\n(.*?)```", re.S).search(text, start)
    assert match is not None, f"no {language} block under {section}"
    return match.group(1)


@pytest.fixture(scope="module")
def readme_project(tmp_path_factory: pytest.TempPathFactory) -> Path:
    pytest.importorskip("torch")
    repo = tmp_path_factory.mktemp("readme") / "proj"
    repo.mkdir()
    git(repo, "init", "-q", "-b", "main")
    write_script(repo, TRAIN)
    git(repo, "add", "train.py")
    git(repo, "commit", "-q", "-m", "train")
    run_python(repo, "train.py")  # lr 1e-3
    run_python(repo, "train.py", "--kwargs", "lr=5e-3", "epochs=8")
    return repo


def test_python_query_examples_run_as_written(
    readme_project: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.chdir(readme_project)
    import retrolog

    lines = [line for line in _block("Querying", "python").splitlines() if line.strip()]
    assert len(lines) >= 4
    results = {}
    for line in lines:
        value = eval(line.split("  #")[0].strip(), {"retrolog": retrolog})  # noqa: S307
        assert isinstance(value, pd.DataFrame) and not value.empty, line
        results[line.split("(")[0].strip() + str(len(results))] = value
    runs, wide, filtered, sql = results.values()
    assert len(runs) == 2 and set(runs["lr"]) == {1e-3, 5e-3}
    assert {"lr", "loss", "val_acc", "epoch", "step"} <= set(wide.columns)
    # where="lr > 1e-3 AND epoch >= 5": the 5e-3 run's epochs 5..7, 3 steps each
    assert len(filtered) == 3 * 3 and (filtered["epoch"] >= 5).all()
    assert "lr" not in filtered.columns
    assert dict(zip(sql["name"], sql["count(*)"], strict=True)) == {
        "loss": 3 * 10 + 3 * 8,
        "val_acc": 10 + 8,
    }


def test_command_examples_run_as_written(readme_project: Path) -> None:
    commands = [line for line in _block("Querying", "bash").splitlines() if line.strip()]
    run_id = (
        subprocess.run(
            [sys.executable, "-m", "retrolog", "runs", "-f", "csv"],
            cwd=readme_project,
            capture_output=True,
            text=True,
            env=script_env(),
            check=True,
        )
        .stdout.splitlines()[1]
        .split(",")[0]
    )
    ran = 0
    for line in commands:
        words = shlex.split(line, comments=True)
        assert words[0] == "retrolog", line
        if words[1] == "ui":
            continue  # a server: tests/ui covers it
        if words[1] == "show":
            words[2] = run_id[:10]  # the README's id is an example of a prefix
        proc = subprocess.run(
            [sys.executable, "-m", "retrolog", *words[1:]],
            cwd=readme_project,
            capture_output=True,
            text=True,
            env=script_env(COLUMNS="200"),
            timeout=120,
        )
        assert proc.returncode == 0 and proc.stdout.strip(), (line, proc.stderr)
        ran += 1
    assert ran >= 4
