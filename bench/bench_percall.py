"""Benchmark 1: the per-call cost of ``log`` inside nested loops, retrolog vs flordb vs MLflow.

Each case runs bench/workers/percall.py in a fresh scratch git repo with its tool's interpreter.
The worker times, in one process, the bare nested loop (plain ``range`` loops computing the value)
and then the instrumented loop of the same shape, one perf_counter block per outer iteration;
then it ends the run. Reported per call (= per inner iteration):

* training thread, median: median over all blocks of (block - median bare block) / inner;
* training thread, mean: (instrumented loop wall - bare loop wall) / calls, which includes the
  rare slow blocks (background flushes holding the GIL, periodic writes);
* process CPU: (process_time of loop + end of run - process_time of the bare loop) / calls, so
  work moved to background threads or deferred to the end of the run is counted, plus the CPU of
  helper processes the tool waits for at the end of the run (retrolog's journal follower);
* end of run: wall time of commit()/end_run() after the loop.

MLflow has no loop construct (its step counter is the loop); it is measured with fewer calls
because each call costs milliseconds.
"""

from __future__ import annotations

import os
from typing import Any

import common as C

# (label, tool, variant, extra env, uri kind); calls = outer * inner per repetition
CASES: list[dict[str, Any]] = [
    {"label": "retrolog", "tool": "retrolog", "variant": "full"},
    {"label": "retrolog", "tool": "retrolog", "variant": "loops"},
    {"label": "retrolog", "tool": "retrolog", "variant": "log"},
    {"label": "flordb", "tool": "flordb", "variant": "full"},
    {"label": "flordb", "tool": "flordb", "variant": "loops"},
    {"label": "flordb", "tool": "flordb", "variant": "log"},
    {"label": "mlflow file store", "tool": "mlflow", "variant": "log", "uri": "file"},
    {"label": "mlflow sqlite", "tool": "mlflow", "variant": "log", "uri": "sqlite"},
    {
        "label": "mlflow sqlite async",
        "tool": "mlflow",
        "variant": "log",
        "uri": "sqlite",
        "env": {"MLFLOW_ENABLE_ASYNC_LOGGING": "true"},
    },
]

# shape (outer, inner) and repetitions per case, by mode
SIZES = {
    "full": {
        ("retrolog", "full"): (1000, 1000, 1),
        ("retrolog", "loops"): (500, 1000, 1),
        ("retrolog", "log"): (500, 1000, 1),
        ("flordb", "full"): (100, 1000, 1),
        ("flordb", "loops"): (100, 1000, 1),
        ("flordb", "log"): (100, 1000, 1),
        ("mlflow file store", "log"): (100, 100, 1),
        ("mlflow sqlite", "log"): (20, 50, 1),
        ("mlflow sqlite async", "log"): (20, 50, 1),
    },
    "quick": {
        ("retrolog", "full"): (50, 1000, 1),
        ("retrolog", "loops"): (50, 1000, 1),
        ("retrolog", "log"): (50, 1000, 1),
        ("flordb", "full"): (10, 1000, 1),
        ("flordb", "loops"): (10, 1000, 1),
        ("flordb", "log"): (10, 1000, 1),
        ("mlflow file store", "log"): (10, 50, 1),
        ("mlflow sqlite", "log"): (5, 20, 1),
        ("mlflow sqlite async", "log"): (5, 20, 1),
    },
}

VARIANT_TEXT = {
    "full": "tool's loops + log",
    "loops": "tool's loops, no log",
    "log": "plain loops + log",
}


def _one(case: dict[str, Any], outer: int, inner: int) -> dict[str, Any]:
    repo = C.scratch_repo(f"percall-{case['tool']}", {"percall.py": C.WORKERS / "percall.py"})
    params: dict[str, Any] = {
        "tool": case["tool"],
        "variant": case["variant"],
        "outer": outer,
        "inner": inner,
    }
    env = dict(case.get("env", {}))
    if case.get("uri") == "file":
        params["uri"] = (repo / "mlruns").as_uri()
        env["MLFLOW_ALLOW_FILE_STORE"] = "true"  # MLflow 3.x refuses the file store otherwise
    elif case.get("uri") == "sqlite":
        params["uri"] = f"sqlite:///{repo / 'mlflow.db'}"
    load = os.getloadavg()[0]
    try:
        result, _ = C.run_worker(case["tool"], "percall.py", params, repo, extra_env=env)
        result["load"] = load
    finally:
        C.remove_tree(repo)
        (repo.parent / f"{repo.name}.log").unlink(missing_ok=True)
    return result


def _summarise(reps: list[dict[str, Any]]) -> dict[str, Any]:
    per_block: list[float] = []
    means, cpus, finishes, bare_calls = [], [], [], []
    calls = 0
    for r in reps:
        inner, n = r["inner"], r["outer"] * r["inner"]
        calls += n
        bare_block = C.median(r["bare_blocks"])
        per_block += [(b - bare_block) / inner for b in r["blocks"]]
        means.append((r["loop_wall"] - r["bare_wall"]) / n)
        cpus.append((r["total_cpu"] - r["bare_cpu"]) / n)
        finishes.append(r["finish_wall"])
        bare_calls.append(bare_block / inner)
    stored = [r["stored_rows"] for r in reps]
    loads = [r.get("load", float("nan")) for r in reps]
    expected = [r["outer"] * r["inner"] for r in reps]
    return {
        "calls": calls,
        "reps": len(reps),
        "thread_median_s": C.median(per_block),
        "thread_p10_s": C.quantile(per_block, 0.1),
        "thread_p90_s": C.quantile(per_block, 0.9),
        "thread_mean_s": C.median(means),
        "cpu_s": C.median(cpus),
        "finish_s": C.median(finishes),
        "bare_per_call_s": C.median(bare_calls),
        "stored_ok": all(s is None or s == e for s, e in zip(stored, expected, strict=True)),
        "stored_rows": stored,
        "load": max(loads),
    }


def run(quick: bool) -> dict[str, Any]:
    sizes = SIZES["quick" if quick else "full"]
    results: dict[str, Any] = {"cases": [], "skipped": []}
    raw: dict[int, list[dict[str, Any]]] = {i: [] for i in range(len(CASES))}
    max_reps = max(r for _, _, r in sizes.values())
    for rep in range(max_reps):
        # Rotate the order each repetition so no tool always runs first (or right after another).
        order = list(range(len(CASES)))
        order = order[rep % len(order) :] + order[: rep % len(order)]
        for i in order:
            case = CASES[i]
            outer, inner, reps = sizes[(case["label"], case["variant"])]
            if rep >= reps:
                continue
            try:
                C.python_of(case["tool"])
            except C.PeerMissing as exc:
                if str(exc) not in results["skipped"]:
                    results["skipped"].append(str(exc))
                    print(f"  skipped: {exc}", flush=True)
                continue
            print(f"  {case['label']} / {case['variant']}: {outer}x{inner} ...", flush=True)
            raw[i].append(_one(case, outer, inner))
    for i, case in enumerate(CASES):
        if raw[i]:
            entry = {k: v for k, v in case.items() if k != "env"}
            entry["env"] = case.get("env", {})
            entry.update(_summarise(raw[i]))
            results["cases"].append(entry)
    return results


def _us(x: float) -> str:
    return C.fmt(x * 1e6)


def report(results: dict[str, Any]) -> str:
    cases = results["cases"]
    base = next((c for c in cases if c["label"] == "retrolog" and c["variant"] == "full"), None)
    by = {(c["label"], c["variant"]): c for c in cases}
    rows = []
    for c in cases:
        ratio = "-"
        ours = by.get(("retrolog", c["variant"]))  # like for like: the same variant
        if ours is not None and c["tool"] != "retrolog":
            thread = C.ratio(c["thread_mean_s"], ours["thread_mean_s"])
            ratio = f"{C.fmt(thread)}x / {C.fmt(C.ratio(c['cpu_s'], ours['cpu_s']))}x"
        rows.append(
            [
                c["label"],
                VARIANT_TEXT[c["variant"]],
                f"{c['calls']:,}",
                f"{_us(c['thread_median_s'])} ({_us(c['thread_p10_s'])}-{_us(c['thread_p90_s'])})",
                _us(c["thread_mean_s"]),
                _us(c["cpu_s"]),
                C.fmt(c["finish_s"]),
                ratio,
                "yes" if c["stored_ok"] else f"NO {c['stored_rows']}",
            ]
        )
    head = [
        "tool",
        "variant",
        "calls",
        "thread median (p10-p90) µs/call",
        "thread mean µs/call",
        "process CPU µs/call",
        "end of run s",
        "thread mean / CPU vs retrolog, same variant",
        "all rows stored",
    ]
    out = [C.table(head, rows)]
    if ("retrolog", "loops") in by and base is not None:
        loops = by[("retrolog", "loops")]
        out.append(
            "\nretrolog, µs per call: bare loop body "
            f"{_us(base['bare_per_call_s'])}; loop bookkeeping (loops, no log) thread mean "
            f"{_us(loops['thread_mean_s'])} / CPU {_us(loops['cpu_s'])}; log on top of the loops "
            f"thread mean {_us(base['thread_mean_s'] - loops['thread_mean_s'])} / CPU "
            f"{_us(base['cpu_s'] - loops['cpu_s'])} (differences of noisy means)."
        )
    loads = [c["load"] for c in cases if "load" in c]
    if loads:
        out.append(
            f"\n1-min load average at the start of each case: {C.fmt(min(loads))} .. {C.fmt(max(loads))}"
        )
    for skipped in results["skipped"]:
        out.append(f"\nskipped: {skipped}")
    return "\n".join(out)
