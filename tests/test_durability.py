"""Kills, crashes, concurrent writers and unwritable stores: nothing is lost or corrupted."""

import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

import retrolog

from .conftest import kill_after, run_python, script_env, write_script

pytestmark = pytest.mark.slow

TICKER = """
import sys, time, retrolog
for i in retrolog.loop("tick", range(100000)):
    retrolog.log("i", i)
    print(i, flush=True)
    time.sleep(0.01)
"""


def test_sigkill_loses_at_most_about_a_second_and_is_recovered(project: Path) -> None:
    write_script(project, TICKER)
    last = kill_after(project, 3.0)
    rate = (last + 1) / 3.0  # rows per second actually achieved
    cli = subprocess.run(
        [sys.executable, "-m", "retrolog", "runs", "--format", "json"],
        cwd=project,
        capture_output=True,
        text=True,
        env=script_env(),
    )
    assert cli.returncode == 0, cli.stderr
    run = retrolog.runs().iloc[0]
    assert run["status"] == "crashed"
    stored = retrolog.dataframe("i")["i"]
    assert list(stored) == list(range(len(stored)))  # a prefix, in order, no gaps
    assert last - stored.iloc[-1] <= rate * 1.3, (last, stored.iloc[-1], rate)
    assert not list((project / ".retrolog" / "journals").glob("*.journal"))


def test_recovery_is_idempotent_and_not_fooled_by_live_runs(project: Path) -> None:
    write_script(project, TICKER)
    proc = subprocess.Popen(
        [sys.executable, "train.py"],
        cwd=project,
        env=script_env(),
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    assert proc.stdout is not None
    for _ in range(150):
        proc.stdout.readline()
    deadline = time.monotonic() + 20
    while retrolog.runs().empty and time.monotonic() < deadline:  # the store writer may lag
        time.sleep(0.2)
    assert retrolog.runs().iloc[0]["status"] == "running"  # alive: its journal stays locked
    proc.send_signal(signal.SIGKILL)
    proc.wait()
    first = retrolog.dataframe("i")
    second = retrolog.dataframe("i")
    assert len(first) == len(second) and first["i"].is_unique


WORKER = """
import sys, retrolog
k = retrolog.arg("k", 0)
for e in retrolog.loop("epoch", range(40)):
    for s in retrolog.loop("step", range(50)):
        retrolog.log("v", k * 1_000_000 + e * 1000 + s)
"""


def test_eight_concurrent_runs_share_one_store(project: Path) -> None:
    write_script(project, WORKER)
    procs = [
        subprocess.Popen(
            [sys.executable, "train.py", "--kwargs", f"k={k}"],
            cwd=project,
            env=script_env(),
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
        )
        for k in range(8)
    ]
    outputs = [p.communicate(timeout=300) for p in procs]
    for p, (_out, err) in zip(procs, outputs):
        assert p.returncode == 0, err
        assert "locked" not in err and "Warning" not in err, err
    frame = retrolog.dataframe("k", "v")
    assert len(frame) == 8 * 2000
    assert (retrolog.runs()["status"] == "finished").all()
    for k, rows in frame.groupby("k"):
        expected = [k * 1_000_000 + e * 1000 + s for e in range(40) for s in range(50)]
        assert list(rows["v"]) == expected
        assert rows["run_id"].nunique() == 1


SMALL = """
import retrolog
for e in retrolog.loop("epoch", range(3)):
    retrolog.log("loss", 1.0 / (e + 1))
print("trained")
"""


def test_unwritable_store_keeps_the_journal_and_the_next_command_imports_it(project: Path) -> None:
    write_script(project, SMALL)
    proc = run_python(project, "train.py", RETROLOG_DB="sqlite:////dev/null/cannot/store.db")
    assert "trained" in proc.stdout
    assert proc.stderr.count("cannot write to the store") == 1
    journals = list((project / ".retrolog" / "journals").glob("*.journal"))
    assert len(journals) == 1
    frame = retrolog.dataframe("loss")  # default store: recovery imports the journal
    assert list(frame["loss"]) == [1.0, 0.5, 1.0 / 3]
    assert retrolog.runs().iloc[0]["status"] == "finished"


def test_no_writable_place_at_all_still_trains_and_leaves_a_rescue_file(
    project: Path, tmp_path: Path
) -> None:
    write_script(project, SMALL)
    (project / ".retrolog").write_text("a file where the data directory should be\n")
    rescue_dir = tmp_path / "tmp"
    rescue_dir.mkdir()
    proc = run_python(project, "train.py", TMPDIR=str(rescue_dir))
    assert "trained" in proc.stdout and proc.returncode == 0
    assert "cannot write a journal" in proc.stderr
    rescued = list(rescue_dir.glob("retrolog-rescue-*.jsonl"))
    assert len(rescued) == 1 and str(rescued[0]) in proc.stderr
    (project / ".retrolog").unlink()
    journals = project / ".retrolog" / "journals"
    journals.mkdir(parents=True)
    rescued[0].rename(journals / rescued[0].name.replace("retrolog-rescue-", ""))
    assert list(retrolog.dataframe("loss")["loss"]) == [1.0, 0.5, 1.0 / 3]
