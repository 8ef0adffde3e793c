"""Lightning and HF Trainer callbacks: record overhead, and outer replay vs re-running.

Record overhead: one process per framework (in a fresh git repository under /tmp) trains the same
small model ``--pairs`` rounds of: without a callback, with ``RetrologCallback`` (a new run each
round), with an empty callback (what the framework's hook dispatch alone costs); one thread
(``torch.set_num_threads(1)``, ``OMP_NUM_THREADS=1``), each fit from the same seeds. Reported: the
median over rounds of the ratio with/without of the ``fit``/``train`` wall time and of the
process CPU time (retrolog's background threads included; CPU time is less disturbed by other
processes on a shared machine). Checkpoints use the default policy (budget 5%).

Outer replay: one recorded run per framework; a ``retrolog.log`` is added to the epoch-end hook;
``retrolog.replay`` (fork executor, one worker) is timed cold (the fork server's start, which
imports the framework, included) and warm (again with ``force``, the server left by the cold one),
against re-running the script as a subprocess (interpreter start and imports included).

Per batch: what the callbacks' code adds to each batch apart from the framework's own hook
dispatch, in isolation (see ``per_step``).

    .venv/bin/python bench/bench_integrations.py [--pairs 7] [--json out.json]
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import statistics
import subprocess
import sys
import tempfile
import textwrap
import time
from pathlib import Path

LIGHTNING = """
import os, sys, time, json
import torch
import pytorch_lightning as pl
import retrolog
from retrolog.lightning import RetrologCallback

torch.set_num_threads(1)


class Net(pl.LightningModule):
    def __init__(self, lr=0.05):
        super().__init__()
        self.save_hyperparameters()
        self.layer = torch.nn.Sequential(torch.nn.Linear(64, 256), torch.nn.ReLU(), torch.nn.Linear(256, 1))

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
    x = torch.randn(BATCHES * 64, 64, generator=g)
    data = torch.utils.data.DataLoader(torch.utils.data.TensorDataset(x, x.sum(1, keepdim=True)), batch_size=64, shuffle=True)
    trainer = pl.Trainer(max_epochs=EPOCHS, callbacks=[RetrologCallback()] if callback is True else [pl.Callback()] if callback else [], accelerator="cpu",
                         logger=False, enable_checkpointing=False, enable_progress_bar=False,
                         enable_model_summary=False, num_sanity_val_steps=0)
    start, cpu = time.perf_counter(), time.process_time()
    trainer.fit(Net(), data)
    return time.perf_counter() - start, time.process_time() - cpu
"""

TRANSFORMERS = """
import os, sys, time, json
import torch
import retrolog
from transformers import BertConfig, BertForSequenceClassification, Trainer, TrainerCallback, TrainingArguments
from retrolog.transformers import RetrologCallback

torch.set_num_threads(1)


class Parity(torch.utils.data.Dataset):
    def __init__(self, n):
        g = torch.Generator().manual_seed(0)
        self.ids = torch.randint(0, 100, (n, 16), generator=g)
        self.labels = self.ids.sum(1) % 2

    def __len__(self):
        return len(self.labels)

    def __getitem__(self, i):
        return {"input_ids": self.ids[i], "labels": self.labels[i]}


class Probe(TrainerCallback):
    def on_epoch_end(self, args, state, control, model=None, **kwargs):
        pass  # OUTER


def fit(callback):
    config = BertConfig(vocab_size=100, hidden_size=64, num_hidden_layers=2, num_attention_heads=2, intermediate_size=128, num_labels=2)
    torch.manual_seed(0)
    args = TrainingArguments(output_dir="out", num_train_epochs=EPOCHS, per_device_train_batch_size=16, logging_steps=10,
                             save_strategy="no", report_to="none", disable_tqdm=True, use_cpu=True, seed=0)
    callbacks = [Probe(), RetrologCallback() if callback is True else TrainerCallback()] if callback else [Probe()]
    trainer = Trainer(model=BertForSequenceClassification(config), args=args, train_dataset=Parity(BATCHES * 16), callbacks=callbacks)
    start, cpu = time.perf_counter(), time.process_time()
    trainer.train()
    return time.perf_counter() - start, time.process_time() - cpu
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

PAIRS = """
results = []
for i in range({pairs}):
    without = fit(False)
    with_ = fit(True)
    retrolog.commit()
    empty = fit("empty")
    results.append((without, with_, empty))
print(json.dumps(results))
"""

ONE_RUN = """
fit(True)
"""


def _repo(root: Path, name: str, source: str) -> Path:
    repo = root / name
    repo.mkdir()
    env = dict(
        os.environ,
        GIT_AUTHOR_NAME="b",
        GIT_AUTHOR_EMAIL="b@b",
        GIT_COMMITTER_NAME="b",
        GIT_COMMITTER_EMAIL="b@b",
    )
    subprocess.run(["git", "init", "-q", "-b", "main"], cwd=repo, check=True)
    (repo / ".gitignore").write_text("out/\nlightning_logs/\n")
    (repo / "train.py").write_text(source)
    subprocess.run(["git", "add", "."], cwd=repo, check=True)
    subprocess.run(["git", "commit", "-q", "-m", "v1"], cwd=repo, check=True, env=env)
    return repo


def _python(repo: Path, script: str) -> subprocess.CompletedProcess[str]:
    env = dict(os.environ, OMP_NUM_THREADS="1", RETROLOG_PROGRESS="0")
    proc = subprocess.run(
        [sys.executable, script], cwd=repo, env=env, capture_output=True, text=True
    )
    if proc.returncode:
        raise RuntimeError(proc.stdout + proc.stderr)
    return proc


def overhead(root: Path, name: str, template: str, pairs: int, epochs: int, batches: int) -> dict:
    head = f"EPOCHS = {epochs}\nBATCHES = {batches}\n"
    source = textwrap.dedent(template).replace(
        "torch.set_num_threads(1)\n", "torch.set_num_threads(1)\n" + head, 1
    )
    repo = _repo(root, f"{name}-overhead", source + PAIRS.format(pairs=pairs))
    pairs_seen = json.loads(_python(repo, "train.py").stdout.strip().splitlines()[-1])
    wall = [with_[0] / without[0] for without, with_, _ in pairs_seen]
    cpu = [with_[1] / without[1] for without, with_, _ in pairs_seen]
    empty_cpu = [empty[1] / without[1] for without, _, empty in pairs_seen]
    return {
        "runs": pairs_seen,
        "median_ratio_wall": statistics.median(wall),
        "median_ratio_cpu": statistics.median(cpu),
        "median_ratio_cpu_empty_callback": statistics.median(empty_cpu),
        "median_without_s": statistics.median(p[0][0] for p in pairs_seen),
        "median_with_s": statistics.median(p[1][0] for p in pairs_seen),
    }


def outer_replay(root: Path, name: str, template: str, epochs: int, batches: int) -> dict:
    head = f"EPOCHS = {epochs}\nBATCHES = {batches}\n"
    source = textwrap.dedent(template).replace(
        "torch.set_num_threads(1)\n", "torch.set_num_threads(1)\n" + head, 1
    )
    repo = _repo(root, f"{name}-replay", source + ONE_RUN)
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


PER_STEP = """
import json, time, torch, retrolog
from retrolog.integrations.driver import LoopDriver
torch.set_num_threads(1)
driver = LoopDriver("bench")
driver.start()
loss = torch.tensor(0.5)
steps = 20000
driver.start_epoch(0)
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
    return json.loads(_python(repo, "train.py").stdout.strip().splitlines()[-1])


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--pairs", type=int, default=7)
    parser.add_argument("--json")
    opts = parser.parse_args()
    os.environ["OMP_NUM_THREADS"] = "1"
    out: dict = {
        "machine": f"{platform.node()} {os.cpu_count()} cores",
        "date": time.strftime("%Y-%m-%d"),
    }
    with tempfile.TemporaryDirectory(prefix="bench-integrations-") as tmp:
        root = Path(tmp)
        out["per_step"] = per_step(root)
        print("per batch:", json.dumps(out["per_step"]), flush=True)
        # (epochs, batches per epoch): for the overhead rounds, and for the replayed run
        for name, template, small, large in (
            ("lightning", LIGHTNING, (4, 500), (4, 2500)),
            ("transformers", TRANSFORMERS, (3, 80), (3, 400)),
        ):
            out[name] = {"overhead": overhead(root, name, template, opts.pairs, *small)}
            out[name]["outer_replay"] = outer_replay(root, name, template, *large)
            o, r = out[name]["overhead"], out[name]["outer_replay"]
            print(
                f"{name}: record overhead median {100 * (o['median_ratio_wall'] - 1):+.2f}% wall, "
                f"{100 * (o['median_ratio_cpu'] - 1):+.2f}% CPU (an empty callback: "
                f"{100 * (o['median_ratio_cpu_empty_callback'] - 1):+.2f}% CPU) "
                f"({o['median_without_s']:.2f}s -> {o['median_with_s']:.2f}s, {opts.pairs} pairs); "
                f"outer replay {r['replay_cold_s']:.2f}s cold, {r['replay_warm_s']:.2f}s warm vs "
                f"re-run {r['rerun_s']:.2f}s ({r['speedup_cold']:.1f}x, {r['speedup_warm']:.1f}x)",
                flush=True,
            )
    if opts.json:
        Path(opts.json).write_text(json.dumps(out, indent=2))


if __name__ == "__main__":
    main()
