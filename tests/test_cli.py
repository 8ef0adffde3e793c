"""The retrolog command, run as a user runs it."""

import json
import subprocess
import sys
from pathlib import Path

import pytest

from .conftest import SIMPLE_TRAIN, git, run_python, script_env, write_script


def cli(project: Path, *args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "retrolog", *args],
        cwd=project,
        capture_output=True,
        text=True,
        env=script_env(COLUMNS="200"),
    )


@pytest.fixture
def recorded(project: Path) -> Path:
    write_script(project, SIMPLE_TRAIN)
    git(project, "add", "train.py")
    git(project, "commit", "-q", "-m", "train")
    run_python(project, "train.py", "--kwargs", "lr=0.5", "epochs=2")
    return project


def test_runs_in_each_format(recorded: Path) -> None:
    table = cli(recorded, "runs")
    assert table.returncode == 0 and "finished" in table.stdout and "train.py" in table.stdout
    rows = json.loads(cli(recorded, "runs", "--format", "json").stdout)
    assert len(rows) == 1 and rows[0]["lr"] == 0.5 and rows[0]["status"] == "finished"
    csv = cli(recorded, "runs", "-f", "csv").stdout.splitlines()
    assert csv[0].startswith("run_id,") and len(csv) == 2


def test_df_with_where(recorded: Path) -> None:
    rows = json.loads(cli(recorded, "df", "lr", "loss", "--where", "step = 3", "-f", "json").stdout)
    assert [(r["epoch"], r["step"], r["lr"]) for r in rows] == [(0, 3, 0.5), (1, 3, 0.5)]
    bad = cli(recorded, "df", "loss", "--where", "nope(")
    assert bad.returncode == 2 and "bad --where" in bad.stderr


def test_sql_and_its_refusals(recorded: Path) -> None:
    out = cli(
        recorded,
        "sql",
        "SELECT name, count(*) AS n FROM metrics GROUP BY name ORDER BY name",
        "-f",
        "csv",
    )
    assert out.stdout.splitlines() == ["name,n", "acc,2", "final,1", "loss,8"]
    denied = cli(recorded, "sql", "DELETE FROM runs")
    assert denied.returncode == 2 and "read-only" in denied.stderr


def test_show_with_diff_against_head(recorded: Path) -> None:
    run_id = json.loads(cli(recorded, "runs", "-f", "json").stdout)[0]["run_id"]
    (recorded / "train.py").write_text(SIMPLE_TRAIN.replace("range(4)", "range(5)"))
    git(recorded, "commit", "-qam", "more steps")
    shown = cli(recorded, "show", run_id[:8])
    assert shown.returncode == 0
    assert "finished" in shown.stdout and "loss" in shown.stdout
    assert '-    for step in retrolog.loop("step", range(4)):' in shown.stdout
    report = json.loads(cli(recorded, "show", run_id, "-f", "json").stdout)
    assert report["args"] == {"lr": 0.5, "epochs": 2, "seed": 0}
    assert {m["name"]: m["count"] for m in report["metrics"]} == {"loss": 8, "acc": 2, "final": 1}
    missing = cli(recorded, "show", "ZZZZ")
    assert missing.returncode == 2 and "no run" in missing.stderr
