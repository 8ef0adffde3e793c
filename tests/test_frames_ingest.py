"""dataframe()'s columnar cache kept current by ingest (store/columnar_ingest.py): the first
query after recording is served from it, and a cache a killed ingest left behind is not trusted."""

import shutil
import sqlite3
from contextlib import closing
from pathlib import Path

import pandas as pd
import pytest

import retrolog
from retrolog.store.columnar import drop_cache

from .conftest import run_python, write_script
from .test_frames_cache import NESTED, _expected_loss

pytestmark = pytest.mark.slow

NAMES = ("loss", "even", "acc", "final")


def _db(project: Path) -> Path:
    return project / ".retrolog" / "retrolog.db"


def _cache_state(project: Path) -> dict[str, object]:
    """What the cache file holds: its marks, whole names and entries (name, run, part)."""
    with closing(sqlite3.connect(f"{_db(project)}.frames")) as conn:
        return {
            "marks": dict(conn.execute("SELECT key, value FROM marks")),
            "complete": {row[0] for row in conn.execute("SELECT name FROM complete")},
            "logs": sorted(conn.execute("SELECT name, run, part FROM log_arrays")),
            "loops": sorted(conn.execute("SELECT run, part FROM loop_arrays")),
        }


def _store_tops(project: Path) -> tuple[int, int]:
    with closing(sqlite3.connect(_db(project))) as conn:
        logs = conn.execute("SELECT max(rowid) FROM logs").fetchone()[0]
        loops = conn.execute("SELECT max(rowid) FROM loops").fetchone()[0]
    return logs, loops


def _rebuilt(project: Path) -> pd.DataFrame:
    """The same query with the cache deleted: read from the store rows."""
    drop_cache(_db(project))
    return retrolog.dataframe(*NAMES)


def test_first_query_after_recording_is_served_from_the_cache_ingest_kept(project: Path) -> None:
    write_script(project, NESTED)
    run_python(project, "train.py", "--kwargs", "offset=0")  # stored by the run's store thread
    # a run stored by the follower process (a flush of more than 5 events hands over to it)
    run_python(project, "train.py", "--kwargs", "offset=100", RETROLOG_FOLLOWER_EVENTS="5")
    state = _cache_state(project)
    assert (state["marks"]["logs"], state["marks"]["loops"]) == _store_tops(project)
    assert state["complete"] == set(NAMES)
    # every entry is a part ingest appended (part = first rowid of its transaction, > 0):
    # none was built by a query (part 0) and none is stale (part -1)
    assert state["logs"] and all(part > 0 for _n, _r, part in state["logs"])
    assert {run for _n, run, _p in state["logs"]} == {1, 2}
    assert {run for run, _p in state["loops"]} == {1, 2}
    assert all(part > 0 for _r, part in state["loops"])

    first = retrolog.dataframe(*NAMES)
    assert _cache_state(project) == state  # served as it was: nothing read again or rebuilt
    assert list(first.dropna(subset=["loss"])["loss"]) == _expected_loss([0, 100])
    pd.testing.assert_frame_equal(first, _rebuilt(project))


def test_a_cache_left_by_an_ingest_killed_before_its_commit_is_not_trusted(project: Path) -> None:
    write_script(project, NESTED)
    run_python(project, "train.py", "--kwargs", "offset=0")
    # The second run's store thread is killed (SIGKILL, in the run's own process) right after
    # the store committed its second transaction and before the cache's commit.
    write_script(
        project,
        "import os, signal, sys, threading\n"
        "calls = []\n"
        "def kill(frame, event, arg):\n"
        "    if event == 'call' and frame.f_code.co_name == '_finish':\n"
        "        calls.append(1)\n"
        "        if len(calls) == 2:\n"
        "            os.kill(os.getpid(), signal.SIGKILL)\n"
        "threading.setprofile(kill)\n"
        "sys.setprofile(kill)\n"
        "import retrolog, time\n"
        "offset = retrolog.arg('offset', 0)\n"
        "for epoch in retrolog.loop('epoch', range(3)):\n"
        "    for step in retrolog.loop('step', range(4)):\n"
        "        retrolog.log('loss', offset + epoch * 10 + step)\n"
        "        if step % 2 == 0:\n"
        "            retrolog.log('even', float(step) / 2)\n"
        "        time.sleep(0.3)  # a few flushes (one a second): a few ingest transactions\n"
        "    retrolog.log('acc', offset + epoch / 10)\n"
        "retrolog.log('final', offset)\n",
        "killed.py",
    )
    killed = run_python(project, "killed.py", "--kwargs", "offset=1000", check=False)
    assert killed.returncode == -9, killed.stderr
    logs_top, _ = _store_tops(project)
    state = _cache_state(project)
    assert state["marks"]["logs"] < logs_top  # the store holds rows the cache was not told of

    frame = retrolog.dataframe(*NAMES)  # recovers the killed run's journal, then queries
    loss = list(frame.dropna(subset=["loss"])["loss"])
    assert loss == _expected_loss([0, 1000])[: len(loss)] and len(loss) > 12
    pd.testing.assert_frame_equal(frame, _rebuilt(project))


def test_a_cache_ahead_of_a_store_that_lost_rows_is_not_trusted(project: Path) -> None:
    """The store loses a committed transaction the cache kept (a power cut, a restored copy)
    and new rows take the same rowids: the row at the cache's mark differs, so it starts over."""
    from retrolog.replaying.execute import store_values
    from retrolog.store import Store

    write_script(project, NESTED)
    write_script(  # queries in fresh processes: none keeps the replaced store file open here
        project,
        "import retrolog\n"
        "frame = retrolog.dataframe('loss', 'even', 'acc', 'final')\n"
        "print(list(frame.dropna(subset=['loss'])['even'].fillna(-1)))\n",
        "q.py",
    )
    run_python(project, "train.py", "--kwargs", "offset=0")
    run_python(project, "q.py")
    saved = project / "saved.db"
    with closing(sqlite3.connect(_db(project))) as conn:
        conn.execute("PRAGMA wal_checkpoint(TRUNCATE)")
        run_key, ctx = conn.execute(
            "SELECT run, ctx_id FROM logs WHERE name = 'loss' ORDER BY seq LIMIT 1 OFFSET 1"
        ).fetchone()
    shutil.copy(_db(project), saved)

    def replay(replay_id: str, value: float) -> list[float]:
        store = Store(f"sqlite:///{_db(project)}")
        try:
            store_values(store, run_key, replay_id, [(ctx, "even", ("f", value, None))])
        finally:
            store.dispose()
        return eval(run_python(project, "q.py").stdout)  # a list of floats, printed by q.py

    assert replay("R1", 99.0)[:3] == [0.0, 99.0, 1.0]  # epoch 0, steps 0-2: cached with R1's row
    marks = _cache_state(project)["marks"]
    for suffix in ("-wal", "-shm"):
        Path(f"{_db(project)}{suffix}").unlink(missing_ok=True)
    shutil.copy(saved, _db(project))  # R1's transaction is lost
    after = replay("R2", 55.0)  # takes R1's rowid: the same marks, another row at them
    assert _store_tops(project) == (marks["logs"], marks["loops"])
    assert after[:3] == [0.0, 55.0, 1.0]
    drop_cache(_db(project))
    assert eval(run_python(project, "q.py").stdout) == after
