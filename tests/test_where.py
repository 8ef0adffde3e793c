"""One ``--where`` grammar: the same clause selects the same rows at every entry point.

The entry points: ``dataframe``/``runs`` (the vectorised path of ``relational.where``), the UI
(``filter_frame``: SQLite's own evaluation, ``store.where.select``; and its ``/api/runs``), the CLI
(``runs --where``) and the replay planner (``store.where.select_rows`` over plain rows, without
pandas).
"""

from __future__ import annotations

import io
import subprocess
import sys
from pathlib import Path

import pandas as pd
import pytest

import retrolog
from retrolog.relational import QueryError, filter_frame
from retrolog.relational.where import select_rows as frame_select
from retrolog.store.where import Unsupported, parse
from retrolog.store.where import select_rows as plain_select

from .conftest import SIMPLE_TRAIN, git, run_python, write_script

ROWS = [
    {"run_id": "a1", "lr": 0.1, "epoch": 0, "acc": 0.5, "opt": "adam", "seed": 1},
    {"run_id": "a1", "lr": 0.1, "epoch": 1, "acc": None, "opt": "adam", "seed": 1},
    {"run_id": "b2", "lr": 0.01, "epoch": 0, "acc": 0.7, "opt": "SGD", "seed": 2},
    {"run_id": "b2", "lr": 0.01, "epoch": 1, "acc": 0.9, "opt": "SGD", "seed": 2},
    {"run_id": "c3", "lr": 1e-3, "epoch": 0, "acc": 0.2, "opt": None, "seed": 3},
    {"run_id": "c3", "lr": 1e-3, "epoch": 1, "acc": 0.4, "opt": None, "seed": 3},
]

CLAUSES = [
    "lr > 1e-3 AND epoch >= 1",
    "acc > 0.45",
    "acc IS NULL OR opt = 'SGD'",
    "NOT (acc > 0.45)",  # NULL stays unselected under NOT
    "opt LIKE 'sg%'",
    "opt NOT IN ('adam')",
    "lr IN (0.1, 0.001) AND NOT epoch = 0",
    "epoch BETWEEN 1 AND 2 AND seed * 2 >= 4",
    "run_id = 'b2' OR run_id IN ('c3', NULL)",
    "LR < 0.05",  # names are case-insensitive, as in SQLite
    "length(opt) = 4",  # a function: SQLite's own evaluation on every path
    "seed % 2 = 1",
    "(acc > 0.3) + (lr > 0.005) = 2",
]


@pytest.mark.parametrize("where", CLAUSES)
def test_same_rows_from_plain_rows_and_from_frames(where: str) -> None:
    frame = pd.DataFrame(ROWS)
    expected = plain_select(ROWS, where)  # the planner's evaluation (no pandas)
    assert list(frame_select(frame, where)) == expected  # dataframe(), runs()
    assert list(filter_frame(frame, where).index) == expected  # the UI
    assert expected, f"{where!r} should select something"


def test_the_grammar_declines_what_only_sqlite_evaluates() -> None:
    assert parse("a > 1 AND b IN (1, 2)")[0] == "and"
    for clause in ("length(opt) = 4", "a / 2 = 1", "a || 'x' = 'yx'", "a NOT b"):
        with pytest.raises(Unsupported):
            parse(clause)


@pytest.mark.parametrize("where", ["nosuch > 1", "lr >", "lr IN (SELECT load_extension('x'))"])
def test_a_bad_clause_is_the_same_error_everywhere(where: str) -> None:
    frame = pd.DataFrame(ROWS)
    for select in (lambda: plain_select(ROWS, where), lambda: frame_select(frame, where)):
        with pytest.raises(QueryError, match="bad --where"):
            select()


@pytest.fixture(scope="module")
def history(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """Three recorded runs, then today's script logs one more value per epoch."""
    repo = tmp_path_factory.mktemp("where") / "proj"
    repo.mkdir()
    git(repo, "init", "-q")
    write_script(repo, SIMPLE_TRAIN)
    for lr in ("0.1", "0.01", "0.001"):
        run_python(repo, "train.py", "--kwargs", f"lr={lr}", "epochs=3")
    today = SIMPLE_TRAIN.replace(
        '    retrolog.log("acc", epoch / 10)\n',
        '    retrolog.log("acc", epoch / 10)\n    retrolog.log("acc2", epoch / 5)\n',
    )
    assert today != SIMPLE_TRAIN
    (repo / "train.py").write_text(today)
    return repo


@pytest.mark.parametrize(
    "where",
    ["lr < 0.05 AND epoch >= 1", "acc >= 0.2 OR lr = 0.1", "lr IN (0.1, 0.001) AND NOT epoch = 1"],
)
def test_same_runs_and_iterations_for_dataframe_cli_and_replay_planner(
    history: Path, where: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.chdir(history)
    frame = retrolog.dataframe("acc", where=where)
    from_frame = {(r, int(e)) for r, e in zip(frame["run_id"], frame["epoch"], strict=True)}
    plan = retrolog.replay("acc2", where=where, dry_run=True).plan
    from_plan = {(p.run_id, int(c[0])) for p in plan.runs for c in p.selected if c}
    assert from_plan == from_frame and from_frame

    run_clause = where.split(" AND ")[0] if "epoch" in where else "lr = 0.1"
    listed = set(retrolog.runs(where=run_clause)["run_id"])
    cli = subprocess.run(
        [sys.executable, "-m", "retrolog", "runs", "--where", run_clause, "--format", "csv"],
        cwd=history,
        capture_output=True,
        text=True,
        check=True,
    )
    assert set(pd.read_csv(io.StringIO(cli.stdout))["run_id"]) == listed
    from fastapi.testclient import TestClient

    from retrolog.ui import create_app

    ui = TestClient(create_app(history), base_url="http://127.0.0.1")
    shown = ui.get("/api/runs", params={"where": run_clause}).json()["runs"]
    assert {r["run_id"] for r in shown} == listed
    if "epoch" in where:  # the run-level part of the clause picks the runs the frame has
        assert listed == {r for r, _e in from_frame}
