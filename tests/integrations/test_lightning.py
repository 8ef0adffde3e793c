"""PyTorch Lightning end to end (issue 12): real Lightning, real git, real subprocesses.

Three runs over two versions of the docs example (docs/lightning.md): version 2 renames the
module's ``layer`` to ``body`` and trains with Adam instead of SGD. Then an inner statement
(``training_step``) and an outer one (``on_train_epoch_end``, reading a validation metric) are
added to today's code and replayed; the values must equal runs that had the statements from the
start, the outer replay must run no batch, and the user's files must be untouched.
"""

from __future__ import annotations

import shutil
from collections.abc import Iterator
from pathlib import Path

import pytest

pytest.importorskip("pytorch_lightning")

import retrolog  # noqa: E402
from retrolog.integrations.layout import INNER, OUTER  # noqa: E402
from retrolog.replaying import replay  # noqa: E402
from retrolog.replaying.analysis import ScriptStructure  # noqa: E402

from .common import (  # noqa: E402
    doc_example,
    record,
    tree_digest,
    values_by_arg,
    values_by_run,
)

DOC = Path(__file__).resolve().parents[2] / "docs" / "lightning.md"
V1 = doc_example(DOC)
V2 = (
    V1.replace("self.layer", "self.body")
    .replace(
        "torch.optim.SGD(self.parameters(), lr=self.hparams.lr)",
        "torch.optim.Adam(self.parameters(), lr=self.hparams.lr)",
    )
    .replace(
        "        x, y = batch\n        loss =",
        "        if os.environ.get('STEP_COUNTER'):  # the test counts executed batches\n"
        "            with open(os.environ['STEP_COUNTER'], 'a') as fh:\n"
        "                fh.write('step\\n')\n"
        "        x, y = batch\n        loss =",
    )
    .replace("import sys\n", "import os\nimport sys\n")
)
INNER_STMT = '        retrolog.log("w_step", float({m}[0].weight.sum()))\n'
OUTER_STMT = (
    '        retrolog.log("w_epoch", float({m}[-1].weight.sum())'
    ' + float(self.trainer.callback_metrics["val_loss"]))\n'
)
RUNS = [[["train.py", "0.1"], ["train.py", "0.05"]], [["train.py", "0.01"]]]


def with_statements(source: str, module: str) -> str:
    inner = '        self.log("loss", loss)  # recorded at (epoch, step)\n'
    outer = '        retrolog.log("w_norm", float({m}[0].weight.norm()))  # any retrolog.log works too\n'
    outer = outer.format(m=module)
    assert inner in source and outer in source
    source = source.replace(inner, inner + INNER_STMT.format(m=module))
    return source.replace(outer, outer + OUTER_STMT.format(m=module))


@pytest.fixture(scope="module")
def recorded(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, Path]:
    """(the recorded history, the reference runs that had the statements from the start)."""
    root = tmp_path_factory.mktemp("lightning")
    history, reference = root / "proj", root / "reference"
    versions = [(V1, RUNS[0]), (V2, RUNS[1])]
    statements = [
        (with_statements(V1, "self.layer"), RUNS[0]),
        (with_statements(V2, "self.body"), RUNS[1]),
    ]
    record(history, versions, reference, statements)
    return history, reference


@pytest.fixture(scope="module")
def history(recorded: tuple[Path, Path]) -> Path:
    return recorded[0]


@pytest.fixture(scope="module")
def reference(recorded: tuple[Path, Path]) -> Path:
    return recorded[1]


@pytest.fixture
def project(history: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[Path]:
    copy = tmp_path / "proj"
    shutil.copytree(history, copy, symlinks=True)
    monkeypatch.chdir(copy)
    monkeypatch.setenv("OMP_NUM_THREADS", "1")
    yield copy


def test_records_hparams_steps_epochs_and_checkpoints(history: Path) -> None:
    args = retrolog.query("SELECT run_id, name, value FROM run_args", project=history)
    assert sorted(args.value[args.name == "lr"]) == [0.01, 0.05, 0.1]
    loss = values_by_run(history, "loss")
    assert [len(v) for v in loss] == [9, 9, 9]  # 3 epochs x 3 batches, per run
    assert loss[0][0][0] == (("epoch", 0), ("step", 0))
    val = values_by_run(history, "val_loss")
    assert [[c for c, _ in v] for v in val] == [[(("epoch", e),) for e in range(3)]] * 3
    saved = retrolog.query(
        "SELECT count(*) AS n FROM checkpoints WHERE loop = 'step'", project=history
    )
    assert int(saved.n[0]) == 9  # every epoch's end, every run


def test_hook_levels() -> None:
    source = with_statements(V2, "self.body")
    structure = ScriptStructure(source, "train.py", {}, "epoch", ["step"])
    lines = source.splitlines()
    at = {
        name: next(i for i, line in enumerate(lines, 1) if name in line)
        for name in ("w_step", "w_epoch", "save_hyperparameters", "pl.seed_everything")
    }
    assert structure.reach(at["w_step"]) == INNER
    assert structure.reach(at["w_epoch"]) == OUTER
    assert structure.level_of(at["save_hyperparameters"]) == "prefix"
    assert structure.level_of(at["pl.seed_everything"]) == "prefix"


def test_inner_and_outer_statements_replay_to_the_reference_values(
    project: Path, reference: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    (project / "train.py").write_text(with_statements(V2, "self.body"))
    edited = tree_digest(project)
    counter = tmp_path / "steps.txt"
    monkeypatch.setenv("STEP_COUNTER", str(counter))

    report = replay(["w_epoch"], workers=2, project=project)
    assert [r.level for r in report.runs] == ["outer"] * 3, report.summary()
    assert all(r.fidelity == "reproduced" and not r.fallbacks for r in report.runs), (
        report.summary()
    )
    assert not counter.exists()  # no batch ran: every epoch was restored from its checkpoint
    assert values_by_arg(project, "w_epoch", "lr") == values_by_arg(reference, "w_epoch", "lr")

    report = replay(["w_step"], workers=2, project=project)
    assert [r.level for r in report.runs] == ["inner"] * 3, report.summary()
    assert all(r.fidelity == "reproduced" for r in report.runs), report.summary()
    assert values_by_arg(project, "w_step", "lr") == values_by_arg(reference, "w_step", "lr")
    assert counter.read_text().count("step") == 9  # the version-2 run's batches, re-executed
    assert tree_digest(project) == edited


def test_the_callback_is_a_callback_of_the_imported_lightning_package() -> None:
    import pytorch_lightning as pl

    from retrolog.lightning import RetrologCallback, callback_class

    assert issubclass(RetrologCallback, pl.Callback)
    assert issubclass(callback_class("pytorch_lightning"), pl.Callback)
    assert RetrologCallback().state_dict() == {}  # nothing of ours in Lightning's checkpoints


def test_training_goes_on_when_retrolog_cannot_checkpoint(tmp_path: Path) -> None:
    """The object store cannot be opened (a path under a file): one warning, the run finishes
    with its values recorded and no checkpoint."""
    from ..conftest import git, run_python

    repo = tmp_path / "proj"
    repo.mkdir()
    git(repo, "init", "-q", "-b", "main")
    (repo / "train.py").write_text(V1)
    (repo / "blocker").write_text("a file, not a directory\n")
    proc = run_python(repo, "train.py", RETROLOG_OBJECTS=str(repo / "blocker" / "objects"))
    assert "retrolog: cannot checkpoint into" in proc.stderr
    assert [len(v) for v in values_by_run(repo, "loss")] == [9]
    saved = retrolog.query("SELECT count(*) AS n FROM checkpoints", project=repo)
    assert int(saved.n[0]) == 0


def test_a_subclass_still_gets_the_batch_hooks_the_callback_does_not_use(tmp_path: Path) -> None:
    """The callback leaves Lightning's per-batch hooks it does not use unset (Lightning then
    skips them); a user's subclass that defines one gets it called, and the run is recorded."""
    from ..conftest import git, run_python

    repo = tmp_path / "proj"
    repo.mkdir()
    git(repo, "init", "-q", "-b", "main")
    source = V1.replace("callbacks=[RetrologCallback()],", "callbacks=[Counting()],").replace(
        "pl.seed_everything(0)\n",
        "class Counting(RetrologCallback):\n"
        "    def on_train_batch_end(self, trainer, module, outputs, batch, batch_idx):\n"
        "        retrolog.log('seen', batch_idx)\n\n\n"
        "pl.seed_everything(0)\n",
    )
    assert "Counting()" in source and "class Counting" in source
    (repo / "train.py").write_text(source)
    run_python(repo, "train.py")
    (seen,) = values_by_run(repo, "seen")
    assert [value for _, value in seen] == [0, 1, 2] * 3
    assert [len(v) for v in values_by_run(repo, "loss")] == [9]
