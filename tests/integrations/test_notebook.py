"""Notebooks through a real Jupyter kernel (nbclient + ipykernel + nbformat): the project is the
notebook's repository, a run spans cells until ``commit()`` (or the kernel's end), its version
holds the executed cells as a script, and ``retrolog replay`` propagates a statement added to the
notebook today into that code and re-executes it (values equal to reference runs, exactly)."""

from __future__ import annotations

import contextlib
import os
import re
import signal
import subprocess
import sys
import threading
from pathlib import Path

import pytest

import retrolog
from retrolog.notebook.cells import _fallback, cell_to_python, notebook_script

from ..conftest import git, run_python, script_env
from .notebooks import Kernel, write_notebook

LOOP = """\
for epoch in retrolog.loop("epoch", range(2)):
    for step in retrolog.loop("step", range(3)):
        retrolog.log("loss", lr * (epoch * 3 + step))
"""


def _state(repo: Path) -> tuple[str, str, str]:
    """HEAD, the index and the working tree's status: what recording must leave alone."""
    return (
        git(repo, "rev-parse", "HEAD"),
        git(repo, "ls-files", "-s"),
        git(repo, "status", "--porcelain", "--untracked-files=all"),
    )


def test_a_run_spans_cells_and_lives_in_the_notebooks_project(project: Path) -> None:
    write_notebook(project / "nbs" / "explore.ipynb", ["import retrolog"])
    git(project, "add", "nbs/explore.ipynb")
    git(project, "commit", "-q", "-m", "notebook")
    before = _state(project)
    # Jupyter server names the notebook relative to its root; the kernel runs in nbs/
    with Kernel(project / "nbs", JPY_SESSION_NAME="nbs/explore.ipynb") as k:
        k.run("import retrolog\nprint('imported')")
        k.run('lr = retrolog.arg("lr", 0.5)')  # args in one cell ...
        k.run(LOOP)  # ... the training loop in the next: one run
        first = k.run("print(retrolog.commit())").strip()
        seen = k.value("retrolog.runs()[['run_id', 'status', 'script']].to_dict('records')")
        root = k.value("str(retrolog.project.resolve_project(None).root)")
        # a second run in the same kernel: a cell raises, the kernel's end commits it
        k.run('lr = retrolog.arg("lr", 0.25)')
        k.run(LOOP)
        k.run("1 / 0", error=True)
        k.run("retrolog.log('after_error', 1)")
    assert root == str(project)  # not site-packages (sys.argv[0] is ipykernel_launcher there)
    assert seen == [{"run_id": first, "status": "finished", "script": "nbs/explore.ipynb.py"}]
    runs = retrolog.runs()
    assert list(runs["run_id"])[0] == first and len(runs) == 2
    assert list(runs["status"]) == ["finished", "failed"]
    assert list(runs["lr"]) == [0.5, 0.25]
    assert runs["error"].iloc[1] == "cell [9]: ZeroDivisionError: division by zero"
    df = retrolog.dataframe("loss")
    assert len(df) == 12 and df.groupby("run_id").size().tolist() == [6, 6]
    assert retrolog.dataframe("after_error")["after_error"].tolist() == [1]
    assert not (project / "nbs" / ".retrolog").exists()
    # the versions: the notebook file and the executed cells, in execution order
    v1, v2 = runs["version"]
    tree = git(project, "ls-tree", "-r", "--name-only", v1).split()
    assert {"nbs/explore.ipynb", "nbs/explore.ipynb.py"} <= set(tree)
    code1 = git(project, "show", f"{v1}:nbs/explore.ipynb.py")
    assert code1.index("import retrolog") < code1.index('arg("lr", 0.5)') < code1.index("range(3)")
    assert "commit()" in code1 and "0.25" not in code1
    code2 = git(project, "show", f"{v2}:nbs/explore.ipynb.py")
    assert "import retrolog" in code2 and "0.5" not in code2  # run 1's cells are not run 2's
    assert "# %% left out: this cell raised ZeroDivisionError" in code2 and "# 1 / 0" in code2
    assert _state(project) == before  # HEAD, index and working tree untouched


def test_without_a_notebook_path_the_kernels_directory_decides(project: Path) -> None:
    cells = ["import retrolog", "x = retrolog.arg('x', 3)\nretrolog.log('x', x)"]
    notebook = write_notebook(project / "train.ipynb", cells)
    other = project / "other"
    other.mkdir()
    with Kernel(project) as k:  # no JPY_SESSION_NAME: the directory's only notebook
        k.run_all(notebook)
    vscode = write_notebook(project / "nbs" / "vs.ipynb", ["import retrolog"])
    with Kernel(other) as k:  # no notebook at all: the working directory's repository
        k.run("import retrolog")
        k.run("retrolog.log('x', 2)\nretrolog.commit()")
        k.run(f"__vsc_ipynb_file__ = {str(vscode)!r}")  # what VS Code sets in its kernels
        k.run("retrolog.log('x', 3)")
    runs = retrolog.runs()
    assert list(runs["script"]) == ["train.ipynb.py", "<interactive>", "nbs/vs.ipynb.py"]
    assert list(runs["status"]) == ["finished"] * 3
    # a statement in a new last cell of the saved notebook (no loop here: the whole code runs)
    write_notebook(notebook, [*cells, "retrolog.log('twice', 2 * x)"])
    report = retrolog.replay("twice", workers=1)
    assert [(r.level, r.fidelity) for r in report.runs] == [("full", "reproduced")]
    assert retrolog.dataframe("twice")["twice"].tolist() == [6]


FOREVER = """\
for epoch in retrolog.loop("epoch", range(10_000)):
    for step in retrolog.loop("step", range(3)):
        retrolog.log("loss", lr * (epoch * 3 + step))
    time.sleep(0.05)
"""


def test_a_training_cell_stopped_by_an_interrupt_is_replayed(project: Path) -> None:
    """The kernel's interrupt (SIGINT) stops the loop cell: the run stays open, ends
    `interrupted`, and keeps that cell's code, so its recorded epochs can be replayed."""
    cells = [
        "import time\nimport retrolog",
        'lr = retrolog.arg("lr", 0.5)',
        FOREVER,
        "retrolog.commit()",
    ]
    notebook = write_notebook(project / "train.ipynb", cells)
    with Kernel(project, JPY_SESSION_NAME=str(notebook)) as k:
        pid = int(k.run("import os\nprint(os.getpid())"))
        k.run(cells[0])
        k.run(cells[1])
        threading.Timer(1.5, os.kill, (pid, signal.SIGINT)).start()  # the frontend's Stop
        assert "KeyboardInterrupt" in k.run(cells[2], error=True)
        k.run(cells[3])
    runs = retrolog.runs()
    assert list(runs["status"]) == ["interrupted"]
    assert runs["error"].iloc[0].startswith("cell [4]: KeyboardInterrupt")
    assert retrolog.dataframe("loss")["epoch"].max() >= 3
    cells[2] = FOREVER + '    retrolog.log("seen", lr * epoch)\n'  # today: an outer statement
    write_notebook(notebook, cells)
    report = retrolog.replay("seen", where="epoch <= 2", workers=1)
    assert [r.level for r in report.plan.runs] == ["outer"]
    assert [r.fidelity for r in report.runs] == ["reproduced"]
    assert retrolog.dataframe("seen")["seen"].tolist() == [0.0, 0.5, 1.0]


def test_a_statement_in_a_module_the_notebook_imports(project: Path) -> None:
    """The new statement is in helpers.py, which the notebook imports (and another recorded
    script does not): replay finds the notebook's runs through its saved cells' imports."""
    (project / "helpers.py").write_text("def score(x):\n    return x * 2\n")
    (project / "other.py").write_text("import retrolog\nretrolog.log('other', 1)\n")
    cells = [
        "import retrolog\nfrom helpers import score",
        "for e in retrolog.loop('epoch', range(3)):\n    retrolog.log('s', score(e))",
    ]
    notebook = write_notebook(project / "train.ipynb", cells)
    git(project, "add", ".")
    git(project, "commit", "-q", "-m", "notebook, helpers, another script")
    run_python(project, "other.py")
    with Kernel(project, JPY_SESSION_NAME=str(notebook)) as k:
        k.run_all(notebook)
    (project / "helpers.py").write_text(
        "import retrolog\n\n\ndef score(x):\n    retrolog.log('half', x / 2)\n    return x * 2\n"
    )
    report = retrolog.replay("half", workers=1)
    assert report.plan.script == "train.ipynb.py"
    assert [r.fidelity for r in report.runs] == ["reproduced"]
    assert retrolog.dataframe("half")["half"].tolist() == [0.0, 0.5, 1.0]


def test_a_script_run_by_percent_run_is_a_script_run(project: Path) -> None:
    (project / "train.py").write_text(
        "import retrolog\nfor e in retrolog.loop('epoch', range(2)):\n    retrolog.log('e', e)\n"
    )
    with Kernel(project) as k:
        k.run("%run train.py")
        k.run("%run train.py")
    runs = retrolog.runs()
    assert list(runs["script"]) == ["train.py", "train.py"]  # one run per %run, as before


def test_the_ipython_terminal_records_into_the_working_directorys_project(project: Path) -> None:
    """``python -m IPython`` (``sys.argv[0]`` is IPython's ``__main__.py`` in site-packages):
    inputs are cells, the project is the working directory's, a run lasts until commit()."""
    (project / "sub").mkdir()
    inputs = [
        "import retrolog",
        "lr = retrolog.arg('lr', 0.5)",
        "for i in retrolog.loop('e', range(2)): retrolog.log('x', i * lr)\n",
        "print('open:', retrolog.runs()['status'].tolist())",
        "retrolog.commit()",
        "exit()",
    ]
    proc = subprocess.run(
        [sys.executable, "-m", "IPython", "--simple-prompt", "--no-banner"],
        input="\n".join(inputs) + "\n",
        cwd=project / "sub",
        env=script_env(),
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert "open: ['running']" in proc.stdout, proc.stdout + proc.stderr
    runs = retrolog.runs()
    assert list(runs["status"]) == ["finished"] and list(runs["lr"]) == [0.5]
    assert retrolog.dataframe("x")["x"].tolist() == [0.0, 0.5]
    code = git(project, "show", f"{runs['version'].iloc[0]}:sub/ipython_session.py")
    assert "lr = retrolog.arg('lr', 0.5)" in code and "retrolog.loop('e'" in code


@pytest.mark.parametrize(
    ("cell", "python"),
    [
        (
            "%matplotlib inline\nx = 1\n",
            "pass  # retrolog: IPython left out: %matplotlib inline\nx = 1\n",
        ),
        ("!pip install torch\n", "pass  # retrolog: IPython left out: !pip install torch\n"),
        ("files = !ls\n", "files = None  # retrolog: IPython left out: !ls\n"),
        ("%time y = f(2)\n", "y = f(2)\n"),
        ("%%time\ny = f(2)\nz = y\n", "y = f(2)\nz = y\n"),
        (
            "for i in range(2):\n    !echo $i\n    %time g(i)\n",
            "for i in range(2):\n    pass  # retrolog: IPython left out: !echo $i\n    g(i)\n",
        ),
        (
            "%%bash\necho hi\n",
            "pass  # retrolog: IPython left out: %%bash (cell magic: its body is left out)\n",
        ),
        ("s = '''\n!not a command\n'''\n", "s = '''\n!not a command\n'''\n"),
    ],
)
def test_magics_become_plain_python(cell: str, python: str) -> None:
    assert cell_to_python(cell) == python
    if "'''" not in cell:  # the line-based fallback (no IPython) agrees on the usual forms
        assert _fallback(cell) == python


def test_todays_code_is_the_notebooks_code_cells(tmp_path: Path) -> None:
    nb = write_notebook(tmp_path / "t.ipynb", ["import retrolog\n%load_ext autoreload", "x = 1"])
    text = notebook_script(nb)
    assert text.splitlines()[0].startswith("# retrolog: the code cells of t.ipynb")
    assert (
        "\n# %%\nimport retrolog\npass  # retrolog: IPython left out: %load_ext autoreload\n"
        in text
    )
    assert text.endswith("\n# %%\nx = 1\n")
    compile(text, "t.ipynb.py", "exec")


# -- end to end: 3 runs across 2 notebook versions, an inner and an outer statement, replayed ----
SETUP = """\
%load_ext autoreload
import torch
import retrolog

torch.set_num_threads(1)
"""
ARGS = 'lr = retrolog.arg("lr", {lr})\nseed = retrolog.arg("seed", 0)\n'
DATA = """\
torch.manual_seed(seed)
X = torch.randn(64, 4)
Y = X @ torch.tensor([[1.0], [-2.0], [0.5], [3.0]]) + 0.1 * torch.randn(64, 1)
{net} = torch.nn.Sequential(torch.nn.Linear(4, 8), torch.nn.Tanh(), torch.nn.Linear(8, 1))
opt = torch.optim.{optimizer}({net}.parameters(), lr=lr)
"""
TRAIN = """\
with retrolog.checkpointing(model={net}, optimizer=opt):
    for epoch in retrolog.loop("epoch", range(3)):
        perm = torch.randperm(64)
        for step in retrolog.loop("step", range(4)):
            idx = perm[step * 16 : (step + 1) * 16]
            loss = torch.nn.functional.mse_loss({net}(X[idx]), Y[idx])
            opt.zero_grad()
            loss.backward()
            opt.step()
            retrolog.log("loss", loss.item()){inner}
        %time val = torch.nn.functional.mse_loss({net}(X), Y).item()
        retrolog.log("val", val){outer}
"""
INNER = (
    '\n            retrolog.log("grad_norm", '
    "torch.cat([p.grad.flatten() for p in {net}.parameters()]).norm().item())"
)
OUTER = (
    '\n        retrolog.log("weight_norm", '
    "torch.cat([p.detach().flatten() for p in {net}.parameters()]).norm().item())"
)
COMMIT = "retrolog.commit()\n"


def _cells(version: int, lr: float, statements: bool) -> list[str]:
    """The notebook: version 1 calls the model `net` and trains with SGD; version 2 renamed it
    `model` and switched to Adam. ``statements``: with the two hindsight statements."""
    net, optimizer = ("net", "SGD") if version == 1 else ("model", "Adam")
    inner = INNER.format(net=net) if statements else ""
    outer = OUTER.format(net=net) if statements else ""
    return [
        SETUP,
        ARGS.format(lr=lr),
        DATA.format(net=net, optimizer=optimizer),
        TRAIN.format(net=net, inner=inner, outer=outer),
        COMMIT,
    ]


def _history(repo: Path, statements: bool) -> None:
    """Record the three runs the way a user would: version 1 with lr 0.1, then the arg cell edited
    to 0.05 and cells 2-5 run again in the same kernel; then version 2, committed, run in a new
    kernel (the reference runs, with the statements, save a kernel start: version 2 runs in the
    same kernel, after version 1's runs, which it does not depend on)."""
    nb = repo / "train.ipynb"
    write_notebook(nb, _cells(1, 0.1, statements))
    git(repo, "add", "train.ipynb")
    git(repo, "commit", "-q", "-m", "notebook v1")
    with contextlib.ExitStack() as stack:
        k = stack.enter_context(Kernel(repo, JPY_SESSION_NAME=str(nb)))
        k.run_all(nb)
        cells = _cells(1, 0.05, statements)
        write_notebook(nb, cells)  # the edit, saved
        for source in cells[1:]:
            k.run(source)
        write_notebook(nb, _cells(2, 0.1, statements))
        git(repo, "commit", "-q", "-am", "notebook v2: rename net to model, Adam instead of SGD")
        if not statements:
            stack.close()
            k = stack.enter_context(Kernel(repo, JPY_SESSION_NAME=str(nb)))
        k.run_all(nb)


def _values(repo: Path, name: str) -> list[tuple[float, ...]]:
    """(run order, epoch[, step], value) of ``name`` for every run, in order."""
    df = retrolog.dataframe(name, project=repo)
    order = {r: i for i, r in enumerate(retrolog.runs(project=repo)["run_id"])}
    keys = ["epoch", "step"] if "step" in df.columns and df["step"].notna().any() else ["epoch"]
    rows = [
        (order[r.run_id], *(int(getattr(r, k)) for k in keys), float(getattr(r, name)))
        for r in df.itertuples()
    ]
    return sorted(rows)


def test_replay_of_notebook_runs_equals_runs_that_had_the_statements(
    project: Path, tmp_path: Path
) -> None:
    reference = tmp_path / "reference"
    reference.mkdir()
    git(reference, "init", "-q", "-b", "main")
    git(reference, "commit", "-q", "--allow-empty", "-m", "initial")
    _history(reference, statements=True)
    _history(project, statements=False)
    assert list(retrolog.runs()["status"]) == ["finished"] * 3
    assert len(set(retrolog.runs()["version"])) == 3
    assert _values(project, "loss") == _values(reference, "loss")  # the same training
    # today: the statements added to the training cell of the notebook (saved, not run)
    write_notebook(project / "train.ipynb", _cells(2, 0.1, statements=True))
    outer = retrolog.replay(["weight_norm"], workers=2)
    assert [r.level for r in outer.plan.runs] == ["outer"] * 3
    assert [r.fidelity for r in outer.runs] == ["reproduced"] * 3
    inner = retrolog.replay(["grad_norm"], workers=2)
    assert [r.level for r in inner.plan.runs] == ["inner"] * 3
    assert [r.fidelity for r in inner.runs] == ["reproduced"] * 3
    for name, count in (("weight_norm", 9), ("grad_norm", 36)):
        replayed, expected = _values(project, name), _values(reference, name)
        assert len(replayed) == count and replayed == expected  # exact, run by run
    # the rename was propagated into version 1's code (`model` is `net` there)
    assert any(r.propagated and r.propagated.get("renames") for r in inner.plan.runs)


# -- docs/notebooks.md, executed as written -----------------------------------------------------
DOC = Path(__file__).resolve().parents[2] / "docs" / "notebooks.md"


def _doc_cells() -> dict[str, str]:
    """The page's python blocks by their first line (``# cell 1``, ``# cell 3, edited``, ...)."""
    blocks = re.findall(r"```python\n(.*?)```", DOC.read_text(), re.S)
    return {block.splitlines()[0].lstrip("# ").split(" (")[0]: block for block in blocks}


def test_the_notebooks_page_example_runs_as_written(project: Path) -> None:
    cells = _doc_cells()
    notebook = project / "train.ipynb"
    original = [cells[f"cell {n}"] for n in range(1, 5)]
    write_notebook(notebook, original)
    git(project, "add", "train.ipynb")
    git(project, "commit", "-q", "-m", "the notebook")
    with Kernel(project, JPY_SESSION_NAME=str(notebook)) as k:
        k.run_all(notebook)
        again = [original[1].replace('"lr", 0.05', '"lr", 0.1'), *original[2:]]
        assert again[0] != original[1]  # the page's edit: lr 0.05 -> 0.1 in cell 2
        write_notebook(notebook, [original[0], *again])
        for source in again:
            k.run(source)
    runs = retrolog.runs()
    assert list(runs["lr"]) == [0.05, 0.1] and list(runs["script"]) == ["train.ipynb.py"] * 2
    edited = [original[0], again[0], cells["cell 3, edited"], original[3]]
    write_notebook(notebook, edited)
    with Kernel(project, JPY_SESSION_NAME=str(notebook)) as k:
        summary = k.run(cells["a new cell"] + "\nprint(report.plan.runs[0].level)")
    assert summary.strip().endswith("outer") and "reproduced" in summary
    df = retrolog.dataframe("weight_norm")
    assert len(df) == 10 and df["weight_norm"].notna().all()  # 2 runs x 5 epochs
