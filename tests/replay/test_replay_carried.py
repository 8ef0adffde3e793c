"""Nested loops whose variables the code after them reads are skipped on replay, not re-run.

A nanoGPT-like gradient-accumulation script: the micro-step loop assigns ``loss`` (read after the
loop) and prefetches the next batch ``X, Y`` (read by the loop in the next iteration), and the
code after it clips and steps on the accumulated ``.grad``. Recording captures those variables
and gradients at every loop exit; replay restores them instead of re-running the loop, and the
values equal a run that had the new statement from the start, bit for bit.
"""

from __future__ import annotations

import shutil
from pathlib import Path

import pandas as pd
import pytest

import retrolog
from retrolog.replaying import replay

from ..conftest import git, run_python, write_script

pytestmark = pytest.mark.slow

SCRIPT = """\
import torch
from torch import nn

import retrolog

torch.set_num_threads(1)
seed = retrolog.arg("seed", 0)
torch.manual_seed(seed)
data = torch.randn(400, 8)
target = (data[:, 0] + 0.5 * data[:, 1] > 0).long()


def get_batch():
    idx = torch.randint(0, 400, (16,))
    return data[idx], target[idx]


model = nn.Sequential(nn.Linear(8, 16), nn.ReLU(), nn.Dropout(0.2), nn.Linear(16, 2))
optimizer = torch.optim.AdamW(model.parameters(), lr=0.01)
X, Y = get_batch()
with retrolog.checkpointing(model=model, optimizer=optimizer):
    for it in retrolog.loop("iter", range(6)):
        for micro in retrolog.loop("micro", range(3)):
            logits = model(X)
            loss = nn.functional.cross_entropy(logits, Y) / 3
            X, Y = get_batch()
            loss.backward()
        total_norm = torch.nn.utils.clip_grad_norm_(model.parameters(), 1.0)
        # OUTER
        optimizer.step()
        optimizer.zero_grad(set_to_none=True)
        retrolog.log("loss", loss.item())
"""

# The same training with the micro-step loop in a function the main loop calls.
IN_FUNCTION = SCRIPT.replace(
    """X, Y = get_batch()
with retrolog.checkpointing""",
    """

def accumulate(X, Y):
    for micro in retrolog.loop("micro", range(3)):
        logits = model(X)
        loss = nn.functional.cross_entropy(logits, Y) / 3
        X, Y = get_batch()
        loss.backward()
    return loss, X, Y


X, Y = get_batch()
with retrolog.checkpointing""",
).replace(
    """        for micro in retrolog.loop("micro", range(3)):
            logits = model(X)
            loss = nn.functional.cross_entropy(logits, Y) / 3
            X, Y = get_batch()
            loss.backward()
""",
    """        loss, X, Y = accumulate(X, Y)
""",
)

MARKER = "        # OUTER\n"
GNORM = '        retrolog.log("gnorm", float(total_norm))\n'
SEEDS = ("seed=0", "seed=1")
BUDGET = {"RETROLOG_CHECKPOINT_BUDGET": "1.0"}


def with_statement(source: str, statement: str = GNORM) -> str:
    return source.replace(MARKER, MARKER + statement)


def record(repo: Path, source: str, *, commit: bool = True, budget: str = "1.0") -> None:
    if not (repo / ".git").exists():
        git(repo, "init", "-q", "-b", "main")
    write_script(repo, source)
    if commit:
        git(repo, "add", "train.py")
        git(repo, "commit", "-q", "-m", "version")
    for seed in SEEDS:
        run_python(repo, "train.py", "--kwargs", seed, RETROLOG_CHECKPOINT_BUDGET=budget)


def values(frame: pd.DataFrame, name: str) -> pd.DataFrame:
    cols = ["seed", "iter"]
    return frame.loc[frame[name].notna(), [*cols, name]].sort_values(cols).reset_index(drop=True)


def reference(tmp: Path, source: str, name: str) -> pd.DataFrame:
    """The runs recorded with the new statement in the script from the start."""
    repo = tmp / "reference"
    repo.mkdir()
    record(repo, source, commit=False)
    return values(retrolog.dataframe("seed", name, project=repo), name)


@pytest.fixture(scope="module")
def history(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """Two recorded runs of SCRIPT, every iteration checkpointed."""
    repo = tmp_path_factory.mktemp("carried") / "proj"
    repo.mkdir()
    record(repo, SCRIPT)
    return repo


@pytest.fixture
def project(history: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    copy = tmp_path / "proj"
    shutil.copytree(history, copy, symlinks=True)
    monkeypatch.chdir(copy)
    return copy


def test_the_micro_step_loop_is_skipped_and_the_values_are_exact(
    project: Path, tmp_path: Path
) -> None:
    checkpoints = retrolog.query("SELECT count(*) AS n FROM checkpoints WHERE loop = 'micro'")
    assert checkpoints.loc[0, "n"] == 2 * 6  # every micro loop exit, both runs
    source = with_statement(SCRIPT)
    write_script(project, source)
    report = replay("gnorm", workers=1)
    assert [r.reexecute_loops for r in report.plan.runs] == [[], []]
    assert {r.level for r in report.runs} == {"outer"}
    assert [r.fallbacks for r in report.runs] == [[], []], report.summary()
    # the recorded losses, re-logged after every skipped micro loop, came out the same
    assert {r.fidelity for r in report.runs} == {"reproduced"}, report.summary()
    assert all(r.compared == 6 for r in report.runs)
    got = values(retrolog.dataframe("seed", "gnorm"), "gnorm")
    expected = reference(tmp_path, source, "gnorm")
    assert len(expected) == 2 * 6
    pd.testing.assert_frame_equal(got, expected, check_exact=True, check_dtype=False)


def test_sparse_checkpoints_mix_skipped_and_re_executed_loops_exactly(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Iterations without a checkpoint re-run the micro loop on the restored ``X, Y``, grads and
    RNG of the previous skipped one: the prefetched batch must have come back right."""
    repo = tmp_path / "proj"
    repo.mkdir()
    monkeypatch.chdir(repo)
    record(repo, SCRIPT, budget="0.000001")
    micro = retrolog.query("SELECT count(*) AS n FROM checkpoints WHERE loop = 'micro'")
    assert 2 <= micro.loc[0, "n"] < 2 * 6  # the first exit of each run, and not every one
    source = with_statement(SCRIPT)
    write_script(repo, source)
    report = replay("gnorm", workers=1)
    notes = [note for r in report.runs for note in r.fallbacks]
    assert notes and all("no checkpoint" in note for note in notes), notes
    assert len(notes) == 2 * 6 - micro.loc[0, "n"]  # every other iteration was skipped
    assert {r.fidelity for r in report.runs} == {"reproduced"}, report.summary()
    got = values(retrolog.dataframe("seed", "gnorm"), "gnorm")
    pd.testing.assert_frame_equal(
        got, reference(tmp_path, source, "gnorm"), check_exact=True, check_dtype=False
    )


def test_a_variable_the_checkpoints_lack_makes_replay_re_execute_the_loop(
    project: Path, tmp_path: Path
) -> None:
    """``logits`` was never read after the loop, so no checkpoint holds it: the loop re-runs."""
    source = with_statement(SCRIPT, '        retrolog.log("logit_sum", logits.sum().item())\n')
    write_script(project, source)
    report = replay("logit_sum", workers=1)
    notes = [note for r in report.runs for note in r.fallbacks]
    assert len(notes) == 2 * 6 and all("'logits'" in note for note in notes), notes
    assert {r.fidelity for r in report.runs} == {"reproduced"}, report.summary()
    got = values(retrolog.dataframe("seed", "logit_sum"), "logit_sum")
    expected = reference(tmp_path, source, "logit_sum")
    pd.testing.assert_frame_equal(got, expected, check_exact=True, check_dtype=False)


def test_a_loop_in_a_function_gets_its_locals_back(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    repo = tmp_path / "proj"
    repo.mkdir()
    monkeypatch.chdir(repo)
    record(repo, IN_FUNCTION)
    source = with_statement(IN_FUNCTION)
    write_script(repo, source)
    report = replay("gnorm", workers=1)
    assert [r.fallbacks for r in report.runs] == [[], []], report.summary()
    assert {r.fidelity for r in report.runs} == {"reproduced"}, report.summary()
    got = values(retrolog.dataframe("seed", "gnorm"), "gnorm")
    pd.testing.assert_frame_equal(
        got, reference(tmp_path, source, "gnorm"), check_exact=True, check_dtype=False
    )


def test_a_carried_value_no_checkpoint_can_hold_stops_checkpointing_that_loop(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    repo = tmp_path / "proj"
    repo.mkdir()
    monkeypatch.chdir(repo)
    source = SCRIPT.replace(
        "            loss.backward()\n",
        "            loss.backward()\n            last = object()\n",
    ).replace(MARKER, MARKER + "        print(type(last).__name__)\n")
    git(repo, "init", "-q", "-b", "main")
    write_script(repo, source)
    proc = run_python(repo, "train.py", **BUDGET)
    assert proc.stderr.count("cannot hold") == 1 and "'last' (builtins.object)" in proc.stderr
    micro = retrolog.query("SELECT count(*) AS n FROM checkpoints WHERE loop = 'micro'")
    assert micro.loc[0, "n"] == 0
    assert len(retrolog.dataframe("loss")) == 6


def test_a_budget_of_zero_records_without_checkpoints_silently(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    repo = tmp_path / "proj"
    repo.mkdir()
    monkeypatch.chdir(repo)
    git(repo, "init", "-q", "-b", "main")
    write_script(repo, SCRIPT)
    proc = run_python(repo, "train.py", RETROLOG_CHECKPOINT_BUDGET="0")
    assert "retrolog" not in proc.stderr, proc.stderr
    assert retrolog.query("SELECT count(*) AS n FROM checkpoints").loc[0, "n"] == 0
    assert len(retrolog.dataframe("loss")) == 6
