"""Durable from the first log: SIGKILL at 50 random moments, counted against the script's own
fsynced ground truth.

The script writes, after each ``arg()``/``log()`` returns, a line to its own file and fsyncs it:
what it knows it handed to retrolog, and when. After the kills one command recovers the orphaned
journals; each run must then have its identity (script, argv, pid, start time), every arg it
noted, and every row noted more than the journal's flush interval (plus scheduling slack) before
its kill, stored in order with no gaps. A last few runs are killed right after their code version
appeared (the snapshot ref): their version must be stored too.
"""

from __future__ import annotations

import json
import random
import signal
import subprocess
import sys
import threading
import time
from pathlib import Path
from typing import Any

import pytest

import retrolog
from retrolog.record.session import FLUSH_SECONDS

from .conftest import git, script_env, write_script

pytestmark = pytest.mark.slow

SLACK = 0.75  # the flusher thread's wake-up on a loaded 2-core machine
TRUTH_SCRIPT = """
import os, sys, time
import retrolog

truth_dir = sys.argv[1]

lr = retrolog.arg("lr", 0.25)
fh = open(os.path.join(truth_dir, f"{os.getpid()}.txt"), "a")

def note(*words):
    fh.write(" ".join(str(w) for w in words) + "\\n")
    fh.flush()
    os.fsync(fh.fileno())

note("arg", "lr", lr, time.time())
batch = retrolog.arg("batch", 8)
note("arg", "batch", batch, time.time())
for i in range(100000):
    retrolog.log("loss", float(i))
    note("row", i, time.time())
    time.sleep(0.004)
"""


def _kill_one(project: Path, truth: Path, delay: float, wait_version: bool) -> dict[str, Any]:
    """Start the script, wait for its first arg() (its truth file), then kill it after ``delay``
    (or once its code version exists); returns its pid, kill time and delay."""
    refs_before = _snapshot_refs(project) if wait_version else set()
    proc = subprocess.Popen(
        [sys.executable, "train.py", str(truth)],
        cwd=project,
        env=script_env(),
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    mine = truth / f"{proc.pid}.txt"
    deadline = time.monotonic() + 60
    while not mine.exists():
        assert time.monotonic() < deadline and proc.poll() is None, "the script never started"
        time.sleep(0.002)
    if wait_version:
        while not (_snapshot_refs(project) - refs_before):
            assert time.monotonic() < deadline, "no code version appeared"
            time.sleep(0.02)
    time.sleep(delay)
    killed_at = time.time()
    proc.send_signal(signal.SIGKILL)
    proc.wait()
    return {"pid": proc.pid, "killed_at": killed_at, "delay": delay, "version": wait_version}


def _snapshot_refs(project: Path) -> set[str]:
    return set(git(project, "for-each-ref", "--format=%(refname)", "refs/retrolog/").split())


def _truth(path: Path) -> tuple[dict[str, str], list[tuple[int, float]]]:
    args: dict[str, str] = {}
    rows: list[tuple[int, float]] = []
    for line in path.read_text().splitlines():
        words = line.split()
        if len(words) == 4 and words[0] == "arg":
            args[words[1]] = words[2]
        elif len(words) == 3 and words[0] == "row":
            rows.append((int(words[1]), float(words[2])))
    return args, rows


def test_sigkill_at_random_moments_loses_at_most_the_flush_interval(project: Path) -> None:
    write_script(project, TRUTH_SCRIPT)
    git(project, "add", "train.py")
    git(project, "commit", "-q", "-m", "train")
    truth = project.parent / "truth"
    truth.mkdir()
    rng = random.Random(16)
    delays = [rng.uniform(0.0, 0.3) for _ in range(12)] + [rng.uniform(0.3, 2.5) for _ in range(35)]
    rng.shuffle(delays)
    kills: list[dict[str, Any]] = []
    lock = threading.Lock()

    def worker(share: list[float]) -> None:
        for delay in share:
            result = _kill_one(project, truth, delay, wait_version=False)
            with lock:
                kills.append(result)

    workers = [threading.Thread(target=worker, args=(delays[i::3],)) for i in range(3)]
    for thread in workers:
        thread.start()
    for thread in workers:
        thread.join()
    for _ in range(3):  # one at a time, so the new snapshot ref is this run's
        kills.append(_kill_one(project, truth, 0.2, wait_version=True))
    assert len(kills) == 50

    cli = subprocess.run(
        [sys.executable, "-m", "retrolog", "runs", "-f", "json"],
        cwd=project,
        capture_output=True,
        text=True,
        env=script_env(),
    )
    assert cli.returncode == 0, cli.stderr
    facts = retrolog.query(
        "SELECT run_id, pid, status, script, start_time, argv, version FROM runs"
    ).to_dict(orient="records")
    runs = {int(r["pid"]): r for r in facts if r["pid"] == r["pid"] and r["pid"] is not None}
    for row in retrolog.query("SELECT run_id, name, value FROM run_args").itertuples():
        for run in runs.values():
            if run["run_id"] == row.run_id:
                run[row.name] = row.value
    values = retrolog.query(
        "SELECT r.pid AS pid, l.value_num AS v FROM logs l JOIN runs r ON r.id = l.run "
        "WHERE l.name = 'loss' ORDER BY r.pid, l.seq"
    )
    stored: dict[int, list[float]] = {}
    for pid, value in zip(values["pid"], values["v"]):
        stored.setdefault(int(pid), []).append(value)
    problems = []
    for kill in kills:
        pid = kill["pid"]
        noted_args, noted_rows = _truth(truth / f"{pid}.txt")
        run = runs.get(pid)
        if run is None:
            problems.append(f"pid {pid} killed {kill['delay']:.3f} s after arg(): no run/pid")
            continue
        what = f"run {run['run_id']} killed {kill['delay']:.3f} s after its first arg()"
        if run["status"] != "crashed" or run["script"] != "train.py" or not run["start_time"]:
            problems.append(f"{what}: identity lost ({run['status']}, {run['script']})")
        if not json.loads(run["argv"] or "null"):
            problems.append(f"{what}: argv lost")
        for name, value in noted_args.items():
            if name not in run or str(run[name]) not in (value, f"{value}.0"):
                problems.append(f"{what}: arg {name}={value} lost (stored {run.get(name)})")
        if kill["version"] and not run["version"]:
            problems.append(f"{what}: its code version existed but was not stored")
        rows = stored.get(pid, [])
        if rows != [float(i) for i in range(len(rows))]:
            problems.append(f"{what}: stored rows are not a gapless prefix")
        due = [i for i, at in noted_rows if at < kill["killed_at"] - FLUSH_SECONDS - SLACK]
        if due and len(rows) <= due[-1]:
            problems.append(f"{what}: {due[-1] + 1 - len(rows)} rows older than the flush lost")
        if len(rows) > len(noted_rows) + 1:
            problems.append(f"{what}: more rows stored than logged")
    assert not problems, "\n".join(problems)
    assert not list((project / ".retrolog" / "journals").glob("*.journal"))
    early = [k for k in kills if k["delay"] < 0.3]
    assert len(early) >= 10
