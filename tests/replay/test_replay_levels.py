"""Replay gives the values a run would have logged had the statement been there from the start.

Real torch training on CPU, real git history, real subprocesses: the reference runs execute the
script with the new statements in it from the beginning (same seeds); the replayed values must be
bit-for-bit equal, for every level, with and without a WHERE filter, with 1 and 2 workers.
"""

from __future__ import annotations

import shutil
from pathlib import Path

import pandas as pd
import pytest

import retrolog
from retrolog.replaying import replay

from ..conftest import git, run_python, write_script
from .scripts import ARG_SETS, STATEMENTS, TRAIN, with_statements

pytestmark = pytest.mark.slow


@pytest.fixture(scope="module")
def history(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A project with two recorded runs of TRAIN (no new statements), committed and clean."""
    repo = tmp_path_factory.mktemp("history") / "proj"
    repo.mkdir()
    git(repo, "init", "-q", "-b", "main")
    write_script(repo, TRAIN)
    git(repo, "add", "train.py")
    git(repo, "commit", "-q", "-m", "train")
    for args in ARG_SETS:
        run_python(repo, "train.py", "--kwargs", *args)
    return repo


@pytest.fixture(scope="module")
def reference(tmp_path_factory: pytest.TempPathFactory) -> dict[str, pd.DataFrame]:
    """The same runs, recorded with every new statement present from the start: name -> values."""
    repo = tmp_path_factory.mktemp("reference") / "proj"
    repo.mkdir()
    git(repo, "init", "-q")
    write_script(repo, with_statements(TRAIN, *STATEMENTS))
    for args in ARG_SETS:
        run_python(repo, "train.py", "--kwargs", *args)
    return {name: values(retrolog.dataframe("lr", name, project=repo), name) for name in STATEMENTS}


@pytest.fixture
def project(history: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """A private copy of the history (store, objects, git) so each replay starts clean."""
    copy = tmp_path / "proj"
    shutil.copytree(history, copy, symlinks=True)
    monkeypatch.chdir(copy)
    return copy


def values(frame: pd.DataFrame, name: str) -> pd.DataFrame:
    cols = [c for c in ("lr", "epoch", "step") if c in frame.columns]
    out = frame.loc[frame[name].notna(), [*cols, name]]
    return out.sort_values(cols).reset_index(drop=True)


CASES = [
    # (name, where, workers, expected level)
    ("init_norm", None, 1, "prefix"),
    ("init_norm", "lr > 0.015", 2, "prefix"),
    ("weight_norm", None, 1, "outer"),
    ("weight_norm", "epoch >= 2", 2, "outer"),
    ("grad_norm", None, 2, "inner"),
    ("grad_norm", "lr < 0.015 AND epoch = 1 AND step >= 3", 1, "inner"),
    ("final_norm", None, 2, "suffix"),
    ("final_norm", "lr < 0.015", 1, "suffix"),
]


@pytest.mark.parametrize(("name", "where", "workers", "level"), CASES)
def test_replay_matches_a_run_that_always_had_the_statement(
    project: Path,
    reference: dict[str, pd.DataFrame],
    name: str,
    where: str | None,
    workers: int,
    level: str,
) -> None:
    write_script(project, with_statements(TRAIN, name))
    report = replay(name, where=where, workers=workers)
    assert {r.level for r in report.runs if r.fidelity != "not_selected"} == {level}
    # the prefix re-logs nothing recorded, so there is nothing to compare there
    verdicts = {r.fidelity for r in report.runs if r.fidelity != "not_selected"}
    assert verdicts == ({"unchecked"} if level == "prefix" else {"reproduced"}), report.summary()
    got = values(retrolog.dataframe("lr", name), name)
    expected = reference[name]
    if where:
        from retrolog.relational import filter_frame

        expected = filter_frame(expected, where).reset_index(drop=True)
    assert len(expected) > 0
    pd.testing.assert_frame_equal(got, expected, check_exact=True, check_dtype=False)
    if level in ("outer", "inner", "suffix"):
        assert all(r.compared > 0 for r in report.runs if r.fidelity != "not_selected")


def test_replaying_again_stores_nothing_twice(project: Path) -> None:
    write_script(project, with_statements(TRAIN, "weight_norm"))
    first = replay("weight_norm", workers=2)
    assert first.stored == 2 * 4
    again = replay("weight_norm", workers=2, force=True)  # without force: skipped, see layouts
    assert again.stored == 0 and again.executed
    frame = retrolog.dataframe("weight_norm")
    assert frame["weight_norm"].notna().sum() == 2 * 4
    provenance = retrolog.query("SELECT DISTINCT replay_id FROM logs WHERE name = 'weight_norm'")
    assert list(provenance["replay_id"]) == [first.replay_id]


def test_the_replay_coordinator_imports_neither_sqlalchemy_nor_pandas_nor_numpy(
    project: Path,
) -> None:
    """A replay from a fresh process over an existing SQLite store plans, runs and stores with the
    standard library (the fork server and its tasks import torch): its fixed cost stays small."""
    write_script(project, with_statements(TRAIN, "weight_norm"))
    (project / "coordinate.py").write_text(
        "import sys\n"
        "from retrolog.replaying import replay\n"
        "report = replay('weight_norm', where='epoch >= 2', workers=2)\n"
        "print('stored', report.stored)\n"
        "print('imported', sorted(m for m in ('sqlalchemy', 'pandas', 'numpy', 'torch')"
        " if m in sys.modules))\n"
    )
    out = run_python(project, "coordinate.py").stdout
    assert "stored 4" in out
    assert "imported []" in out
    frame = retrolog.dataframe("weight_norm")
    assert frame["weight_norm"].notna().sum() == 4


def test_outer_and_inner_together(project: Path, reference: dict[str, pd.DataFrame]) -> None:
    write_script(project, with_statements(TRAIN, "weight_norm", "grad_norm"))
    report = replay(["weight_norm", "grad_norm"], workers=2)
    assert {r.level for r in report.runs} == {"inner"}
    for name in ("weight_norm", "grad_norm"):
        pd.testing.assert_frame_equal(
            values(retrolog.dataframe("lr", name), name),
            reference[name],
            check_exact=True,
            check_dtype=False,
        )


def test_skipped_work_is_really_skipped(project: Path) -> None:
    """Outer level restores the step loop instead of running it: no step is re-logged."""
    write_script(project, with_statements(TRAIN, "weight_norm"))
    report = replay("weight_norm", workers=1)
    # only the epoch-level recorded value (lr_now) is re-logged, once per epoch and run
    assert sum(r.compared for r in report.runs) == 2 * 4
    assert all(not r.fallbacks for r in report.runs)
