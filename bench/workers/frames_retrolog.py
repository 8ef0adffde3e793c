"""Worker of the dataframe benchmark for retrolog (runs in this repository's venv).

$BENCH_PARAMS: {"mode": "gen" | "query", "runs", "epochs", "steps", "calls"}; the project is the
cwd (a scratch git repo). ``gen`` writes the store through ``Store.ingest`` with the events a
recorded run of the reference workload's shape produces (docs: Store.ingest's docstring): per run
a "run" event, 2 args, ``epochs`` epoch contexts each holding ``steps`` step contexts with one
"loss" row each, one "val_acc" row per epoch, and an "end" event. ``query`` times
``retrolog.dataframe("loss")``: the first call of a fresh process (cold, including the lazy import
of the query stack; ``cold_call``: the call alone, after that import) and then ``calls`` more calls (warm); with "where" in the params, then
``calls`` calls of ``retrolog.dataframe("loss", where=...)`` (filtered, warm).
"""

import json
import math
import os
import random
import time

P = json.loads(os.environ["BENCH_PARAMS"])
perf = time.perf_counter


def gen() -> dict:
    from retrolog._ids import new_run_id
    from retrolog.project import find_project
    from retrolog.store import Store

    project = find_project(os.getcwd())
    project.ensure_data_dir()
    store = Store(project.db_url)
    rng = random.Random(0)
    epochs, steps = P["epochs"], P["steps"]
    t_start = perf()
    t = 1.7e9
    for k in range(P["runs"]):
        run_id = new_run_id(now=t)
        facts = {"script": "train.py", "argv": ["train.py"], "cwd": os.getcwd(), "start_time": t}
        facts.update(host="bench", pid=1000 + k, python="3.11.7", status="running")
        events: list[list] = [[1, "run", facts]]
        events.append([2, "arg", "lr", "f", 1e-3 * (1 + k % 10), None])
        events.append([3, "arg", "seed", "i", float(k), None])
        seq, ctx = 3, 0
        for e in range(epochs):
            seq += 1
            ctx += 1
            epoch_ctx = ctx
            events.append([seq, "ctx", epoch_ctx, 0, 1, "epoch", e, json.dumps(e), t])
            for s in range(steps):
                seq += 1
                ctx += 1
                events.append([seq, "ctx", ctx, epoch_ctx, 2, "step", s, json.dumps(s), t])
                seq += 1
                loss = 2.3 * math.exp(-(e * steps + s) / 400) + 0.05 * rng.random()
                events.append([seq, "log", ctx, "loss", "f", loss, None])
            seq += 1
            events.append([seq, "log", epoch_ctx, "val_acc", "f", 0.5 + 0.04 * e, None])
        events.append([seq + 1, "end", "finished", t + 12.0, None])
        store.ingest(run_id, events)
        t += 20.0
    seconds = perf() - t_start
    store.dispose()
    size = os.path.getsize(project.data_dir / "retrolog.db")
    return {"seconds": seconds, "db_bytes": size}


def query() -> dict:
    t0 = perf()
    import retrolog
    import retrolog.relational  # the query stack (pandas): timed apart from the call as well

    imported = perf()
    frame = retrolog.dataframe("loss")
    cold = perf() - t0
    call = perf() - imported
    warm = []
    for _ in range(P["calls"]):
        t1 = perf()
        frame = retrolog.dataframe("loss")
        warm.append(perf() - t1)
    filtered, filtered_rows = [], None
    for _ in range(P["calls"] if P.get("where") else 0):
        t1 = perf()
        part = retrolog.dataframe("loss", where=P["where"])
        filtered.append(perf() - t1)
        filtered_rows = len(part)
    return {
        "cold": cold,
        "cold_call": call,
        "warm": warm,
        "filtered": filtered,
        "filtered_rows": filtered_rows,
        "rows": len(frame),
        "columns": list(frame.columns),
        "runs": int(frame["run_id"].nunique()),
    }


with open(os.environ["BENCH_OUT"], "w") as fh:
    json.dump(gen() if P["mode"] == "gen" else query(), fh)
