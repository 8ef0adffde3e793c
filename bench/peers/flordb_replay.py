"""flordb 4.0.1's hindsight-logging replay, driven the way its documentation drives it.

History: ``train_digits_flordb.py`` (the reference workload written with flordb's API) recorded
once per learning rate with ``python train.py --kwargs lr=... epochs=...`` in a scratch git
repository; flordb commits each run to git itself. Replay: the weight-norm statement is added to
the script after ``scheduler.step()`` and ``python -m flordb replay --apply weight_norm`` runs,
answering its confirmation prompt with ``y``.

What flordb 4.0.1 does then (``flordb/repl.py::replay``, ``flordb/api.py::loop``): for each
recorded run, one after the other, it checks the run's commit out in the user's tree, inserts the
statement there (``hlast.backprop``), and runs ``python train.py --replay_flor --apply
weight_norm --iter epoch=0,...,9``: the script re-executes from the start with the run's
recorded args, every nested loop in full (its checkpoint restore is retired in 4.x), logging
only the applied names. Its children are started as ``python`` from ``PATH``, so the flordb
venv's ``bin`` goes first on ``PATH``.
"""

from __future__ import annotations

import json
import os
import sqlite3
import subprocess
import time
from pathlib import Path

WEIGHT_NORM = '    flor.log("weight_norm", sum(p.norm().item() for p in net.parameters()))\n'
ANCHOR = "    scheduler.step()\n"


def _env(base: dict[str, str], python: str) -> dict[str, str]:
    env = dict(base)
    env["PATH"] = f"{Path(python).parent}{os.pathsep}{env.get('PATH', '')}"
    return env


def record(repo: Path, python: str, rate: str, epochs: int, env: dict[str, str]) -> float:
    """One forward run; its wall seconds."""
    start = time.perf_counter()
    subprocess.run(
        [python, "train.py", "--kwargs", f"lr={rate}", f"epochs={epochs}"],
        cwd=repo,
        env=_env(env, python),
        check=True,
        capture_output=True,
        stdin=subprocess.DEVNULL,
    )
    return time.perf_counter() - start


def add_statement(repo: Path) -> None:
    script = repo / "train.py"
    source = script.read_text()
    if ANCHOR not in source:
        raise RuntimeError("flordb replay: the workload no longer has `scheduler.step()`")
    script.write_text(source.replace(ANCHOR, ANCHOR + WEIGHT_NORM, 1))


def replay(repo: Path, python: str, env: dict[str, str], log: Path) -> float:
    """``flordb replay --apply weight_norm`` over every recorded run; its wall seconds."""
    start = time.perf_counter()
    with open(log, "wb") as out:
        proc = subprocess.run(
            [python, "-m", "flordb", "replay", "--apply", "weight_norm"],
            cwd=repo,
            env=_env(env, python),
            input=b"y\n",
            stdout=out,
            stderr=subprocess.STDOUT,
        )
    wall = time.perf_counter() - start
    if proc.returncode != 0:
        tail = log.read_text(errors="replace")[-3000:]
        raise RuntimeError(f"flordb replay failed ({proc.returncode}):\n{tail}")
    return wall


def weight_norms(repo: Path) -> dict[tuple[float, int], float]:
    """{(lr, epoch): weight_norm} as flordb stored them (its ``logs`` rows from the replay)."""
    db = next((repo / ".flor").glob("*.db"))
    with sqlite3.connect(db) as conn:
        rates = {
            tstamp: float(value)
            for tstamp, value in conn.execute(
                "SELECT tstamp, value FROM logs WHERE value_name = 'lr' AND ctx IS NULL"
            )
        }
        rows = conn.execute(
            "SELECT tstamp, ctx, value FROM logs WHERE value_name = 'weight_norm'"
        ).fetchall()
    out = {}
    for tstamp, ctx, value in rows:
        epoch = next(c["iteration"] for c in json.loads(ctx) if c["name"] == "epoch")
        out[rates[tstamp], int(epoch)] = float(value)
    return out
