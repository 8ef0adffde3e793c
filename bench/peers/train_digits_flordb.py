"""The reference workload (examples/train_digits.py) instrumented with flordb 4.0.1 instead.

Same data, model, seed and training code; ``flor.arg``/``flor.loop``/``flor.log`` where the
reference has ``retrolog.arg``/``loop``/``log``. No ``flor.checkpointing`` block: in flordb 4 it
is retired (a no-op that prints a notice; flordb copies files the script ``torch.save``s instead).
"""

import random

import flordb as flor
import numpy as np
import torch
from sklearn.datasets import load_digits
from torch import nn

torch.set_num_threads(1)

lr = flor.arg("lr", 2e-3)
epochs = flor.arg("epochs", 10)
batch_size = flor.arg("batch_size", 32)
seed = flor.arg("seed", 0)

random.seed(seed)
np.random.seed(seed)
torch.manual_seed(seed)

digits = load_digits()
images = torch.tensor(digits.images, dtype=torch.float32).unsqueeze(1) / 16.0
labels = torch.tensor(digits.target, dtype=torch.long)
order = torch.randperm(len(labels))
train_idx, val_idx = order[:1400], order[1400:]
train_set = torch.utils.data.TensorDataset(images[train_idx], labels[train_idx])
loader = torch.utils.data.DataLoader(train_set, batch_size=batch_size, shuffle=True)

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
optimizer = torch.optim.Adam(net.parameters(), lr=lr)
scheduler = torch.optim.lr_scheduler.StepLR(optimizer, step_size=4, gamma=0.5)
loss_fn = nn.CrossEntropyLoss()

for _epoch in flor.loop("epoch", range(epochs)):
    net.train()
    for x, y in flor.loop("step", loader):
        optimizer.zero_grad()
        loss = loss_fn(net(x), y)
        loss.backward()
        optimizer.step()
        flor.log("loss", loss.item())
    scheduler.step()
    net.eval()
    with torch.no_grad():
        predictions = net(images[val_idx]).argmax(dim=1)
    flor.log("val_acc", (predictions == labels[val_idx]).float().mean().item())

flor.log("final_val_acc", (predictions == labels[val_idx]).float().mean().item())
