"""Worker of the dataframe benchmark for MLflow (runs in the mlflow venv, cwd = a scratch dir;
$BENCH_PARAMS as in bench/workers/frames_retrolog.py, plus "uri", a sqlite:/// tracking URI).

``gen`` creates one run per synthetic run through ``MlflowClient``: ``create_run``, one
``log_batch`` with the 2 params and the ``epochs`` "val_acc" values, one ``log_batch`` per 1000
"loss" values (MLflow's per-call limit; step = epoch * steps + step), ``set_terminated``.
``query`` is MLflow's way to get the same table: ``mlflow.search_runs`` for the runs (with their
params), then ``MlflowClient.get_metric_history(run_id, "loss")`` for each, assembled into one
DataFrame (run_id, step, loss). Cold = first query of a fresh process, ``import mlflow``
included; warm = later queries in the same process.
"""

import json
import math
import os
import random
import time

P = json.loads(os.environ["BENCH_PARAMS"])
perf = time.perf_counter


def gen() -> dict:
    from mlflow import MlflowClient
    from mlflow.entities import Metric, Param

    client = MlflowClient(tracking_uri=P["uri"])
    exp = client.create_experiment("bench")
    rng = random.Random(0)
    epochs, steps = P["epochs"], P["steps"]
    t_start = perf()
    t_ms = 1_700_000_000_000
    for k in range(P["runs"]):
        run = client.create_run(exp, start_time=t_ms)
        rid = run.info.run_id
        params = [Param("lr", str(1e-3 * (1 + k % 10))), Param("seed", str(k))]
        accs = [Metric("val_acc", 0.5 + 0.04 * e, t_ms, (e + 1) * steps - 1) for e in range(epochs)]
        client.log_batch(rid, metrics=accs, params=params)
        losses = []
        for e in range(epochs):
            for s in range(steps):
                loss = 2.3 * math.exp(-(e * steps + s) / 400) + 0.05 * rng.random()
                losses.append(Metric("loss", loss, t_ms, e * steps + s))
        for i in range(0, len(losses), 1000):
            client.log_batch(rid, metrics=losses[i : i + 1000])
        client.set_terminated(rid, end_time=t_ms + 12_000)
        t_ms += 20_000
    return {"seconds": perf() - t_start, "db_bytes": os.path.getsize(P["uri"][len("sqlite:///") :])}


def load(mlflow, client):
    import pandas as pd

    runs = mlflow.search_runs(experiment_names=["bench"])
    parts = []
    for rid in runs["run_id"]:
        history = client.get_metric_history(rid, "loss")
        parts.append(
            pd.DataFrame(
                {
                    "run_id": rid,
                    "step": [m.step for m in history],
                    "loss": [m.value for m in history],
                }
            )
        )
    return pd.concat(parts, ignore_index=True), len(runs)


def query() -> dict:
    t0 = perf()
    import mlflow

    mlflow.set_tracking_uri(P["uri"])
    client = mlflow.MlflowClient()
    frame, n_runs = load(mlflow, client)
    cold = perf() - t0
    warm = []
    for _ in range(P["calls"]):
        t1 = perf()
        frame, n_runs = load(mlflow, client)
        warm.append(perf() - t1)
    return {
        "cold": cold,
        "warm": warm,
        "rows": len(frame),
        "columns": list(frame.columns),
        "runs": n_runs,
    }


with open(os.environ["BENCH_OUT"], "w") as fh:
    json.dump(gen() if P["mode"] == "gen" else query(), fh)
