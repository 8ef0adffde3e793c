"""The stdlib SQLite store (``store.lite``) against the SQLAlchemy Store on the same real file."""

from __future__ import annotations

import threading
from pathlib import Path

import pytest

from retrolog.store import Store
from retrolog.store.lite import LiteStore, insert_rows, update_rows
from retrolog.store.open import open_db


@pytest.fixture
def url(tmp_path: Path) -> str:
    url = f"sqlite:///{tmp_path / 'retrolog.db'}"
    Store(url).dispose()  # creates the schema, as a first recorded run does
    return url


def test_open_db_takes_the_stdlib_store_only_for_an_existing_current_sqlite_store(
    tmp_path: Path, url: str
) -> None:
    lite = open_db(url)
    assert isinstance(lite, LiteStore)
    lite.dispose()
    fresh = open_db(f"sqlite:///{tmp_path / 'new' / 'retrolog.db'}")
    assert isinstance(fresh, Store)  # no schema yet: SQLAlchemy creates it
    fresh.dispose()
    (tmp_path / "other.db").write_bytes(b"not a database at all, just bytes" * 10)
    assert LiteStore.open(f"sqlite:///{tmp_path / 'other.db'}") is None


def test_a_failed_transaction_writes_nothing_and_a_committed_one_is_seen_by_sqlalchemy(
    url: str,
) -> None:
    lite = LiteStore.open(url)
    assert lite is not None
    with pytest.raises(RuntimeError), lite.transaction() as tx:
        tx.execute(
            "INSERT INTO runs (run_id, status, last_seq) VALUES (:r, 'running', 0)", {"r": "a"}
        )
        raise RuntimeError("interrupted")
    assert lite.fetch("SELECT count(*) AS n FROM runs")[0].n == 0
    tricky = "x'); DROP TABLE runs; --"
    with lite.transaction() as tx:
        insert_rows(
            tx,
            "runs",
            [
                {"run_id": "a", "status": "running", "last_seq": 0, "script": tricky},
                {"run_id": "b", "status": "running", "last_seq": 0, "script": "b.py"},
            ],
        )
        update_rows(tx, "runs", {"status": "finished", "last_seq": 7}, {"run_id": "b"})
    store = Store(url)
    rows = store.fetch("SELECT run_id, status, last_seq, script FROM runs ORDER BY run_id")
    store.dispose()
    assert [tuple(r) for r in rows] == [("a", "running", 0, tricky), ("b", "finished", 7, "b.py")]
    row = lite.fetch("SELECT run_id, status FROM runs WHERE run_id = :r", {"r": "a"})[0]
    run_id, status = row  # rows unpack like tuples and name their columns, as SQLAlchemy's do
    assert (run_id, status) == (row.run_id, row.status) == ("a", "running")
    lite.set_status("a", "crashed", end_time=5.0, error="gone")
    assert [tuple(r) for r in lite.running_runs()] == []
    assert tuple(lite.fetch("SELECT status, end_time, error FROM runs WHERE run_id = 'a'")[0]) == (
        "crashed",
        5.0,
        "gone",
    )
    lite.dispose()


def test_threads_sharing_one_store_lose_no_write(url: str) -> None:
    lite = LiteStore.open(url)
    assert lite is not None

    def write(prefix: str) -> None:
        for i in range(50):
            with lite.transaction() as tx:
                tx.execute(
                    "INSERT INTO runs (run_id, status, last_seq) VALUES (:r, 'running', 0)",
                    {"r": f"{prefix}{i}"},
                )

    threads = [threading.Thread(target=write, args=(p,)) for p in "xyz"]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert lite.fetch("SELECT count(*) FROM runs")[0][0] == 150
    lite.dispose()


def test_ingest_through_the_stdlib_store_equals_ingest_through_sqlalchemy(
    tmp_path: Path, url: str
) -> None:
    events = [
        (1, "run", {"script": "train.py", "status": "running"}),
        (2, "arg", "lr", "f", 0.1, None),
        (3, "log", 0, "loss", "f", 1.5, None),
        (4, "end", "finished", 9.0, None),
    ]
    other = f"sqlite:///{tmp_path / 'other' / 'retrolog.db'}"
    Store(other).dispose()
    for store in (LiteStore.open(url), Store(other)):
        assert store is not None
        assert store.ingest("r1", events) == 4
        assert store.ingest("r1", events) == 0  # idempotent: at or below the high-water mark
        store.dispose()
    dumps = []
    for target in (url, other):
        store = Store(target)
        dumps.append(
            [
                tuple(r)
                for r in store.fetch(
                    "SELECT r.run_id, r.status, r.last_seq, l.name, l.value_num "
                    "FROM runs r JOIN logs l ON l.run = r.id"
                )
            ]
        )
        store.dispose()
    assert dumps[0] == dumps[1] == [("r1", "finished", 4, "loss", 1.5)]
