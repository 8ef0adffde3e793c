"""The reference workload (examples/train_digits.py) instrumented with MLflow instead.

Same data, model, seed and training code. MLflow has no loop construct: the per-step loss is
``log_metric("loss", value, step=global_step)`` and the epoch metric uses ``step=epoch``. The
tracking URI is MLflow's default (``sqlite:///mlflow.db`` in the working directory since
MLflow 3) unless MLFLOW_TRACKING_URI says otherwise.
"""

import random

import mlflow
import numpy as np
import torch
from sklearn.datasets import load_digits
from torch import nn

torch.set_num_threads(1)

lr, epochs, batch_size, seed = 2e-3, 10, 32, 0

run = mlflow.start_run()
mlflow.log_params({"lr": lr, "epochs": epochs, "batch_size": batch_size, "seed": seed})

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

global_step = 0
for epoch in range(epochs):
    net.train()
    for x, y in loader:
        optimizer.zero_grad()
        loss = loss_fn(net(x), y)
        loss.backward()
        optimizer.step()
        mlflow.log_metric("loss", loss.item(), step=global_step)
        global_step += 1
    scheduler.step()
    net.eval()
    with torch.no_grad():
        predictions = net(images[val_idx]).argmax(dim=1)
    mlflow.log_metric("val_acc", (predictions == labels[val_idx]).float().mean().item(), step=epoch)

mlflow.log_metric("final_val_acc", (predictions == labels[val_idx]).float().mean().item())
mlflow.end_run()
