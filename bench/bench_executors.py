"""The same inner-level replay on each executor, side by side: the engines' overhead as ratios.

    .venv/bin/python bench/bench_executors.py            # 4 runs x 4 epochs, 3 repetitions
    .venv/bin/python bench/bench_executors.py --quick    # 2 runs x 2 epochs, once

A small torch script (the replay tests' kind) is recorded a few times in a scratch git
repository; a new inner-level statement (a gradient norm at every step) is then replayed for all
runs with 2 workers on: the local process pool (``process``), the fork server (``fork``, the
default), a local Ray (``ray``, ``num_cpus=2``; its start is timed apart and not in the replay
time) and submitit's local mode (``slurm``). Each replay starts from a fresh copy of the
repository; the stored values must be equal to the process pool's, bit for bit. Ratios are wall
time over the process pool's. The load average is printed with the results: the machine may be
shared. ``run(quick)`` and ``report(results)`` follow bench/run_all.py's convention.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent))

import common as C  # noqa: E402

SCRIPT = """\
import torch
from torch import nn

import retrolog

torch.set_num_threads(1)
lr = retrolog.arg("lr", 0.01)
seed = retrolog.arg("seed", 0)
epochs = retrolog.arg("epochs", 4)
torch.manual_seed(seed)
X = torch.randn(200, 8)
y = (X[:, 0] + 0.5 * X[:, 1] > 0).long()
batches = list(zip(X.split(20), y.split(20)))
net = nn.Sequential(nn.Linear(8, 16), nn.ReLU(), nn.Linear(16, 2))
opt = torch.optim.Adam(net.parameters(), lr=lr)
with retrolog.checkpointing(model=net, optimizer=opt):
    for epoch in retrolog.loop("epoch", range(epochs)):
        for step in retrolog.loop("step", range(len(batches))):
            xb, yb = batches[step]
            opt.zero_grad()
            loss = nn.functional.cross_entropy(net(xb), yb)
            loss.backward()
            # INNER
            opt.step()
            retrolog.log("loss", loss.item())
"""
NAME = "grad_norm"
STATEMENT = (
    '            retrolog.log("grad_norm", sum(p.grad.norm().item() for p in net.parameters()))'
)
ENGINES = ("process", "fork", "ray", "slurm")
WORKERS = 2


def record(runs: int, epochs: int) -> Path:
    """A scratch repository with ``runs`` recorded runs; today's script has the new statement."""
    repo = C.scratch_repo("executors", {"train.py": SCRIPT})
    env = C.tool_env()
    for i in range(runs):
        subprocess.run(
            [sys.executable, "train.py", "--kwargs", f"lr={0.01 * (i + 1)}", f"seed={i}"]
            + [f"epochs={epochs}"],
            cwd=repo,
            env=env,
            check=True,
            capture_output=True,
        )
    (repo / "train.py").write_text(SCRIPT.replace("# INNER\n", "# INNER\n" + STATEMENT + "\n"))
    return repo


def values(root: Path) -> list[tuple[Any, ...]]:
    import retrolog

    frame = retrolog.dataframe("lr", NAME, project=root)
    frame = frame.loc[frame[NAME].notna(), ["lr", "epoch", "step", NAME]]
    return sorted(map(tuple, frame.itertuples(index=False)))


def replay_on(engine: str, history: Path) -> dict[str, Any]:
    """One replay on ``engine`` from a fresh copy of ``history``: wall seconds and values."""
    from retrolog.replaying import replay

    root = Path(tempfile.mkdtemp(prefix=f"replay-{engine}-", dir=C.SCRATCH)) / "proj"
    shutil.copytree(history, root, symlinks=True)
    options = {"cluster": "local"} if engine == "slurm" else {}
    started = time.perf_counter()
    report = replay(NAME, workers=WORKERS, project=root, executor=engine, executor_options=options)
    seconds = time.perf_counter() - started
    assert all(job.ok for job in report.jobs), report.summary()
    found = values(root)
    C.remove_tree(root.parent)
    return {"seconds": seconds, "values": found, "tasks": len(report.jobs)}


def run(quick: bool) -> dict[str, Any]:
    import ray

    runs, epochs, repeats = (2, 2, 1) if quick else (4, 4, 3)
    os.environ.update({"OMP_NUM_THREADS": "1", "MKL_NUM_THREADS": "1", "RETROLOG_PROGRESS": "0"})
    load_before = os.getloadavg()
    history = record(runs, epochs)
    started = time.perf_counter()
    ray.init(num_cpus=WORKERS, include_dashboard=False, log_to_driver=False)
    ray_start = time.perf_counter() - started
    seconds: dict[str, list[float]] = {e: [] for e in ENGINES}
    same: dict[str, bool] = {}
    tasks = 0
    try:
        reference = None
        for _ in range(repeats):
            for engine in ENGINES:
                result = replay_on(engine, history)
                seconds[engine].append(result["seconds"])
                tasks = result["tasks"]
                reference = reference if reference is not None else result["values"]
                same[engine] = same.get(engine, True) and result["values"] == reference
    finally:
        ray.shutdown()
        C.remove_tree(history)
    base = statistics.median(seconds["process"])
    return {
        "runs": runs,
        "epochs": epochs,
        "repeats": repeats,
        "workers": WORKERS,
        "tasks": tasks,
        "ray_start_seconds": ray_start,
        "seconds": seconds,
        "median": {e: statistics.median(s) for e, s in seconds.items()},
        "ratio_to_process": {e: statistics.median(s) / base for e, s in seconds.items()},
        "same_values": same,
        "load_before": load_before,
        "load_after": os.getloadavg(),
        "nproc": os.cpu_count(),
    }


def report(results: dict[str, Any]) -> str:
    rows = [
        (
            engine,
            C.fmt(results["median"][engine]),
            C.fmt(results["ratio_to_process"][engine]),
            "yes" if results["same_values"][engine] else "NO",
        )
        for engine in ENGINES
    ]
    load = ", ".join(f"{x:.2f}" for x in results["load_before"])
    after = ", ".join(f"{x:.2f}" for x in results["load_after"])
    return (
        f"inner statement, {results['runs']} runs x {results['epochs']} epochs "
        f"({results['tasks']} tasks), {results['workers']} workers, "
        f"median of {results['repeats']}; Ray start {results['ray_start_seconds']:.1f} s "
        "(not in the replay times)\n\n"
        + C.table(["executor", "replay wall (s)", "x process pool", "same values"], rows)
        + f"\n\nload average before: {load}; after: {after} ({results['nproc']} cores)"
    )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="2 runs x 2 epochs, once")
    args = parser.parse_args()
    results = run(args.quick)
    path = C.save("executors", {"quick": args.quick, "machine": C.machine(), "results": results})
    print(report(results))
    print(f"\nraw results: {path}")
    print(json.dumps(results["seconds"]))


if __name__ == "__main__":
    main()
