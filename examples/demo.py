"""`make demo`: record a few real training runs in a scratch git repository and query them.

Creates ./demo-project (a git repository of its own), copies the reference workload into it as
train.py, records three runs with different learning rates, and prints what retrolog stored.
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
RATES = ("1e-3", "2e-3", "4e-3")


def sh(*args: str, cwd: Path = DEMO) -> None:
    subprocess.run(args, cwd=cwd, check=True)


def main() -> None:
    if DEMO.exists():
        shutil.rmtree(DEMO)
    DEMO.mkdir()
    env = dict(
        os.environ,
        GIT_AUTHOR_NAME="demo",
        GIT_AUTHOR_EMAIL="demo@example.com",
        GIT_COMMITTER_NAME="demo",
        GIT_COMMITTER_EMAIL="demo@example.com",
    )
    shutil.copy(HERE / "train_digits.py", DEMO / "train.py")
    subprocess.run(["git", "init", "-q", "-b", "main"], cwd=DEMO, check=True)
    subprocess.run(["git", "add", "train.py"], cwd=DEMO, check=True, env=env)
    subprocess.run(
        ["git", "commit", "-q", "-m", "reference workload"], cwd=DEMO, check=True, env=env
    )

    for rate in RATES:
        print(f"\n== recording: python train.py --kwargs lr={rate} epochs={EPOCHS}", flush=True)
        subprocess.run(
            [sys.executable, "train.py", "--kwargs", f"lr={rate}", f"epochs={EPOCHS}"],
            cwd=DEMO,
            check=True,
            env=env,
        )

    os.chdir(DEMO)
    import pandas as pd

    import retrolog

    pd.set_option("display.width", 160)
    pd.set_option("display.max_columns", 12)
    runs = retrolog.runs()
    print("\n== retrolog.runs()")
    print(
        runs[["run_id", "status", "version", "lr", "epochs", "duration"]].assign(
            version=runs["version"].str[:10]
        )
    )
    frame = retrolog.dataframe("lr", "val_acc")
    print(
        "\n== retrolog.dataframe('lr', 'val_acc'), pivoted: validation accuracy per epoch and learning rate"
    )
    print(frame.pivot(index="epoch", columns="lr", values="val_acc").round(4))
    losses = retrolog.dataframe("lr", "loss")
    print(
        f"\n== retrolog.dataframe('lr', 'loss'): {len(losses)} rows (one per run, epoch and step)"
    )
    print(losses.groupby(["lr", "epoch"])["loss"].mean().unstack("lr").round(4))
    print(f"\nExplore it yourself:  cd {DEMO.name} && ../.venv/bin/retrolog runs")


if __name__ == "__main__":
    main()
