"""The reference workload's recording calls without its training (runs in any tool's venv).

$BENCH_PARAMS: {"tool": "retrolog" | "retrolog-nockpt" | "flordb" | "mlflow"}; $BENCH_OUT gets
{"wall", "cpu"}. Same calls, in the same structure, as examples/train_digits.py and its peer
versions: 4 args, the checkpointing block (retrolog), 10 epochs x 44 steps with one "loss" per
step (the loop item is a batch, not a scalar), one "val_acc" per epoch, one "final_val_acc".

It first imports what the workload imports before any tool call (numpy, torch), so modules the
workload loads anyway cost a tool nothing, and builds the workload's model, optimizer and
scheduler (the objects retrolog's checkpointing block saves); then it times, in the process
itself, everything the tool adds: its import, the calls and its end of run. The clock stops in an atexit handler
registered before the tool is imported, so it runs after the tool's own exit handlers (retrolog's
commit, flordb's cleanup). CPU is the process's own (all threads) plus its waited-for children
(git). Interpreter teardown after atexit is not included.
"""

import atexit
import json
import os
import resource
import time

import numpy  # noqa: F401 - the workload's imports, made before any tool is imported
import torch
from torch import nn


def _cpu() -> float:
    children = resource.getrusage(resource.RUSAGE_CHILDREN)
    return time.process_time() + children.ru_utime + children.ru_stime


TOOL = json.loads(os.environ["BENCH_PARAMS"])["tool"]
BATCHES = [(object(), object()) for _ in range(44)]  # 1400 samples / batch size 32

# The workload's model, optimizer and scheduler, for retrolog's checkpointing block to save; one
# optimizer step on a random batch gives Adam its state, as in the real run.
torch.manual_seed(0)
net = nn.Sequential(
    nn.Conv2d(1, 16, 3, padding=1),
    nn.ReLU(),
    nn.Conv2d(16, 32, 3, padding=1),
    nn.ReLU(),
    nn.MaxPool2d(2),
    nn.Flatten(),
    nn.Dropout(0.2),
    nn.Linear(32 * 4 * 4, 64),
    nn.ReLU(),
    nn.Linear(64, 10),
)
optimizer = torch.optim.Adam(net.parameters(), lr=2e-3)
scheduler = torch.optim.lr_scheduler.StepLR(optimizer, step_size=4, gamma=0.5)
nn.CrossEntropyLoss()(net(torch.rand(32, 1, 8, 8)), torch.randint(0, 10, (32,))).backward()
optimizer.step()
T0, C0 = time.perf_counter(), _cpu()


@atexit.register
def _report() -> None:
    wall, cpu = time.perf_counter() - T0, _cpu() - C0
    with open(os.environ["BENCH_OUT"], "w") as fh:
        json.dump({"wall": wall, "cpu": cpu}, fh)


if TOOL.startswith("retrolog"):
    import contextlib

    import retrolog

    lr = retrolog.arg("lr", 2e-3)
    epochs = retrolog.arg("epochs", 10)
    batch_size = retrolog.arg("batch_size", 32)
    seed = retrolog.arg("seed", 0)
    if TOOL == "retrolog":
        block = retrolog.checkpointing(model=net, optimizer=optimizer, scheduler=scheduler)
    else:
        block = contextlib.nullcontext()
    with block:
        for _epoch in retrolog.loop("epoch", range(epochs)):
            for _x, _y in retrolog.loop("step", BATCHES):
                retrolog.log("loss", 0.5)
            retrolog.log("val_acc", 0.9)
    retrolog.log("final_val_acc", 0.9)
elif TOOL == "flordb":
    import flordb as flor

    lr = flor.arg("lr", 2e-3)
    epochs = flor.arg("epochs", 10)
    batch_size = flor.arg("batch_size", 32)
    seed = flor.arg("seed", 0)
    for _epoch in flor.loop("epoch", range(epochs)):
        for _x, _y in flor.loop("step", BATCHES):
            flor.log("loss", 0.5)
        flor.log("val_acc", 0.9)
    flor.log("final_val_acc", 0.9)
elif TOOL == "mlflow":
    import mlflow

    lr, epochs, batch_size, seed = 2e-3, 10, 32, 0
    mlflow.start_run()
    mlflow.log_params({"lr": lr, "epochs": epochs, "batch_size": batch_size, "seed": seed})
    step = 0
    for epoch in range(epochs):
        for _x, _y in BATCHES:
            mlflow.log_metric("loss", 0.5, step=step)
            step += 1
        mlflow.log_metric("val_acc", 0.9, step=epoch)
    mlflow.log_metric("final_val_acc", 0.9)
    mlflow.end_run()
else:
    raise SystemExit(f"unknown tool {TOOL}")
