"""A synthetic 1,000-line training script in two versions, for the speed target.

``make_pair()`` returns (new_source, old_source, line, expected_anchor): the new version renames
a few variables, reorders two helpers, adds a helper and a config field, and holds a new
``retrolog.log`` statement in the inner training loop; the old version is the same program
before those edits.  Deterministic (seeded), so every run times the same files.
"""

from __future__ import annotations

import random

HEADER = '''"""Synthetic training script ({variant})."""

import argparse
import math
import os
import random

import numpy as np
import torch
import torch.nn as nn
import torch.nn.functional as F

import retrolog

'''


def _helper(i: int, rng: random.Random, variant: str) -> list[str]:
    """A helper function of 12 to 20 lines with loops, branches and arithmetic."""
    name = f"helper_{i}"
    arg = "values" if variant == "old" or i % 7 else "items"
    lines = [f"def {name}({arg}, scale={rng.randint(1, 9)}):", f'    """Helper number {i}."""']
    lines.append("    total = 0.0")
    lines.append(f"    for idx, value in enumerate({arg}):")
    lines.append(f"        if idx % {rng.randint(2, 5)} == 0:")
    lines.append(f"            total += value * scale + {rng.randint(0, 99)}")
    lines.append("        else:")
    lines.append(f"            total -= math.sqrt(abs(value)) / {rng.randint(1, 9)}")
    for k in range(rng.randint(3, 9)):
        op = rng.choice(["+", "-", "*"])
        lines.append(f"    total = total {op} {rng.randint(1, 50)} * {k + 1}")
    lines.append(f"    # helper {i} done")
    lines.append("    return total")
    lines.append("")
    lines.append("")
    return lines


def _model(variant: str) -> list[str]:
    lines = ["class Net(nn.Module):", '    """A small convolutional network."""', ""]
    lines.append("    def __init__(self, channels=32, classes=10):")
    lines.append("        super().__init__()")
    for i in range(12):
        lines.append(f"        self.conv{i} = nn.Conv2d(channels, channels, 3, padding=1)")
        lines.append(f"        self.bn{i} = nn.BatchNorm2d(channels)")
    lines.append("        self.head = nn.Linear(channels, classes)")
    lines.append("")
    lines.append("    def forward(self, x):")
    for i in range(12):
        lines.append(f"        x = F.relu(self.bn{i}(self.conv{i}(x)))")
    lines.append("        x = x.mean(dim=(2, 3))")
    lines.append("        return self.head(x)")
    lines.append("")
    lines.append("")
    return lines


def _train(variant: str) -> tuple[list[str], int]:
    model = "model" if variant == "new" else "net"
    out = "out" if variant == "new" else "output"
    lines = [
        f"def train({model}, loader, optimizer, scheduler, args):",
        '    """Train for args.epochs epochs."""',
        f"    {model}.train()",
        "    step = 0",
        "    for epoch in range(args.epochs):",
        "        running = 0.0",
        "        for batch_idx, (data, target) in enumerate(loader):",
        "            data, target = data.to(args.device), target.to(args.device)",
        "            optimizer.zero_grad()",
        f"            {out} = {model}(data)",
        f"            loss = F.cross_entropy({out}, target)",
        "            loss.backward()",
    ]
    target_line = -1
    if variant == "new":
        lines.append(
            '            retrolog.log("grad_norm", helper_3([p.grad.norm() for p in model.parameters()]))'
        )
        target_line = len(lines)
    lines += [
        "            optimizer.step()",
        "            running += loss.item()",
        "            step += 1",
        "            if batch_idx % args.log_interval == 0:",
        "                print(f'epoch {epoch} step {step} loss {loss.item():.4f}')",
        "        scheduler.step()",
        "        print('epoch', epoch, running / len(loader))",
        "",
        "",
    ]
    return lines, target_line


def make_pair(seed: int = 7) -> tuple[str, str, int, str]:
    """Build the two versions; returns (new, old, target line, expected anchor text)."""
    files = {}
    target = -1
    for variant in ("old", "new"):
        rng = random.Random(seed)
        lines = HEADER.format(variant=variant).splitlines()
        helpers = [_helper(i, rng, variant) for i in range(52)]
        if variant == "new":
            helpers[10], helpers[11] = helpers[11], helpers[10]
            helpers.append(_helper(99, random.Random(99), variant))
        for h in helpers[:30]:
            lines += h
        lines += _model(variant)
        offset = len(lines)
        train, t = _train(variant)
        if t > 0:
            target = offset + t
        lines += train
        for h in helpers[30:]:
            lines += h
        lines += [
            "def main():",
            "    parser = argparse.ArgumentParser()",
            "    parser.add_argument('--epochs', type=int, default=10)",
            "    parser.add_argument('--log-interval', type=int, default=10)",
            "    parser.add_argument('--device', default='cpu')",
            "    args = parser.parse_args()",
            "    model = Net()",
            "    optimizer = torch.optim.SGD(model.parameters(), lr=0.1)",
            "    scheduler = torch.optim.lr_scheduler.StepLR(optimizer, 1)",
            "    loader = []",
            "    train(model, loader, optimizer, scheduler, args)",
            "",
            "",
            'if __name__ == "__main__":',
            "    main()",
        ]
        files[variant] = "\n".join(lines) + "\n"
    return files["new"], files["old"], target, "loss.backward()"


if __name__ == "__main__":
    new, old, line, _ = make_pair()
    print(len(new.splitlines()), len(old.splitlines()), line)
