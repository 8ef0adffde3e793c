"""Lightning and HF Trainer callbacks: record overhead, and outer replay vs re-running.

Record overhead is measured two ways, on a ~30 s training of few-ms batches (``SIZES["fit"]``),
one torch thread, checkpoints under the default policy (budget 5%):

- **Attributed** (``attribute``): one tracked fit in which the extra work is measured where it
  happens: the wall time inside every method of the callback on the training thread (Lightning's
  wrapped ``self.log`` included), the framework's dispatch of those calls (its cost per call to
  an empty callback, measured in a loop, times the calls counted), the CPU time of retrolog's
  threads (store, flusher, checkpoint writer) and of the git processes it starts. Their sum as a
  share of the fit without it. Precise (it does not subtract two noisy wall times) but blind to
  indirect costs (caches the training finds colder, GIL hand-overs); the timers' own cost (~1 us
  a call) counts against retrolog. Also run at a ~1 ms batch (``SIZES["toy"]``).
- **Paired** (``overhead``): whole processes, bare (no callback) and tracked, started together,
  each pinned to its own core, malloc's tunables pinned, cores swapped every pair (the method of
  bench_process.py, whose docstring says why); the median over pairs of the tracked/bare ratio
  of the fit's wall time (and of the process's). Sees everything, indirect costs included, but on
  this shared 2-core VM a pair spreads by several percent. Run twice (``VARIANTS``): the callback
  as installed, and with checkpoints off, so the checkpoints' share (a cost the checkpoint
  policy bounds by its own budget) shows apart from recording's.

Outer replay: one recorded run per framework (the fit size); a ``retrolog.log`` is added to the
epoch-end hook; ``retrolog.replay`` (fork executor, one worker) is timed cold (the fork server's
start, which imports the framework, included) and warm (again with ``force``, the server left by
the cold one), against re-running the script as a subprocess (interpreter start and imports
included).

Per batch: what the callbacks' shared code (``LoopDriver``) adds to each batch, in isolation
(``per_step``).

    .venv/bin/python bench/bench_integrations.py [--pairs 5] [--only lightning] [--json out.json]
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import tempfile
import textwrap
import time
from pathlib import Path
from typing import Any

import common as C
from bench_process import MALLOC_PINNED

LIGHTNING = """
import os, sys, time, json
import torch
import pytorch_lightning as pl
import retrolog
from retrolog.lightning import RetrologCallback

torch.set_num_threads(1)
TIMED = lambda callback: callback  # noqa: E731  (bench: the attribution run times its hooks)


class Net(pl.LightningModule):
    def __init__(self, lr=0.05):
        super().__init__()
        self.save_hyperparameters()
        self.layer = torch.nn.Sequential(torch.nn.Linear(128, HIDDEN), torch.nn.ReLU(), torch.nn.Linear(HIDDEN, HIDDEN),
                                         torch.nn.ReLU(), torch.nn.Linear(HIDDEN, 1))

    def forward(self, x):
        return self.layer(x)

    def training_step(self, batch, batch_idx):
        x, y = batch
        loss = torch.nn.functional.mse_loss(self(x), y)
        self.log("loss", loss)
        return loss

    def on_train_epoch_end(self):
        pass  # OUTER

    def configure_optimizers(self):
        return torch.optim.SGD(self.parameters(), lr=self.hparams.lr)


def fit(callback):
    pl.seed_everything(0, verbose=False)
    g = torch.Generator().manual_seed(0)
    x = torch.randn(BATCHES * 64, 128, generator=g)
    data = torch.utils.data.DataLoader(torch.utils.data.TensorDataset(x, x.sum(1, keepdim=True)), batch_size=64, shuffle=True)
    trainer = pl.Trainer(max_epochs=EPOCHS, callbacks=[TIMED(RetrologCallback())] if callback else [], accelerator="cpu",
                         logger=False, enable_checkpointing=False, enable_progress_bar=False,
                         enable_model_summary=False, num_sanity_val_steps=0)
    start, cpu = time.perf_counter(), time.process_time()
    trainer.fit(Net(), data)
    return time.perf_counter() - start, time.process_time() - cpu


def dispatch_per_call(n=20000):
    # what dispatching one hook to one more (empty) callback costs in Lightning
    from pytorch_lightning.trainer.call import _call_callback_hooks

    trainer = pl.Trainer(logger=False, enable_checkpointing=False, enable_progress_bar=False,
                         enable_model_summary=False, accelerator="cpu")
    seconds = []
    for callbacks in ([], [pl.Callback()]):
        trainer.callbacks = callbacks
        start = time.perf_counter()
        for i in range(n):
            _call_callback_hooks(trainer, "on_train_batch_end", None, None, i)
        seconds.append(time.perf_counter() - start)
    return (seconds[1] - seconds[0]) / n
"""

TRANSFORMERS = """
import os, sys, time, json
import torch
import retrolog
from transformers import BertConfig, BertForSequenceClassification, Trainer, TrainerCallback, TrainingArguments
from retrolog.transformers import RetrologCallback

torch.set_num_threads(1)
TIMED = lambda callback: callback  # noqa: E731  (bench: the attribution run times its hooks)


class Parity(torch.utils.data.Dataset):
    def __init__(self, n):
        g = torch.Generator().manual_seed(0)
        self.ids = torch.randint(0, 100, (n, SEQUENCE), generator=g)
        self.labels = self.ids.sum(1) % 2

    def __len__(self):
        return len(self.labels)

    def __getitem__(self, i):
        return {"input_ids": self.ids[i], "labels": self.labels[i]}


class Probe(TrainerCallback):
    def on_epoch_end(self, args, state, control, model=None, **kwargs):
        pass  # OUTER


def fit(callback):
    config = BertConfig(vocab_size=100, hidden_size=HIDDEN, num_hidden_layers=2, num_attention_heads=2, intermediate_size=2 * HIDDEN, num_labels=2)
    torch.manual_seed(0)
    args = TrainingArguments(output_dir="out", num_train_epochs=EPOCHS, per_device_train_batch_size=BATCH, logging_steps=10,
                             save_strategy="no", report_to="none", disable_tqdm=True, use_cpu=True, seed=0)
    callbacks = [Probe(), TIMED(RetrologCallback())] if callback else [Probe()]
    trainer = Trainer(model=BertForSequenceClassification(config), args=args, train_dataset=Parity(BATCHES * BATCH), callbacks=callbacks)
    start, cpu = time.perf_counter(), time.process_time()
    trainer.train()
    return time.perf_counter() - start, time.process_time() - cpu


def dispatch_per_call(n=20000):
    # what dispatching one event to one more (empty) callback costs in the Trainer
    from transformers import TrainerControl, TrainerState
    from transformers.trainer_callback import CallbackHandler

    args = TrainingArguments(output_dir="out", report_to="none", use_cpu=True)
    state, control = TrainerState(), TrainerControl()
    seconds = []
    for callbacks in ([Probe()], [Probe(), TrainerCallback()]):
        handler = CallbackHandler(callbacks, None, None, None, None)
        start = time.perf_counter()
        for i in range(n):
            handler.call_event("on_step_begin", args, state, control)
        seconds.append(time.perf_counter() - start)
    return (seconds[1] - seconds[0]) / n
"""

OUTER = {
    "lightning": (
        "        pass  # OUTER",
        '        retrolog.log("w_norm", float(self.layer[0].weight.norm()))',
    ),
    "transformers": (
        "        pass  # OUTER",
        '        retrolog.log("w_norm", float(model.classifier.weight.norm()))',
    ),
}

ONE_FIT = """
wall, cpu = fit(os.environ["BENCH_MODE"] == "tracked")
with open(os.environ["BENCH_OUT"], "w") as out:
    json.dump({"fit_wall_s": wall, "fit_cpu_s": cpu}, out)
"""

# Where the tracked fit's extra time goes, measured as work rather than as a difference of two
# noisy wall times: the wall time spent inside the callback's methods on the training thread
# (every hook, and Lightning's wrapped ``self.log``), the CPU time of retrolog's threads and of
# the git processes it starts during the fit, and what the framework's dispatch of those hook
# calls costs (per call, measured on an empty callback, times the calls counted).
ATTRIBUTE = """
import resource, threading

SPENT = {}  # hook name -> [calls, seconds]


def timed(callback):
    names = [n for n in dir(type(callback)) if n.startswith("on_") or n in ("setup", "teardown", "_seen")]
    for name in names:
        method = getattr(callback, name)
        if not callable(method):
            continue
        spent = SPENT.setdefault(name, [0, 0.0])

        def wrapper(*a, __method=method, __spent=spent, **k):
            start = time.perf_counter()
            try:
                return __method(*a, **k)
            finally:
                __spent[1] += time.perf_counter() - start
                __spent[0] += 1

        object.__setattr__(callback, name, wrapper)
    return callback


def thread_cpu():
    tick = os.sysconf("SC_CLK_TCK")
    names = {t.native_id: t.name for t in threading.enumerate()}
    out = {}
    for tid in os.listdir("/proc/self/task"):
        fields = open(f"/proc/self/task/{tid}/stat").read().rsplit(")", 1)[1].split()
        name = names.get(int(tid), "other")
        out[name] = out.get(name, 0.0) + (int(fields[11]) + int(fields[12])) / tick
    return out


def children_cpu():
    usage = resource.getrusage(resource.RUSAGE_CHILDREN)
    return usage.ru_utime + usage.ru_stime


TIMED = timed
before, children = thread_cpu(), children_cpu()
wall, cpu = fit(True)
after = thread_cpu()
background = {k: v - before.get(k, 0.0) for k, v in after.items() if k.startswith("retrolog")}
fit_children = children_cpu() - children
start = time.perf_counter()
retrolog.commit()
commit_s = time.perf_counter() - start
with open(os.environ["BENCH_OUT"], "w") as out:
    json.dump({"fit_wall_s": wall, "hooks": SPENT, "background_cpu_s": background,
               "git_cpu_s": fit_children, "commit_s": commit_s,
               "dispatch_per_call_s": dispatch_per_call()}, out)
"""

ONE_RUN = """
fit(True)
"""


def _repo(root: Path, name: str, source: str) -> Path:
    return C.scratch_repo(
        name, {"train.py": source, ".gitignore": "out/\nlightning_logs/\n"}, root / name
    )


def _source(template: str, size: dict[str, int], tail: str) -> str:
    """The template with its sizes as constants (``BENCH_<NAME>`` in the environment overrides
    one: the warm-up runs a few batches) and ``tail`` appended."""
    head = "".join(f'{k} = int(os.environ.get("BENCH_{k}", {v}))\n' for k, v in size.items())
    marker = "torch.set_num_threads(1)\n"
    return textwrap.dedent(template).replace(marker, marker + head, 1) + tail


def _run(repo: Path, env: dict[str, str], log: str, core: int | None = None) -> dict[str, Any]:
    """Run ``train.py`` in ``repo`` (pinned to ``core``); its JSON result and process times."""
    out = repo.parent / f"{repo.name}-{time.monotonic_ns()}.json"
    cmd = [*C.pinned(core), sys.executable, "train.py"]
    wall, cpu = C.run_timed(cmd, repo, {**env, "BENCH_OUT": str(out)}, repo.parent / log)
    return {"process_wall_s": wall, "process_cpu_s": cpu, **json.loads(out.read_text())}


WARM_UP = {"BENCH_EPOCHS": "1", "BENCH_BATCHES": "8"}  # the store exists, bytecode is cached

# The tracked process's settings in the paired runs: the callback as installed (epoch-end
# checkpoints under the default policy, budget 5%), and without checkpoints, which separates
# what recording costs from what the checkpoints that make replay fast cost.
VARIANTS: dict[str, dict[str, str]] = {
    "checkpoints": {},
    "no checkpoints": {"RETROLOG_CHECKPOINT_BUDGET": "0"},
}


def overhead(
    root: Path,
    name: str,
    template: str,
    pairs: int,
    size: dict[str, int],
    variant: str = "checkpoints",
) -> dict:
    """Concurrent pinned pairs of whole processes, bare (no callback) and tracked
    (``RetrologCallback``), as bench_process does (its docstring says why). ``variant`` is one of
    VARIANTS: the tracked process's settings."""
    repos = {
        mode: _repo(root, f"{name}-{variant}-{mode}", _source(template, size, ONE_FIT))
        for mode in C.PAIR
    }
    env = C.tool_env(MALLOC_PINNED)
    cores = C.pair_cores()

    def one(mode: str, core: int | None, extra: dict[str, str] | None = None) -> dict[str, Any]:
        settings = VARIANTS[variant] if mode == "tracked" else {}
        run_env = {**env, **settings, "BENCH_MODE": mode, **(extra or {})}
        return _run(repos[mode], run_env, f"{name}.log", core)

    for mode in C.PAIR:
        one(mode, None, WARM_UP)
    seen: list[dict[str, dict[str, float]]] = []
    for pair in range(pairs):
        p = C.run_pair(one, pair, cores)
        seen.append(p)
        print(
            f"  {name} ({variant}) pair {pair + 1}: fit {p['bare']['fit_wall_s']:.2f} s bare, "
            f"{p['tracked']['fit_wall_s']:.2f} s tracked "
            f"({100 * (p['tracked']['fit_wall_s'] / p['bare']['fit_wall_s'] - 1):+.2f}%)",
            flush=True,
        )

    def pct(key: str) -> list[float]:
        return [100 * (p["tracked"][key] / p["bare"][key] - 1) for p in seen]

    return {
        "variant": variant,
        "mode": "concurrent" if cores else "sequential",
        "pairs": seen,
        **{
            f"overhead_pct_{key[:-2]}": {
                "median": statistics.median(pct(key)),
                "range": [min(pct(key)), max(pct(key))],
            }
            for key in ("fit_wall_s", "fit_cpu_s", "process_wall_s", "process_cpu_s")
        },
        "median_bare_fit_s": statistics.median(p["bare"]["fit_wall_s"] for p in seen),
        "median_tracked_fit_s": statistics.median(p["tracked"]["fit_wall_s"] for p in seen),
    }


def attribute(root: Path, name: str, template: str, size: dict[str, int], label: str) -> dict:
    """One tracked fit whose extra work is measured where it happens (ATTRIBUTE): the callback's
    methods on the training thread, split into the per-batch hooks and the rest, retrolog's
    threads, the git processes, the framework's dispatch of the hook calls; each as a share of
    the fit without that work."""
    repo = _repo(root, f"{name}-attributed-{label}", _source(template, size, ATTRIBUTE))
    env = C.tool_env(MALLOC_PINNED)
    _run(repo, {**env, **WARM_UP}, f"{name}.log")
    result = _run(repo, env, f"{name}.log")
    batches = size["EPOCHS"] * size["BATCHES"]
    per_batch = {k: v for k, v in result["hooks"].items() if v[0] >= batches}
    hooks_s = sum(v[1] for v in result["hooks"].values())
    per_batch_s = sum(v[1] for v in per_batch.values())
    calls = sum(v[0] for v in result["hooks"].values())
    dispatch_s = calls * max(result["dispatch_per_call_s"], 0.0)
    background_s = sum(result["background_cpu_s"].values())
    extra_s = hooks_s + dispatch_s + background_s + result["git_cpu_s"]
    training_s = result["fit_wall_s"] - extra_s
    return {
        **result,
        "batches": batches,
        "per_batch_hooks": sorted(per_batch),
        "hooks_s": hooks_s,
        "per_batch_us": 1e6 * (per_batch_s + dispatch_s) / batches,
        "once_s": hooks_s - per_batch_s,
        "background_s": background_s,
        "dispatch_s": dispatch_s,
        "extra_s": extra_s,
        "overhead_pct": 100 * extra_s / training_s,
        "training_s": training_s,
    }


def outer_replay(root: Path, name: str, template: str, size: dict[str, int]) -> dict:
    repo = _repo(root, f"{name}-replay", _source(template, size, ONE_RUN))
    start = time.perf_counter()
    _python(repo, "train.py")
    rerun = time.perf_counter() - start
    old, new = OUTER[name]
    (repo / "train.py").write_text((repo / "train.py").read_text().replace(old, new))
    from retrolog.replaying import replay

    timings = {}
    for kind, force in (("cold", False), ("warm", True)):  # warm: the fork server of the cold one
        start = time.perf_counter()
        report = replay(["w_norm"], workers=1, project=repo, force=force)
        timings[kind] = time.perf_counter() - start
        run = report.runs[0]
        assert run.level == "outer" and run.fidelity in ("reproduced", "unchecked"), (
            report.summary()
        )
    return {
        "rerun_s": rerun,
        "replay_cold_s": timings["cold"],
        "replay_warm_s": timings["warm"],
        "speedup_cold": rerun / timings["cold"],
        "speedup_warm": rerun / timings["warm"],
        "fallbacks": run.fallbacks,
    }


def _python(repo: Path, script: str) -> subprocess.CompletedProcess[str]:
    env = dict(os.environ, OMP_NUM_THREADS="1", RETROLOG_PROGRESS="0")
    proc = subprocess.run(
        [sys.executable, script], cwd=repo, env=env, capture_output=True, text=True
    )
    if proc.returncode:
        raise RuntimeError(proc.stdout + proc.stderr)
    return proc


PER_STEP = """
import gc, json, time, torch, retrolog
from retrolog.integrations.driver import LoopDriver
torch.set_num_threads(1)
driver = LoopDriver("bench")
driver.start()
loss = torch.tensor(0.5)
steps = 20000
driver.start_epoch(0)
gc.collect()  # the first full collection after importing torch (~0.1 s) is not a per-batch cost
cpu0, wall0 = time.process_time(), time.perf_counter()
for i in range(steps):
    driver.start_step(i)
    driver.log_tensor("loss", loss)
driver.end_step_loop()
driver.end_epoch()
cpu1, wall1 = time.process_time(), time.perf_counter()
retrolog.commit()
cpu2 = time.process_time()
print(json.dumps({"steps": steps, "training_thread_wall_us": 1e6 * (wall1 - wall0) / steps,
                  "process_cpu_us": 1e6 * (cpu1 - cpu0) / steps,
                  "with_storing_cpu_us": 1e6 * (cpu2 - cpu0) / steps}))
"""


def per_step(root: Path) -> dict:
    """What the callbacks add per batch, apart from the framework: open the step's context and
    record one logged tensor (``LoopDriver``, the same code both callbacks call), 20,000 times in
    one run; the store's work for those rows at the run's end included in the last figure."""
    repo = _repo(root, "per-step", PER_STEP)
    _python(repo, "train.py")  # warm-up: the store exists (its creation is not per batch)
    return json.loads(_python(repo, "train.py").stdout.strip().splitlines()[-1])


# Sizes (template constants). "fit": a ~30 s training of a few-ms batch (Lightning: an MLP
# 128-1024-1024-1, batches of 64; HF: BERT of hidden 128, 2 layers, 32 sequences of 32 tokens),
# for the overhead pairs, the attribution and the replayed run; "toy": the same code at a ~1 ms
# batch, attributed only, to show where per-batch costs stop being negligible.
SIZES = {
    "lightning": {
        "fit": {"EPOCHS": 4, "BATCHES": 900, "HIDDEN": 1024},
        "toy": {"EPOCHS": 4, "BATCHES": 500, "HIDDEN": 64},
    },
    "transformers": {
        "fit": {"EPOCHS": 4, "BATCHES": 180, "HIDDEN": 128, "BATCH": 32, "SEQUENCE": 32},
        "toy": {"EPOCHS": 3, "BATCHES": 80, "HIDDEN": 64, "BATCH": 16, "SEQUENCE": 16},
    },
}
TEMPLATES = {"lightning": LIGHTNING, "transformers": TRANSFORMERS}


def _report_attribution(name: str, size: str, a: dict[str, Any]) -> None:
    print(
        f"{name} ({size}): {a['overhead_pct']:+.2f}% attributed ({a['extra_s'] * 1e3:.0f} ms of "
        f"{a['training_s']:.2f} s: hooks {a['hooks_s'] * 1e3:.0f} ms, of which once "
        f"{a['once_s'] * 1e3:.0f} ms; dispatch {a['dispatch_s'] * 1e3:.0f} ms; retrolog's threads "
        f"{a['background_s'] * 1e3:.0f} ms CPU; git {a['git_cpu_s'] * 1e3:.0f} ms CPU); "
        f"{a['per_batch_us']:.1f} us per batch; commit after the fit {a['commit_s'] * 1e3:.0f} ms",
        flush=True,
    )


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--pairs", type=int, default=5)
    parser.add_argument("--only", choices=sorted(SIZES))
    parser.add_argument("--overhead-only", action="store_true")
    parser.add_argument("--json")
    opts = parser.parse_args()
    os.environ["OMP_NUM_THREADS"] = "1"
    out: dict = {"machine": C.machine(), "code": C.code_state(), "started": time.time()}
    with tempfile.TemporaryDirectory(prefix="bench-integrations-") as tmp:
        root = Path(tmp)
        if not opts.overhead_only:
            out["per_step"] = per_step(root)
            print("per batch:", json.dumps(out["per_step"]), flush=True)
        for name, sizes in SIZES.items():
            if opts.only and name != opts.only:
                continue
            template = TEMPLATES[name]
            result: dict[str, Any] = out.setdefault(name, {})
            for size in ("toy", "fit"):
                result[f"attributed_{size}"] = attribute(root, name, template, sizes[size], size)
                _report_attribution(name, size, result[f"attributed_{size}"])
            for variant in VARIANTS:
                o = overhead(root, name, template, opts.pairs, sizes["fit"], variant)
                result[f"overhead ({variant})"] = o
                fit, process = o["overhead_pct_fit_wall"], o["overhead_pct_process_wall"]
                print(
                    f"{name} ({variant}): paired (median of {opts.pairs} {o['mode']} pairs) fit "
                    f"{fit['median']:+.2f}% wall ({fit['range'][0]:+.1f}..{fit['range'][1]:+.1f})"
                    f", {o['overhead_pct_fit_cpu']['median']:+.2f}% CPU; whole process "
                    f"{process['median']:+.2f}% wall ({o['median_bare_fit_s']:.2f}s fit bare)",
                    flush=True,
                )
            if opts.overhead_only:
                continue
            r = result["outer_replay"] = outer_replay(root, name, template, sizes["fit"])
            print(
                f"{name}: outer replay {r['replay_cold_s']:.2f}s cold, {r['replay_warm_s']:.2f}s "
                f"warm vs re-run {r['rerun_s']:.2f}s ({r['speedup_cold']:.1f}x, "
                f"{r['speedup_warm']:.1f}x)",
                flush=True,
            )
    path = C.save("integrations", out)
    print(f"saved {path}")
    if opts.json:
        Path(opts.json).write_text(json.dumps(out, indent=2))


if __name__ == "__main__":
    main()
