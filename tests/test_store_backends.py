"""The same store test suite on both backends: SQLite and PostgreSQL (a real server).

Each test takes ``db``, a fresh SQLAlchemy ``Store`` on one backend, and goes only through the
store's own surface (``ingest``, ``transaction``, ``set_status``, ``running_runs``) and the named
reads of store/ that the read side and the replay planner call (store/query.py,
store/planning.py), plus read-only user SQL; the expected rows are the same literals on both.
"""

from __future__ import annotations

import json
import threading
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from retrolog.relational.access import QueryError, run_sql
from retrolog.store import Store, planning, query

from .conftest import fresh_database


@pytest.fixture(params=["sqlite", "postgres"])
def db(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[Store]:
    if request.param == "sqlite":
        url = f"sqlite:///{tmp_path / 'retrolog.db'}"
    else:
        url = fresh_database(request.getfixturevalue("pg_server"))
    store = Store(url)
    yield store
    store.dispose()


def _events(lr: float, epochs: int, status: str = "finished") -> list[list[Any]]:
    """A recorded run in journal events: 2 args, ``epochs`` epochs of 2 steps with a loss per
    step, an accuracy per epoch, a value outside every loop, a timing, then its end."""
    events: list[list[Any]] = [
        [1, "run", {"script": "train.py", "status": "running", "start_time": 100.0}],
        [2, "arg", "lr", "f", lr, None],
        [3, "arg", "opt", "s", None, "adam"],
    ]
    seq, ctx = 3, 0
    for epoch in range(epochs):
        seq += 1
        ctx += 1
        outer = ctx
        events.append([seq, "ctx", outer, 0, 1, "epoch", epoch, json.dumps(epoch), 100.0])
        for step in range(2):
            seq += 1
            ctx += 1
            events.append([seq, "ctx", ctx, outer, 2, "step", step, json.dumps(step), 100.0])
            seq += 1
            events.append([seq, "log", ctx, "loss", "f", lr * (10 - epoch * 2 - step), None])
        seq += 1
        events.append([seq, "log", outer, "acc", "f", epoch / 10, None])
        seq += 1
        events.append([seq, "timing", "iteration", "epoch", outer, epoch, 0.5, 1])
    events.append([seq + 1, "log", 0, "note", "s", None, "done"])
    if status != "running":
        events.append([seq + 2, "end", status, 112.0, None])
    return events


def test_ingest_is_idempotent_and_every_named_read_gives_the_same_rows(db: Store) -> None:
    events = _events(0.1, 2)
    assert db.ingest("01A", events) == len(events) == 19
    assert db.ingest("01A", _events(0.1, 2)) == 0  # at or below the high-water mark: nothing
    assert db.ingest("01B", _events(0.01, 1, status="running")) > 0

    facts = query.run_facts(db)
    assert [(r.run_id, r.status, r.script) for r in facts] == [
        ("01A", "finished", "train.py"),
        ("01B", "running", "train.py"),
    ]
    key = {r.run_id: int(r.id) for r in facts}
    assert query.ordered_run_ids(db) == ["01A", "01B"]
    assert [r.run_id for r in query.runs_by_prefix(db, "01")] == ["01A", "01B"]
    assert [r.run_id for r in query.run_by_id(db, "01B")] == ["01B"]
    assert query.known_names(db) == ["acc", "loss", "lr", "note", "opt"]
    assert query.is_logged(db, "acc") and not query.is_logged(db, "lr")
    assert sorted(tuple(r) for r in query.all_args(db)) == sorted(
        [
            (key["01A"], "lr", "f", 0.1, None),
            (key["01A"], "opt", "s", None, "adam"),
            (key["01B"], "lr", "f", 0.01, None),
            (key["01B"], "opt", "s", None, "adam"),
        ]
    )
    assert [tuple(r)[1:5] for r in query.top_level_values(db)] == [
        ("note", "s", None, "done"),
        ("note", "s", None, "done"),
    ]
    rows = query.log_rows(db, ["loss", "acc"])
    assert len(rows) == 4 + 2 + 2 + 1  # losses and accuracies of both runs
    losses = [r for r in rows if r[2] == "loss"]
    assert {r[9] for r in losses} == {"step"}  # each value with its loop context
    assert sorted(round(float(r[4]), 9) for r in losses) == [0.09, 0.1, 0.7, 0.8, 0.9, 1.0]
    assert query.first_main_loop(db, key["01A"]) == "epoch"
    assert query.last_iteration(db, key["01A"], "epoch") == 1
    parents = sorted(tuple(r) for r in query.loop_parents(db, key["01A"], [2, 3, 4]))
    assert parents == [(2, 1, "step", 0), (3, 1, "step", 1), (4, 0, "epoch", 1)]

    assert [r.run_id for r in planning.plannable_runs(db)] == ["01A"]  # 01B is still running
    loops = planning.run_loops(db, key["01A"])
    assert [tuple(r) for r in loops][:3] == [
        (1, 0, "epoch", 0),
        (2, 1, "step", 0),
        (3, 1, "step", 1),
    ]
    assert sorted(tuple(r) for r in planning.run_timings(db, key["01A"])) == [
        ("iteration", "epoch", 1, 0, 0.5),
        ("iteration", "epoch", 4, 1, 0.5),
    ]
    assert planning.run_span(db, key["01A"]) == (100.0, 112.0)
    at_epochs = sorted(
        (int(r[0]), r[1], float(r[3])) for r in planning.main_loop_values(db, key["01A"])
    )
    assert at_epochs == [(1, "acc", 0.0), (4, "acc", 0.1)]
    assert set(planning.column_names(db)) == {"lr", "opt", "epoch", "step", "loss", "acc", "note"}


def test_a_failed_transaction_writes_nothing_and_values_stay_bound(db: Store) -> None:
    with pytest.raises(RuntimeError), db.transaction() as tx:
        tx.execute(
            "INSERT INTO runs (run_id, status, last_seq) VALUES (:r, 'running', 0)", {"r": "a"}
        )
        raise RuntimeError("interrupted")
    assert db.fetch("SELECT count(*) FROM runs")[0][0] == 0
    tricky = "x'); DROP TABLE runs; --"
    with db.transaction() as tx:
        tx.execute(
            "INSERT INTO runs (run_id, status, last_seq, script) VALUES (:r, 'running', 0, :s)",
            {"r": "a", "s": tricky},
        )
    assert [tuple(r) for r in db.fetch("SELECT run_id, script FROM runs")] == [("a", tricky)]
    assert [r.run_id for r in query.runs_by_prefix(db, "a")] == ["a"]


def test_status_changes_and_running_runs(db: Store) -> None:
    db.ingest("01R", _events(0.5, 1, status="running"))
    db.ingest("01F", _events(0.5, 1))
    assert [r.run_id for r in db.running_runs()] == ["01R"]
    db.set_status("01R", "crashed", end_time=5.0, error="gone")
    assert db.running_runs() == []
    row = query.run_by_id(db, "01R")[0]
    assert (row.status, row.end_time, row.error) == ("crashed", 5.0, "gone")


def test_threads_ingesting_different_runs_lose_no_event(db: Store) -> None:
    def record(prefix: str) -> None:
        for i in range(5):
            db.ingest(f"{prefix}{i}", _events(0.1, 2))

    threads = [threading.Thread(target=record, args=(p,)) for p in "xyz"]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert len(query.ordered_run_ids(db)) == 15
    assert db.fetch("SELECT count(*) FROM logs")[0][0] == 15 * 7


def test_user_sql_reads_with_bound_values_and_cannot_write(db: Store) -> None:
    db.ingest("01A", _events(0.1, 2))
    frame = run_sql(db, "SELECT name FROM args WHERE value_text = :v", {"v": "adam"})
    assert list(frame["name"]) == ["opt"]
    for sql in ("DELETE FROM logs", "UPDATE runs SET status = 'x'", "DROP TABLE runs"):
        with pytest.raises(QueryError):
            run_sql(db, sql)
    assert db.fetch("SELECT count(*) FROM logs")[0][0] == 7
