"""`make demo`: record real training runs under two code versions, then log in hindsight.

1. Creates ./demo-project (a git repository of its own) with the reference workload as train.py.
2. Records two runs with version 1 of the code, then commits version 2 (the network variable is
   renamed `net` -> `model`, dropout changes) and records a third run.
3. Adds two statements nobody logged at the time to today's script: the weight norm after each
   epoch and the gradient norm inside the step loop.
4. `retrolog replay` fills them in for the past runs: propagating the statements into version 1
   (with the rename), restoring checkpoints instead of re-training, checking that the replays
   reproduce what the runs logged.
"""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
from pathlib import Path

HERE = Path(__file__).resolve().parent
DEMO = HERE.parent / "demo-project"
EPOCHS = 6
BIN = Path(sys.executable).parent
ENV = dict(
    os.environ,
    GIT_AUTHOR_NAME="demo",
    GIT_AUTHOR_EMAIL="demo@example.com",
    GIT_COMMITTER_NAME="demo",
    GIT_COMMITTER_EMAIL="demo@example.com",
    RETROLOG_PROGRESS="0",
    COLUMNS=os.environ.get("COLUMNS", "120"),
)

WEIGHT_NORM = (
    '        retrolog.log("weight_norm", sum(p.norm().item() for p in model.parameters()))\n'
)
GRAD_NORM = (
    '            retrolog.log("grad_norm", sum(p.grad.norm().item() for p in model.parameters()))\n'
)


def run(*args: str) -> None:
    print(f"\n$ {' '.join(args)}", flush=True)
    subprocess.run(args, cwd=DEMO, check=True, env=ENV)


def train(rate: str) -> None:
    run(str(BIN / "python"), "train.py", "--kwargs", f"lr={rate}", f"epochs={EPOCHS}")


def main() -> None:
    if DEMO.exists():
        shutil.rmtree(DEMO)
    DEMO.mkdir()
    source = (HERE / "train_digits.py").read_text()
    (DEMO / "train.py").write_text(source)
    run("git", "init", "-q", "-b", "main")
    run("git", "add", "train.py")
    run("git", "commit", "-q", "-m", "version 1")
    train("1e-3")
    train("2e-3")

    version2 = source.replace("net", "model").replace("nn.Dropout(0.2)", "nn.Dropout(0.3)")
    (DEMO / "train.py").write_text(version2)
    run("git", "commit", "-q", "-am", "version 2: rename net to model, more dropout")
    train("4e-3")

    today = version2.replace(
        "        scheduler.step()\n", "        scheduler.step()\n" + WEIGHT_NORM
    )
    today = today.replace(
        "            optimizer.step()\n", GRAD_NORM + "            optimizer.step()\n"
    )
    (DEMO / "train.py").write_text(today)
    print("\n== today's train.py has two new statements (not committed):")
    print(WEIGHT_NORM + GRAD_NORM)

    retrolog = str(BIN / "retrolog")
    run(retrolog, "replay", "weight_norm", "--yes", "--workers", "2")
    run(retrolog, "replay", "grad_norm", "--where", "lr > 3e-3 AND epoch = 5 AND step < 4", "--yes")
    # The second replay reused the fork server the first one started (torch already imported);
    # a demo should not leave it waiting for more replays, so stop it.
    from retrolog.replaying.forkserver import shutdown_servers

    shutdown_servers()

    os.chdir(DEMO)
    import pandas as pd

    import retrolog as rl

    pd.set_option("display.width", 160)
    frame = rl.dataframe("lr", "val_acc", "weight_norm")
    print("\n== validation accuracy and the hindsight weight norm, per epoch and learning rate")
    print(frame.pivot(index="epoch", columns="lr", values=["val_acc", "weight_norm"]).round(3))
    grads = rl.dataframe("lr", "loss", "grad_norm").dropna(subset=["grad_norm"])
    print("\n== the hindsight gradient norm where --where selected it, next to the recorded loss")
    print(
        grads[["run_id", "lr", "epoch", "step", "loss", "grad_norm"]]
        .round(4)
        .to_string(index=False)
    )
    print(
        f"\nExplore it yourself:  cd {DEMO.name} && ../.venv/bin/retrolog runs   (or: retrolog ui)"
    )


if __name__ == "__main__":
    main()
