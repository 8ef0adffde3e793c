"""Hugging Face Trainer end to end (issue 12): real transformers, real git, real subprocesses.

Three runs over two versions of the docs example (docs/transformers.md, a 2-layer BERT built from
a config, generated data): version 2 renames ``outputs`` to ``out`` in ``compute_loss`` and
trains with SGD instead of AdamW. Then an inner statement (``compute_loss``) and an outer one (a
callback's ``on_epoch_end``) are added to today's code and replayed; the values must equal runs
that had the statements from the start, the outer replay must run no training step, and the
user's files must be untouched.
"""

from __future__ import annotations

import shutil
from collections.abc import Iterator
from pathlib import Path

import pytest

pytest.importorskip("transformers")
pytest.importorskip("accelerate")

import retrolog  # noqa: E402
from retrolog.integrations.layout import INNER, OUTER  # noqa: E402
from retrolog.replaying import replay  # noqa: E402
from retrolog.replaying.analysis import ScriptStructure  # noqa: E402

from .common import (  # noqa: E402
    doc_example,
    record,
    tree_digest,
    values_by_arg,
)

DOC = Path(__file__).resolve().parents[2] / "docs" / "transformers.md"
V1 = doc_example(DOC)
COUNTING = """
    def training_step(self, model, inputs, num_items_in_batch=None):
        if os.environ.get("STEP_COUNTER"):  # the test counts executed training steps
            with open(os.environ["STEP_COUNTER"], "a") as fh:
                fh.write("step\\n")
        return super().training_step(model, inputs, num_items_in_batch)

"""
V2 = (
    V1.replace("outputs = model(**inputs)", "out = model(**inputs)")
    .replace("loss = outputs.loss", "loss = out.loss")
    .replace("(loss, outputs) if", "(loss, out) if")
    .replace('optim="adamw_torch"', 'optim="sgd"')
    .replace("\n\nclass Probe", COUNTING + "\nclass Probe")
    .replace("import sys\n", "import os\nimport sys\n")
)
INNER_STMT = '        retrolog.log("logit_mean", float({o}.logits.mean()))\n'
OUTER_STMT = (
    '        retrolog.log("cls_norm", float(model.classifier.weight.norm()) + state.global_step)\n'
)
RUNS = [[["train.py", "1e-3"], ["train.py", "5e-4"]], [["train.py", "0.05"]]]


def with_statements(source: str, outputs: str) -> str:
    inner = f"        loss = {outputs}.loss\n"
    outer = '        retrolog.log("emb_norm", float(model.bert.embeddings.word_embeddings.weight.norm()))\n'
    assert inner in source and outer in source
    source = source.replace(inner, inner + INNER_STMT.format(o=outputs))
    return source.replace(outer, outer + OUTER_STMT)


@pytest.fixture(scope="module")
def recorded(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, Path]:
    """(the recorded history, the reference runs that had the statements from the start)."""
    root = tmp_path_factory.mktemp("hf")
    history, reference = root / "proj", root / "reference"
    versions = [(V1, RUNS[0]), (V2, RUNS[1])]
    statements = [(with_statements(V1, "outputs"), RUNS[0]), (with_statements(V2, "out"), RUNS[1])]
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


def test_records_arguments_logs_and_checkpoints(history: Path) -> None:
    args = retrolog.query("SELECT name, value FROM run_args", project=history)
    assert sorted(args.value[args.name == "learning_rate"]) == [5e-4, 1e-3, 0.05]
    assert set(args.value[args.name == "optim"]) == {"adamw_torch", "sgd"}
    loops = retrolog.query("SELECT name, count(*) AS n FROM loops GROUP BY name", project=history)
    assert dict(zip(loops.name, loops.n, strict=True)) == {"epoch": 9, "step": 27}
    eval_loss = values_by_arg(history, "eval_loss", "learning_rate")
    assert all([c for c, _ in v] == [(("epoch", e),) for e in range(3)] for v in eval_loss.values())
    assert "train_runtime" not in set(
        retrolog.query("SELECT DISTINCT name FROM metrics", project=history).name
    )
    saved = retrolog.query(
        "SELECT count(*) AS n FROM checkpoints WHERE loop = 'step'", project=history
    )
    assert int(saved.n[0]) == 9


def test_hook_levels() -> None:
    source = with_statements(V2, "out")
    structure = ScriptStructure(source, "train.py", {}, "epoch", ["step"])
    lines = source.splitlines()
    at = {
        n: next(i for i, line in enumerate(lines, 1) if n in line)
        for n in ("logit_mean", "cls_norm", "torch.manual_seed")
    }
    assert structure.reach(at["logit_mean"]) == INNER
    assert structure.reach(at["cls_norm"]) == OUTER
    assert structure.level_of(at["torch.manual_seed"]) == "prefix"


def test_inner_and_outer_statements_replay_to_the_reference_values(
    project: Path, reference: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    (project / "train.py").write_text(with_statements(V2, "out"))
    edited = tree_digest(project)
    counter = tmp_path / "steps.txt"
    monkeypatch.setenv("STEP_COUNTER", str(counter))

    report = replay(["cls_norm"], workers=2, project=project)
    assert [r.level for r in report.runs] == ["outer"] * 3, report.summary()
    assert all(r.fidelity == "reproduced" and not r.fallbacks for r in report.runs), (
        report.summary()
    )
    assert not counter.exists()  # no training step ran: every epoch restored from its checkpoint
    lr = "learning_rate"
    assert values_by_arg(project, "cls_norm", lr) == values_by_arg(reference, "cls_norm", lr)

    report = replay(["logit_mean"], workers=2, project=project)
    assert [r.level for r in report.runs] == ["inner"] * 3, report.summary()
    assert all(r.fidelity == "reproduced" for r in report.runs), report.summary()
    assert values_by_arg(project, "logit_mean", lr) == values_by_arg(reference, "logit_mean", lr)
    assert counter.read_text().count("step") == 9  # the version-2 run's steps, re-executed
    assert tree_digest(project) == edited
