"""Models out of runs: ``retrolog.load`` restores a run's checkpointed state into live objects,
and ``retrolog checkpoints`` lists what there is. Real scripts, real torch, real stores."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

import retrolog

from .conftest import git, run_python, script_env, write_script

torch = pytest.importorskip("torch")

# The model's output on a fixed input, logged at the end of every epoch: what load() must give
# back. Epoch 1 leaves its step loop by `break`, so it has no checkpoint.
TRAIN = """
import time
import torch
import retrolog

torch.set_num_threads(1)
torch.manual_seed(0)
net = torch.nn.Sequential(torch.nn.Linear(4, 16), torch.nn.Tanh(), torch.nn.Linear(16, 1))
opt = torch.optim.SGD(net.parameters(), lr=0.05, momentum=0.9)
retrolog.checkpointing(model=net, optimizer=opt)
X = torch.randn(64, 4)
Y = X.sum(1, keepdim=True)
probe = torch.linspace(-1, 1, 12).reshape(3, 4)
for epoch in retrolog.loop("epoch", range(4)):
    for step in retrolog.loop("step", range(3)):
        opt.zero_grad()
        loss = ((net(X) - Y) ** 2).mean()
        loss.backward()
        opt.step()
        time.sleep(0.01)
        if epoch == 1 and step == 1:
            break
    with torch.no_grad():
        retrolog.log("fingerprint", net(probe).sum().item())
retrolog.name("baseline")
"""

ALWAYS = {"RETROLOG_CHECKPOINT_BUDGET": "1000", "OMP_NUM_THREADS": "1"}


def _model() -> torch.nn.Module:
    torch.manual_seed(123)  # other weights than the run's: load() must overwrite them all
    return torch.nn.Sequential(torch.nn.Linear(4, 16), torch.nn.Tanh(), torch.nn.Linear(16, 1))


def _fingerprint(net: torch.nn.Module) -> float:
    probe = torch.linspace(-1, 1, 12).reshape(3, 4)
    with torch.no_grad():
        return float(net(probe).sum().item())


@pytest.fixture
def trained(project: Path) -> Path:
    write_script(project, TRAIN)
    git(project, "add", "train.py")
    git(project, "commit", "-q", "-m", "train")
    run_python(project, "train.py", **ALWAYS)
    return project


def _recorded_fingerprints(project: Path) -> dict[int, float]:
    frame = retrolog.dataframe("fingerprint", project=project)
    return {int(e): float(v) for e, v in zip(frame["epoch"], frame["fingerprint"], strict=True)}


def test_load_restores_the_model_of_each_checkpointed_epoch(trained: Path) -> None:
    recorded = _recorded_fingerprints(trained)
    assert sorted(recorded) == [0, 1, 2, 3]
    torch.set_num_threads(1)
    for epoch in (0, 2, 3):
        net = _model()
        assert _fingerprint(net) != recorded[epoch]
        opt = torch.optim.SGD(net.parameters(), lr=0.05, momentum=0.9)
        info = retrolog.load("baseline", at={"epoch": epoch}, model=net, optimizer=opt)
        assert info["iteration"] == epoch and info["loop"] == "step"
        assert _fingerprint(net) == recorded[epoch]
        assert opt.state_dict()["state"], "the optimizer's momentum buffers came back too"
    # default: the main loop's exit, i.e. the end of the last epoch; an id prefix works too
    run_id = retrolog.runs(project=trained)["run_id"].iloc[0]
    net = _model()
    info = retrolog.load(run_id[:10].lower(), model=net)
    assert info["iteration"] is None and info["loop"] == "epoch"
    assert _fingerprint(net) == recorded[3]


def test_load_names_the_nearest_checkpoints_when_none_is_there(trained: Path) -> None:
    net = _model()
    before = _fingerprint(net)
    with pytest.raises(retrolog.NotFoundError) as missing:
        retrolog.load("baseline", at={"epoch": 1}, model=net)
    message = str(missing.value)
    assert "no checkpoint at epoch=1" in message
    assert "epoch=0" in message and "epoch=2" in message
    assert _fingerprint(net) == before  # nothing was modified
    with pytest.raises(retrolog.NotFoundError, match=r"epoch=3 and the exit of 'epoch'"):
        retrolog.load("baseline", at={"epoch": 7}, model=net)
    with pytest.raises(retrolog.UsageError, match="main loop 'epoch', not 'step'"):
        retrolog.load("baseline", at={"step": 1}, model=net)
    with pytest.raises(retrolog.UsageError, match="no state for"):
        retrolog.load("baseline", at={"epoch": 0}, model=net, scheduler=_model())
    with pytest.raises(retrolog.NotFoundError, match="no run 'nosuchrun'"):
        retrolog.load("nosuchrun", model=net)


def test_load_refuses_a_model_of_another_shape(trained: Path) -> None:
    other = torch.nn.Sequential(torch.nn.Linear(4, 8), torch.nn.Tanh(), torch.nn.Linear(8, 1))
    with pytest.raises(retrolog.UsageError, match="shape"):
        retrolog.load("baseline", at={"epoch": 0}, model=other)


def test_checkpoints_command_lists_iterations_sizes_and_times(trained: Path) -> None:
    proc = subprocess.run(
        [sys.executable, "-m", "retrolog", "checkpoints", "baseline", "-f", "json"],
        cwd=trained,
        capture_output=True,
        text=True,
        env=script_env(),
    )
    assert proc.returncode == 0, proc.stderr
    rows = json.loads(proc.stdout)
    assert [r["iteration"] for r in rows] == [0, 2, 3, None]
    assert [r["loop"] for r in rows] == ["step", "step", "step", "epoch"]
    assert all(r["bytes"] > 0 and r["created"] for r in rows)
    table = subprocess.run(
        [sys.executable, "-m", "retrolog", "checkpoints", "baseline"],
        cwd=trained,
        capture_output=True,
        text=True,
        env=script_env(COLUMNS="200"),
    )
    assert table.returncode == 0 and "exit" in table.stdout


def test_a_run_without_checkpoints_says_so(project: Path) -> None:
    write_script(
        project,
        "import retrolog\nfor e in retrolog.loop('epoch', range(2)):\n    retrolog.log('x', e)\n",
    )
    run_python(project, "train.py")
    with pytest.raises(retrolog.NotFoundError, match="has no checkpoints"):
        retrolog.load(retrolog.runs(project=project)["run_id"].iloc[0], model=_model())
