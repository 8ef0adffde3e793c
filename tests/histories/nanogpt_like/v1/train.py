"""Train the small character transformer (config by --key=value, see configurator.py)."""

import json
import math
import os
import time
from pathlib import Path

import numpy as np
import torch

import retrolog
from model import GPT, GPTConfig

# -- config ------------------------------------------------------------------------------
out_dir = "out-tiny"
eval_every = 4
eval_iters = 4
log_interval = 1
always_save_checkpoint = False
dataset = "tiny"
gradient_accumulation_steps = 3
batch_size = 8
block_size = 32
n_layer = 2
n_head = 2
n_embd = 32
dropout = 0.0
learning_rate = 3e-3
max_iters = 16
weight_decay = 0.1
beta1 = 0.9
beta2 = 0.95
decay_lr = True
warmup_iters = 2
lr_decay_iters = 16
min_lr = 3e-4
seed = 1337
config_keys = [
    k for k, v in globals().items() if not k.startswith("_") and isinstance(v, (int, float, bool, str))
]
exec(Path("configurator.py").read_text())
config = {k: globals()[k] for k in config_keys}
retrolog.args(config)
# ----------------------------------------------------------------------------------------

torch.manual_seed(seed)
torch.set_num_threads(1)
data_dir = os.path.join("data", dataset)
train_data = np.memmap(os.path.join(data_dir, "train.bin"), dtype=np.uint16, mode="r")
val_data = np.memmap(os.path.join(data_dir, "val.bin"), dtype=np.uint16, mode="r")
vocab_size = json.loads(Path(data_dir, "meta.json").read_text())["vocab_size"]


def get_batch(split):
    data = train_data if split == "train" else val_data
    ix = torch.randint(len(data) - block_size, (batch_size,))
    x = torch.stack([torch.from_numpy(data[i : i + block_size].astype(np.int64)) for i in ix])
    y = torch.stack([torch.from_numpy(data[i + 1 : i + 1 + block_size].astype(np.int64)) for i in ix])
    return x, y


model_args = dict(
    n_layer=n_layer,
    n_head=n_head,
    n_embd=n_embd,
    block_size=block_size,
    vocab_size=vocab_size,
    dropout=dropout,
)
model = GPT(GPTConfig(**model_args))
optimizer = model.configure_optimizers(weight_decay, learning_rate, (beta1, beta2))
retrolog.checkpointing(model=model, optimizer=optimizer)


@torch.no_grad()
def estimate_loss():
    out = {}
    model.eval()
    for split in ["train", "val"]:
        losses = torch.zeros(eval_iters)
        for k in range(eval_iters):
            X, Y = get_batch(split)
            _, loss = model(X, Y)
            losses[k] = loss.item()
        out[split] = losses.mean().item()
    model.train()
    return out


def get_lr(it):
    if it < warmup_iters:
        return learning_rate * (it + 1) / (warmup_iters + 1)
    if it > lr_decay_iters:
        return min_lr
    ratio = (it - warmup_iters) / (lr_decay_iters - warmup_iters)
    return min_lr + 0.5 * (1.0 + math.cos(math.pi * ratio)) * (learning_rate - min_lr)


os.makedirs(out_dir, exist_ok=True)
iter_num = 0
best_val_loss = 1e9
t0 = time.time()
for _ in retrolog.loop("iter"):
    lr = get_lr(iter_num) if decay_lr else learning_rate
    for param_group in optimizer.param_groups:
        param_group["lr"] = lr

    if iter_num % eval_every == 0:
        losses = estimate_loss()
        print(f"step {iter_num}: train loss {losses['train']:.4f}, val loss {losses['val']:.4f}")
        retrolog.log("val_loss", losses["val"])
        if losses["val"] < best_val_loss or always_save_checkpoint:
            best_val_loss = losses["val"]
            if iter_num > 0:
                checkpoint = {
                    "model": model.state_dict(),
                    "optimizer": optimizer.state_dict(),
                    "model_args": model_args,
                    "iter_num": iter_num,
                    "best_val_loss": best_val_loss,
                    "config": config,
                }
                torch.save(checkpoint, os.path.join(out_dir, "ckpt.pt"))

    for micro_step in retrolog.loop("micro", range(gradient_accumulation_steps)):
        X, Y = get_batch("train")
        logits, loss = model(X, Y)
        loss.backward()
    optimizer.step()
    optimizer.zero_grad(set_to_none=True)

    t1 = time.time()
    dt, t0 = t1 - t0, t1
    if iter_num % log_interval == 0:
        loss_value = loss.item()
        retrolog.log("loss", loss_value)
        print(f"iter {iter_num}: loss {loss_value:.4f}, time {dt * 1000:.1f}ms")
    iter_num += 1
    if iter_num > max_iters:
        break

print(f"final loss {loss_value}")
