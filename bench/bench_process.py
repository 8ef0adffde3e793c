"""Record overhead as a user feels it: the whole process, start to exit, tracked vs bare.

The workload (bench/workers/mlp_train.py: a 658k-parameter MLP, 10 epochs x 200 steps, Adam, one
torch thread) runs as a whole ``python train.py`` process: *tracked* as written (import, code
snapshot, 2,000 logged losses, checkpoints of model and optimizer at every epoch under the default
budget, the final flush), *bare* with retrolog removed by the AST rewrite of bench_e2e.py, so the
training code is identical by construction. Each in its own scratch git repository whose store
already exists (one untimed warm-up run each). Pairs run in turn, the order alternating per pair;
the overhead of a pair is tracked / bare - 1, and the median over pairs is the figure (pairing
keeps it meaningful when the machine's speed drifts). Wall time is measured from outside.

Two ways to run a pair:

- ``--mode concurrent`` (the default): bare and tracked start at the same moment, each pinned to
  its own core (``taskset``), the cores swapped every pair, so both meet the same machine (other
  load, frequency, the host's neighbours) for the whole of their run. Conservative: retrolog's
  background threads (flusher, checkpoint writer, snapshot) share the tracked run's one core
  instead of using a spare one, so their work counts in full against it.
- ``--mode sequential``: one after the other, the order alternating (a spare core for the
  background threads, but the two runs of a pair meet different machine conditions: on a shared
  VM their wall times differ by +-20% between identical runs).

Both processes run with glibc's malloc tunables pinned (``MALLOC_MMAP_THRESHOLD_``,
``MALLOC_TRIM_THRESHOLD_``, ``MALLOC_TOP_PAD_``): left dynamic, the mmap threshold rises the
first time a large block is freed, and whether that happens before the training loop depends on
what the process did first (importing retrolog, opening its store), not on training. Measured
unpinned, the bare process took 2.6x the page faults of the tracked one (758k vs 287k minor
faults for 3 epochs) and ran ~15% slower, which made the tracked run look faster than the same
training without retrolog; pinned, both take ~106-113k faults.

Usage: python bench/bench_process.py [--pairs N] [--quick] [--mode concurrent|sequential]
"""

from __future__ import annotations

import argparse
import os
import statistics
import time

import common as C
from bench_e2e import strip_retrolog

WORKLOAD = C.WORKERS / "mlp_train.py"
MALLOC_PINNED = {  # see the module docstring: the same allocator behaviour in both processes
    "MALLOC_MMAP_THRESHOLD_": str(32 * 2**20),
    "MALLOC_TRIM_THRESHOLD_": str(16 * 2**30),
    "MALLOC_TOP_PAD_": str(256 * 2**20),
}


def run(quick: bool, pairs: int = 5, mode: str = "concurrent") -> dict[str, object]:
    source = WORKLOAD.read_text()
    if quick:
        source = source.replace('retrolog.arg("epochs", 10)', 'retrolog.arg("epochs", 2)')
    sources = {"bare": strip_retrolog(source, calls=True), "tracked": source}
    repos = {
        name: C.scratch_repo(f"process-{name}", {"train.py": text})
        for name, text in sources.items()
    }
    env = C.tool_env(MALLOC_PINNED)
    walls: dict[str, list[float]] = {"bare": [], "tracked": []}
    cpus: dict[str, list[float]] = {"bare": [], "tracked": []}
    loads: list[float] = []
    for name, repo in repos.items():  # warm-up: the store exists, bytecode is cached
        C.run_timed([C.python_of("retrolog"), "train.py"], repo, env, repo.parent / f"{name}.log")
    cores = C.pair_cores(mode == "concurrent")

    def one(name: str, core: int | None) -> tuple[float, float]:
        repo = repos[name]
        cmd = [*C.pinned(core), C.python_of("retrolog"), "train.py"]
        return C.run_timed(cmd, repo, env, repo.parent / f"{name}.log")

    for pair in range(pairs):
        loads.append(os.getloadavg()[0])
        timed = C.run_pair(one, pair, cores)
        for name in C.PAIR:
            walls[name].append(timed[name][0])
            cpus[name].append(timed[name][1])
        print(
            f"  pair {pair + 1}: bare {walls['bare'][-1]:.2f} s, tracked {walls['tracked'][-1]:.2f} s "
            f"({100 * (walls['tracked'][-1] / walls['bare'][-1] - 1):+.2f}%)",
            flush=True,
        )
    ratios = [t / b - 1 for t, b in zip(walls["tracked"], walls["bare"], strict=True)]
    cpu_ratios = [t / b - 1 for t, b in zip(cpus["tracked"], cpus["bare"], strict=True)]
    for repo in repos.values():
        C.remove_tree(repo)
    result = {
        "pairs": pairs,
        "mode": "concurrent" if cores else "sequential",
        "bare_wall": C.spread(walls["bare"]),
        "tracked_wall": C.spread(walls["tracked"]),
        "overhead_pct_median": 100 * statistics.median(ratios),
        "overhead_pct_range": [100 * min(ratios), 100 * max(ratios)],
        "cpu_overhead_pct_median": 100 * statistics.median(cpu_ratios),
        "loads": loads,
    }
    print(
        C.table(
            [
                "",
                "bare wall s (median)",
                "tracked wall s (median)",
                "overhead median",
                "range",
                "CPU overhead median",
            ],
            [
                [
                    "whole process",
                    C.fmt(result["bare_wall"]["median"]),
                    C.fmt(result["tracked_wall"]["median"]),
                    f"{result['overhead_pct_median']:+.2f}%",
                    f"{100 * min(ratios):+.2f}% .. {100 * max(ratios):+.2f}%",
                    f"{result['cpu_overhead_pct_median']:+.2f}%",
                ]
            ],
        )
    )
    return result


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--pairs", type=int, default=5)
    parser.add_argument("--quick", action="store_true")
    parser.add_argument("--mode", choices=["concurrent", "sequential"], default="concurrent")
    opts = parser.parse_args()
    started = time.time()
    result = run(opts.quick, opts.pairs, opts.mode)
    path = C.save(
        "process", {"machine": C.machine(), "code": C.code_state(), "started": started, **result}
    )
    print(f"saved {path}")


if __name__ == "__main__":
    main()
