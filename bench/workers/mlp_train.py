"""Whole-process overhead workload: a 658k-parameter MLP, 10 epochs x 200 steps, Adam, CPU.

Synthetic data from a fixed seed; one torch thread. ``bench/bench_process.py`` runs it as is
(recorded, with checkpointing) and with retrolog stripped by an AST rewrite (bare).
"""

import torch
from torch import nn

import retrolog

torch.set_num_threads(1)
lr = retrolog.arg("lr", 1e-3)
epochs = retrolog.arg("epochs", 10)
steps = retrolog.arg("steps", 200)
batch = 64
torch.manual_seed(0)
X = torch.randn(steps * batch, 512)
y = (X @ torch.randn(512, 10)).argmax(1)
net = nn.Sequential(
    nn.Linear(512, 1024), nn.ReLU(), nn.Linear(1024, 128), nn.ReLU(), nn.Linear(128, 10)
)
opt = torch.optim.Adam(net.parameters(), lr=lr)
with retrolog.checkpointing(model=net, optimizer=opt):
    for _epoch in retrolog.loop("epoch", range(epochs)):
        for step in retrolog.loop("step", range(steps)):
            xb, yb = X[step * batch : (step + 1) * batch], y[step * batch : (step + 1) * batch]
            opt.zero_grad()
            loss = nn.functional.cross_entropy(net(xb), yb)
            loss.backward()
            opt.step()
            retrolog.log("loss", loss.item())
        retrolog.log("epoch_loss", loss.item())
