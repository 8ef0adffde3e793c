"""Replay on a real-looking history: the nanoGPT-like script of tests/histories, three versions.

The history (tests/histories/nanogpt_like: a ``while True``-style iteration loop, gradient
accumulation micro-steps with the batch prefetched inside them, clipping and a GradScaler added in
v3, a globals() config, ``out_dir/ckpt.pt`` written by the script) is recorded as a user would:
two runs per version, six in all, at a benchmark size (``SIZE`` below). Then, side by side in one
invocation on the same machine:

- re-running the six runs from scratch, 2 processes at a time (the parallelism replay gets);
- an outer-level statement (``val_ppl`` in the evaluation block) replayed on all six runs with 2
  workers, *cold* (no fork server: the replay starts one) and *warm* (a fork server left by an
  earlier replay), on two identical copies of the history;
- the checkpoint space each run wrote and how many of its micro-step loops the replay restored
  from checkpoints instead of re-executing them.

Each replay is a fresh ``python -c "retrolog.replay(...)"`` process; speed-ups use whole-process
wall time. ``OMP_NUM_THREADS=1`` everywhere.

Usage: python bench/bench_histories.py [--quick]
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import sqlite3
import subprocess
import sys
import tempfile
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent))
sys.path.insert(0, str(Path(__file__).resolve().parent.parent))
from common import code_state, fmt, machine, ratio, save, table, tool_env  # noqa: E402
from tests.histories import (  # noqa: E402
    GITIGNORE,
    RUNS,
    VERSIONS,
    version_files,
    with_statements,
    write_version,
)

from retrolog.replaying.forkserver import DIR_ENV, shutdown_servers  # noqa: E402

HISTORY = "nanogpt_like"
SIZE = [
    "--max_iters=80",
    "--lr_decay_iters=80",
    "--gradient_accumulation_steps=8",
    "--batch_size=16",
    "--block_size=64",
    "--n_embd=64",
    "--eval_interval=20",
    "--eval_iters=2",
]
QUICK_SIZE = ["--max_iters=12", "--lr_decay_iters=12", "--eval_interval=6", "--eval_iters=2"]

REPLAY = """
import json, sys, time
from retrolog.replaying import replay
names, workers = json.loads(sys.argv[1])
start = time.perf_counter()
report = replay(names, workers=workers)
wall = time.perf_counter() - start
fallbacks = [f for r in report.runs for f in r.fallbacks]
print(json.dumps({"wall": wall, "estimate": report.estimate_seconds, "tasks": len(report.plan.tasks),
                  "levels": sorted({str(r.level) for r in report.runs}),
                  "fidelity": sorted({r.fidelity for r in report.runs}), "stored": report.stored,
                  "reexecuted": sum("re-executed" in f for f in fallbacks)}))
"""


def git(repo: Path, *args: str) -> None:
    subprocess.run(["git", "-C", str(repo), *args], check=True, capture_output=True, env=tool_env())


def sized(size: list[str], version: str) -> list[str]:
    """The size options in ``version``'s names (v1 called the evaluation interval eval_every)."""
    if version == "v1":
        return [a.replace("--eval_interval=", "--eval_every=") for a in size]
    return size


def run_script(repo: Path, command: list[str], size: list[str]) -> float:
    start = time.perf_counter()
    proc = subprocess.run(
        [sys.executable, *command, *size], cwd=repo, env=tool_env(), capture_output=True, text=True
    )
    if proc.returncode != 0:
        raise RuntimeError(f"{' '.join(command)} failed in {repo}:\n{proc.stderr[-3000:]}")
    return time.perf_counter() - start


def build(root: Path, size: list[str]) -> tuple[Path, list[float]]:
    """Record the history; returns the repo and each run's wall time."""
    repo = root / "history"
    repo.mkdir(parents=True)
    git(repo, "init", "-q", "-b", "main")
    (repo / ".gitignore").write_text(GITIGNORE[HISTORY])
    walls = []
    for version in VERSIONS:
        git(repo, "add", ".gitignore", *write_version(repo, HISTORY, version))
        git(repo, "commit", "-q", "-m", version)
        if version == "v1":
            subprocess.run([sys.executable, "data/tiny/prepare.py"], cwd=repo, check=True)
        walls += [run_script(repo, cmd, sized(size, version)) for cmd in RUNS[HISTORY][version]]
    return repo, walls


def rerun_all(root: Path, history: Path, size: list[str]) -> float:
    """Every run re-executed from scratch, 2 at a time, in a copy (its records do not count)."""
    copy = root / "rerun"
    shutil.copytree(history, copy, symlinks=True)
    commands = []
    for version in VERSIONS:
        commands += [(version, cmd) for cmd in RUNS[HISTORY][version]]
    start = time.perf_counter()
    by_version: dict[str, list[list[str]]] = {}
    for version, cmd in commands:
        by_version.setdefault(version, []).append(cmd)
    for version in VERSIONS:  # each version's code, as the runs had it
        write_version(copy, HISTORY, version)
        with ThreadPoolExecutor(max_workers=2) as pool:
            args = sized(size, version)
            list(pool.map(run_script, [copy] * 2, by_version[version], [args] * 2))
    return time.perf_counter() - start


def replay(repo: Path, names: list[str], servers: Path, cold: bool) -> dict[str, Any]:
    if cold:
        shutdown_servers()
    start = time.perf_counter()
    proc = subprocess.run(
        [sys.executable, "-c", REPLAY, json.dumps([names, 2])],
        cwd=repo,
        env=tool_env({DIR_ENV: str(servers)}),
        check=True,
        capture_output=True,
        text=True,
    )
    result = dict(json.loads(proc.stdout.strip().splitlines()[-1]))
    result.update(process=time.perf_counter() - start, cold=cold, load=os.getloadavg()[0])
    return result


def checkpoint_space(repo: Path) -> list[dict[str, Any]]:
    with sqlite3.connect(repo / ".retrolog" / "retrolog.db") as conn:
        rows = conn.execute(
            "SELECT r.run_id, count(c.manifest), coalesce(sum(c.bytes_total), 0), "
            "coalesce(sum(c.bytes_new), 0) FROM runs r LEFT JOIN checkpoints c ON c.run = r.id "
            "GROUP BY r.id ORDER BY r.start_time"
        ).fetchall()
    return [
        {"run": run_id[:10], "checkpoints": n, "bytes_total": total, "bytes_new": new}
        for run_id, n, total, new in rows
    ]


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--quick", action="store_true")
    opts = parser.parse_args()
    size = QUICK_SIZE if opts.quick else SIZE
    root = Path(tempfile.mkdtemp(prefix="retrolog-bench-histories-"))
    servers = root / "forkservers"
    servers.mkdir(mode=0o700)  # the fork server refuses a folder others can read
    os.environ[DIR_ENV] = str(servers)
    started = time.time()
    try:
        history, record_walls = build(root, size)
        twin = root / "twin"
        shutil.copytree(history, twin, symlinks=True)
        rerun = rerun_all(root, history, size)
        today = version_files(HISTORY, VERSIONS[-1])
        for target in (history, twin):
            for rel, text in with_statements(HISTORY, today, "val_ppl").items():
                (target / rel).write_text(text)
        cold = replay(history, ["val_ppl"], servers, cold=True)
        warm = replay(twin, ["val_ppl"], servers, cold=False)
        space = checkpoint_space(history)
    finally:
        shutdown_servers()
    rows = [
        ["re-running the 6 runs (2 at a time)", fmt(rerun), "-", "-", "-"],
        [
            "outer replay, cold",
            fmt(cold["process"]),
            f"{ratio(rerun, cold['process']):.1f}x",
            cold["reexecuted"],
            ", ".join(cold["fidelity"]),
        ],
        [
            "outer replay, warm",
            fmt(warm["process"]),
            f"{ratio(rerun, warm['process']):.1f}x",
            warm["reexecuted"],
            ", ".join(warm["fidelity"]),
        ],
    ]
    print(
        table(
            ["what", "wall s", "vs re-running", "micro loops re-executed", "fidelity"],
            rows,
        )
    )
    print(
        table(
            ["run", "checkpoints", "MB written (logical)", "MB new (after dedup)"],
            [
                [s["run"], s["checkpoints"], fmt(s["bytes_total"] / 1e6), fmt(s["bytes_new"] / 1e6)]
                for s in space
            ],
        )
    )
    path = save(
        "histories",
        {
            "machine": machine(),
            "code": code_state(),
            "started": started,
            "quick": opts.quick,
            "size": size,
            "record_walls": record_walls,
            "rerun_wall": rerun,
            "outer_cold": cold,
            "outer_warm": warm,
            "checkpoint_space": space,
        },
    )
    print(f"saved {path}")
    shutil.rmtree(root, ignore_errors=True)


if __name__ == "__main__":
    main()
