"""Levels of new statements in realistically laid-out scripts (static analysis only, no runs).

The main loop and its nested loops are given by name, as a recorded run gives them; each case
places a statement by a marker comment and checks the level replay would plan for it.
"""

from __future__ import annotations

from pathlib import Path

import pytest

from retrolog.propagation.api import THRESHOLD
from retrolog.replaying.analysis import ScriptStructure
from retrolog.replaying.codebase import (
    imported_files,
    new_statements,
    python_files_today,
    version_script,
)
from retrolog.replaying.plan import CostModel, RunPlan, RunTimings
from retrolog.replaying.planner import _low_confidence
from retrolog.replaying.render import run_notes
from retrolog.versions import GitRepo

from ..conftest import git, write_script

MNIST = """\
import argparse

import torch
import retrolog
from model import Net


def train(args, model, loader, optimizer, epoch):
    model.train()
    # TRAIN_BEFORE
    for batch_idx, (data, target) in retrolog.loop("step", enumerate(loader)):
        optimizer.zero_grad()
        loss = torch.nn.functional.nll_loss(model(data), target)
        loss.backward()
        # TRAIN_INNER
        optimizer.step()


def evaluate(model, x):
    # EVAL
    return model(x).sum()


def test(model, loader):
    model.eval()
    total = 0.0
    with torch.no_grad():
        for data, target in loader:
            total += evaluate(model, data).item()
    # TEST
    return total


def setup():
    # SETUP
    return 1


def report(value):
    # REPORT
    print(value)


def main():
    parser = argparse.ArgumentParser()
    parser.add_argument("--epochs", type=int, default=2)
    args = parser.parse_args()
    setup()
    model = Net()
    optimizer = torch.optim.SGD(model.parameters(), lr=0.1)
    # MAIN_BEFORE
    with retrolog.checkpointing(model=model, optimizer=optimizer):
        for epoch in retrolog.loop("epoch", range(1, args.epochs + 1)):
            train(args, model, [], optimizer, epoch)
            # MAIN_OUTER
            test(model, [])
    # MAIN_AFTER
    report(1)


if __name__ == "__main__":
    # ENTRY_BEFORE
    main()
    # ENTRY_AFTER
"""

MODEL = """\
import torch
from torch import nn


class Net(nn.Module):
    def __init__(self):
        super().__init__()
        # INIT
        self.fc = nn.Linear(4, 2)

    def forward(self, x):
        # FORWARD
        return self.fc(x)
"""


def line_of(source: str, marker: str) -> int:
    """The line after ``marker``'s comment (where the new statement would go)."""
    return source.splitlines().index(next(s for s in source.splitlines() if marker in s)) + 2


def with_line(source: str, marker: str, statement: str = 'retrolog.log("x", 1)') -> str:
    lines = source.splitlines()
    index = next(i for i, s in enumerate(lines) if s.strip() == f"# {marker}")
    indent = lines[index][: len(lines[index]) - len(lines[index].lstrip())]
    lines.insert(index + 1, indent + statement)
    return "\n".join(lines) + "\n"


def structure(source: str, model: str = MODEL, **names: object) -> ScriptStructure:
    return ScriptStructure(
        source,
        "train.py",
        modules={"model.py": model},
        main_loop=names.get("main", "epoch"),  # type: ignore[arg-type]
        nested_loops=names.get("nested", ["step"]),  # type: ignore[arg-type]
    )


@pytest.mark.parametrize(
    ("marker", "level"),
    [
        ("TRAIN_INNER", "inner"),  # the batch loop lives in train(), called from the epoch loop
        ("TRAIN_BEFORE", "outer"),  # in train() but outside its batch loop
        ("MAIN_OUTER", "outer"),
        ("TEST", "outer"),  # test() is called from the epoch loop body only
        ("EVAL", "outer"),  # evaluate() <- test() <- epoch loop: transitively outer
        ("SETUP", "prefix"),  # setup() is called before the main loop
        ("MAIN_BEFORE", "prefix"),
        ("MAIN_AFTER", "suffix"),
        ("REPORT", "suffix"),  # report() is called after the main loop
        ("ENTRY_BEFORE", "prefix"),  # module level, before the call that reaches the main loop
        ("ENTRY_AFTER", "suffix"),
    ],
)
def test_levels_in_an_mnist_style_script(marker: str, level: str) -> None:
    source = with_line(MNIST, marker)
    assert structure(source).level_of("train.py", line_of(source, marker)) == level


def test_the_batch_loop_first_in_the_file_is_not_the_main_loop_even_without_a_run() -> None:
    """Without recorded names the main loop is the first loop not reached from another loop."""
    source = with_line(MNIST, "TRAIN_INNER")
    static = ScriptStructure(source, "train.py", modules={"model.py": MODEL})
    assert static.main is not None and static.main.name == "epoch"
    assert [loop.name for loop in static.nested] == ["step"]
    assert static.level_of("train.py", line_of(source, "TRAIN_INNER")) == "inner"
    assert static.level_of(line_of(source, "TEST")) == "outer"  # a line alone: the entry script


def test_a_statement_in_the_models_forward_reexecutes_and_runs_the_suffix() -> None:
    """``forward`` is reached through ``model(x)``: its callers cannot be resolved by name."""
    model = with_line(MODEL, "FORWARD")
    reach = structure(MNIST, model).reach("model.py", line_of(model, "FORWARD"))
    assert reach.level == "inner" and reach.unresolved and reach.suffix and reach.prefix
    assert not reach.loops  # any nested loop may call it
    init = with_line(MODEL, "INIT")  # the constructor runs where Net() is called: in main()
    assert structure(MNIST, init).level_of("model.py", line_of(init, "INIT")) == "prefix"


def test_a_function_called_from_the_nested_loop_is_inner() -> None:
    source = MNIST.replace(
        "        # TRAIN_INNER\n", "        # TRAIN_INNER\n        evaluate(model, data)\n"
    )
    source = with_line(source, "EVAL")
    reach = structure(source).reach("train.py", line_of(source, "EVAL"))
    assert reach.level == "inner" and reach.loops == frozenset({"step"})


def test_a_function_called_before_and_in_the_main_loop_keeps_both_places() -> None:
    source = MNIST.replace(
        "    setup()\n    model = Net()", "    test(None, [])\n    model = Net()"
    )
    source = with_line(source, "TEST")
    reach = structure(source).reach("train.py", line_of(source, "TEST"))
    assert (reach.level, reach.prefix, reach.suffix) == ("outer", True, False)


WHILE_STYLE = """\
import itertools
import retrolog
from retrolog import loop

model = object()
it = 0
# PREFIX
for _ in retrolog.loop("iter"):
    it += 1
    for k, micro in enumerate(loop("micro", range(4))):  # wrapped
        # INNER
        pass
    # OUTER
    if it >= 10:
        break
# SUFFIX
"""


@pytest.mark.parametrize(
    ("marker", "level"),
    [("PREFIX", "prefix"), ("INNER", "inner"), ("OUTER", "outer"), ("SUFFIX", "suffix")],
)
def test_a_while_style_main_loop_without_an_iterable(marker: str, level: str) -> None:
    source = with_line(WHILE_STYLE, marker)
    found = ScriptStructure(source, "train.py", main_loop="iter", nested_loops=["micro"])
    assert found.level_of("train.py", line_of(source, marker)) == level
    counted = source.replace('retrolog.loop("iter")', 'retrolog.loop("iter", itertools.count())')
    found = ScriptStructure(counted, "train.py", main_loop="iter", nested_loops=["micro"])
    assert found.level_of("train.py", line_of(counted, marker)) == level


def test_an_aliased_import_and_a_main_loop_in_another_module() -> None:
    trainer = """\
import retrolog as rl


def fit(model):
    for epoch in rl.loop("epoch", range(3)):
        for step in rl.loop("step", range(2)):
            # INNER
            pass
        # OUTER
"""
    trainer = with_line(with_line(trainer, "INNER"), "OUTER")
    entry = "from trainer import fit as run_training\n\nrun_training(None)\nprint('done')\n"
    found = ScriptStructure(
        entry, "train.py", {"trainer.py": trainer}, main_loop="epoch", nested_loops=["step"]
    )
    assert found.main is not None and found.main_path == "trainer.py"
    assert found.level_of("trainer.py", line_of(trainer, "INNER")) == "inner"
    assert found.level_of("trainer.py", line_of(trainer, "OUTER")) == "outer"
    assert found.level_of("train.py", 4) == "suffix"  # after the call that reaches the loop


def test_full_only_without_a_main_loop() -> None:
    source = "import retrolog\nretrolog.log('x', 1)\n"
    assert ScriptStructure(source, "train.py").level_of("train.py", 2) == "full"
    missing = ScriptStructure(MNIST, "train.py", main_loop="nowhere", nested_loops=[])
    reach = missing.reach("train.py", line_of(MNIST, "TEST"))
    assert reach.level == "full" and "nowhere" in reach.why


def test_statements_together_take_the_level_that_runs_all_of_them() -> None:
    source = with_line(with_line(MNIST, "TRAIN_INNER"), "TEST")
    found = structure(source)
    inner, outer = line_of(source, "TRAIN_INNER"), line_of(source, "TEST")
    assert found.reach_all({"train.py": [inner, outer]}).level == "inner"
    after = line_of(source, "MAIN_AFTER")
    both = found.reach_all({"train.py": [outer, after]})
    assert (both.level, both.suffix) == ("outer", True)


def test_statements_in_several_files_are_placed_file_by_file(project: Path) -> None:
    """A statement in model.py and one in train.py: each file is taken as it is today when the
    version's file equals it minus the statements, and propagated into the version otherwise; a
    file the version lacks refuses the version."""
    write_script(project, MNIST, "train.py")
    write_script(project, MODEL, "model.py")
    write_script(project, "def unrelated():\n    pass\n", "tests/test_other.py")
    write_script(project, "x = 1\n", ".venv/lib/site-packages/pkg.py")  # not ignored, not code
    git(project, "add", "train.py", "model.py", "tests/test_other.py")
    git(project, "commit", "-q", "-m", "v1")
    v1 = git(project, "rev-parse", "HEAD").strip()
    today_train = with_line(MNIST.replace("model.train()", "model.train(True)"), "TRAIN_INNER")
    today_model = with_line(MODEL, "FORWARD", 'retrolog.log("x", x.sum().item())')
    write_script(project, today_train, "train.py")
    write_script(project, today_model, "model.py")
    repo = GitRepo(project)
    files = python_files_today(project, repo)
    assert files == ["model.py", "tests/test_other.py", "train.py"]
    found = new_statements(project, files, ["x"])
    assert sorted(found) == ["model.py", "train.py"]
    vs = version_script(repo, found, v1, "train.py")
    assert vs.refused is None and sorted(vs.files) == ["model.py", "train.py"]
    assert vs.files["model.py"] == today_model  # same as v1 but for the statement: as it is
    assert "model.train()\n" in vs.files["train.py"]  # propagated: v1's own text kept
    assert vs.propagation is not None and set(vs.propagation["files"]) == {"train.py"}
    assert [p["file"] for p in vs.propagation["placements"]] == ["train.py"]
    assert vs.placed["model.py"] == [line_of(today_model, "FORWARD")]
    analysed = imported_files("train.py", {**vs.modules, **vs.files})
    assert sorted(analysed) == ["model.py", "train.py"]  # not the unrelated test module
    write_script(project, "import retrolog\nretrolog.log('x', 1)\n", "extra.py")
    found = new_statements(project, python_files_today(project, repo), ["x"])
    refused = version_script(repo, found, v1, "train.py")
    assert refused.refused == "extra.py does not exist in this version"


LOW_NEW = """\
import retrolog


def prepare(data):
    a = data.copy()
    b = a * 2
    c = b + 1
    d = c - 3
    e = d / 4
    retrolog.log("a", a.sum())
    return e


result = prepare(load())
"""
LOW_OLD = "import retrolog\n\ndata = load()\na = data.copy()\nresult = a * 2\n"


def test_a_low_confidence_placement_is_refused_unless_accepted_and_then_marked(
    project: Path,
) -> None:
    write_script(project, LOW_OLD, "train.py")
    git(project, "add", "train.py")
    git(project, "commit", "-q", "-m", "old")
    old = git(project, "rev-parse", "HEAD").strip()
    write_script(project, LOW_NEW, "train.py")
    repo = GitRepo(project)
    found = new_statements(project, ["train.py"], ["a"])
    refused = version_script(repo, found, old, "train.py")
    assert refused.refused and "--accept-low-confidence" in refused.refused
    accepted = version_script(repo, found, old, "train.py", accept_low_confidence=True)
    assert accepted.refused is None and accepted.propagation is not None
    assert accepted.propagation["confidence"] < THRESHOLD and _low_confidence(accepted.propagation)
    run = RunPlan("r1", old, "train.py", level="prefix", propagated=accepted.propagation)
    run.low_confidence = True
    notes = run_notes(run)
    assert "LOW CONFIDENCE" in notes
    assert f"(confidence {accepted.propagation['confidence']:.2f})" in notes


def test_the_estimate_says_what_happens_to_nested_loops() -> None:
    """Not "skipping nested loops" when the plan re-executes them."""
    timings = RunTimings(
        prefix=0.2, iterations={0: 0.5, 1: 0.5}, nested={0: {"step": 0.4}, 1: {"step": 0.4}}
    )
    model = CostModel(1e8, forked=False)
    both = {0: {"step": 1000}, 1: {"step": 1000}}
    basis = [
        model.task(timings, "outer", None, 1, checkpoints, reexecute, None, False)[1]
        for checkpoints, reexecute in ((both, set()), (both, {"step"}), ({0: both[0]}, set()))
    ]
    assert "2 iterations (nested loop step restored from checkpoints)" in basis[0]
    assert "2 iterations (nested loop step re-executed)" in basis[1]
    assert "(nested loop step restored from checkpoints in 1, re-executed in 1)" in basis[2]
    assert not any("skipping" in b for b in basis)


BEFORE_NESTED = """\
import retrolog

for it in retrolog.loop("iter", range(10)):
    if it % 5 == 0:
        retrolog.log("val_loss", 1.0)
        # EVAL
    for micro in retrolog.loop("micro", range(3)):
        x = micro
    retrolog.log("loss", x)
    # AFTER
    for repeat in range(2):
        # AROUND
        for k in retrolog.loop("micro2", range(2)):
            pass
"""


def _line(source: str, marker: str) -> int:
    return next(i for i, text in enumerate(source.splitlines(), 1) if f"# {marker}" in text)


def test_statements_before_the_nested_loops_of_an_iteration() -> None:
    """A statement in the evaluation block runs before the iteration's nested loops (a lazy
    replay may skip them in the selected iterations too); one after a nested loop, or inside a
    loop of the body around one, does not; only the names logged before them are compared."""
    structure = ScriptStructure(
        BEFORE_NESTED, "train.py", main_loop="iter", nested_loops=["micro", "micro2"]
    )
    at = {m: _line(BEFORE_NESTED, m) for m in ("EVAL", "AFTER", "AROUND")}
    assert structure.before_nested({"train.py": [at["EVAL"]]})
    assert not structure.before_nested({"train.py": [at["AFTER"]]})
    assert not structure.before_nested({"train.py": [at["EVAL"], at["AROUND"]]})
    assert not structure.before_nested({"model.py": [3]})
    assert not structure.before_nested({})
    assert structure.logged_before_nested() == {"val_loss"}
