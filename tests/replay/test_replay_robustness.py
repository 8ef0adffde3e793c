"""Replay where static analysis, checkpoints, processes or git get in the way."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pandas as pd
import pytest

import retrolog
from retrolog.errors import MissingVersionError
from retrolog.replaying import ReplayError, replay

from ..conftest import git, run_python, script_env, write_script
from ..test_versions import git_state
from .scripts import ARG_SETS, TRAIN, with_statements

pytestmark = pytest.mark.slow

ACCUMULATING = TRAIN.replace(
    "        order = torch.randperm(len(batches)).tolist()\n",
    "        order = torch.randperm(len(batches)).tolist()\n        total = []\n",
).replace(
    '            retrolog.log("loss", loss.item())\n',
    '            retrolog.log("loss", loss.item())\n            total.append(loss.item())\n',
)
AVG_STATEMENT = (
    "        # OUTER\n",
    '        # OUTER\n        retrolog.log("avg_loss", sum(total) / len(order))\n',
)


def record(
    repo: Path, source: str, *arg_sets: tuple[str, ...], commit: bool = True, **env: str
) -> None:
    if not (repo / ".git").exists():
        git(repo, "init", "-q", "-b", "main")
    write_script(repo, source)
    if commit:
        git(repo, "add", "train.py")
        git(repo, "commit", "-q", "-m", "version")
    for args in arg_sets:
        run_python(repo, "train.py", "--kwargs", *args, **env)


def reference_values(tmp: Path, source: str, name: str, *arg_sets: tuple[str, ...]) -> pd.DataFrame:
    repo = tmp / "reference"
    repo.mkdir()
    record(repo, source, *arg_sets, commit=False)
    return tidy(retrolog.dataframe("lr", name, project=repo), name)


def tidy(frame: pd.DataFrame, name: str) -> pd.DataFrame:
    cols = [c for c in ("lr", "epoch", "step") if c in frame.columns]
    return frame.loc[frame[name].notna(), [*cols, name]].sort_values(cols).reset_index(drop=True)


def test_accumulator_read_after_the_loop_forces_re_execution(project: Path, tmp_path: Path) -> None:
    record(project, ACCUMULATING, ARG_SETS[0])
    new_source = ACCUMULATING.replace(*AVG_STATEMENT)
    write_script(project, new_source)
    report = replay("avg_loss", workers=1)
    run_plan = report.plan.runs[0]
    assert run_plan.level == "outer" and run_plan.reexecute_loops == ["step"]
    assert report.runs[0].fidelity == "reproduced"
    expected = reference_values(tmp_path, new_source, "avg_loss", ARG_SETS[0])
    pd.testing.assert_frame_equal(
        tidy(retrolog.dataframe("lr", "avg_loss"), "avg_loss"), expected, check_exact=True
    )


def test_sparse_checkpoints_still_give_exact_values(project: Path, tmp_path: Path) -> None:
    record(
        project,
        TRAIN.replace('retrolog.arg("epochs", 4)', 'retrolog.arg("epochs", 8)'),
        ARG_SETS[0],
        RETROLOG_CHECKPOINT_BUDGET="0.000001",
    )
    nested = retrolog.query("SELECT count(*) AS n FROM checkpoints WHERE loop = 'step'").loc[0, "n"]
    assert 1 <= nested < 8  # the budget forced k > 1: most epochs have no checkpoint
    source = with_statements(
        TRAIN.replace('retrolog.arg("epochs", 4)', 'retrolog.arg("epochs", 8)'),
        "weight_norm",
        "grad_norm",
    )
    write_script(project, source)
    report = replay(["weight_norm", "grad_norm"], where="epoch >= 5", workers=2)
    assert all(r.fidelity == "reproduced" for r in report.runs), report.summary()
    assert any("no checkpoint" in f for r in report.runs for f in r.fallbacks)
    for name in ("weight_norm", "grad_norm"):
        (tmp_path / name).mkdir()
        expected = reference_values(tmp_path / name, source, name, ARG_SETS[0])
        expected = expected[expected["epoch"] >= 5].reset_index(drop=True)
        pd.testing.assert_frame_equal(
            tidy(retrolog.dataframe("lr", name), name), expected, check_exact=True
        )


NOISY = TRAIN.replace(
    "        # OUTER\n",
    '        # OUTER\n        retrolog.log("jitter", int.from_bytes(os.urandom(4), "big"))\n',
).replace("import torch\n", "import os\n\nimport torch\n", 1)


def test_non_deterministic_script_is_reported_and_not_stored(project: Path) -> None:
    record(project, NOISY, ARG_SETS[0])
    write_script(project, with_statements(NOISY, "weight_norm"))
    report = replay("weight_norm", workers=1)
    result = report.runs[0]
    assert result.fidelity == "diverged" and result.mismatches >= 4 and result.stored == 0
    assert result.examples and result.examples[0]["name"] == "jitter"
    assert retrolog.dataframe("weight_norm")["weight_norm"].isna().all()
    accepted = replay("weight_norm", workers=1, accept_divergence=True)
    assert accepted.runs[0].stored == 4
    cli = subprocess.run(
        [sys.executable, "-m", "retrolog", "replay", "weight_norm", "--yes"],
        cwd=project,
        capture_output=True,
        text=True,
        env=script_env(COLUMNS="200"),
    )
    assert cli.returncode == 1 and "diverged" in cli.stdout


KILLABLE = TRAIN.replace(
    "import torch\n",
    "import os\nimport signal\n\nimport torch\n",
    1,
).replace(
    "        # OUTER\n",
    "        # OUTER\n"
    "        marker = os.environ.get('KILL_MARKER')\n"
    "        if marker and (os.environ.get('KILL_ALWAYS') or not os.path.exists(marker)) and epoch == 1:\n"
    "            open(marker, 'w').close()\n"
    "            os.kill(os.getpid(), signal.SIGKILL)\n",
)


def test_killed_worker_is_retried_once(
    project: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    record(project, KILLABLE, *ARG_SETS)
    write_script(project, with_statements(KILLABLE, "weight_norm"))
    monkeypatch.setenv("KILL_MARKER", str(tmp_path / "killed-once"))
    report = replay("weight_norm", workers=1)
    assert all(r.fidelity == "reproduced" for r in report.runs), report.summary()
    assert sorted(j.attempts for j in report.jobs) == [1, 2]
    retried = retrolog.query("SELECT log FROM replay_tasks WHERE attempts = 2").loc[0, "log"]
    assert "exited -9" in retried
    assert retrolog.dataframe("weight_norm")["weight_norm"].notna().sum() == 8


def test_a_task_that_always_dies_is_reported_and_the_rest_is_kept(
    project: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    record(project, KILLABLE, *ARG_SETS)
    write_script(project, with_statements(KILLABLE, "weight_norm"))
    monkeypatch.setenv("KILL_MARKER", str(tmp_path / "marker"))
    monkeypatch.setenv("KILL_ALWAYS", "1")
    report = replay("weight_norm", workers=2)
    assert len(report.failed) == 2 and all(j.attempts == 2 for j in report.jobs)
    assert all("failed after 2 attempts" in r.detail for r in report.runs)
    status = retrolog.query("SELECT status, error FROM replays").iloc[0]
    assert status["status"] == "failed"
    assert set(retrolog.query("SELECT status FROM replay_tasks")["status"]) == {"failed"}
    assert len(retrolog.runs()) == 2  # recorded runs untouched


def test_corrupt_checkpoint_falls_back_to_re_execution(project: Path, tmp_path: Path) -> None:
    record(project, TRAIN, ARG_SETS[0])
    objects = project / ".retrolog" / "objects"
    blobs = sorted(p for p in objects.rglob("*") if p.is_file() and p.stat().st_size > 1000)
    for blob in blobs:  # every tensor blob: whichever checkpoint replay needs is damaged
        data = bytearray(blob.read_bytes())
        data[-1] ^= 0xFF
        blob.write_bytes(bytes(data))
    source = with_statements(TRAIN, "weight_norm")
    write_script(project, source)
    report = replay("weight_norm", workers=1)
    assert report.runs[0].fidelity == "reproduced", report.summary()
    assert any("checkpoint unavailable" in f for f in report.runs[0].fallbacks)
    (tmp_path / "ref").mkdir()
    expected = reference_values(tmp_path / "ref", source, "weight_norm", ARG_SETS[0])
    pd.testing.assert_frame_equal(
        tidy(retrolog.dataframe("lr", "weight_norm"), "weight_norm"), expected, check_exact=True
    )


def test_missing_version_is_reported_not_replayable(project: Path) -> None:
    record(project, TRAIN, commit=True)
    write_script(project, TRAIN + "# uncommitted edit\n")
    run_python(project, "train.py", "--kwargs", *ARG_SETS[0])  # dirty: version is a snapshot commit
    version = retrolog.runs().iloc[0]["version"]
    run_id = retrolog.runs().iloc[0]["run_id"]
    assert version != git(project, "rev-parse", "HEAD").strip()
    git(project, "update-ref", "-d", f"refs/retrolog/runs/{run_id}")
    git(project, "reflog", "expire", "--expire=now", "--all")
    git(project, "gc", "-q", "--prune=now")
    write_script(project, with_statements(TRAIN, "weight_norm"))
    # Every run lacks its version: an error naming run, commit and the fetch command (exit 4).
    with pytest.raises(MissingVersionError, match=f"run {run_id}: its code version {version[:12]}"):
        replay("weight_norm")


def test_bad_requests_get_clear_errors(project: Path) -> None:
    record(project, TRAIN, ARG_SETS[0])
    with pytest.raises(ReplayError, match="no recorded script logs 'nothing'"):
        replay("nothing")
    write_script(project, with_statements(TRAIN, "weight_norm"))
    with pytest.raises(ReplayError, match="no recorded run of .other.py."):
        replay("weight_norm", script="other.py")
    from retrolog.relational import QueryError

    with pytest.raises(QueryError, match="bad --where"):
        replay("weight_norm", where="epoch >>> 2")
    for hostile in ("epoch IN (SELECT load_extension('x'))", "1; DROP TABLE frame"):
        with pytest.raises(QueryError, match="bad --where"):
            replay("weight_norm", where=hostile, dry_run=True)


def test_users_git_state_is_byte_identical(project: Path) -> None:
    record(project, TRAIN, ARG_SETS[0])
    write_script(project, with_statements(TRAIN, "weight_norm", "grad_norm"))
    (project / "notes.txt").write_text("untracked\n")
    before = git_state(project)
    report = replay(["weight_norm", "grad_norm"], where="epoch = 3", workers=2)
    assert report.stored > 0
    assert git_state(project) == before
    import tempfile

    assert not list(Path(tempfile.gettempdir()).glob(f"retrolog-replay-{report.replay_id}-*"))
