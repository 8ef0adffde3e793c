"""Replay benchmarks: hindsight logging vs re-running, parallel speed-up, cost-estimate accuracy.

History: the reference workload (examples/train_digits.py, 10 epochs) recorded 5 times with
different learning rates in a scratch git repository, with checkpointing as the script has it.
Then, side by side on the same machine:

- re-running the 5 runs from scratch (2 processes at a time: the same parallelism replay gets);
- an outer-level statement (weight norm after each epoch) replayed for all 5 runs, 2 workers;
- an inner-level statement (gradient norm every step, all epochs) for 2 runs, with 1 and 2 workers;
- the plan's estimate against the measured time of each replay.

Usage: python bench/bench_replay.py [--quick]   (quick: 3 runs x 4 epochs)
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
from common import REPO_ROOT, code_state, fmt, machine, ratio, save, scratch_repo, table, tool_env  # noqa: E402

RATES = ("1e-3", "1.5e-3", "2e-3", "3e-3", "4e-3")
WEIGHT_NORM = (
    '        retrolog.log("weight_norm", sum(p.norm().item() for p in net.parameters()))\n'
)
GRAD_NORM = (
    '            retrolog.log("grad_norm", sum(p.grad.norm().item() for p in net.parameters()))\n'
)
REPLAY = """
import json, sys, time
from retrolog.replaying import replay
names, where, workers = json.loads(sys.argv[1])
start = time.perf_counter()
report = replay(names, where=where, workers=workers)
wall = time.perf_counter() - start
print(json.dumps({"wall": wall, "estimate": report.estimate_seconds, "tasks": len(report.plan.tasks),
                  "fidelity": sorted({r.fidelity for r in report.runs}), "stored": report.stored}))
"""


def record(repo: Path, rate: str, epochs: int) -> float:
    start = time.perf_counter()
    subprocess.run(
        [sys.executable, "train.py", "--kwargs", f"lr={rate}", f"epochs={epochs}"],
        cwd=repo,
        env=tool_env(),
        check=True,
        capture_output=True,
    )
    return time.perf_counter() - start


def replay(repo: Path, names: list[str], where: str | None, workers: int) -> dict[str, object]:
    proc = subprocess.run(
        [sys.executable, "-c", REPLAY, json.dumps([names, where, workers])],
        cwd=repo,
        env=tool_env(),
        check=True,
        capture_output=True,
        text=True,
    )
    return dict(json.loads(proc.stdout.strip().splitlines()[-1]))


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--quick", action="store_true")
    opts = parser.parse_args()
    rates = RATES[:3] if opts.quick else RATES
    epochs = 4 if opts.quick else 10
    started = time.time()
    source = (REPO_ROOT / "examples" / "train_digits.py").read_text()
    repo = scratch_repo("replay", {"train.py": source})
    record_walls = [record(repo, rate, epochs) for rate in rates]

    rerun = scratch_repo(
        "rerun", {"train.py": source}
    )  # re-running must not add runs to the history
    start = time.perf_counter()
    with ThreadPoolExecutor(max_workers=2) as pool:
        list(pool.map(lambda rate: record(rerun, rate, epochs), rates))
    rerun_wall = time.perf_counter() - start

    (repo / "train.py").write_text(
        source.replace("        scheduler.step()\n", "        scheduler.step()\n" + WEIGHT_NORM)
    )
    outer = replay(repo, ["weight_norm"], None, 2)
    (repo / "train.py").write_text(
        source.replace(
            "            optimizer.step()\n", GRAD_NORM + "            optimizer.step()\n"
        )
    )
    two_runs = f"lr IN ({rates[0]}, {rates[1]})"
    inner1 = replay(repo, ["grad_norm"], two_runs, 1)
    inner2 = replay(repo, ["grad_norm"], two_runs, 2)
    one_run = f"lr = {rates[0]}"
    inner1_single = replay(repo, ["grad_norm"], one_run, 1)
    inner2_single = replay(repo, ["grad_norm"], one_run, 2)

    rows = [
        ["re-run all runs from scratch (2 processes)", fmt(rerun_wall), "-", "1.00"],
        [
            "outer statement, all runs, 2 workers",
            fmt(outer["wall"]),
            fmt(outer["estimate"]),
            fmt(ratio(rerun_wall, float(outer["wall"])), 2),
        ],
        [
            "inner statement, 2 runs x all epochs, 1 worker",
            fmt(inner1["wall"]),
            fmt(inner1["estimate"]),
            "-",
        ],
        [
            "inner statement, 2 runs x all epochs, 2 workers",
            fmt(inner2["wall"]),
            fmt(inner2["estimate"]),
            "-",
        ],
        [
            "inner statement, 1 run x all epochs, 1 worker",
            fmt(inner1_single["wall"]),
            fmt(inner1_single["estimate"]),
            "-",
        ],
        [
            "inner statement, 1 run x all epochs, 2 workers (split)",
            fmt(inner2_single["wall"]),
            fmt(inner2_single["estimate"]),
            "-",
        ],
    ]
    print(
        f"history: {len(rates)} runs x {epochs} epochs, recorded in {fmt(sum(record_walls))} s "
        f"(median run {fmt(sorted(record_walls)[len(record_walls) // 2])} s)\n"
    )
    print(table(["case", "wall s", "estimate s", "speed-up vs re-run"], rows))
    print(
        f"\ninner speed-up 2 vs 1 worker: 2 runs {fmt(ratio(float(inner1['wall']), float(inner2['wall'])), 2)}x, "
        f"1 run split {fmt(ratio(float(inner1_single['wall']), float(inner2_single['wall'])), 2)}x"
    )
    errors = [
        abs(float(r["estimate"]) - float(r["wall"])) / float(r["wall"])
        for r in (outer, inner1, inner2, inner1_single, inner2_single)
    ]
    print(
        f"estimate error: median {fmt(sorted(errors)[len(errors) // 2] * 100, 1)}%, max {fmt(max(errors) * 100, 1)}%"
    )
    path = save(
        "replay",
        {
            "benchmark": "replay",
            "quick": opts.quick,
            "machine": machine(),
            "code": code_state(),
            "seconds": time.time() - started,
            "results": {
                "record_walls": record_walls,
                "rerun_wall": rerun_wall,
                "outer": outer,
                "inner_2runs_1w": inner1,
                "inner_2runs_2w": inner2,
                "inner_1run_1w": inner1_single,
                "inner_1run_2w": inner2_single,
                "estimate_errors": errors,
            },
        },
    )
    print(f"\nsaved {path}")


if __name__ == "__main__":
    main()
