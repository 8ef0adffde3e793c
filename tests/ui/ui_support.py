"""Helpers for the UI tests: the recorded scratch project and a live server.

The project is a real git repository with real runs recorded by real scripts (two code versions,
a failed run, a run with a hostile metric name), plus replay rows inserted through SQLAlchemy in
the documented shapes of ``replays``, ``replay_tasks``, ``replay_runs``, ``propagations``,
``checkpoints`` and hindsight ``logs`` rows, since the replay feature writes them later.
"""

from __future__ import annotations

import json
import threading
import time
from pathlib import Path
from typing import Any

from sqlalchemy import insert, select
from tests.conftest import git, run_python, write_script

from retrolog.store import Store, schema

TRAIN_V1 = """
import math
import random
import retrolog

lr = retrolog.arg("lr", 0.1)
epochs = retrolog.arg("epochs", 4)
optimizer = retrolog.arg("optimizer", "sgd")
random.seed(retrolog.arg("seed", 0))
for epoch in retrolog.loop("epoch", range(epochs)):
    for step in retrolog.loop("step", range(25)):
        retrolog.log("loss", math.exp(-lr * (epoch * 25 + step) / 8) + random.random() * 0.05)
    retrolog.log("acc", round(1 - math.exp(-lr * (epoch + 1)), 4))
retrolog.log("status_note", "done")
"""

TRAIN_V2 = TRAIN_V1.replace(
    'retrolog.log("acc"',
    'retrolog.log("val_loss", 0.5 * math.exp(-lr * epoch))\n    retrolog.log("acc"',
)

FAILING = """
import retrolog

lr = retrolog.arg("lr", 0.05)
for epoch in retrolog.loop("epoch", range(5)):
    retrolog.log("loss", 1.0 / (epoch + 1))
    if epoch == 2:
        raise RuntimeError("diverged <b>badly</b>")
"""

HOSTILE = """
import retrolog

retrolog.arg("lr", 0.2)
retrolog.arg("note", "<img src=x onerror=alert(2)>")
for epoch in retrolog.loop("epoch", range(3)):
    retrolog.log("<script>alert(1)</script>", float(epoch))
    retrolog.log("loss", 1.0 / (epoch + 2))
"""

XSS_NAME = "<script>alert(1)</script>"


def store_of(repo: Path) -> Store:
    return Store(f"sqlite:///{repo / '.retrolog' / 'retrolog.db'}")


def run_key(store: Store, run_id: str) -> int:
    with store.reader.connect() as conn:
        return int(
            conn.execute(
                select(schema.runs.c.id).where(schema.runs.c.run_id == run_id)
            ).scalar_one()
        )


def seed_replays(repo: Path) -> dict[str, Any]:
    """Insert a finished replay (plan, tasks, fidelity, propagations, hindsight values) and a
    failed one, the way the replay feature records them."""
    store = store_of(repo)
    with store.reader.connect() as conn:
        runs = conn.execute(
            select(schema.runs.c.id, schema.runs.c.run_id, schema.runs.c.version)
            .where(schema.runs.c.script == "train.py")
            .order_by(schema.runs.c.run_id)
        ).all()
        key, run_id, version = runs[0]
        steps = conn.execute(
            select(schema.loops.c.ctx_id, schema.loops.c.parent_id)
            .where(schema.loops.c.run == key, schema.loops.c.name == "step")
            .order_by(schema.loops.c.ctx_id)
        ).all()
        epochs = conn.execute(
            select(schema.loops.c.ctx_id, schema.loops.c.iteration)
            .where(schema.loops.c.run == key, schema.loops.c.name == "epoch")
            .order_by(schema.loops.c.ctx_id)
        ).all()
    epoch2 = next(ctx for ctx, it in epochs if it == 2)
    replay_id = "rp0001"
    now = time.time()
    hindsight_rows = [
        {
            "run": key,
            "seq": 1_000_000 + i,
            "ctx_id": ctx,
            "name": "grad_norm",
            "vtype": "f",
            "value_num": 1.0 + 0.05 * i,
            "value_text": None,
            "replay_id": replay_id,
        }
        for i, (ctx, parent) in enumerate(steps)
        if parent == epoch2
    ]
    first_version, edited_version = runs[0][2], runs[-1][2]  # v1 and the uncommitted v2
    plan = {  # the shape retrolog.replaying.plan.Plan.to_json writes
        "names": ["grad_norm"],
        "script": "train.py",
        "where": "epoch = 2",
        "workers": 2,
        "load_speed": 2e8,
        "estimate_seconds": 14.0,
        "runs": [
            {
                "run_id": run_id,
                "version": version,
                "script": "train.py",
                "level": "inner",
                "skipped": None,
                "selected": [[2, i] for i in range(25)],
                "iterations": [2],
                "propagated": None,
                "reexecute_loops": [],
                "tasks": [
                    {
                        "task_id": 0,
                        "run_id": run_id,
                        "version": version,
                        "level": "inner",
                        "full_iterations": [2],
                        "last_iteration": 2,
                        "skip_main_loop": False,
                        "estimate_seconds": 7.0,
                        "basis": "prefix 0.20s + 2 iterations skipping nested loops 0.10s",
                    }
                ],
            },
            {
                "run_id": runs[1][1],
                "version": runs[1][2],
                "script": "train.py",
                "level": "outer",
                "skipped": None,
                "selected": [[i] for i in range(4)],
                "iterations": [0, 1, 2, 3],
                "propagated": None,
                "reexecute_loops": ["step"],
                "tasks": [
                    {
                        "task_id": 1,
                        "run_id": runs[1][1],
                        "version": runs[1][2],
                        "level": "outer",
                        "full_iterations": None,
                        "last_iteration": 3,
                        "skip_main_loop": False,
                        "estimate_seconds": 7.0,
                        "basis": "recorded iteration timings",
                    }
                ],
            },
            {
                "run_id": runs[-1][1],
                "version": edited_version,
                "script": "train.py",
                "level": None,
                "skipped": "the statement's loop does not exist in this version",
                "selected": [],
                "iterations": [],
                "propagated": None,
                "reexecute_loops": [],
                "tasks": [],
            },
        ],
    }
    with store.writer.begin() as conn:
        conn.execute(insert(schema.logs), hindsight_rows)
        conn.execute(
            insert(schema.replays),
            [
                {
                    "replay_id": replay_id,
                    "created": now - 120,
                    "finished": now - 100,
                    "status": "finished",
                    "names": json.dumps(["grad_norm"]),
                    "statements": 'retrolog.log("grad_norm", grad_norm(model))',
                    "script": "train.py",
                    "where_clause": "epoch = 2",
                    "workers": 2,
                    "plan": json.dumps(plan),
                    "estimate_seconds": 14.0,
                    "actual_seconds": 11.5,
                    "error": None,
                },
                {
                    "replay_id": "rp0002",
                    "created": now - 60,
                    "finished": now - 50,
                    "status": "failed",
                    "names": json.dumps([XSS_NAME]),
                    "statements": f'retrolog.log("{XSS_NAME}", 1)',
                    "script": "train.py",
                    "where_clause": None,
                    "workers": 1,
                    "plan": "not json <b>at all</b>",
                    "estimate_seconds": 3.0,
                    "actual_seconds": None,
                    "error": "worker failed: see task 0",
                },
            ],
        )
        conn.execute(
            insert(schema.replay_tasks),
            [
                {
                    "replay_id": replay_id,
                    "task_id": 0,
                    "run_id": run_id,
                    "version": version,
                    "level": "inner",
                    "iterations": json.dumps([2]),
                    "status": "done",
                    "attempts": 1,
                    "progress": 1.0,
                    "estimate_seconds": 7.0,
                    "actual_seconds": 6.0,
                    "started": now - 118,
                    "finished": now - 112,
                    "log": None,
                },
                {
                    "replay_id": replay_id,
                    "task_id": 1,
                    "run_id": runs[1][1],
                    "version": runs[1][2],
                    "level": "outer",
                    "iterations": json.dumps([0, 3]),
                    "status": "done",
                    "attempts": 2,
                    "progress": 1.0,
                    "estimate_seconds": 7.0,
                    "actual_seconds": 5.5,
                    "started": now - 111,
                    "finished": now - 105,
                    "log": None,
                },
                {
                    "replay_id": "rp0002",
                    "task_id": 0,
                    "run_id": run_id,
                    "version": version,
                    "level": "prefix",
                    "iterations": None,
                    "status": "failed",
                    "attempts": 3,
                    "progress": 0.25,
                    "estimate_seconds": 3.0,
                    "actual_seconds": None,
                    "started": now - 59,
                    "finished": now - 50,
                    "log": "Traceback (most recent call last):\n  <module>\nNameError: name 'grad_norm' is not defined",
                },
            ],
        )
        conn.execute(
            insert(schema.replay_runs),
            [
                {
                    "replay_id": replay_id,
                    "run_id": run_id,
                    "fidelity": "reproduced",
                    "compared": 26,
                    "mismatches": 0,
                    "max_abs_diff": 0.0,
                    "detail": None,
                    "stored": len(hindsight_rows),
                },
                {
                    "replay_id": replay_id,
                    "run_id": runs[1][1],
                    "fidelity": "diverged",
                    "compared": 104,
                    "mismatches": 3,
                    "max_abs_diff": 0.0125,
                    "detail": json.dumps({"loss": [[2, 0.51, 0.5225]]}),
                    "stored": 0,
                },
            ],
        )
        conn.execute(
            insert(schema.propagations),
            [
                {
                    "replay_id": replay_id,
                    "version": first_version,
                    "script": "train.py",
                    "line": 12,
                    "scope": json.dumps(["<module>", "for epoch", "for step"]),
                    "renames": json.dumps({}),
                    "confidence": 1.0,
                    "refused": None,
                    "inserted": 'retrolog.log("grad_norm", grad_norm(model))',
                },
                {
                    "replay_id": replay_id,
                    "version": edited_version,
                    "script": "train.py",
                    "line": None,
                    "scope": None,
                    "renames": json.dumps({"model": "net"}),
                    "confidence": 0.42,
                    "refused": "the enclosing loop `step` does not exist in this version",
                    "inserted": None,
                },
            ],
        )
        conn.execute(
            insert(schema.checkpoints),
            [
                {
                    "run": key,
                    "ctx_id": ctx,
                    "loop": "step",
                    "iteration": it,
                    "manifest": f"sha256:{ctx:064x}",
                    "bytes_total": 3_500_000,
                    "bytes_new": 1_200_000 if it == 0 else 65_536,
                    "capture_seconds": 0.004,
                    "write_seconds": 0.021,
                }
                for ctx, it in epochs
            ],
        )
    store.dispose()
    return {"replay_id": replay_id, "run_id": run_id, "hindsight": len(hindsight_rows)}


def record_project(root: Path) -> dict[str, Any]:
    """The shared scratch project: 3 runs of v1 (committed), 1 of v2 (uncommitted edit), a
    failing run and a run with hostile names, then seeded replay rows."""
    repo = root / "proj"
    repo.mkdir()
    git(repo, "init", "-q", "-b", "main")
    write_script(repo, TRAIN_V1)
    git(repo, "add", "train.py")
    git(repo, "commit", "-q", "-m", "train: first version")
    for lr in ("0.1", "0.3", "1.0"):
        run_python(
            repo,
            "train.py",
            "--kwargs",
            f"lr={lr}",
            f"optimizer={'adam' if lr == '1.0' else 'sgd'}",
        )
    write_script(repo, TRAIN_V2)  # left uncommitted: the version is a snapshot commit
    run_python(repo, "train.py", "--kwargs", "lr=0.5", "epochs=5")
    write_script(repo, FAILING, "failing.py")
    run_python(repo, "failing.py", check=False)
    write_script(repo, HOSTILE, "hostile.py")
    run_python(repo, "hostile.py")
    seeded = seed_replays(repo)
    return {"repo": repo, **seeded}


class LiveServer:
    """The real UI served by uvicorn on 127.0.0.1 and a free port, in a background thread."""

    def __init__(self, repo: Path) -> None:
        import uvicorn

        from retrolog.ui import create_app
        from retrolog.ui.server import bind_socket

        self.app = create_app(repo)
        self.sock = bind_socket("127.0.0.1", None)
        self.url = f"http://127.0.0.1:{self.sock.getsockname()[1]}"
        config = uvicorn.Config(self.app, log_level="warning", access_log=False)
        self.server = uvicorn.Server(config)
        self.thread = threading.Thread(
            target=self.server.run, kwargs={"sockets": [self.sock]}, daemon=True
        )
        self.thread.start()
        deadline = time.time() + 20
        while not self.server.started:
            if time.time() > deadline:
                raise RuntimeError("the UI server did not start")
            time.sleep(0.05)

    def stop(self) -> None:
        self.server.should_exit = True
        self.thread.join(timeout=10)
        self.sock.close()
