"""Training scripts shared by the replay tests (small real torch models on synthetic data)."""

TRAIN = """\
import torch
from torch import nn

import retrolog

torch.set_num_threads(1)
lr = retrolog.arg("lr", 0.01)
seed = retrolog.arg("seed", 0)
epochs = retrolog.arg("epochs", 4)
torch.manual_seed(seed)
X = torch.randn(200, 8)
y = (X[:, 0] + 0.5 * X[:, 1] > 0).long()
batches = list(zip(X.split(20), y.split(20)))
net = nn.Sequential(nn.Linear(8, 16), nn.ReLU(), nn.Dropout(0.3), nn.Linear(16, 2))
opt = torch.optim.Adam(net.parameters(), lr=lr)
sched = torch.optim.lr_scheduler.StepLR(opt, step_size=2, gamma=0.5)
# PREFIX
with retrolog.checkpointing(model=net, optimizer=opt, scheduler=sched):
    for epoch in retrolog.loop("epoch", range(epochs)):
        net.train()
        order = torch.randperm(len(batches)).tolist()
        for step in retrolog.loop("step", order):
            xb, yb = batches[step]
            opt.zero_grad()
            loss = nn.functional.cross_entropy(net(xb), yb)
            loss.backward()
            # INNER
            opt.step()
            retrolog.log("loss", loss.item())
        sched.step()
        # OUTER
        retrolog.log("lr_now", sched.get_last_lr()[0])
# SUFFIX
retrolog.log("done", True)
"""

NORM = "sum(p.norm().item() for p in net.parameters())"
STATEMENT_AT = {
    "init_norm": ("# PREFIX", f'retrolog.log("init_norm", {NORM})'),
    "grad_norm": (
        "            # INNER",
        '            retrolog.log("grad_norm", sum(p.grad.norm().item() for p in net.parameters()))',
    ),
    "weight_norm": ("        # OUTER", f'        retrolog.log("weight_norm", {NORM})'),
    "final_norm": ("# SUFFIX", f'retrolog.log("final_norm", {NORM})'),
}
STATEMENTS = tuple(STATEMENT_AT)
ARG_SETS = (("lr=0.01", "seed=0"), ("lr=0.02", "seed=1"))


def with_statements(source: str, *names: str) -> str:
    """``source`` with the new statements of ``names`` added after their marker comments."""
    for name in names:
        marker, statement = STATEMENT_AT[name]
        source = source.replace(marker + "\n", marker + "\n" + statement + "\n")
    return source
