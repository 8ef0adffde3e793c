"""Every user query has a time limit: the CLI, the Python API and PostgreSQL, on real stores."""

from __future__ import annotations

import subprocess
import sys
import threading
import time
from pathlib import Path
from typing import Any

import pytest

import retrolog
from retrolog.errors import QueryTimeout, UsageError
from retrolog.relational import QueryError, open_store, run_sql
from retrolog.store.limits import DEFAULTS, ENV, configured_seconds, query_context
from retrolog.ui.db import Reader

from .conftest import SIMPLE_TRAIN, fresh_database, git, run_python, script_env, write_script

ENDLESS = "WITH RECURSIVE c(x) AS (SELECT 1 UNION ALL SELECT x + 1 FROM c) SELECT count(*) FROM c"
# abs(): a function, so the condition goes to SQLite whichever --where evaluator runs
ENDLESS_WHERE = f"abs(1) IN ({ENDLESS})"


@pytest.fixture
def recorded(project: Path) -> Path:
    write_script(project, SIMPLE_TRAIN)
    git(project, "add", "train.py")
    git(project, "commit", "-q", "-m", "train")
    run_python(project, "train.py")
    return project


def cli(project: Path, *args: str, **env: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "retrolog", *args],
        cwd=project,
        capture_output=True,
        text=True,
        env=script_env(COLUMNS="200", **env),
        timeout=120,
    )


@pytest.mark.parametrize(
    "args",
    [
        ("sql", ENDLESS),
        ("runs", "--where", ENDLESS_WHERE),
        ("df", "loss", "--where", ENDLESS_WHERE),
    ],
    ids=["sql", "runs-where", "df-where"],
)
def test_endless_cli_queries_stop_at_the_limit_with_one_line(
    recorded: Path, args: tuple[str, ...]
) -> None:
    out = cli(recorded, *args, RETROLOG_QUERY_TIMEOUT="1")
    assert out.returncode == 2, out.stderr
    lines = out.stderr.strip().splitlines()
    assert len(lines) == 1, out.stderr
    assert "time limit of 1 s" in lines[0] and ENV in lines[0]
    # a query that fits its limit is not affected
    ok = cli(
        recorded, "sql", "SELECT count(*) AS n FROM runs", "-f", "csv", RETROLOG_QUERY_TIMEOUT="1"
    )
    assert ok.returncode == 0 and ok.stdout.splitlines() == ["n", "1"]


def test_python_api_query_is_bounded_and_the_error_is_a_usage_error(
    recorded: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv(ENV, "0.5")
    with pytest.raises(QueryTimeout) as caught:
        retrolog.query(ENDLESS)
    assert isinstance(caught.value, UsageError) and isinstance(caught.value, QueryError)
    assert "time limit of 0.5 s" in str(caught.value) and "\n" not in str(caught.value)
    with pytest.raises(QueryTimeout):
        retrolog.runs(where=ENDLESS_WHERE)
    assert retrolog.query("SELECT count(*) AS n FROM runs")["n"].tolist() == [1]


def test_each_surface_has_its_default_and_the_variable_overrides_all(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.delenv(ENV, raising=False)
    assert {s: configured_seconds(s)[0] for s in DEFAULTS} == DEFAULTS
    assert DEFAULTS["ui"] < DEFAULTS["cli"] < DEFAULTS["api"]
    monkeypatch.setenv(ENV, "7")
    assert {configured_seconds(s) for s in DEFAULTS} == {(7.0, ENV)}
    monkeypatch.setenv(ENV, "0")  # 0: no limit
    assert configured_seconds("ui")[0] is None


def test_a_cancelled_client_stops_its_query(recorded: Path) -> None:
    store = open_store(recorded)
    cancel = threading.Event()
    threading.Timer(0.3, cancel.set).start()
    started = time.monotonic()
    with query_context("ui", cancel), pytest.raises(QueryTimeout, match="client disconnected"):
        run_sql(store, ENDLESS)
    assert time.monotonic() - started < DEFAULTS["ui"]


@pytest.mark.slow
def test_postgres_queries_are_bounded_by_statement_timeout(
    pg_server: Any,  # noqa: F811
    project: Path,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    url = fresh_database(pg_server)
    write_script(project, SIMPLE_TRAIN)
    run_python(project, "train.py", RETROLOG_DB=url)
    monkeypatch.setenv("RETROLOG_DB", url)
    monkeypatch.setenv(ENV, "1")
    store = open_store(project)
    try:
        with pytest.raises(QueryTimeout, match="time limit of 1 s"):
            run_sql(store, ENDLESS)
        assert run_sql(store, "SELECT count(*) AS n FROM runs")["n"].tolist() == [1]
        cancel = threading.Event()
        threading.Timer(0.3, cancel.set).start()
        monkeypatch.setenv(ENV, "30")
        started = time.monotonic()
        with query_context("ui", cancel), pytest.raises(QueryTimeout, match="disconnected"):
            run_sql(store, ENDLESS)
        assert time.monotonic() - started < 10
        monkeypatch.setenv(ENV, "1")
        reader = Reader(project)  # the UI's own queries carry the limit too
        started = time.monotonic()
        with query_context("ui"), pytest.raises(Exception, match="statement timeout"):
            reader.rows("SELECT pg_sleep(20)")
        assert time.monotonic() - started < 10
        assert reader.rows("SELECT count(*) FROM runs") == [(1,)]
        out = cli(project, "sql", ENDLESS, RETROLOG_DB=url, RETROLOG_QUERY_TIMEOUT="1")
        assert out.returncode == 2 and len(out.stderr.strip().splitlines()) == 1, out.stderr
        assert "time limit of 1 s" in out.stderr
    finally:
        store.dispose()


def test_replay_where_is_bounded_too(recorded: Path) -> None:
    script = (recorded / "train.py").read_text()
    (recorded / "train.py").write_text(
        script.replace(
            'random.seed(retrolog.arg("seed", 0))',
            'random.seed(retrolog.arg("seed", 0))\nretrolog.log("double_lr", lr * 2)',
        )
    )
    out = cli(
        recorded,
        "replay",
        "double_lr",
        "--where",
        ENDLESS_WHERE,
        "--yes",
        RETROLOG_QUERY_TIMEOUT="1",
    )
    assert out.returncode == 2, out.stdout + out.stderr
    lines = out.stderr.strip().splitlines()
    assert len(lines) == 1 and "time limit of 1 s" in lines[0], out.stderr
