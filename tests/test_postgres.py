"""PostgreSQL as the store (RETROLOG_DB): a real server (pgserver's bundled PostgreSQL 16), real
scripts in real subprocesses, results compared with what SQLite gives for the same scripts."""

from __future__ import annotations

import json
import subprocess
import sys
import threading
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pandas as pd
import pytest
from pandas.testing import assert_frame_equal

import retrolog
from retrolog.relational import QueryError, describe_run, open_store
from retrolog.store import Store

from .conftest import fresh_database, git, kill_after, run_python, script_env, write_script

pytestmark = pytest.mark.slow


@pytest.fixture
def pg_url(pg_server: Any, project: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[str]:
    """``project`` with RETROLOG_DB pointing at a fresh database, for this process too (scripts
    get it through ``run_python(..., RETROLOG_DB=url)``: ``script_env`` drops it)."""
    url = fresh_database(pg_server)
    monkeypatch.setenv("RETROLOG_DB", url)
    yield url
    open_store(project, recover=False).dispose()  # close this process's connections


TYPED = """
import math
import retrolog

lr = retrolog.arg("lr", 0.5)
epochs = retrolog.arg("epochs", 2)
tag = retrolog.arg("tag", "base")
for epoch in retrolog.loop("epoch", range(epochs)):
    for step in retrolog.loop("step", range(3)):
        retrolog.log("loss", lr / (epoch * 3 + step + 1))
        retrolog.log("count", epoch * 3 + step)
    retrolog.log("acc", epoch / 10)
    retrolog.log("flag", epoch % 2 == 0)
retrolog.log("big", 2**60 + epochs)
retrolog.log("negbig", -(2**62) - 1)
retrolog.log("nan", math.nan)
retrolog.log("inf", math.inf)
retrolog.log("ninf", -math.inf)
retrolog.log("text", "hello, 'world' %s :x")
retrolog.log("nothing", None)
retrolog.log("items", [1, 2.5, "three", None])
retrolog.log("mapping", {"a": 1})
print("trained")
"""
TYPED_NAMES = (
    "lr",
    "epochs",
    "tag",
    "loss",
    "count",
    "acc",
    "flag",
    "big",
    "negbig",
    "nan",
    "inf",
    "ninf",
    "text",
    "nothing",
    "items",
    "mapping",
)
RUN_ARGS = (("lr=0.5", "epochs=2", "tag=a"), ("lr=0.25", "epochs=3", "tag=b"))


def _comparable(frame: pd.DataFrame, *drop: str) -> pd.DataFrame:
    return frame.drop(columns=[c for c in ("run_id", "start_time", *drop) if c in frame])


def test_recorded_runs_read_back_exactly_as_on_sqlite(
    project: Path, pg_url: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    write_script(project, TYPED)
    for args in RUN_ARGS:
        assert "trained" in run_python(project, "train.py", "--kwargs", *args).stdout
        proc = run_python(project, "train.py", "--kwargs", *args, RETROLOG_DB=pg_url)
        assert "trained" in proc.stdout and "Warning" not in proc.stderr, proc.stderr

    def read_all() -> dict[str, Any]:
        runs = retrolog.runs()
        return {
            "runs": runs,
            "nested": retrolog.dataframe(*TYPED_NAMES),
            "run_level": retrolog.dataframe(),
            "where": retrolog.dataframe("loss", "lr", where="lr < 0.3 AND epoch >= 1"),
            "show": [describe_run(r, with_diff=False) for r in runs["run_id"]],
        }

    pg = read_all()
    assert open_store(project, recover=False).is_postgres
    monkeypatch.delenv("RETROLOG_DB")
    lite = read_all()
    assert open_store(project, recover=False).is_sqlite

    assert len(pg["runs"]) == 2 and (pg["runs"]["status"] == "finished").all()
    times = ["start_time", "end_time", "duration"]
    assert_frame_equal(_comparable(pg["runs"], *times), _comparable(lite["runs"], *times))
    for key in ("nested", "run_level", "where"):
        assert_frame_equal(_comparable(pg[key]), _comparable(lite[key]))
    for pg_run, lite_run in zip(pg["show"], lite["show"]):
        for key in ("args", "metrics", "status", "version", "argv"):
            assert json.dumps(pg_run[key]) == json.dumps(lite_run[key]), key

    nested = pg["nested"]
    assert list(nested.columns[4:6]) == ["epoch", "step"]
    assert len(nested) == (2 + 2 * 3) + (3 + 3 * 3)  # one row per epoch and per (epoch, step)
    second = nested[nested["tag"] == "b"]
    assert list(second["count"].dropna().astype(int)) == list(range(9))
    run_level = pg["run_level"].set_index("tag")
    assert run_level.loc["a", "big"] == 2**60 + 2 and run_level.loc["b", "big"] == 2**60 + 3
    assert run_level.loc["a", "negbig"] == -(2**62) - 1
    assert pd.isna(run_level.loc["a", "nan"]) and run_level.loc["a", "inf"] == float("inf")
    assert run_level.loc["a", "ninf"] == float("-inf")
    assert run_level.loc["a", "text"] == "hello, 'world' %s :x"
    assert run_level.loc["a", "nothing"] is None
    assert run_level.loc["a", "items"] == [1, 2.5, "three", None]
    assert run_level.loc["a", "mapping"] == {"a": 1}


def test_views_and_cli_on_postgres(project: Path, pg_url: str) -> None:
    write_script(project, TYPED)
    run_python(project, "train.py", RETROLOG_DB=pg_url)
    values = retrolog.query(
        "SELECT name, vtype, value, value_text FROM metrics WHERE loop IS NULL ORDER BY seq"
    ).set_index("name")
    # value: the number (NaN/inf and big integers converted); value_text: the exact text
    assert values.loc["big", "value_text"] == str(2**60 + 2)
    assert values.loc["big", "value"] == float(2**60 + 2)
    assert pd.isna(values.loc["nan", "value"]) and values.loc["nan", "value_text"] == "nan"
    assert values.loc["inf", "value"] == float("inf")
    assert values.loc["text", "vtype"] == "s" and pd.isna(values.loc["text", "value"])
    best = retrolog.query(
        "SELECT a.value AS lr, max(m.value) AS best FROM metrics m JOIN run_args a "
        "ON a.run_id = m.run_id AND a.name = 'lr' WHERE m.name = :n GROUP BY a.value",
        {"n": "loss"},
    )
    assert best.to_dict("records") == [{"lr": 0.5, "best": 0.5}]
    like = retrolog.query(
        "-- percent signs and comments pass through\n"
        "SELECT count(*) AS n FROM metrics WHERE name LIKE 'lo%' -- trailing comment\n;"
    )
    assert like.loc[0, "n"] == 6
    with pytest.raises(QueryError, match="by name"):
        retrolog.query("SELECT count(*) FROM metrics WHERE name = ?", ["loss"])

    env = script_env(RETROLOG_DB=pg_url)
    cli = [sys.executable, "-m", "retrolog"]
    out = subprocess.run(
        [*cli, "df", "loss", "--where", "step = 2", "--format", "json"],
        cwd=project,
        env=env,
        capture_output=True,
        text=True,
    )
    assert out.returncode == 0, out.stderr
    assert [row["loss"] for row in json.loads(out.stdout)] == pytest.approx([0.5 / 3, 0.5 / 6])
    out = subprocess.run(
        [*cli, "sql", "SELECT count(*) AS n FROM logs", "--format", "json"],
        cwd=project,
        env=env,
        capture_output=True,
        text=True,
    )
    assert out.returncode == 0 and json.loads(out.stdout) == [{"n": 25}], out.stderr
    out = subprocess.run(
        [*cli, "sql", "DELETE FROM logs"], cwd=project, env=env, capture_output=True, text=True
    )
    assert out.returncode != 0 and "read-only" in out.stdout + out.stderr


SMALL = """
import retrolog
for e in retrolog.loop("epoch", range(2)):
    retrolog.log("loss", 1.0 / (e + 1))
"""


@pytest.fixture(scope="module")
def pg_recorded(
    pg_server: Any, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[tuple[Path, str]]:
    """One project with one run in its own PostgreSQL database, shared by the read-only tests."""
    repo = tmp_path_factory.mktemp("pgro") / "proj"
    repo.mkdir()
    git(repo, "init", "-q")
    write_script(repo, SMALL)
    url = fresh_database(pg_server)
    run_python(repo, "train.py", RETROLOG_DB=url)
    yield repo, url
    open_store(repo, recover=False).dispose()


@pytest.mark.parametrize(
    "sql",
    [
        "INSERT INTO runs (run_id, status, last_seq) VALUES ('x', 'y', 0)",
        "DELETE FROM logs",
        "DROP TABLE runs",
        "UPDATE runs SET status = 'x'",
        "CREATE TABLE t (x int)",
        "COPY runs TO '/tmp/retrolog-copy.csv'",
        "DO $$ BEGIN DELETE FROM logs; END $$",
        "SET TRANSACTION READ WRITE",
        "SET default_transaction_read_only = off",
        "COMMIT; DELETE FROM logs",
        "BEGIN READ WRITE; DELETE FROM logs",
        "SELECT 1; DELETE FROM logs",
        # These get past the first-keyword check; the database itself refuses them:
        "/* x */ (SELECT 1) ; DELETE FROM logs",
        "SELECT 1) AS q; COMMIT; DELETE FROM logs; SELECT * FROM (SELECT 1",  # out of the wrapper
        "WITH gone AS (DELETE FROM logs RETURNING 1) SELECT count(*) FROM gone",
        "SELECT set_config('transaction_read_only', 'off', false), (SELECT count(*) FROM logs)",
        "SELECT nextval('runs_id_seq')",
        "SELECT lo_create(0)",
        "SELECT * FROM runs FOR UPDATE",
        "SELECT * INTO TABLE copied FROM runs",
    ],
)
def test_user_sql_cannot_write_on_postgres(
    pg_recorded: tuple[Path, str], monkeypatch: pytest.MonkeyPatch, sql: str
) -> None:
    repo, url = pg_recorded
    monkeypatch.chdir(repo)
    monkeypatch.setenv("RETROLOG_DB", url)
    store = open_store(repo)
    state = (
        "SELECT (SELECT count(*) FROM logs), (SELECT count(*) FROM runs), "
        "(SELECT min(status) FROM runs), (SELECT count(*) FROM pg_class), "
        "(SELECT last_value FROM runs_id_seq), "
        "(SELECT count(*) FROM pg_largeobject_metadata)"
    )
    before = store.fetch(state)
    with pytest.raises(QueryError, match="read-only"):
        retrolog.query(sql)
    assert store.fetch(state) == before
    assert not Path("/tmp/retrolog-copy.csv").exists()
    after = retrolog.query(  # the pooled connection is still usable and still read-only
        "SELECT count(*) AS n, current_setting('transaction_read_only') AS ro FROM logs"
    )
    assert after.to_dict("records") == [{"n": 2, "ro": "on"}]


WORKER = """
import retrolog
k = retrolog.arg("k", 0)
for e in retrolog.loop("epoch", range(20)):
    for s in retrolog.loop("step", range(50)):
        retrolog.log("v", k * 1_000_000 + e * 1000 + s)
"""


def test_four_concurrent_runs_into_a_fresh_postgres_store(project: Path, pg_url: str) -> None:
    write_script(project, WORKER)
    plain_url = pg_url.replace("postgresql+psycopg://", "postgresql://", 1)  # driver defaulted
    procs = [
        subprocess.Popen(
            [sys.executable, "train.py", "--kwargs", f"k={k}"],
            cwd=project,
            env=script_env(RETROLOG_DB=plain_url),
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
        )
        for k in range(4)
    ]  # all four create the schema of the empty database at once
    outputs = [p.communicate(timeout=300) for p in procs]
    for p, (_out, err) in zip(procs, outputs):
        assert p.returncode == 0, err
        assert "Warning" not in err and "Error" not in err, err
    assert not list((project / ".retrolog" / "journals").glob("*"))  # all stored by the runs
    frame = retrolog.dataframe("k", "v")
    assert len(frame) == 4 * 1000
    assert (retrolog.runs()["status"] == "finished").all()
    for k, rows in frame.groupby("k"):
        assert list(rows["v"]) == [
            k * 1_000_000 + e * 1000 + s for e in range(20) for s in range(50)
        ]
        assert rows["run_id"].nunique() == 1
    duplicates = retrolog.query(
        "SELECT count(*) AS n FROM (SELECT run, seq FROM logs GROUP BY run, seq "
        "HAVING count(*) > 1) d"
    )
    assert duplicates.loc[0, "n"] == 0


TICKER = """
import time, retrolog
for i in retrolog.loop("tick", range(100000)):
    retrolog.log("i", i)
    print(i, flush=True)
    time.sleep(0.01)
"""


def test_sigkilled_run_is_recovered_by_the_next_command(project: Path, pg_url: str) -> None:
    write_script(project, TICKER)
    last = kill_after(project, 2.5, RETROLOG_DB=pg_url)
    cli = subprocess.run(
        [sys.executable, "-m", "retrolog", "runs", "--format", "json"],
        cwd=project,
        capture_output=True,
        text=True,
        env=script_env(RETROLOG_DB=pg_url),
    )
    assert cli.returncode == 0, cli.stderr
    assert [run["status"] for run in json.loads(cli.stdout)] == ["crashed"]
    assert not list((project / ".retrolog" / "journals").glob("*.journal"))
    stored = retrolog.dataframe("i")["i"]
    assert list(stored) == list(range(len(stored)))  # a prefix, in order, no gaps
    assert last - stored.iloc[-1] <= 150, (last, stored.iloc[-1])  # about a second at ~100/s
    run = retrolog.runs().iloc[0]
    assert run["status"] == "crashed" and run["error"]


def test_concurrent_ingest_of_one_run_stores_each_event_once(pg_server: Any) -> None:
    """Two writers of the same run (its own writer and a follower or a recovery) must not both
    apply the events above the same high-water mark; 64-bit sizes and counters fit."""
    url = fresh_database(pg_server)
    stores = [Store(url) for _ in range(4)]
    big = 3 * 2**30  # a checkpoint over 2 GiB
    events: list[list[Any]] = [[1, "run", {"script": "train.py", "status": "running"}]]
    events += [[seq, "log", 0, "x", "i", float(seq), None] for seq in range(2, 2002)]
    events += [[2002, "ckpt", 0, "epoch", None, "ab" * 32, big, big, 0.5, 1.5]]
    events += [[2**40, "end", "finished", 100.0, None]]  # a counter past 2**31
    stores[0].ingest("01TESTRUN", events[:1])  # the run exists: all four read one last_seq
    barrier = threading.Barrier(len(stores))
    errors: list[BaseException] = []

    def ingest(store: Store) -> None:
        barrier.wait()
        try:
            store.ingest("01TESTRUN", events)
        except BaseException as exc:  # a thread's exception would not fail the test
            errors.append(exc)

    threads = [threading.Thread(target=ingest, args=(s,)) for s in stores]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert not errors, errors
    try:
        store = stores[0]
        assert store.fetch("SELECT count(*), count(DISTINCT seq) FROM logs")[0] == (2000, 2000)
        assert store.fetch("SELECT bytes_total, bytes_new FROM checkpoints") == [(big, big)]
        assert store.fetch("SELECT status, last_seq FROM runs") == [("finished", 2**40)]
        assert stores[1].ingest("01TESTRUN", events) == 0  # idempotent
    finally:
        for s in stores:
            s.dispose()


def test_concurrent_replays_of_one_run_get_distinct_seqs(pg_server: Any) -> None:
    """Two replays storing new values on the same run at once (``store_values``) must not number
    their rows with the same ``seq``: the run's row is locked for the transaction."""
    from retrolog.replaying.execute import store_values

    url = fresh_database(pg_server)
    stores = [Store(url) for _ in range(4)]
    events: list[list[Any]] = [[1, "run", {"script": "train.py", "status": "running"}]]
    events += [[seq, "log", 0, "x", "f", float(seq), None] for seq in range(2, 12)]
    stores[0].ingest("01REPLAYED", events)
    (run_key,) = stores[0].fetch("SELECT id FROM runs")[0]
    barrier = threading.Barrier(len(stores))
    errors: list[BaseException] = []

    def replay_store(index: int) -> None:
        rows = [(0, f"new{index}", ("f", float(i), None)) for i in range(50)]
        barrier.wait()
        try:
            store_values(stores[index], run_key, f"R{index}", rows)
        except BaseException as exc:
            errors.append(exc)

    threads = [threading.Thread(target=replay_store, args=(i,)) for i in range(len(stores))]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    try:
        assert not errors, errors
        count, distinct = stores[0].fetch("SELECT count(*), count(DISTINCT seq) FROM logs")[0]
        assert (count, distinct) == (10 + 4 * 50, 10 + 4 * 50)
    finally:
        for s in stores:
            s.dispose()
