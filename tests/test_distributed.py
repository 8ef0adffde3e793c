"""Runs launched with a real ``torchrun --nproc_per_node 2`` (gloo backend, CPU)."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pandas as pd
import pytest

import retrolog

from .conftest import git, script_env, write_script

pytestmark = pytest.mark.slow

DDP = """
import torch
import torch.distributed as dist
import retrolog

import os

torch.set_num_threads(1)
os.makedirs("data", exist_ok=True)
dist.init_process_group("gloo")
rank = dist.get_rank()
torch.manual_seed(0)
model = torch.nn.Linear(4, 1)
ddp = torch.nn.parallel.DistributedDataParallel(model)
opt = torch.optim.SGD(ddp.parameters(), lr=retrolog.arg("lr", 0.1))
for epoch in retrolog.loop("epoch", range(3)):
    x = torch.randn(8, 4, generator=torch.Generator().manual_seed(10 * epoch + rank))
    loss = ddp(x).pow(2).mean()
    opt.zero_grad()
    loss.backward()
    opt.step()
    retrolog.log("loss", loss.item())
    with open(f"data/losses-{rank}.txt", "a") as fh:  # ranks share stdout: a file each
        fh.write(f"{epoch} {loss.item()!r}\\n")
    # NEW
dist.destroy_process_group()
"""


def torchrun(project: Path, **env: str) -> dict[int, list[float]]:
    """Run the script on 2 ranks; return the losses each rank wrote to its file (not read from
    the shared stdout, where a busy machine lost a line)."""
    for rank in (0, 1):
        (project / "data" / f"losses-{rank}.txt").unlink(missing_ok=True)
    proc = subprocess.run(
        [
            sys.executable,
            "-m",
            "torch.distributed.run",
            "--standalone",
            "--nproc_per_node",
            "2",
            "train.py",
        ],
        cwd=project,
        capture_output=True,
        text=True,
        env=script_env(OMP_NUM_THREADS="1", **env),
        timeout=300,
    )
    assert proc.returncode == 0, proc.stdout + proc.stderr
    losses: dict[int, list[float]] = {}
    for rank in (0, 1):
        text = (project / "data" / f"losses-{rank}.txt").read_text()
        losses[rank] = [float(line.split()[1]) for line in text.splitlines()]
    return losses


def recorded(project: Path) -> pd.DataFrame:
    return retrolog.dataframe(
        "loss", "retrolog.rank", "retrolog.world_size", "retrolog.group", project=project
    )


def test_torchrun_records_rank_zero_once_and_replay_refuses(project: Path) -> None:
    write_script(project, DDP)
    git(project, "add", "train.py")
    git(project, "commit", "-q", "-m", "ddp")
    losses = torchrun(project)
    assert losses[0] != losses[1]  # the ranks saw different data

    runs = retrolog.runs(project=project)
    assert len(runs) == 1 and runs.iloc[0]["status"] == "finished"
    frame = recorded(project)
    assert frame["loss"].tolist() == losses[0]  # rank 0's values, none of rank 1's
    assert set(frame["retrolog.rank"]) == {0} and set(frame["retrolog.world_size"]) == {2}
    refs = git(project, "for-each-ref", "--format=%(refname)", "refs/retrolog").split()
    assert refs == [f"refs/retrolog/runs/{runs.iloc[0]['run_id']}"]  # rank 1 left no trace

    write_script(
        project, DDP.replace("    # NEW\n", '    retrolog.log("bias", model.bias.item())\n')
    )
    proc = subprocess.run(
        [sys.executable, "-m", "retrolog", "replay", "bias", "--yes"],
        cwd=project,
        capture_output=True,
        text=True,
        env=script_env(),
        timeout=120,
    )
    assert proc.returncode == 6, proc.stdout + proc.stderr  # refused, nothing ran
    said = proc.stdout + proc.stderr
    assert "nothing to replay" in said
    assert "rank 0 of 2 processes" in said and "WORLD_SIZE=2" in said
    assert "bias" not in json.dumps(retrolog.dataframe("loss", project=project).columns.tolist())


def test_all_ranks_record_their_own_runs_in_one_group(project: Path) -> None:
    write_script(project, DDP)
    losses = torchrun(project, RETROLOG_RANKS="all")
    frame = recorded(project)
    assert len(retrolog.runs(project=project)) == 2
    by_rank = {int(r): g["loss"].tolist() for r, g in frame.groupby("retrolog.rank")}
    assert by_rank == losses
    assert frame["retrolog.group"].nunique() == 1 and len(frame["run_id"].unique()) == 2
