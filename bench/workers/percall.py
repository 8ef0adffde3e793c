"""Worker of the per-call benchmark: one tool, one variant, one process. Runs in any tool's venv.

Parameters (JSON in $BENCH_PARAMS): tool (retrolog | flordb | mlflow), variant, outer, inner and,
for MLflow, uri. It first times the bare nested loop (plain ``range`` loops whose body computes
the value), then the instrumented variant of the same shape, one perf_counter block per outer
iteration, then ends the run (commit / end_run) so that every background or deferred write is
counted in the process CPU time. Writes JSON to $BENCH_OUT.

Variants: ``loops`` (the tool's loop constructs, nothing logged), ``log`` (plain loops, one log
per inner iteration), ``full`` (the tool's loops and one log per inner iteration).
"""

import json
import os
import sqlite3
import time

P = json.loads(os.environ["BENCH_PARAMS"])
TOOL, VARIANT, N, M = P["tool"], P["variant"], int(P["outer"]), int(P["inner"])
perf, cpu = time.perf_counter, time.process_time


def bare():
    blocks = [0.0] * N
    for i in range(N):
        t0 = perf()
        for j in range(M):
            v = j * 0.001  # noqa: F841 - the value a log call would receive
        blocks[i] = perf() - t0
    return blocks


def instrumented(loop, log):
    """The variant's nested loop; ``loop`` is None for plain range loops, ``log`` None for none."""
    blocks = [0.0] * N
    outer = loop("outer", range(N)) if loop else range(N)
    if log is None:
        for i in outer:
            t0 = perf()
            for j in loop("inner", range(M)):
                v = j * 0.001  # noqa: F841
            blocks[i] = perf() - t0
    elif loop is None:
        for i in outer:
            t0 = perf()
            for j in range(M):
                log("x", j * 0.001)
            blocks[i] = perf() - t0
    else:
        for i in outer:
            t0 = perf()
            for j in loop("inner", range(M)):
                log("x", j * 0.001)
            blocks[i] = perf() - t0
    return blocks


def setup():
    """Start the tool's run outside the timed region; return (loop, log, finish, count_rows)."""
    if TOOL == "retrolog":
        import retrolog
        from retrolog.store import Store

        retrolog.arg("seed", 0)  # starts the run: session, threads, journal
        run_id = retrolog.record.api.current_run_id()

        def count():
            rows = Store(f"sqlite:///{os.path.abspath('.retrolog/retrolog.db')}").fetch(
                "SELECT count(*) FROM logs JOIN runs ON runs.id = logs.run "
                "WHERE name = 'x' AND runs.run_id = :r",
                {"r": run_id},
            )
            return int(rows[0][0])

        return retrolog.loop, retrolog.log, retrolog.commit, count
    if TOOL == "flordb":
        import flordb as flor

        flor.arg("seed", 0)  # starts the run: shadow branch, .gitignore

        def count():
            with sqlite3.connect(flor.constants.DB_PATH) as conn:
                return conn.execute("SELECT count(*) FROM logs WHERE value_name = 'x'").fetchone()[
                    0
                ]

        return flor.loop, flor.log, flor.commit, count
    if TOOL == "mlflow":
        import mlflow

        mlflow.set_tracking_uri(P["uri"])
        mlflow.set_experiment("bench")
        run = mlflow.start_run()
        mlflow.log_param("seed", 0)
        step = [0]

        def log(name, value):
            mlflow.log_metric(name, value, step=step[0])
            step[0] += 1

        def count():
            history = mlflow.MlflowClient().get_metric_history(run.info.run_id, "x")
            return len(history)

        return None, log, mlflow.end_run, count
    raise SystemExit(f"unknown tool {TOOL}")


def _children_cpu():
    times = os.times()
    return times.children_user + times.children_system


def main():
    loop, log, finish, count = setup()
    if VARIANT == "loops":
        log = None
    elif VARIANT == "log":
        loop = None
    c0, t0 = cpu(), perf()
    bare_blocks = bare()
    bare_wall, bare_cpu = perf() - t0, cpu() - c0
    c0, t0 = cpu(), perf()
    blocks = instrumented(loop, log)
    loop_wall, loop_cpu = perf() - t0, cpu() - c0
    t1 = perf()
    children0 = _children_cpu()
    finish()
    # Helper processes the tool waited for (retrolog's journal follower) count as its CPU too.
    finish_wall, total_cpu = perf() - t1, cpu() - c0 + _children_cpu() - children0
    result = {
        "tool": TOOL,
        "variant": VARIANT,
        "outer": N,
        "inner": M,
        "bare_blocks": bare_blocks,
        "blocks": blocks,
        "bare_wall": bare_wall,
        "bare_cpu": bare_cpu,
        "loop_wall": loop_wall,
        "loop_cpu": loop_cpu,
        "finish_wall": finish_wall,
        "total_cpu": total_cpu,
        "stored_rows": count() if log is not None else None,
    }
    with open(os.environ["BENCH_OUT"], "w") as fh:
        json.dump(result, fh)


main()
