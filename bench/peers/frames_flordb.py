"""Worker of the dataframe benchmark for flordb 4.0.1 (runs in the flordb venv, cwd = a scratch
git repo; $BENCH_PARAMS as in bench/workers/frames_retrolog.py).

``gen`` fills flordb's SQLite cache (.flor/<project>.db, table ``logs``) through flordb's own
``database.unpack``, the function ``flor.commit()`` calls, with the ``orm.Log`` records that
``flor.arg``/``flor.loop``/``flor.log`` buffer for a run of the reference workload's shape: the two
args (ctx NULL), one "loss" per step with ctx [epoch, step] (a DataLoader batch is not
JSON-able, so the step segment's value is None), one "val_acc" per epoch and the loop timing rows
flor.loop and flor.commit emit (time::iter, time::iter::std, time::iter::n and time::loop per
loop, time::setup, time::script, time::teardown per run); checked against a real run. It skips
the per-run JSONL file and the git commit, which ``flor.dataframe`` does not read.
``query`` times ``flor.dataframe("loss")``: cold (first call in a fresh process, ``import flordb``
included) and warm.
"""

import json
import math
import os
import random
import time

os.environ["FLOR_CAPTURE"] = "0"  # the worker's own output is not a run
P = json.loads(os.environ["BENCH_PARAMS"])
perf = time.perf_counter


def gen() -> dict:
    from datetime import datetime, timedelta

    from flordb import database, orm
    from flordb.constants import DB_PATH, PROJID, VALUE_TYPE_LOG, VALUE_TYPE_TIME

    rng = random.Random(0)
    epochs, steps = P["epochs"], P["steps"]
    conn, cursor = database.conn_and_cursor()
    t_start = perf()
    start = datetime(2026, 1, 1)
    for k in range(P["runs"]):
        ts = (start + timedelta(seconds=20 * k)).isoformat(timespec="microseconds")
        buf = [
            orm.Log(PROJID, ts, "train.py", None, "lr", 1e-3 * (1 + k % 10), VALUE_TYPE_LOG),
            orm.Log(PROJID, ts, "train.py", None, "seed", k, VALUE_TYPE_LOG),
        ]
        for e in range(epochs):
            epoch = orm.Segment("epoch", e, str(e))
            for s in range(steps):
                ctx = [epoch, orm.Segment("step", s, None)]
                loss = 2.3 * math.exp(-(e * steps + s) / 400) + 0.05 * rng.random()
                buf.append(orm.Log(PROJID, ts, "train.py", ctx, "loss", loss, VALUE_TYPE_LOG))
            for name, value in (("time::iter", 0.01), ("time::iter::std", 0.001)):
                buf.append(orm.Log(PROJID, ts, "train.py", [epoch], name, value, VALUE_TYPE_TIME))
            buf.append(orm.Log(PROJID, ts, "train.py", [epoch], "time::iter::n", steps, 3))
            buf.append(orm.Log(PROJID, ts, "train.py", [epoch], "time::loop", 1.0, 3))
            buf.append(orm.Log(PROJID, ts, "train.py", [epoch], "val_acc", 0.5 + 0.04 * e, 1))
        for name in ("time::setup", "time::iter", "time::iter::std", "time::iter::n"):
            buf.append(orm.Log(PROJID, ts, "train.py", None, name, 1.0, VALUE_TYPE_TIME))
        for name in ("time::loop", "time::script", "time::teardown"):
            buf.append(orm.Log(PROJID, ts, "train.py", None, name, 12.0, VALUE_TYPE_TIME))
        database.unpack(buf, cursor, source="forward")
        conn.commit()
    seconds = perf() - t_start
    conn.close()
    return {"seconds": seconds, "db_bytes": os.path.getsize(DB_PATH)}


def query() -> dict:
    t0 = perf()
    import flordb as flor

    frame = flor.dataframe("loss")
    cold = perf() - t0
    warm = []
    for _ in range(P["calls"]):
        t1 = perf()
        frame = flor.dataframe("loss")
        warm.append(perf() - t1)
    return {
        "cold": cold,
        "warm": warm,
        "rows": len(frame),
        "columns": list(frame.columns),
        "runs": int(frame["tstamp"].nunique()),
    }


with open(os.environ["BENCH_OUT"], "w") as fh:
    json.dump(gen() if P["mode"] == "gen" else query(), fh)
