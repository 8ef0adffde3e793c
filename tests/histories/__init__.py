"""Multi-version histories of training scripts that evolve the way public ones do.

``nanogpt_like``: a character transformer trained by a ``while True``-style loop (here
``for _ in retrolog.loop("iter")``) with a manual counter and ``break``, gradient-accumulation
micro-steps, a nanoGPT-style ``globals()`` config overridden by a configurator, a checkpoint file
written to ``out_dir`` and a model in its own module. v1 -> v2: the batch is prefetched inside the
micro-step loop, the loss is scaled by the number of micro-steps, renames; v2 -> v3: gradient
clipping and a GradScaler, a LayerNorm bias option in the model file.

``mnist_like``: the pytorch/examples layout on scikit-learn's digits: argparse, the epoch loop in
``main()``, the batch loop in ``train()``, ``test()`` after it. v1 -> v2: SGD -> Adadelta with a
StepLR scheduler and a convolutional network; v2 -> v3: ``--save-model`` writes a top-level file,
accelerator selection.

Each builder writes a version's files into a project directory; the test commits and records.
These scripts are ours, written in the style of public training scripts, not copied from them.
"""

from __future__ import annotations

from pathlib import Path

HERE = Path(__file__).parent
VERSIONS = ("v1", "v2", "v3")


def version_files(history: str, version: str) -> dict[str, str]:
    """Relative path -> text of every file of ``history`` at ``version`` (later versions overlay
    earlier ones; ``common`` files sit where the project keeps them)."""
    root = HERE / history
    files: dict[str, str] = {}
    common = root / "common"
    if common.is_dir():
        for path in sorted(common.iterdir()):
            target = f"data/tiny/{path.name}" if path.name == "prepare.py" else path.name
            files[target] = path.read_text()
    for name in VERSIONS[: VERSIONS.index(version) + 1]:
        for path in sorted((root / name).iterdir()):
            if path.suffix == ".py":
                files[path.name] = path.read_text()
    return files


def write_version(project: Path, history: str, version: str) -> list[str]:
    """Write ``history``'s files at ``version`` into ``project``; returns the paths written."""
    files = version_files(history, version)
    for rel, text in files.items():
        target = project / rel
        target.parent.mkdir(parents=True, exist_ok=True)
        target.write_text(text)
    return sorted(files)


GITIGNORE = {
    "nanogpt_like": "__pycache__/\nout-*/\ndata/*/*.bin\ndata/*/meta.json\n",
    "mnist_like": "__pycache__/\n*.pt\n",
}

# Command lines of the recorded runs: two per version, as a user retrains with new settings.
RUNS = {
    "nanogpt_like": {
        "v1": (["train.py", "--learning_rate=0.003", "--seed=1"], ["train.py", "--seed=2"]),
        "v2": (["train.py", "--learning_rate=0.002", "--seed=3"], ["train.py", "--seed=4"]),
        "v3": (["train.py", "--seed=5"], ["train.py", "--learning_rate=0.004", "--seed=6"]),
    },
    "mnist_like": {
        "v1": (["main.py", "--epochs=2"], ["main.py", "--epochs=2", "--lr=0.1", "--seed=2"]),
        "v2": (["main.py", "--epochs=2"], ["main.py", "--epochs=2", "--gamma=0.5", "--seed=3"]),
        "v3": (["main.py", "--epochs=2", "--save-model"], ["main.py", "--epochs=3", "--seed=4"]),
    },
}


def insert_after(text: str, anchor: str, statement: str) -> str:
    """``text`` with ``statement`` on new lines after the (unique) line ``anchor``, indented like
    it: how a user adds a statement by hand."""
    lines = text.splitlines(keepends=True)
    hits = [i for i, line in enumerate(lines) if line.strip() == anchor.strip()]
    assert len(hits) == 1, f"anchor {anchor!r} found {len(hits)} times"
    line = lines[hits[0]]
    indent = line[: len(line) - len(line.lstrip())]
    added = "".join(indent + part + "\n" for part in statement.splitlines())
    lines.insert(hits[0] + 1, added)
    return "".join(lines)


# The hindsight statements of the tests: name -> (file, anchors tried in order, statement).
STATEMENTS = {
    "nanogpt_like": {
        # outer: in the evaluation block of the iteration loop
        "val_ppl": (
            "train.py",
            ("losses = estimate_loss()",),
            'retrolog.log("val_ppl", math.exp(losses["val"]))',
        ),
        # inner: inside the micro-step loop, after the backward pass
        "micro_loss": (
            "train.py",
            ("scaler.scale(loss).backward()", "loss.backward()"),
            'retrolog.log("micro_loss", loss.item())',
        ),
        # in the model's own file: every forward pass
        "logits_std": (
            "model.py",
            ("logits = self.head(self.ln_f(x))",),
            'retrolog.log("logits_std", logits.std().item())',
        ),
    },
    "mnist_like": {
        "grad_norm": (  # inner: in train()'s batch loop
            "main.py",
            ("loss.backward()",),
            'retrolog.log("grad_norm", sum(p.grad.norm().item() for p in model.parameters()))',
        ),
        "test_acc": (  # outer: in test(), called once per epoch
            "main.py",
            ("test_loss /= len(test_loader.dataset)",),
            'retrolog.log("test_acc", correct / len(test_loader.dataset))',
        ),
    },
}


def with_statements(history: str, files: dict[str, str], *names: str) -> dict[str, str]:
    """``files`` with the statements ``names`` added by hand (and ``import retrolog`` where a
    file lacked it)."""
    out = dict(files)
    for name in names:
        rel, anchors, statement = STATEMENTS[history][name]
        text = out[rel]
        anchor = next(a for a in anchors if any(line.strip() == a for line in text.splitlines()))
        text = insert_after(text, anchor, statement)
        if "import retrolog" not in text:
            text = insert_after(text, "from torch.nn import functional as F", "import retrolog")
        out[rel] = text
    return out
