"""Fast runs hand storing to a helper process that follows the journal: nothing lost, nothing left."""

import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

import retrolog

from .conftest import run_python, script_env, write_script

pytestmark = pytest.mark.slow

FAST = """
import retrolog
for epoch in retrolog.loop("epoch", range(3)):
    for step in retrolog.loop("step", range(10000)):
        retrolog.log("x", epoch * 10000 + step)
    retrolog.log("done", epoch)
print("trained", flush=True)
"""

ENDLESS = """
import sys, time, retrolog
for epoch in retrolog.loop("epoch", range(10**6)):
    for step in retrolog.loop("step", range(100)):
        retrolog.log("x", epoch * 100 + step)
    print(epoch, flush=True)
    time.sleep(0.004)
"""


def _followers() -> list[str]:
    """Command lines of follower processes still alive on this machine."""
    found = []
    for pid in os.listdir("/proc"):
        if not pid.isdigit():
            continue
        try:
            cmdline = Path(f"/proc/{pid}/cmdline").read_bytes().replace(b"\0", b" ").decode()
        except OSError:
            continue
        if "retrolog.record.follower" in cmdline:
            found.append(cmdline)
    return found


def test_a_fast_run_is_stored_whole_by_the_follower_which_then_exits(project: Path) -> None:
    write_script(project, FAST)
    before = _followers()
    proc = run_python(project, "train.py", RETROLOG_FOLLOWER_EVENTS="500")
    assert "trained" in proc.stdout
    assert "Traceback" not in proc.stderr, proc.stderr
    frame = retrolog.dataframe("x")
    assert len(frame) == 30000
    assert list(frame["x"]) == list(range(30000))
    assert list(frame["epoch"]) == [i // 10000 for i in range(30000)]
    assert list(frame["step"]) == [i % 10000 for i in range(30000)]
    assert list(retrolog.dataframe("done")["done"]) == [0, 1, 2]
    run = retrolog.runs().iloc[0]
    assert run["status"] == "finished"
    assert not list((project / ".retrolog" / "journals").iterdir())
    assert _followers() == before


def test_sigkill_with_an_active_follower_keeps_a_gapless_prefix(project: Path) -> None:
    write_script(project, ENDLESS)
    proc = subprocess.Popen(
        [sys.executable, "train.py"],
        cwd=project,
        env=script_env(RETROLOG_FOLLOWER_EVENTS="500"),
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    assert proc.stdout is not None
    deadline = time.monotonic() + 3.0
    last = -1
    while time.monotonic() < deadline:
        last = int(proc.stdout.readline())
    proc.send_signal(signal.SIGKILL)
    proc.wait()
    deadline = time.monotonic() + 10
    while _followers() and time.monotonic() < deadline:  # it notices its parent is gone
        time.sleep(0.1)
    assert _followers() == []
    run = retrolog.runs().iloc[0]  # the first command recovers the rest of the journal
    assert run["status"] == "crashed"
    stored = retrolog.dataframe("x")["x"]
    assert list(stored) == list(range(len(stored)))  # in order, no gaps, no duplicates
    assert len(stored) >= 100 * (last // 2)  # at most ~1 s of a >= 1.5 s run is lost
    assert not list((project / ".retrolog" / "journals").iterdir())
