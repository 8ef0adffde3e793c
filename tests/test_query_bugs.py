"""Query bugs found by trying retrolog as a new user (issue 13), each shown fixed on real runs."""

from __future__ import annotations

import os
import pty
import subprocess
import sys
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

import retrolog
from retrolog.relational import filter_frame
from retrolog.relational.describe import unique_prefixes
from retrolog.relational.where import select_rows

from .conftest import SIMPLE_TRAIN, git, run_python, script_env, write_script


@pytest.fixture(scope="module")
def recorded_once(tmp_path_factory: pytest.TempPathFactory) -> Path:
    repo = tmp_path_factory.mktemp("bugs") / "proj"
    repo.mkdir()
    git(repo, "init", "-q")
    write_script(repo, SIMPLE_TRAIN)
    for lr in ("0.1", "0.01", "0.001"):
        run_python(repo, "train.py", "--kwargs", f"lr={lr}", "epochs=2")
    return repo


@pytest.fixture
def three_runs(recorded_once: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    monkeypatch.chdir(recorded_once)
    return recorded_once


def test_where_over_args_and_names_not_asked_for(three_runs: Path) -> None:
    frame = retrolog.dataframe("loss", where="lr > 1e-3 AND epoch >= 1")
    assert list(frame.columns) == [
        "run_id",
        "start_time",
        "version",
        "script",
        "epoch",
        "step",
        "loss",
    ]
    every = retrolog.dataframe("lr", "loss")
    expected = every[(every["lr"] > 1e-3) & (every["epoch"] >= 1)]
    assert len(frame) == len(expected) == 8
    assert list(frame["loss"]) == list(expected["loss"])
    # a value logged outside loops, not asked for, filters too
    assert len(retrolog.dataframe("loss", where="final = 'done'")) == 24
    assert retrolog.dataframe("loss", where="final = 'other'").empty


CONDITIONS = [
    "lr > 1e-3 AND epoch >= 1",
    "lr >= 0.01 OR loss < 0.005",
    "NOT (lr > 1e-3) AND step BETWEEN 1 AND 2",
    "acc IS NULL",
    "acc IS NOT NULL",
    "step IN (0, 3) AND lr NOT IN (0.1)",
    "script = 'train.py' AND run_id LIKE '01%'",
    "script <> 'train.py'",
    "loss * 100 > lr + 0.5",
    "-step < -2",
    "EPOCH = 1",
    '"lr" = 0.01',
    "start_time > 0",
    "step",
    "NOT step",
    "lr IN (0.1, NULL)",
    "abs(loss) > 0.01",  # functions: SQLite evaluates them
    "step / 2 = 1",  # SQLite's integer division
    "run_id > 5",  # text against a number: SQLite's affinity rules
]


@pytest.mark.parametrize("where", CONDITIONS)
def test_where_on_the_frame_selects_what_sqlite_selects(three_runs: Path, where: str) -> None:
    frame = retrolog.dataframe("lr", "loss", "acc")
    ours = select_rows(frame, where)
    sqlites = filter_frame(frame.reset_index(drop=True), where).index.to_numpy()
    assert list(ours) == list(sqlites)


def test_where_types_like_sqlite_on_odd_columns() -> None:
    frame = pd.DataFrame(
        {
            "s": ["a", None, "B", "b"],
            "n": pd.array([1, None, 3, 4], dtype="Int64"),
            "o": pd.Series([1.5, None, 2, "x"], dtype=object),
            "f": [0.5, np.nan, 1.5, 2.5],
        }
    )
    for where in ("s < 'b'", "s LIKE 'B'", "n >= 3", "n IS NULL", "o > 1", "f <> 1.5", "s = 1"):
        ours = list(select_rows(frame, where))
        assert ours == list(filter_frame(frame, where).index), where


MULTI_DEPTH = """
import retrolog
value = retrolog.arg("value", "number")
def v(x):
    return x if value == "number" else f"v{x}"
before, inside, deep = (retrolog.arg(n, d) for n, d in (("before", 1), ("inside", 1), ("deep", 0)))
if before:
    retrolog.log("m", v(-1))
for epoch in retrolog.loop("epoch", range(3)):
    if inside:
        retrolog.log("m", v(epoch))
    for step in retrolog.loop("step", range(2)):
        retrolog.log("m2", v(step))
        if deep:
            retrolog.log("m", v(10 * epoch + step))
"""


@pytest.mark.parametrize("value", ["number", "text"])  # the numeric fast path and the general one
def test_a_name_logged_at_several_depths_keeps_every_value(project: Path, value: str) -> None:
    write_script(project, MULTI_DEPTH)
    for before, inside, deep in ((1, 0, 0), (0, 1, 0), (1, 1, 0), (0, 0, 1), (1, 0, 1)):
        run_python(
            project,
            "train.py",
            "--kwargs",
            f"value={value}",
            f"before={before}",
            f"inside={inside}",
            f"deep={deep}",
        )
    frame = retrolog.dataframe("m", "value")
    assert not [c for c in frame.columns if c.endswith(("_x", "_y"))]
    stored = retrolog.query(
        "SELECT count(*) AS n FROM (SELECT DISTINCT run_id, ctx_id FROM metrics WHERE name = 'm')"
    )
    assert frame["m"].notna().sum() == stored.loc[0, "n"] == 1 + 3 + 4 + 6 + 7
    assert set(frame["value"]) == {value}
    outside = frame[frame["epoch"].isna()]
    assert len(outside) == 3 and set(outside["m"]) == {-1 if value == "number" else "v-1"}
    per_run = frame.groupby("run_id")["m"].count().tolist()
    assert per_run == [1, 3, 4, 6, 7]
    # each run's outside-loop row comes first, then its loop rows in order
    first = frame.groupby("run_id").head(1)
    assert first["epoch"].isna().sum() == 3
    both = retrolog.dataframe("m", "m2")
    assert both["m2"].notna().sum() == 5 * 6


def test_unique_prefixes_are_shortest_and_at_least_eight() -> None:
    ids = ["01AAAAAAAAAX", "01AAAAAAAAAY", "01AAAAAAB", "01ZZZZZZZZZZ"]
    short = unique_prefixes(ids)
    assert short == {
        "01AAAAAAAAAX": "01AAAAAAAAAX",
        "01AAAAAAAAAY": "01AAAAAAAAAY",
        "01AAAAAAB": "01AAAAAAB",
        "01ZZZZZZZZZZ": "01ZZZZZZ",
    }
    for run_id, prefix in short.items():
        assert [i for i in ids if i.startswith(prefix)] == [run_id]


def test_runs_table_shows_short_ids_that_show_accepts(three_runs: Path) -> None:
    out = _cli(three_runs, "runs")
    ids = list(retrolog.runs()["run_id"])
    shown = [i for i in ids if i in out]
    assert not shown  # full ids are not printed in the table
    short = unique_prefixes(ids)
    for run_id in ids:
        assert short[run_id] in out
        assert run_id in _cli(three_runs, "show", short[run_id].lower(), "-f", "json")


def _cli(cwd: Path, *args: str) -> str:
    proc = subprocess.run(
        [sys.executable, "-m", "retrolog", *args],
        cwd=cwd,
        capture_output=True,
        text=True,
        env=script_env(COLUMNS="200"),
        timeout=120,
    )
    assert proc.returncode == 0, proc.stderr
    return proc.stdout


def _on_terminal(cwd: Path, *args: str) -> str:
    """The command's output when its stdout is a terminal (a pseudo-terminal here)."""
    main, secondary = pty.openpty()
    proc = subprocess.Popen(
        [sys.executable, "-m", "retrolog", *args],
        cwd=cwd,
        stdout=secondary,
        stderr=secondary,
        env=script_env(COLUMNS="200"),
    )
    os.close(secondary)
    chunks = []
    while True:
        try:
            data = os.read(main, 65536)
        except OSError:  # the terminal closes when the command ends
            break
        if not data:
            break
        chunks.append(data)
    os.close(main)
    assert proc.wait(timeout=120) == 0
    return b"".join(chunks).decode()


def test_df_on_a_terminal_shows_head_tail_and_count(three_runs: Path) -> None:
    fits = _on_terminal(three_runs, "df", "loss")
    assert "rows; showing" not in fits and "…" not in fits  # 24 rows fit


def test_df_on_a_terminal_clips_long_tables(project: Path) -> None:
    write_script(project, SIMPLE_TRAIN)
    run_python(project, "train.py", "--kwargs", "epochs=15")
    clipped = _on_terminal(project, "df", "loss")
    assert "(60 rows; showing the first and last 20" in clipped and "…" in clipped
    assert clipped.count("train.py") == 40
    full = _on_terminal(project, "df", "loss", "--all")
    assert "rows; showing" not in full and full.count("train.py") == 60
    piped = _cli(project, "df", "loss")
    assert "…" not in piped and piped.count("train.py") == 60


def test_df_table_over_many_rows_is_plain_aligned_text(project: Path) -> None:
    write_script(
        project,
        """
        import retrolog
        for step in retrolog.loop("step", range(450)):
            retrolog.log("loss", step / 7)
        """,
    )
    run_python(project, "train.py")
    out = _cli(project, "df", "loss").splitlines()
    assert out[0].split() == ["run_id", "start_time", "version", "script", "step", "loss"]
    assert len(out) == 2 + 450
    assert len({len(line) for line in out[2:]}) == 1  # aligned columns
    assert out[-1].split()[-2:] == ["449", f"{449 / 7:.6g}"]


def test_where_names_are_case_insensitive_and_run_columns_are_not_doubled(three_runs: Path) -> None:
    assert len(retrolog.dataframe("loss", where="LR > 1e-3 AND Epoch >= 1")) == 8
    frame = retrolog.dataframe("script", "loss", where="script = 'train.py'")
    assert list(frame.columns).count("script") == 1 and len(frame) == 24
    assert len(retrolog.dataframe("script")) == 3


def test_where_arithmetic_past_int64_is_left_to_sqlite() -> None:
    frame = pd.DataFrame({"a": np.array([1, 2**62, 3], dtype=np.int64), "b": [1.0, np.nan, 3.0]})
    for where in ("a < 99999999999999999999", "a * 4 > 0", "a * 2 > 5", "b * 1e308 * 10 > 0"):
        assert list(select_rows(frame, where)) == list(filter_frame(frame, where).index), where
