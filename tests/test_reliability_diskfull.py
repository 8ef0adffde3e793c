"""Recording on a full disk: the project's ``.retrolog`` is a small tmpfs, filled up.

Training must run to its end with one warning and keep what fits; once space returns, the next
command stores the rest (from the journal, cut back to whole records, and the rescue file saved
on another file system) and the run is complete and finished. Needs root to mount a tmpfs.
"""

from __future__ import annotations

import os
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest

import retrolog

from .conftest import git, run_python, script_env, write_script

pytestmark = pytest.mark.slow

ROWS = 10_000
SCRIPT = f"""
import retrolog
lr = retrolog.arg("lr", 0.5)
for step in retrolog.loop("step", range({ROWS})):
    retrolog.log("loss", step * lr)
    retrolog.log("note", "x" * 40)
print("trained")
"""


@pytest.fixture
def small_disk(project: Path) -> Iterator[Path]:
    """``project/.retrolog`` on its own 32 MiB tmpfs."""
    data = project / ".retrolog"
    data.mkdir()
    mounted = subprocess.run(
        ["mount", "-t", "tmpfs", "-o", "size=32m", "tmpfs", str(data)], capture_output=True
    )
    if mounted.returncode != 0:
        pytest.skip(f"cannot mount a tmpfs here: {mounted.stderr.decode().strip()}")
    try:
        yield data
    finally:
        subprocess.run(["umount", "-l", str(data)], check=False)


def fill(data: Path, leave: int) -> Path:
    """A filler file that leaves about ``leave`` bytes free on ``data``'s file system."""
    filler = data / "filler"
    free = os.statvfs(data).f_bavail * os.statvfs(data).f_frsize
    with open(filler, "wb") as fh:
        fh.write(b"\0" * max(0, free - leave))
    return filler


def test_training_survives_a_full_disk_and_the_next_command_stores_everything(
    small_disk: Path, project: Path
) -> None:
    write_script(project, SCRIPT)
    git(project, "add", "train.py")
    git(project, "commit", "-q", "-m", "train")
    run_python(project, "train.py", "--kwargs", "lr=1")  # the store exists, as it usually does
    filler = fill(small_disk, leave=48 * 1024)
    trained = run_python(project, "train.py", timeout=300)
    assert "trained" in trained.stdout  # training ran to its end
    warnings = [line for line in trained.stderr.splitlines() if "RetrologWarning" in line]
    assert len(warnings) == 1 and "disk is full" in warnings[0], trained.stderr
    filler.unlink()  # space returns
    listed = subprocess.run(
        [sys.executable, "-m", "retrolog", "runs", "-f", "json"],
        cwd=project,
        capture_output=True,
        text=True,
        env=script_env(),
    )
    assert listed.returncode == 0, listed.stderr
    runs = retrolog.runs().sort_values("start_time")
    assert runs["status"].tolist() == ["finished", "finished"]
    latest = runs["run_id"].iloc[-1]
    frame = retrolog.dataframe("loss", "note")
    mine = frame[frame["run_id"] == latest]
    assert mine["loss"].tolist() == [step * 0.5 for step in range(ROWS)]
    assert (mine["note"] == "x" * 40).all()
    doctor = subprocess.run(
        [sys.executable, "-m", "retrolog", "doctor"],
        cwd=project,
        capture_output=True,
        text=True,
        env=script_env(),
    )
    assert doctor.returncode == 0, doctor.stdout


def test_a_journal_write_that_does_not_fit_leaves_no_torn_record(small_disk: Path) -> None:
    from retrolog.record.journal import Journal, read_events

    journal = Journal(small_disk / "journals" / "r1.journal")
    journal.append(1, [], [("loss", 1.0, 0)])
    filler = fill(small_disk, leave=0)
    big = [("note", f"{i:05d}" + "y" * 1000, 0) for i in range(200)]
    with pytest.raises(OSError):
        journal.append(2, [], big)
    filler.unlink()
    journal.append(2, [], [("loss", 2.0, 0)])  # space is back: the next record follows whole
    journal.close(delete=False)
    events = read_events(small_disk / "journals" / "r1.journal")
    assert [(ev[0], ev[3], ev[5]) for ev in events] == [(1, "loss", 1.0), (2, "loss", 2.0)]
