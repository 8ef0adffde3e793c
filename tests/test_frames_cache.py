"""dataframe()'s columnar cache: same answers as the store, whatever was written since."""

import os
import sqlite3
from pathlib import Path

import pandas as pd
import pytest

import retrolog
from retrolog.maintenance import delete_runs

from .conftest import run_python, write_script

pytestmark = pytest.mark.slow

NESTED = """
import retrolog
offset = retrolog.arg("offset", 0)
for epoch in retrolog.loop("epoch", range(3)):
    for step in retrolog.loop("step", range(4)):
        retrolog.log("loss", offset + epoch * 10 + step)
        if step % 2 == 0:
            retrolog.log("even", float(step) / 2)
    retrolog.log("acc", offset + epoch / 10)
retrolog.log("final", offset)
"""


def _expected_loss(offsets: list[int]) -> list[int]:
    return [o + e * 10 + s for o in offsets for e in range(3) for s in range(4)]


def _cache(project: Path) -> Path:
    return project / ".retrolog" / "retrolog.db.frames"


def test_cached_answers_follow_new_runs_replayed_values_and_deletions(project: Path) -> None:
    write_script(project, NESTED)
    run_python(project, "train.py", "--kwargs", "offset=0")
    first = retrolog.dataframe("loss", "even", "acc", "final")
    assert _cache(project).exists()
    steps = first.dropna(subset=["loss"])
    assert list(steps["loss"]) == _expected_loss([0])
    assert list(steps["even"].isna()) == [s % 2 == 1 for _e in range(3) for s in range(4)]
    assert list(first.dropna(subset=["acc"])["acc"]) == [0, 0.1, 0.2]
    assert len(first) == 12 + 3 and list(first["final"]) == [0] * 15
    second = retrolog.dataframe("loss", "even", "acc", "final")  # from the cache
    pd.testing.assert_frame_equal(first, second)

    run_python(project, "train.py", "--kwargs", "offset=1000")  # a run the cache has not seen
    both = retrolog.dataframe("loss", "acc")
    assert list(both.dropna(subset=["loss"])["loss"]) == _expected_loss([0, 1000])
    assert list(both.dropna(subset=["acc"])["acc"]) == [
        o + e / 10 for o in (0, 1000) for e in range(3)
    ]

    # a replay stores a new name and, for one run, values of a cached name on new coordinates
    from retrolog.replaying.execute import store_values
    from retrolog.store import Store

    store = Store(f"sqlite:///{project / '.retrolog' / 'retrolog.db'}")
    with sqlite3.connect(project / ".retrolog" / "retrolog.db") as conn:
        run_key, ctx = conn.execute(
            "SELECT l.run, l.ctx_id FROM logs l WHERE l.name = 'loss' ORDER BY l.run, l.seq LIMIT 1 OFFSET 1"
        ).fetchone()
    store_values(store, run_key, "R1", [(ctx, "even", ("f", 99.0, None))])
    store.dispose()
    replayed = retrolog.dataframe("even")
    first_run = replayed[replayed["run_id"] == replayed["run_id"].iloc[0]]
    assert first_run["even"].tolist()[:3] == [0.0, 99.0, 1.0]  # steps 0-2 of epoch 0

    runs = retrolog.runs()
    delete_runs([runs["run_id"].iloc[0]])
    assert not _cache(project).exists()
    run_python(project, "train.py", "--kwargs", "offset=5000")  # may reuse the deleted rowids
    after = retrolog.dataframe("loss")
    assert list(after["loss"]) == _expected_loss([1000, 5000])
    assert list(retrolog.dataframe("loss")["loss"]) == _expected_loss([1000, 5000])


def test_a_recreated_store_is_not_answered_from_the_old_cache(project: Path) -> None:
    write_script(project, NESTED)
    run_python(project, "train.py", "--kwargs", "offset=0")
    run_python(project, "train.py", "--kwargs", "offset=100")
    assert list(retrolog.dataframe("loss")["loss"]) == _expected_loss([0, 100])
    for suffix in ("", "-wal", "-shm"):
        Path(f"{project / '.retrolog' / 'retrolog.db'}{suffix}").unlink(missing_ok=True)
    run_python(project, "train.py", "--kwargs", "offset=7")
    write_script(
        project, "import retrolog\nprint(list(retrolog.dataframe('loss')['loss']))\n", "q.py"
    )
    fresh = run_python(project, "q.py")  # a new process: this one keeps the old file open
    assert fresh.stdout.strip() == str(_expected_loss([7]))


def test_an_unwritable_cache_falls_back_to_the_store(project: Path) -> None:
    write_script(project, NESTED)
    run_python(project, "train.py", "--kwargs", "offset=3")
    cache = _cache(project)
    for suffix in ("", "-wal", "-shm"):  # the one ingest kept current
        Path(f"{cache}{suffix}").unlink(missing_ok=True)
    cache.mkdir()  # a directory where the cache file should be: sqlite cannot open it
    try:
        with pytest.warns(UserWarning, match="dataframe cache"):
            frame = retrolog.dataframe("loss", "acc")
    finally:
        os.rmdir(cache)
    assert list(frame.dropna(subset=["loss"])["loss"]) == _expected_loss([3])
    assert list(frame.dropna(subset=["acc"])["acc"]) == [3, 3.1, 3.2]
