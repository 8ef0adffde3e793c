"""Reading the store: dataframe, runs, filters and read-only SQL."""

import sqlite3
from pathlib import Path

import pandas as pd
import pytest

import retrolog
from retrolog.relational import QueryError, filter_frame

from .conftest import SIMPLE_TRAIN, git, run_python, write_script


@pytest.fixture(scope="module")
def recorded_once(tmp_path_factory: pytest.TempPathFactory) -> Path:
    repo = tmp_path_factory.mktemp("three") / "proj"
    repo.mkdir()
    git(repo, "init", "-q")
    write_script(repo, SIMPLE_TRAIN)
    for lr in ("0.1", "0.01", "0.001"):
        run_python(repo, "train.py", "--kwargs", f"lr={lr}", "epochs=2")
    return repo


@pytest.fixture
def three_runs(recorded_once: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """Three recorded runs (lr 0.1, 0.01, 0.001), shared by the read-only tests of this module."""
    monkeypatch.chdir(recorded_once)
    return recorded_once


def test_runs_lists_each_run_with_args(three_runs: Path) -> None:
    frame = retrolog.runs()
    assert list(frame["lr"]) == [0.1, 0.01, 0.001]
    assert (frame["status"] == "finished").all() and (frame["epochs"] == 2).all()
    assert frame["run_id"].is_monotonic_increasing
    assert pd.api.types.is_datetime64_any_dtype(frame["start_time"])
    assert (frame["duration"] > 0).all()
    assert list(retrolog.runs(where="lr < 0.05")["lr"]) == [0.01, 0.001]


def test_where_filters_runs_and_iterations(three_runs: Path) -> None:
    frame = retrolog.dataframe("lr", "loss", where="lr >= 0.01 AND epoch = 1 AND step >= 2")
    assert len(frame) == 4
    assert set(frame["lr"]) == {0.1, 0.01} and set(frame["step"]) == {2, 3}


def test_sql_over_documented_views(three_runs: Path) -> None:
    frame = retrolog.query(
        "SELECT a.value AS lr, avg(m.value) AS mean_loss FROM metrics m JOIN run_args a "
        "ON a.run_id = m.run_id AND a.name = 'lr' WHERE m.name = 'loss' GROUP BY a.value ORDER BY lr"
    )
    assert list(frame["lr"]) == [0.001, 0.01, 0.1]
    assert frame["mean_loss"].is_monotonic_increasing
    bound = retrolog.query("SELECT count(*) AS n FROM metrics WHERE name = :name", {"name": "acc"})
    assert bound.loc[0, "n"] == 6


@pytest.mark.parametrize(
    "sql",
    [
        "INSERT INTO runs (run_id, status, last_seq) VALUES ('x', 'y', 0)",
        "DELETE FROM logs",
        "DROP TABLE runs",
        "UPDATE runs SET status = 'finished'",
        "ATTACH DATABASE '/tmp/evil.db' AS evil",
        "PRAGMA writable_schema = 1",
        "PRAGMA query_only = 0",
        "CREATE TABLE t (x)",
        "SELECT 1; DROP TABLE runs",
        "SELECT load_extension('x')",
    ],
)
def test_user_sql_cannot_write(three_runs: Path, sql: str) -> None:
    before = retrolog.query("SELECT count(*) AS n FROM logs").loc[0, "n"]
    with pytest.raises(QueryError):
        retrolog.query(sql)
    assert retrolog.query("SELECT count(*) AS n FROM logs").loc[0, "n"] == before
    assert len(retrolog.runs()) == 3
    assert not Path("/tmp/evil.db").exists() or "evil" not in sql


def test_names_are_bound_never_formatted(project: Path) -> None:
    nasty = "x'); DROP TABLE runs; --"
    write_script(project, f"import retrolog\nretrolog.log({nasty!r}, 1)\nretrolog.log('ok', 2)\n")
    run_python(project, "train.py")
    frame = retrolog.dataframe(nasty, "ok")
    assert frame.loc[0, nasty] == 1 and frame.loc[0, "ok"] == 2
    assert len(retrolog.runs()) == 1


def test_where_is_read_only_too(three_runs: Path) -> None:
    with pytest.raises(QueryError, match="bad --where"):
        retrolog.dataframe("loss", where="1; DROP TABLE runs")
    with pytest.raises(QueryError):
        filter_frame(pd.DataFrame({"a": [1]}), "a IN (SELECT load_extension('x'))")
    assert len(retrolog.runs()) == 3


def test_unknown_names_give_empty_columns_not_errors(three_runs: Path) -> None:
    frame = retrolog.dataframe("never_logged")
    assert frame.empty and "never_logged" in frame.columns


def test_recorded_values_win_over_replayed_ones(project: Path) -> None:
    write_script(project, SIMPLE_TRAIN)
    for lr in ("0.1", "0.01", "0.001"):
        run_python(project, "train.py", "--kwargs", f"lr={lr}", "epochs=2")
    db = project / ".retrolog" / "retrolog.db"
    with sqlite3.connect(db) as conn:  # a replay that wrote the same name on the same coordinates
        conn.execute(
            "INSERT INTO logs (run, seq, ctx_id, name, vtype, value_num, value_text, replay_id) "
            "SELECT run, seq + 100000, ctx_id, name, vtype, -1, NULL, 'R1' FROM logs WHERE name = 'loss'"
        )
    frame = retrolog.dataframe("loss")
    assert (frame["loss"] >= 0).all() and len(frame) == 3 * 8
