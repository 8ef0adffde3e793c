"""Hindsight logging on histories that look like real ones (issue: replay on real training scripts).

Two multi-version histories written in the style of public training scripts (tests/histories):
a nanoGPT-like script (``while True``-style loop with a manual counter and ``break``, gradient
accumulation with the batch prefetched inside the micro-steps, clipping and a GradScaler added
later, a ``globals()`` config with a configurator, ``out_dir/ckpt.pt`` written by the script, a
model module) and a pytorch/examples-like digits script (argparse, epoch loop in ``main()``, batch
loop in ``train()``, ``--save-model`` writing a top-level file). Six runs over three versions each,
recorded as a user would; then statements are added to today's code and replayed. The values must
equal re-running every old version with the statements inserted by hand, the replay must work at
the inner/outer level from checkpoints (not re-run everything), and every file of the user's
project must be byte-identical afterwards.
"""

from __future__ import annotations

import hashlib
import math
import re
import shutil
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

import retrolog
from retrolog.replaying import replay

from ..conftest import git, run_python
from ..histories import GITIGNORE, RUNS, VERSIONS, version_files, with_statements, write_version

pytestmark = pytest.mark.slow

RECORD_ENV = {"OMP_NUM_THREADS": "1", "RETROLOG_CHECKPOINT_BUDGET": "1.0"}


def record_history(repo: Path, history: str) -> None:
    """Commit each version of ``history`` and record its runs, the way a user works."""
    repo.mkdir(parents=True)
    git(repo, "init", "-q", "-b", "main")
    (repo / ".gitignore").write_text(GITIGNORE[history])
    for version in VERSIONS:
        paths = write_version(repo, history, version)
        git(repo, "add", ".gitignore", *paths)
        git(repo, "commit", "-q", "-m", f"{history} {version}")
        if history == "nanogpt_like" and version == "v1":
            run_python(repo, "data/tiny/prepare.py")
        for command in RUNS[history][version]:
            run_python(repo, *command, timeout=300, **RECORD_ENV)


def reference_values(root: Path, history: str, names: tuple[str, ...]) -> dict[str, list[Any]]:
    """The runs of ``history`` re-executed with ``names``' statements inserted by hand into each
    old version (what a user would do without retrolog): name -> values per run, in run order."""
    repo = root / "reference"
    repo.mkdir(parents=True)
    git(repo, "init", "-q", "-b", "main")
    (repo / ".gitignore").write_text(GITIGNORE[history])
    for version in VERSIONS:
        for rel, text in with_statements(history, version_files(history, version), *names).items():
            (repo / rel).parent.mkdir(parents=True, exist_ok=True)
            (repo / rel).write_text(text)
        if history == "nanogpt_like" and version == "v1":
            run_python(repo, "data/tiny/prepare.py")
        for command in RUNS[history][version]:
            run_python(repo, *command, timeout=300, **RECORD_ENV)
    return {name: values_by_run(repo, name) for name in names}


def values_by_run(project: Path, name: str, replayed_only: bool = False) -> list[Any]:
    """Per run (in recording order): the sorted (loop coordinates, value) pairs logged as ``name``."""
    loops = retrolog.query(
        "SELECT r.run_id, l.ctx_id, l.parent_id, l.name, l.iteration FROM loops l "
        "JOIN runs r ON r.id = l.run",
        project=project,
    )
    paths: dict[tuple[str, int], tuple[tuple[str, int], ...]] = {}
    for row in sorted(loops.itertuples(index=False), key=lambda r: (r[0], r[1])):
        run_id, ctx, parent, loop, iteration = row
        base = paths.get((run_id, int(parent)), ())
        paths[(run_id, int(ctx))] = (*base, (loop, int(iteration)))
    rows = retrolog.query(
        "SELECT run_id, value, ctx_id, replay_id FROM metrics WHERE name = :name",
        {"name": name},
        project=project,
    )
    order = list(
        retrolog.query("SELECT run_id FROM runs ORDER BY start_time", project=project).run_id
    )
    per_run: dict[str, list[Any]] = {run: [] for run in order}
    for run_id, value, ctx, replay_id in rows.itertuples(index=False):
        if replayed_only and replay_id is None:
            continue
        ctx_id = int(ctx) if ctx == ctx else 0
        per_run[run_id].append((paths.get((run_id, ctx_id), ()), float(value)))
    return [sorted(per_run[run]) for run in order]


def tree_digest(root: Path) -> dict[str, str]:
    """sha256 of every file of the user's project outside .git and .retrolog (links: their text)."""
    out = {}
    for path in sorted(root.rglob("*")):
        rel = path.relative_to(root)
        if rel.parts[0] in (".git", ".retrolog") or "__pycache__" in rel.parts:
            continue
        if path.is_symlink():
            out[str(rel)] = "link:" + str(path.readlink())
        elif path.is_file():
            out[str(rel)] = hashlib.sha256(path.read_bytes()).hexdigest()
    return out


def add_statements(project: Path, history: str, *names: str) -> None:
    """Today's code (the last version) with the new statements, uncommitted, as a user edits it."""
    today = version_files(history, VERSIONS[-1])
    for rel, text in with_statements(history, today, *names).items():
        if text != today[rel]:
            (project / rel).write_text(text)


@pytest.fixture(scope="module")
def nanogpt(tmp_path_factory: pytest.TempPathFactory) -> Path:
    repo = tmp_path_factory.mktemp("nanogpt") / "proj"
    record_history(repo, "nanogpt_like")
    return repo


@pytest.fixture(scope="module")
def nanogpt_reference(tmp_path_factory: pytest.TempPathFactory) -> dict[str, list[Any]]:
    root = tmp_path_factory.mktemp("nanogpt-ref")
    return reference_values(root, "nanogpt_like", ("val_ppl", "micro_loss", "logits_std"))


@pytest.fixture
def nanogpt_copy(nanogpt: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[Path]:
    copy = tmp_path / "proj"
    shutil.copytree(nanogpt, copy, symlinks=True)
    monkeypatch.chdir(copy)
    monkeypatch.setenv("OMP_NUM_THREADS", "1")
    yield copy


NO_CHECKPOINT = re.compile(r"micro@\d+: no checkpoint, re-executed")
ITERATIONS = 17  # the nanoGPT-like loop runs iter_num 0..16 (break when it passes max_iters=16)


def nested_checkpoints(project: Path) -> dict[str, int]:
    """Run id -> checkpoints saved at nested loop exits (the main loop's exit excluded)."""
    frame = retrolog.query(
        "SELECT r.run_id, count(*) AS n FROM checkpoints c JOIN runs r ON r.id = c.run "
        "WHERE c.iteration IS NOT NULL GROUP BY r.run_id",
        project=project,
    )
    return dict(zip(frame.run_id, (int(n) for n in frame.n), strict=True))


def assert_same(replayed: list[Any], reference: list[Any]) -> None:
    assert len(replayed) == len(reference)
    for run_index, (got, want) in enumerate(zip(replayed, reference, strict=True)):
        assert [c for c, _ in got] == [c for c, _ in want], f"run {run_index}: coordinates"
        for (coords, a), (_, b) in zip(got, want, strict=True):
            assert a == b or (math.isnan(a) and math.isnan(b)), f"run {run_index} at {coords}"


def test_nanogpt_outer_statement_skips_the_micro_steps(
    nanogpt_copy: Path, nanogpt_reference: dict[str, list[Any]]
) -> None:
    before = tree_digest(nanogpt_copy)
    assert "out-tiny/ckpt.pt" in before
    add_statements(nanogpt_copy, "nanogpt_like", "val_ppl")
    edited = tree_digest(nanogpt_copy)
    report = replay(["val_ppl"], workers=2, project=nanogpt_copy)
    assert [r.level for r in report.runs] == ["outer"] * 6, report.summary()
    assert all(r.fidelity == "reproduced" for r in report.runs), report.summary()
    # every micro-step loop that has a checkpoint was restored from it, not re-executed; the
    # adaptive policy may have left some iterations without one (those are re-executed)
    saved = nested_checkpoints(nanogpt_copy)
    for result in report.runs:
        assert all(NO_CHECKPOINT.fullmatch(f) for f in result.fallbacks), result.fallbacks
        assert saved[result.run_id] > 0
        assert len(result.fallbacks) <= ITERATIONS - saved[result.run_id], report.summary()
    # val_ppl sits next to val_loss in the evaluation block: only the iterations where val_loss
    # was logged (every eval_interval = 4th) are replayed for it, the others skipped lazily
    for run_plan in report.plan.runs:
        assert run_plan.iterations == [0, 4, 8, 12, 16] and run_plan.lazy
        # the evaluation block comes before the micro-step loop: the selected iterations' own
        # micro loops are skipped too, and fidelity compares what the block logs (val_loss)
        assert run_plan.before_nested and "val_loss" in run_plan.compared
    # the estimate counts what the replay does: the micro loops it re-executed, no more
    for result in report.runs:
        bases = [t.basis for t in report.plan.tasks if t.run_id == result.run_id]
        counted = [re.search(r"re-executed in (\d+)", b) for b in bases]
        estimated = sum(int(m.group(1)) for m in counted if m)
        assert estimated == len(result.fallbacks), (bases, result.fallbacks)
        assert all("skipped in" in b for b in bases), bases
    assert_same(values_by_run(nanogpt_copy, "val_ppl"), nanogpt_reference["val_ppl"])
    assert tree_digest(nanogpt_copy) == edited  # out-tiny/ckpt.pt and the data untouched


def test_nanogpt_inner_and_model_file_statements(
    nanogpt_copy: Path, nanogpt_reference: dict[str, list[Any]]
) -> None:
    add_statements(nanogpt_copy, "nanogpt_like", "micro_loss", "logits_std")
    edited = tree_digest(nanogpt_copy)
    report = replay(["micro_loss"], workers=2, project=nanogpt_copy)
    assert {r.level for r in report.runs} == {"inner"}, report.summary()
    assert_same(values_by_run(nanogpt_copy, "micro_loss"), nanogpt_reference["micro_loss"])
    report = replay(["logits_std"], workers=2, project=nanogpt_copy)
    assert all(r.level in ("inner", "outer") for r in report.runs), report.summary()
    assert_same(values_by_run(nanogpt_copy, "logits_std"), nanogpt_reference["logits_std"])
    assert tree_digest(nanogpt_copy) == edited


@pytest.fixture(scope="module")
def digits(tmp_path_factory: pytest.TempPathFactory) -> Path:
    repo = tmp_path_factory.mktemp("digits") / "proj"
    record_history(repo, "mnist_like")
    return repo


@pytest.fixture(scope="module")
def digits_reference(tmp_path_factory: pytest.TempPathFactory) -> dict[str, list[Any]]:
    root = tmp_path_factory.mktemp("digits-ref")
    return reference_values(root, "mnist_like", ("grad_norm", "test_acc"))


@pytest.mark.parametrize("together", [False, True], ids=["alone", "together"])
def test_digits_statements_in_train_and_test_functions(
    digits: Path,
    digits_reference: dict[str, list[Any]],
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
    together: bool,
) -> None:
    project = tmp_path / "proj"
    shutil.copytree(digits, project, symlinks=True)
    monkeypatch.chdir(project)
    assert (project / "digits_cnn.pt").is_file()  # --save-model of a v3 run, untracked
    add_statements(project, "mnist_like", "grad_norm", "test_acc")
    edited = tree_digest(project)
    batches = [["grad_norm", "test_acc"]] if together else [["test_acc"], ["grad_norm"]]
    expected_level = {"grad_norm": "inner", "test_acc": "outer"}
    for names in batches:
        report = replay(names, workers=2, project=project)
        want = "inner" if "grad_norm" in names else expected_level[names[0]]
        assert {r.level for r in report.runs} == {want}, report.summary()
        assert all(r.fidelity == "reproduced" for r in report.runs), report.summary()
    for name in ("grad_norm", "test_acc"):
        assert_same(values_by_run(project, name), digits_reference[name])
    assert tree_digest(project) == edited  # digits_cnn.pt untouched
