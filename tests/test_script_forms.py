"""The script forms of docs/your-script.md, run as written, and the API forms they rely on:
``loop(name)`` as an endless main loop ended by ``break``, ``checkpointing`` as a plain call.

Each recipe of the page (a ``python`` block after ``<!-- recipe: NAME [FILE] -->``) is written into
a real git project and run in a subprocess; the test then reads what the run recorded.
"""

from __future__ import annotations

import re
from pathlib import Path

import pytest

import retrolog

from .conftest import run_python, write_script

DOC = Path(__file__).resolve().parents[1] / "docs" / "your-script.md"
_RECIPE = re.compile(r"<!-- recipe: (\S+)(?: (\S+))? -->\n```python\n(.*?)```", re.DOTALL)
CKPT_ENV = {"OMP_NUM_THREADS": "1", "RETROLOG_CHECKPOINT_BUDGET": "1.0"}


def recipes() -> dict[str, dict[str, str]]:
    """Recipe name -> {file name: code} (the script is train.py unless the marker names a file)."""
    found: dict[str, dict[str, str]] = {}
    for name, filename, code in _RECIPE.findall(DOC.read_text()):
        found.setdefault(name, {})[filename or "train.py"] = code
    return found


def run_recipe(project: Path, name: str, *args: str, **env: str) -> str:
    for filename, code in recipes()[name].items():
        write_script(project, code, filename)
    return run_python(project, "train.py", *args, **env).stderr


def run_args() -> dict[str, object]:
    """The args of the latest run (NaN columns of other runs left out)."""
    frame = retrolog.runs()
    row = frame.iloc[-1]
    return {k: v for k, v in row.items() if not (isinstance(v, float) and v != v)}


def main_loop(loop: str) -> tuple[int, int]:
    """(count of the main loop's timing, number of main-loop exit checkpoints) of the latest run."""
    count = retrolog.query(
        f"SELECT count FROM timings WHERE kind = 'main' AND loop = '{loop}' ORDER BY run DESC"
    ).loc[0, "count"]
    exits = retrolog.query(
        f"SELECT count(*) AS n FROM checkpoints WHERE loop = '{loop}' AND iteration IS NULL "
        "AND run = (SELECT max(run) FROM checkpoints)"
    ).loc[0, "n"]
    return int(count), int(exits)


def test_every_recipe_has_a_test() -> None:
    tested = {
        "while-true",
        "count",
        "main-train",
        "checkpointing-block",
        "argparse",
        "config-dict",
        "dataclass",
        "globals-config",
        "other-modules",
    }
    assert set(recipes()) == tested


def test_while_true_recipe(project: Path) -> None:
    run_recipe(project, "while-true", "--kwargs", "max_iters=3")
    assert list(retrolog.dataframe("iter_num")["iter_num"]) == [0, 1, 2, 3]
    assert main_loop("iter")[0] == 4  # the iteration that breaks counts: it ran
    assert run_args()["max_iters"] == 3


def test_count_recipe(project: Path) -> None:
    run_recipe(project, "count")
    frame = retrolog.dataframe("iter_num")
    assert list(frame["iter_num"]) == [10, 11, 12, 13]
    assert list(frame["iter"]) == [0, 1, 2, 3]  # the loop index, whatever the items


def test_main_train_recipe_records_argparse_and_checkpoints(project: Path) -> None:
    run_recipe(project, "main-train", "--epochs", "2", "--lr", "0.05", **CKPT_ENV)
    got = run_args()
    assert got["epochs"] == 2 and got["lr"] == 0.05
    assert len(retrolog.dataframe("loss")) == 6
    assert main_loop("epoch") == (2, 1)
    nested = retrolog.query("SELECT count(*) AS n FROM checkpoints WHERE loop = 'step'")
    assert nested.loc[0, "n"] >= 1


def test_checkpointing_block_recipe(project: Path) -> None:
    run_recipe(project, "checkpointing-block", **CKPT_ENV)
    assert main_loop("epoch") == (2, 1)


def test_argparse_recipe_values_are_queryable(project: Path) -> None:
    run_recipe(project, "argparse", "--lr", "0.8")
    run_recipe(project, "argparse", "--lr", "0.2", "--batch-size", "8")
    frame = retrolog.runs()
    assert list(frame["lr"]) == [0.8, 0.2] and list(frame["batch_size"]) == [32, 8]
    fast = retrolog.dataframe("loss", where="lr > 0.5")
    assert list(fast["loss"]) == [0.8, 0.4]
    assert len(retrolog.dataframe("loss", where="batch_size = 8")) == 2


def test_argparse_capture_can_be_turned_off(project: Path) -> None:
    run_recipe(project, "argparse", "--lr", "0.8", RETROLOG_ARGPARSE="0")
    frame = retrolog.runs()
    assert "lr" not in frame.columns and "batch_size" not in frame.columns
    assert len(retrolog.dataframe("loss")) == 2  # the run itself is recorded


def test_config_dict_recipe_with_a_nested_override(project: Path) -> None:
    run_recipe(project, "config-dict", "--kwargs", "optim.beta1=0.8")
    got = run_args()
    assert got["lr"] == 0.1 and got["epochs"] == 2
    assert got["optim.beta1"] == 0.8 and got["optim.eps"] == 1e-8
    assert list(retrolog.dataframe("beta1")["beta1"]) == [0.8, 0.8]  # the dict was updated


def test_dataclass_recipe(project: Path) -> None:
    run_recipe(project, "dataclass")
    got = run_args()
    assert got["lr"] == 0.1 and got["warmup"] == 2
    assert list(retrolog.dataframe("warmup_lr")["warmup_lr"]) == [0.05, 0.1]


def test_globals_config_recipe_with_a_configurator(project: Path) -> None:
    # configurator.py asserts every argument is --key=value: --kwargs must be gone before it runs.
    run_recipe(project, "globals-config", "--max_iters=3", "--kwargs", "batch_size=16")
    got = run_args()
    assert got["max_iters"] == 3 and got["batch_size"] == 16 and got["learning_rate"] == 6e-4
    assert "config_keys" not in got
    assert len(retrolog.dataframe("lr")) == 3
    assert retrolog.runs().loc[0, "argv"] == ["train.py", "--max_iters=3"]


def test_other_modules_recipe(project: Path) -> None:
    run_recipe(project, "other-modules")
    batches = retrolog.dataframe("batch")
    assert list(batches["epoch"]) == [0, 0, 0, 1, 1, 1]
    assert list(batches["step"]) == [0, 1, 2, 0, 1, 2]
    assert list(retrolog.dataframe("total")["total"]) == [6.0, 6.0]


ENDLESS = """
import torch
import retrolog

torch.set_num_threads(1)
model = torch.nn.Linear(3, 1)
optimizer = torch.optim.SGD(model.parameters(), lr=0.1)
retrolog.checkpointing(model=model, optimizer=optimizer)  # a call: no `with` block
iter_num = 0
{loop}
    for micro in retrolog.loop("micro", range(2)):
        loss = model(torch.ones(1, 3)).sum()
        loss.backward()
    optimizer.step()
    retrolog.log("iter_num", iter_num)
    iter_num += 1
    if iter_num > 4:
        break
retrolog.log("final", iter_num)
"""


@pytest.mark.parametrize(
    "loop",
    ['for _ in retrolog.loop("iter"):', 'for _ in retrolog.loop("iter", itertools.count()):'],
)
def test_break_ends_an_endless_main_loop_with_an_exit_checkpoint(project: Path, loop: str) -> None:
    write_script(project, "import itertools\n" + ENDLESS.format(loop=loop))
    run_python(project, "train.py", **CKPT_ENV)
    assert list(retrolog.dataframe("iter_num")["iter_num"]) == [0, 1, 2, 3, 4]
    assert main_loop("iter") == (5, 1)
    assert retrolog.runs().loc[0, "status"] == "finished"
    nested = retrolog.query("SELECT count(*) AS n FROM checkpoints WHERE loop = 'micro'")
    assert nested.loc[0, "n"] >= 1  # the call form registered the objects for the whole run


def test_return_from_the_main_loop_is_its_normal_end(project: Path) -> None:
    write_script(
        project,
        """
        import retrolog

        def main():
            retrolog.checkpointing(state={"w": [1.0, 2.0]})
            for i in retrolog.loop("iter"):
                retrolog.log("i", i)
                if i == 2:
                    return i

        main()
        """,
    )
    run_python(project, "train.py", **CKPT_ENV)
    assert main_loop("iter") == (3, 1)


def test_an_exception_out_of_the_main_loop_is_not_its_normal_end(project: Path) -> None:
    write_script(
        project,
        """
        import retrolog

        retrolog.checkpointing(state={"w": [1.0, 2.0]})
        try:
            for i in retrolog.loop("iter"):
                retrolog.log("i", i)
                if i == 2:
                    raise KeyError(i)
        except KeyError:
            pass
        retrolog.log("after", 1)
        """,
    )
    run_python(project, "train.py", **CKPT_ENV)
    assert list(retrolog.dataframe("i")["i"]) == [0, 1, 2]
    assert main_loop("iter") == (2, 0)  # two iterations finished, no restorable exit


def test_checkpointing_call_stays_registered_and_the_block_restores(project: Path) -> None:
    write_script(
        project,
        """
        import retrolog
        from retrolog.record import api

        def registered():
            return sorted(api._session.checkpoint_objects)

        retrolog.checkpointing(model={"w": 1})
        print(registered())
        with retrolog.checkpointing(optimizer={"m": 2}) as inside:
            print(registered(), inside)
        print(registered())
        retrolog.checkpointing(scaler={"s": 3})
        print(registered())
        """,
    )
    lines = run_python(project, "train.py").stdout.splitlines()
    assert lines == [
        "['model']",
        "['model', 'optimizer'] None",
        "['model']",
        "['model', 'scaler']",
    ]


WHILE_STYLE = """
import torch
import retrolog

torch.manual_seed(0)
torch.set_num_threads(1)
model = torch.nn.Linear(3, 1)
optimizer = torch.optim.SGD(model.parameters(), lr=0.1)
retrolog.checkpointing(model=model, optimizer=optimizer)
iter_num = 0
for _ in retrolog.loop("iter"):
    loss = model(torch.randn(4, 3)).pow(2).mean()
    optimizer.zero_grad()
    loss.backward()
    optimizer.step()
    retrolog.log("loss", loss.item())
    iter_num += 1
    if iter_num >= 4:
        break
retrolog.log("done", 1)
"""
SUFFIX_STATEMENT = 'retrolog.log("done", 1)\nretrolog.log("w_sum", model.weight.sum().item())\n'


@pytest.mark.slow
def test_a_suffix_statement_replays_from_the_exit_checkpoint_of_a_broken_main_loop(
    project: Path, tmp_path: Path
) -> None:
    from retrolog.replaying import replay

    from .conftest import git

    write_script(project, WHILE_STYLE)
    git(project, "add", "train.py")
    git(project, "commit", "-q", "-m", "train")
    run_python(project, "train.py", **CKPT_ENV)
    reference = tmp_path / "reference"
    reference.mkdir()
    git(reference, "init", "-q")
    write_script(reference, WHILE_STYLE.replace('retrolog.log("done", 1)\n', SUFFIX_STATEMENT))
    run_python(reference, "train.py", **CKPT_ENV)
    expected = list(retrolog.dataframe("w_sum", project=reference)["w_sum"])

    write_script(project, WHILE_STYLE.replace('retrolog.log("done", 1)\n', SUFFIX_STATEMENT))
    report = replay("w_sum", project=project)
    assert [r.level for r in report.runs] == ["suffix"], report.summary()
    assert not [f for r in report.runs for f in r.fallbacks], report.summary()  # restored
    assert list(retrolog.dataframe("w_sum")["w_sum"]) == expected
