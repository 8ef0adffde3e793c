"""Replay benchmarks: hindsight logging vs re-running, vs flordb's replay, parallel speed-up, and
the accuracy of the plan's cost estimate.

History: the reference workload (examples/train_digits.py, 10 epochs) recorded 5 times with
different learning rates in a scratch git repository, with checkpointing as the script has it;
and the same history recorded with flordb 4.0.1 (bench/peers/train_digits_flordb.py) in another
scratch repository. Then, side by side in one invocation on the same machine:

- re-running the 5 runs from scratch, 2 processes at a time (the parallelism replay gets);
- an outer-level statement (weight norm after each epoch) replayed for all 5 runs, 2 workers:
  *cold* (no fork server running: the replay starts one, which imports torch & co.) and *warm*
  (a persistent fork server left by an earlier replay is reused), on two identical copies of the
  history, so both do the same work and store the same 50 values;
- the same statement replayed by flordb (``python -m flordb replay --apply weight_norm``), whose
  values are checked against retrolog's;
- an inner-level statement (gradient norm every step, all epochs) for 2 runs and for 1 run, with
  1 and 2 workers, cold and warm;
- the plan's estimate against the measured time of each replay call.

Every replay is a fresh ``python -c "retrolog.replay(...)"`` process, as a user's would be; the
speed-ups use the process's wall time (interpreter start and imports included), the estimate is
compared with the ``replay()`` call it estimates. Persistent fork servers live in a private folder
for the benchmark and are stopped at its end. The load average is recorded next to each timing.

Usage: python bench/bench_replay.py [--quick] [--checkpoint-budget B]
  --quick: 3 runs x 4 epochs.
  --checkpoint-budget B: record the history (and the re-runs, which record too) with
      RETROLOG_CHECKPOINT_BUDGET=B instead of the default 5% (what replay gains when the adaptive
      policy saves every loop's exit).
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import sqlite3
import statistics
import subprocess
import sys
import tempfile
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent))
sys.path.insert(0, str(Path(__file__).resolve().parent / "peers"))
import flordb_replay  # noqa: E402
from common import (  # noqa: E402
    PEER_FILES,
    REPO_ROOT,
    PeerMissing,
    code_state,
    fmt,
    machine,
    python_of,
    ratio,
    save,
    scratch_repo,
    table,
    tool_env,
)

from retrolog.replaying.forkserver import DIR_ENV, shutdown_servers  # noqa: E402

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
                  "planning": report.plan.planning_seconds, "server": report.plan.server_seconds,
                  "fidelity": sorted({r.fidelity for r in report.runs}), "stored": report.stored}))
"""


def load() -> float:
    return round(os.getloadavg()[0], 2)


RECORD_ENV: dict[str, str] = {}  # extra environment of the recorded runs and the re-runs


def record(repo: Path, rate: str, epochs: int) -> float:
    start = time.perf_counter()
    subprocess.run(
        [sys.executable, "train.py", "--kwargs", f"lr={rate}", f"epochs={epochs}"],
        cwd=repo,
        env=tool_env(RECORD_ENV),
        check=True,
        capture_output=True,
    )
    return time.perf_counter() - start


def replay(
    repo: Path, names: list[str], where: str | None, workers: int, servers: Path, cold: bool
) -> dict[str, Any]:
    """One replay in a fresh process; ``cold``: stop every fork server first."""
    if cold:
        shutdown_servers()
    before = load()
    start = time.perf_counter()
    proc = subprocess.run(
        [sys.executable, "-c", REPLAY, json.dumps([names, where, workers])],
        cwd=repo,
        env=tool_env({DIR_ENV: str(servers)}),
        check=True,
        capture_output=True,
        text=True,
    )
    process = time.perf_counter() - start
    result = dict(json.loads(proc.stdout.strip().splitlines()[-1]))
    result.update(process=process, load=before, cold=cold)
    return result


def retrolog_weight_norms(repo: Path) -> dict[tuple[float, int], float]:
    with sqlite3.connect(repo / ".retrolog" / "retrolog.db") as conn:
        rows = conn.execute(
            "SELECT a.value_num, lp.iteration, l.value_num FROM logs l "
            "JOIN loops lp ON lp.run = l.run AND lp.ctx_id = l.ctx_id "
            "JOIN args a ON a.run = l.run AND a.name = 'lr' WHERE l.name = 'weight_norm'"
        ).fetchall()
    return {(float(lr), int(epoch)): float(value) for lr, epoch, value in rows}


def flordb_side(rates: tuple[str, ...], epochs: int) -> dict[str, Any] | str:
    """Record the history with flordb and return its repo and interpreter, or why not."""
    try:
        python = python_of("flordb")
    except PeerMissing as exc:
        return str(exc)
    repo = scratch_repo("replay-flordb", {"train.py": PEER_FILES / "train_digits_flordb.py"})
    walls = [flordb_replay.record(repo, python, rate, epochs, tool_env()) for rate in rates]
    return {"repo": repo, "python": python, "record_walls": walls}


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--quick", action="store_true")
    parser.add_argument("--checkpoint-budget", type=float, default=None)
    parser.add_argument(
        "--rounds",
        type=int,
        default=3,
        help="extra interleaved rounds of the warm replays (medians and minima reported)",
    )
    opts = parser.parse_args()
    if opts.checkpoint_budget is not None:
        RECORD_ENV["RETROLOG_CHECKPOINT_BUDGET"] = str(opts.checkpoint_budget)
    rates = RATES[:3] if opts.quick else RATES
    epochs = 4 if opts.quick else 10
    started = time.time()
    servers = Path(tempfile.mkdtemp(prefix="retrolog-bench-forkservers-"))
    os.environ[DIR_ENV] = str(servers)  # shutdown_servers() here acts on the benchmark's folder
    try:
        run(rates, epochs, opts.quick, servers, started, opts.rounds)
    finally:
        shutdown_servers()
        shutil.rmtree(servers, ignore_errors=True)


def run(
    rates: tuple[str, ...], epochs: int, quick: bool, servers: Path, started: float, rounds: int
) -> None:
    source = (REPO_ROOT / "examples" / "train_digits.py").read_text()
    repo = scratch_repo("replay", {"train.py": source})
    record_walls = [record(repo, rate, epochs) for rate in rates]
    twin = repo.parent / f"{repo.name}-twin"  # the same history, for the warm outer replay
    shutil.copytree(repo, twin, symlinks=True)
    flor = flordb_side(rates, epochs)
    if isinstance(flor, str):
        print(f"  flordb skipped: {flor}", flush=True)

    rerun = scratch_repo("rerun", {"train.py": source})  # re-running must not add to the history
    rerun_load = load()
    start = time.perf_counter()
    with ThreadPoolExecutor(max_workers=2) as pool:
        list(pool.map(lambda rate: record(rerun, rate, epochs), rates))
    rerun_wall = time.perf_counter() - start

    with_weight_norm = source.replace(
        "        scheduler.step()\n", "        scheduler.step()\n" + WEIGHT_NORM
    )
    for target in (repo, twin):
        (target / "train.py").write_text(with_weight_norm)
    outer_cold = replay(repo, ["weight_norm"], None, 2, servers, cold=True)
    outer_warm = replay(twin, ["weight_norm"], None, 2, servers, cold=False)

    flordb: dict[str, Any] = {}
    if not isinstance(flor, str):
        flordb_replay.add_statement(flor["repo"])
        flordb["load"] = load()
        flordb["wall"] = flordb_replay.replay(
            flor["repo"], flor["python"], tool_env(), flor["repo"].parent / "flordb-replay.log"
        )
        theirs, ours = flordb_replay.weight_norms(flor["repo"]), retrolog_weight_norms(repo)
        flordb["values"] = len(theirs)
        flordb["expected"] = len(rates) * epochs
        flordb["same_keys"] = sorted(theirs) == sorted(ours)
        flordb["max_rel_diff_vs_retrolog"] = max(
            (abs(theirs[k] - ours[k]) / abs(ours[k]) for k in theirs if k in ours), default=None
        )
        flordb["record_walls"] = flor["record_walls"]
        if flordb["values"] != flordb["expected"]:
            raise RuntimeError(f"flordb stored {flordb['values']} weight norms: {flordb}")

    (repo / "train.py").write_text(
        source.replace(
            "            optimizer.step()\n", GRAD_NORM + "            optimizer.step()\n"
        )
    )
    two_runs = f"lr IN ({rates[0]}, {rates[1]})"
    one_run = f"lr = {rates[0]}"
    inner = {
        "2runs_1w_cold": replay(repo, ["grad_norm"], two_runs, 1, servers, cold=True),
        "2runs_1w": replay(repo, ["grad_norm"], two_runs, 1, servers, cold=False),
        "2runs_2w_cold": replay(repo, ["grad_norm"], two_runs, 2, servers, cold=True),
        "2runs_2w": replay(repo, ["grad_norm"], two_runs, 2, servers, cold=False),
        "1run_1w": replay(repo, ["grad_norm"], one_run, 1, servers, cold=False),
        "1run_2w": replay(repo, ["grad_norm"], one_run, 2, servers, cold=False),
    }
    replays = {"outer_cold": outer_cold, "outer_warm": outer_warm, **inner}
    # the 2-core VM is shared: repeat the warm cases, interleaved, and report median and minimum
    warm_args = {
        "outer_warm": (twin, ["weight_norm"], None, 2),
        "2runs_1w": (repo, ["grad_norm"], two_runs, 1),
        "2runs_2w": (repo, ["grad_norm"], two_runs, 2),
        "1run_1w": (repo, ["grad_norm"], one_run, 1),
        "1run_2w": (repo, ["grad_norm"], one_run, 2),
    }
    repeats: dict[str, list[dict[str, Any]]] = {k: [replays[k]] for k in warm_args}
    for _ in range(rounds):
        for key, (where_repo, names, where, workers) in warm_args.items():
            repeats[key].append(replay(where_repo, names, where, workers, servers, cold=False))
    stats = {
        key: {
            "median": statistics.median(float(r["process"]) for r in results),
            "min": min(float(r["process"]) for r in results),
            "loads": [r["load"] for r in results],
        }
        for key, results in repeats.items()
    }

    def row(label: str, r: dict[str, Any], baseline: float | None) -> list[str]:
        return [
            label,
            fmt(r["process"]),
            fmt(r["wall"]),
            fmt(r["estimate"]),
            fmt(ratio(baseline, float(r["process"])), 2) if baseline else "-",
            str(r["load"]),
        ]

    rows = [
        [
            "re-run all runs from scratch (2 processes)",
            fmt(rerun_wall),
            "-",
            "-",
            "1.00",
            str(rerun_load),
        ]
    ]
    rows.append(row("outer statement, all runs, 2 workers, cold", outer_cold, rerun_wall))
    rows.append(row("outer statement, all runs, 2 workers, warm", outer_warm, rerun_wall))
    if flordb:
        rows.append(
            [
                "flordb 4.0.1 replay of the outer statement, all runs",
                fmt(flordb["wall"]),
                "-",
                "-",
                fmt(ratio(rerun_wall, flordb["wall"]), 2),
                str(flordb["load"]),
            ]
        )
    labels = {
        "2runs_1w_cold": "inner statement, 2 runs x all epochs, 1 worker, cold",
        "2runs_1w": "inner statement, 2 runs x all epochs, 1 worker, warm",
        "2runs_2w_cold": "inner statement, 2 runs x all epochs, 2 workers, cold",
        "2runs_2w": "inner statement, 2 runs x all epochs, 2 workers, warm",
        "1run_1w": "inner statement, 1 run x all epochs, 1 worker, warm",
        "1run_2w": "inner statement, 1 run x all epochs, 2 workers (split), warm",
    }
    rows += [row(labels[k], inner[k], None) for k in labels]
    with sqlite3.connect(repo / ".retrolog" / "retrolog.db") as conn:
        saved = conn.execute(
            "SELECT count(*) FROM checkpoints WHERE iteration IS NOT NULL"
        ).fetchone()[0]
    print(
        f"history: {len(rates)} runs x {epochs} epochs, recorded in {fmt(sum(record_walls))} s "
        f"(median run {fmt(sorted(record_walls)[len(record_walls) // 2])} s), "
        f"{saved}/{len(rates) * epochs} epoch checkpoints saved {RECORD_ENV or ''}\n"
    )
    print(
        table(
            ["case", "process wall s", "replay() s", "estimate s", "speed-up vs re-run", "load"],
            rows,
        )
    )

    def speedup(one: str, two: str) -> float:
        return ratio(float(inner[one]["process"]), float(inner[two]["process"]))

    ratios = {
        "outer_vs_rerun_cold": ratio(rerun_wall, outer_cold["process"]),
        "outer_vs_rerun_warm": ratio(rerun_wall, outer_warm["process"]),
        "inner_2v1_2runs_cold": speedup("2runs_1w_cold", "2runs_2w_cold"),
        "inner_2v1_2runs_warm": speedup("2runs_1w", "2runs_2w"),
        "inner_2v1_1run_warm": speedup("1run_1w", "1run_2w"),
    }
    if flordb:
        ratios["outer_vs_flordb_cold"] = ratio(flordb["wall"], outer_cold["process"])
        ratios["outer_vs_flordb_warm"] = ratio(flordb["wall"], outer_warm["process"])
        print(
            f"\nflordb: {flordb['values']}/{flordb['expected']} weight norms stored; same (lr, epoch)"
            f" keys as retrolog's: {flordb['same_keys']}; max relative difference "
            f"{flordb['max_rel_diff_vs_retrolog']}"
        )
    print("\n" + "\n".join(f"{k}: {fmt(v, 3)}x" for k, v in ratios.items()))
    print(f"\nwarm replays over {rounds + 1} interleaved rounds (process wall s):")
    print(
        table(
            ["case", "median", "min", "loads"],
            [[k, fmt(v["median"]), fmt(v["min"]), str(v["loads"])] for k, v in stats.items()],
        )
    )
    for label, (one, two) in {
        "inner_2v1_2runs_warm": ("2runs_1w", "2runs_2w"),
        "inner_2v1_1run_warm": ("1run_1w", "1run_2w"),
    }.items():
        for stat in ("median", "min"):
            ratios[f"{label}_{stat}"] = ratio(stats[one][stat], stats[two][stat])
    for stat in ("median", "min"):
        ratios[f"outer_vs_rerun_warm_{stat}"] = ratio(rerun_wall, stats["outer_warm"][stat])
        if flordb:
            ratios[f"outer_vs_flordb_warm_{stat}"] = ratio(
                flordb["wall"], stats["outer_warm"][stat]
            )
    print(
        "\n"
        + "\n".join(
            f"{k}: {fmt(v, 3)}x" for k, v in ratios.items() if k.endswith(("median", "min"))
        )
    )
    everything = {
        f"{k}#{i}": r for k, results in repeats.items() for i, r in enumerate(results)
    } | {k: r for k, r in replays.items() if k not in repeats}
    errors = {
        k: abs(float(r["estimate"]) - float(r["wall"])) / float(r["wall"])
        for k, r in everything.items()
    }
    ordered = sorted(errors.values())
    print(
        f"estimate error: median {fmt(ordered[len(ordered) // 2] * 100, 2)}%, "
        f"max {fmt(max(ordered) * 100, 2)}% ({max(errors, key=lambda k: errors[k])})"
    )
    fidelity = {k: r["fidelity"] for k, r in replays.items()}
    print(f"fidelity: {fidelity}")
    path = save(
        "replay",
        {
            "benchmark": "replay",
            "quick": quick,
            "record_env": RECORD_ENV,
            "machine": machine(),
            "code": code_state(),
            "seconds": time.time() - started,
            "load_avg_at_end": os.getloadavg(),
            "results": {
                "record_walls": record_walls,
                "epoch_checkpoints": saved,
                "rerun_wall": rerun_wall,
                "rerun_load": rerun_load,
                "replays": replays,
                "repeats": repeats,
                "warm_stats": stats,
                "flordb": flordb or str(flor),
                "ratios": ratios,
                "estimate_errors": errors,
            },
        },
    )
    print(f"\nsaved {path}")


if __name__ == "__main__":
    main()
