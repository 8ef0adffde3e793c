"""Replay of a script laid out like pytorch/examples' mnist: ``main()`` holds the epoch loop, the
batch loop is in ``train()``, evaluation in ``test()``, the model in ``model.py``.

Real git history (two versions: a learning-rate scheduler is added in the second), three real
torch runs, real subprocesses. A reference project runs the same code with the new statements
typed in by hand from the start; replayed values must equal its values exactly.
"""

from __future__ import annotations

import json
import shutil
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest

import retrolog
from retrolog.replaying import ReplayError, replay
from retrolog.replaying.plan import NothingToReplay

from ..conftest import git, run_python, script_env, write_script

pytestmark = pytest.mark.slow

MODEL = """\
import torch
from torch import nn

import retrolog


class Net(nn.Module):
    def __init__(self):
        super().__init__()
        self.fc1 = nn.Linear(8, 16)
        self.drop = nn.Dropout(0.2)
        self.fc2 = nn.Linear(16, 2)

    def forward(self, x):
        h = torch.relu(self.fc1(x))
        # FORWARD
        return torch.log_softmax(self.fc2(self.drop(h)), dim=1)
"""

TRAIN = """\
import argparse

import torch
import torch.nn.functional as F

import retrolog
from model import Net

torch.set_num_threads(1)


def train(args, model, loader, optimizer, epoch):
    model.train()
    for batch_idx, (data, target) in retrolog.loop("step", enumerate(loader)):
        optimizer.zero_grad()
        output = model(data)
        loss = F.nll_loss(output, target)
        loss.backward()
        # INNER
        optimizer.step()
        retrolog.log("loss", loss.item())


def test(model, loader):
    model.eval()
    test_loss = 0.0
    with torch.no_grad():
        for data, target in loader:
            test_loss += F.nll_loss(model(data), target, reduction="sum").item()
    # OUTER
    retrolog.log("test_loss", test_loss / 32)


def main():
    parser = argparse.ArgumentParser()
    parser.add_argument("--epochs", type=int, default=3)
    parser.add_argument("--lr", type=float, default=0.05)
    parser.add_argument("--seed", type=int, default=1)
    args = parser.parse_args()
    torch.manual_seed(args.seed)
    X = torch.randn(96, 8)
    y = (X[:, 0] + X[:, 1] > 0).long()
    loader = list(zip(X[:64].split(16), y[:64].split(16)))
    test_loader = list(zip(X[64:].split(16), y[64:].split(16)))
    model = Net()
    optimizer = torch.optim.SGD(model.parameters(), lr=args.lr)
    with retrolog.checkpointing(model=model, optimizer=optimizer):
        for epoch in retrolog.loop("epoch", range(1, args.epochs + 1)):
            train(args, model, loader, optimizer, epoch)
            test(model, test_loader)


if __name__ == "__main__":
    main()
"""

# the second version: a scheduler, registered and stepped once per epoch
TRAIN_V2 = TRAIN.replace(
    "    with retrolog.checkpointing(model=model, optimizer=optimizer):\n",
    "    scheduler = torch.optim.lr_scheduler.StepLR(optimizer, step_size=1, gamma=0.7)\n"
    "    with retrolog.checkpointing(model=model, optimizer=optimizer, scheduler=scheduler):\n",
).replace(
    "            test(model, test_loader)\n",
    "            test(model, test_loader)\n            scheduler.step()\n",
)

STATEMENTS = {
    "grad_norm": (
        "train.py",
        "        # INNER\n",
        '        retrolog.log("grad_norm", sum(p.grad.norm().item() for p in model.parameters()))\n',
    ),
    # a list comprehension: the plan must show it whole
    "w_abs": (
        "train.py",
        "    # OUTER\n",
        '    retrolog.log("w_abs", [p.detach().abs().sum().item() for p in model.parameters()][0])\n',
    ),
    "h_mean": (
        "model.py",
        "        # FORWARD\n",
        '        retrolog.log("h_mean", h.mean().item())\n',
    ),
}
RUNS = (
    (TRAIN, ("--seed", "1")),
    (TRAIN_V2, ("--seed", "2")),
    (TRAIN_V2, ("--seed", "3", "--lr", "0.1")),
)


def with_statements(files: dict[str, str], *names: str) -> dict[str, str]:
    out = dict(files)
    for name in names:
        path, marker, statement = STATEMENTS[name]
        assert marker in out[path]
        out[path] = out[path].replace(marker, marker + statement)
    return out


def record(repo: Path, *names: str) -> None:
    """Two commits (v1, v2), one run of v1 and two of v2, with ``names`` typed in from the start."""
    git(repo, "init", "-q", "-b", "main")
    for index, (train, args) in enumerate(RUNS):
        for path, text in with_statements({"train.py": train, "model.py": MODEL}, *names).items():
            write_script(repo, text, path)
        if index < 2:
            git(repo, "add", "train.py", "model.py")
            git(repo, "commit", "-q", "-m", f"v{index + 1}")
        run_python(repo, "train.py", *args)


@pytest.fixture(scope="module")
def history(tmp_path_factory: pytest.TempPathFactory) -> Path:
    repo = tmp_path_factory.mktemp("layout-history") / "proj"
    repo.mkdir()
    record(repo)
    return repo


@pytest.fixture(scope="module")
def reference(tmp_path_factory: pytest.TempPathFactory) -> Path:
    repo = tmp_path_factory.mktemp("layout-reference") / "proj"
    repo.mkdir()
    record(repo, *STATEMENTS)
    return repo


@pytest.fixture
def project(history: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """A private copy of the history, with today's code = v2 (clean)."""
    copy = tmp_path / "proj"
    shutil.copytree(history, copy, symlinks=True)
    monkeypatch.chdir(copy)
    return copy


def add_statements(project: Path, *names: str) -> None:
    files = with_statements({"train.py": TRAIN_V2, "model.py": MODEL}, *names)
    for path, text in files.items():
        write_script(project, text, path)


def logged(project: Path, name: str) -> dict[tuple[str, tuple[tuple[str, int], ...]], list[Any]]:
    """(argv, loop coordinates) -> values of ``name`` at them, in the order they were logged."""
    logs = retrolog.query(
        "SELECT r.argv, l.run, l.ctx_id, l.value_num FROM logs l JOIN runs r ON r.id = l.run "
        "WHERE l.name = :n ORDER BY l.run, l.seq",
        {"n": name},
        project=project,
    )
    loops = retrolog.query(
        "SELECT run, ctx_id, parent_id, name, iteration FROM loops", project=project
    )
    parent = {(r.run, r.ctx_id): (r.parent_id, r.name, r.iteration) for r in loops.itertuples()}

    def path(run: int, ctx: int) -> tuple[tuple[str, int], ...]:
        out: list[tuple[str, int]] = []
        while ctx:
            ctx, loop, iteration = parent[(run, ctx)]
            out.insert(0, (loop, int(iteration)))
        return tuple(out)

    values: dict[tuple[str, tuple[tuple[str, int], ...]], list[Any]] = {}
    for row in logs.itertuples():
        key = (" ".join(json.loads(row.argv)[1:]), path(row.run, row.ctx_id))
        values.setdefault(key, []).append(row.value_num)
    return values


@pytest.mark.parametrize(
    ("names", "levels"),
    [
        (["grad_norm"], {"inner"}),  # in train()'s batch loop, first loop in the file
        (["w_abs"], {"outer"}),  # in test(), called from the epoch loop
        (["grad_norm", "w_abs"], {"inner"}),  # together: the same values as alone
    ],
)
def test_statements_in_train_and_test_replay_at_their_level(
    project: Path, reference: Path, names: list[str], levels: set[str]
) -> None:
    add_statements(project, *names)
    report = replay(names, workers=2)
    assert {r.level for r in report.runs} == levels, report.summary()
    assert {r.fidelity for r in report.runs} == {"reproduced"}, report.summary()
    assert all(r.compared > 0 for r in report.runs)
    v1 = next(r for r in report.plan.runs if r.version == report.plan.runs[0].version)
    assert {r.version for r in report.plan.runs} and len({r.version for r in report.plan.runs}) == 2
    assert any(r.propagated for r in report.plan.runs), "v1 needed propagation (no scheduler)"
    assert v1.tasks
    for name in names:
        got, expected = logged(project, name), logged(reference, name)
        assert got == expected and len(expected) >= 3 * 3


def test_a_statement_in_the_models_forward(project: Path, reference: Path) -> None:
    """``forward`` is called through ``model(x)``, from train()'s batch loop and from test():
    inner level, every call reached, values equal to the reference's."""
    add_statements(project, "h_mean")
    report = replay("h_mean", workers=2)
    assert {r.level for r in report.runs} == {"inner"}, report.summary()
    assert {r.fidelity for r in report.runs} == {"reproduced"}, report.summary()
    got, expected = logged(project, "h_mean"), logged(reference, "h_mean")
    assert got == expected
    assert any(len(path) == 1 for _argv, path in expected)  # test()'s calls, per epoch


def test_a_selection_of_nothing_is_an_error_with_the_reason(project: Path) -> None:
    add_statements(project, "grad_norm")
    with pytest.raises(NothingToReplay) as caught:
        replay("grad_norm", where="epoch > 100", dry_run=True)
    lines = str(caught.value).splitlines()
    assert lines[0] == "nothing to replay:" and len(lines) == 1 + 3
    assert all("no row of this run matches --where" in line for line in lines[1:])
    assert isinstance(caught.value, ReplayError)
    proc = subprocess.run(
        [sys.executable, "-m", "retrolog", "replay", "grad_norm", "--dry-run", "-w", "epoch > 100"],
        cwd=project,
        capture_output=True,
        text=True,
        env=script_env(COLUMNS="200"),
        timeout=120,
    )
    assert proc.returncode == NothingToReplay.exit_code != 0, proc.stderr
    assert proc.stderr.count("no row of this run matches --where") == 3, proc.stderr


def test_the_plan_shows_the_whole_statement_and_what_happens_to_nested_loops(project: Path) -> None:
    add_statements(project, "w_abs")
    proc = subprocess.run(
        [sys.executable, "-m", "retrolog", "replay", "w_abs", "--dry-run"],
        cwd=project,
        capture_output=True,
        text=True,
        env=script_env(COLUMNS="250"),
        timeout=120,
    )
    assert proc.returncode == 0, proc.stderr
    out = " ".join(proc.stdout.split())
    assert "[p.detach().abs().sum().item() for p in model.parameters()][0]" in out
    assert "(nested loop step restored from checkpoints" in out  # some may lack one
    assert "placed at train.py:" in out and "confidence" in out  # v1's propagated placement


def test_a_repeated_replay_runs_no_task_and_force_recomputes(project: Path) -> None:
    add_statements(project, "w_abs")
    first = replay("w_abs", workers=2)
    assert first.stored == 3 * 3
    tasks = retrolog.query("SELECT count(*) AS n FROM replay_tasks")["n"][0]
    with pytest.raises(NothingToReplay, match=f"already replayed by {first.replay_id}; --force"):
        replay("w_abs", workers=2)
    assert retrolog.query("SELECT count(*) AS n FROM replay_tasks")["n"][0] == tasks
    states: list[tuple[str, float]] = []

    def on_event(kind: str, task_id: int, info: dict[str, Any]) -> None:
        if kind == "finished":  # stored as done now, not when the whole replay has been collected
            row = retrolog.query(
                "SELECT status, progress FROM replay_tasks WHERE task_id = :t AND replay_id = "
                "(SELECT replay_id FROM replays WHERE status = 'running')",
                {"t": task_id},
            )
            states.extend(zip(row["status"], row["progress"], strict=True))

    again = replay("w_abs", workers=1, force=True, on_event=on_event)
    assert again.executed and again.stored == 0 and again.plan.tasks
    assert states == [("done", 1.0)] * len(again.plan.tasks)
    provenance = retrolog.query("SELECT DISTINCT replay_id FROM logs WHERE name = 'w_abs'")
    assert list(provenance["replay_id"]) == [first.replay_id]


def test_runs_fit_an_80_column_terminal(project: Path) -> None:
    proc = subprocess.run(
        [sys.executable, "-m", "retrolog", "runs"],
        cwd=project,
        capture_output=True,
        text=True,
        env=script_env(COLUMNS="80"),
        timeout=120,
    )
    assert proc.returncode == 0, proc.stderr
    lines = proc.stdout.splitlines()
    assert all(len(line) <= 80 for line in lines)
    rows = [line for line in lines if "finished" in line]
    assert len(rows) == 3  # one line per run: columns are not folded to a few characters
    assert all("finished" in r and "train.py" in r for r in rows)
    assert "hidden for width" in proc.stderr  # what did not fit is named


def test_a_failed_tasks_reason_is_shown_whole() -> None:
    from rich.console import Console

    from retrolog.replaying.api import ReplayReport
    from retrolog.replaying.execute import RunResult
    from retrolog.replaying.plan import Plan
    from retrolog.replaying.render import render_report

    error = "RuntimeError: the data directory /mnt/datasets/imagenet/train is not mounted here"
    detail = f"task 3 failed after 2 attempts:\nTraceback (most recent call last):\n  ...\n{error}"
    plan = Plan("r", ["x"], "train.py", [], None, 1, [], 1e9)
    report = ReplayReport(plan, runs=[RunResult("01ABC", "inner", "failed", detail=detail)])
    console = Console(record=True, width=80)
    render_report(console, report)
    rows = [line.split("│") for line in console.export_text().splitlines() if "│" in line]
    notes = "".join(cells[-2] for cells in rows).replace(" ", "")  # the last column, unwrapped
    assert f"task 3 failed after 2 attempts:{error}".replace(" ", "") in notes
