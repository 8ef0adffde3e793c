"""retrolog rm / gc / du on a real store, object store and git repository."""

import subprocess
import sys
from pathlib import Path

import pytest

import retrolog
from retrolog.maintenance import MaintenanceError, collect_garbage, delete_runs, disk_usage

from .conftest import git, run_python, script_env, write_script

CKPT = """
import numpy as np, retrolog
state = np.zeros(50_000) + retrolog.arg("seed", 0)
with retrolog.checkpointing(state=state):
    for epoch in retrolog.loop("epoch", range(3)):
        for step in retrolog.loop("step", range(2)):
            state += 1.0
        retrolog.log("mean", float(state.mean()))
"""


def test_du_rm_gc(project: Path) -> None:
    write_script(project, CKPT)
    always = {"RETROLOG_CHECKPOINT_BUDGET": "1000"}  # the steps are too quick for a 5% budget
    run_python(project, "train.py", "--kwargs", "seed=1", **always)
    run_python(project, "train.py", "--kwargs", "seed=2", **always)
    usage, total = disk_usage()
    assert [u.checkpoints for u in usage] == [4, 4]  # 3 step-loop exits + the main loop exit
    assert all(u.bytes >= 3 * 400_000 for u in usage) and total >= sum(u.bytes for u in usage) * 0.9
    doomed = usage[0].run_id
    assert delete_runs([doomed[:10]]) == [doomed]
    assert list(retrolog.runs()["run_id"]) == [usage[1].run_id]
    assert retrolog.query("SELECT count(*) AS n FROM logs").loc[0, "n"] == 3
    assert doomed not in git(project, "for-each-ref", "refs/retrolog")
    preview = collect_garbage(dry_run=True)
    blobs, freed = collect_garbage()
    assert (blobs, freed) == preview and blobs >= 3 and freed >= 3 * 400_000
    assert disk_usage()[1] == usage[1].bytes  # the survivor's checkpoints are intact
    assert collect_garbage() == (0, 0)


def test_cli_and_refusals(project: Path) -> None:
    write_script(project, CKPT)
    run_python(project, "train.py")
    env = script_env(COLUMNS="200")
    du = subprocess.run(
        [sys.executable, "-m", "retrolog", "du", "-f", "csv"],
        cwd=project,
        capture_output=True,
        text=True,
        env=env,
    )
    assert du.returncode == 0 and du.stdout.startswith("run_id,status,checkpoints,bytes")
    refused = subprocess.run(
        [sys.executable, "-m", "retrolog", "rm", "NOPE", "--yes"],
        cwd=project,
        capture_output=True,
        text=True,
        env=env,
    )
    assert refused.returncode == 2 and "no run" in refused.stderr
    from retrolog.store import Store

    store = Store(f"sqlite:///{project / '.retrolog' / 'retrolog.db'}")
    store.ingest("LIVE", [[1, "run", {"status": "running", "host": "elsewhere", "pid": 1}]])
    with pytest.raises(MaintenanceError, match="recording"):
        collect_garbage()
