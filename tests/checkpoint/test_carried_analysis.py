"""The loop-carried state analysis (retrolog.code) on realistic training code."""

from __future__ import annotations

import textwrap
from pathlib import Path

import pytest

from retrolog.code import carried_at, carried_names, find_for_loop

NANOGPT = """
import torch
import retrolog

def get_batch(split):
    data = train_data if split == "train" else val_data
    ix = torch.randint(len(data) - block_size, (batch_size,))
    x = torch.stack([data[i:i + block_size] for i in ix])
    return x, x

@torch.no_grad()
def estimate_loss():
    out = {}
    for split in ["train", "val"]:
        losses = torch.zeros(eval_iters)
        for k in range(eval_iters):
            X, Y = get_batch(split)
            logits, loss = model(X, Y)
            losses[k] = loss.item()
        out[split] = losses.mean()
    return out

X, Y = get_batch("train")
local_iter_num = 0
with retrolog.checkpointing(model=model, optimizer=optimizer):
    for iter_num in retrolog.loop("iter", range(max_iters)):
        lr = get_lr(iter_num)
        if iter_num % eval_interval == 0:
            losses = estimate_loss()
        for micro_step in retrolog.loop(
            "micro", range(gradient_accumulation_steps)
        ):
            with ctx:
                logits, loss = model(X, Y)
                loss = loss / gradient_accumulation_steps
            X, Y = get_batch("train")
            scaler.scale(loss).backward()
            parts = [p for p in range(3)]
            scratch = sum(q * 2 for q in parts)
        if grad_clip != 0.0:
            scaler.unscale_(optimizer)
            torch.nn.utils.clip_grad_norm_(model.parameters(), grad_clip)
        scaler.step(optimizer)
        scaler.update()
        optimizer.zero_grad(set_to_none=True)
        lossf = loss.item() * gradient_accumulation_steps
        local_iter_num += 1
"""


def line_of(source: str, text: str) -> int:
    return next(i for i, line in enumerate(source.splitlines(), 1) if text in line)


def test_nanogpt_micro_step_carries_the_loss_and_the_prefetched_batch() -> None:
    line = line_of(NANOGPT, "for micro_step in")
    carried = carried_names(NANOGPT, line)
    # logits is assigned before every read, micro_step/parts/scratch are never read after
    assert carried.names == {"loss", "X", "Y"}
    assert carried.needs_grads  # unscale_, clip_grad_norm_, scaler.step after the loop
    assert carried.module_level and carried.line == line


def test_a_multi_line_header_is_found_from_any_of_its_lines() -> None:
    first = line_of(NANOGPT, "for micro_step in")
    assert carried_names(NANOGPT, first + 1).line == first
    loop = find_for_loop(NANOGPT, first + 1)
    assert loop is not None and loop.lineno == first
    assert find_for_loop(NANOGPT, first + 3) is None  # a body line is not a header
    with pytest.raises(LookupError):
        carried_names(NANOGPT, first + 3)


def test_comprehension_locals_are_neither_bound_nor_read() -> None:
    source = textwrap.dedent(
        """
        for epoch in range(3):
            for step in range(4):
                total = [i * 2 for i in range(step)]
                best = max(j for j in total)
                [k for k in total if (hit := k) > 2]
            print(i, j, k, best, hit)
        """
    )
    carried = carried_names(source, line_of(source, "for step"))
    assert carried.names == {"best", "hit"}  # walrus binds in the enclosing scope
    assert not carried.needs_grads


def test_names_only_used_inside_the_loop_are_not_carried() -> None:
    source = textwrap.dedent(
        """
        for epoch in range(3):
            for x, y in batches:
                out = model(x)
                loss = crit(out, y)
                loss.backward()
            sched.step()
        """
    )
    carried = carried_names(source, line_of(source, "for x, y"))
    assert carried.names == frozenset()
    assert carried.needs_grads  # sched.step() counts: a .step( call after the loop


def test_a_loop_in_a_function_called_from_the_main_loop() -> None:
    source = textwrap.dedent(
        """
        import retrolog

        def train(model, batches, total):
            seen = 0
            for micro in retrolog.loop("micro", batches):
                loss = model(micro)
                loss.backward()
                seen += 1
                total += loss.item()
                tmp = 3
            return loss.item() / seen, total

        total = 0.0
        for it in retrolog.loop("iter", range(5)):
            value, total = train(model, batches, total)
            opt.step()
        """
    )
    carried = carried_names(source, line_of(source, "for micro"))
    assert carried.names == {"loss", "seen", "total"}
    assert not carried.module_level
    assert carried.needs_grads  # the caller steps the optimizer: the whole module counts


def test_augmented_assignment_and_unpacking_and_with_as_are_bindings() -> None:
    source = textwrap.dedent(
        """
        acc = 0
        while running:
            for batch in loader:
                acc += batch
                (a, *rest), b = batch
                with open(path) as fh:
                    head = fh.readline()
            report(acc, a, rest, b, head, fh)
        """
    )
    carried = carried_names(source, line_of(source, "for batch"))
    assert carried.names == {"acc", "a", "rest", "b", "head", "fh"}


def test_module_functions_reading_a_global_and_the_loop_else_count() -> None:
    source = textwrap.dedent(
        """
        def evaluate():
            return model(val_x) + bias

        for it in range(3):
            for step in range(2):
                bias = step * 0.1
                unused = 1
            else:
                print(step)
            evaluate()
        """
    )
    carried = carried_names(source, line_of(source, "for step"))
    assert carried.names == {"bias", "step"}


def test_a_name_read_first_in_the_loop_body_is_carried_only_inside_an_enclosing_loop() -> None:
    body = """
    for step in range(2):
        y = state * 2
        state = y
    """
    once = textwrap.dedent(body)
    assert carried_names(once, line_of(once, "for step")).names == frozenset()
    looped = textwrap.dedent(
        "for it in range(3):\n" + textwrap.indent(textwrap.dedent(body), "    ")
    )
    assert carried_names(looped, line_of(looped, "for step")).names == {"state"}


def test_global_declarations_in_functions_are_reported() -> None:
    source = textwrap.dedent(
        """
        def run():
            global best
            for step in range(3):
                best = step
                local = step
            return best, local
        """
    )
    carried = carried_names(source, line_of(source, "for step"))
    assert carried.names == {"best", "local"} and carried.global_names == {"best"}


def test_carried_at_reads_files_and_notices_changes(tmp_path: Path) -> None:
    path = tmp_path / "train.py"
    path.write_text("for i in range(2):\n    for j in range(2):\n        x = j\n    print(x)\n")
    assert carried_at(str(path), 2) is not None
    assert carried_at(str(path), 2).names == {"x"}  # type: ignore[union-attr]
    assert carried_at(str(path), 3) is None
    assert carried_at(str(tmp_path / "missing.py"), 1) is None
    import os

    path.write_text("for i in range(2):\n    for j in range(2):\n        x = j\n    print(j)\n")
    stat = path.stat()
    os.utime(path, ns=(stat.st_atime_ns, stat.st_mtime_ns + 10**9))
    assert carried_at(str(path), 2).names == {"j"}  # type: ignore[union-attr]


def test_carried_variables_and_grads_round_trip_through_a_checkpoint(tmp_path: Path) -> None:
    import numpy as np
    import torch

    from retrolog.checkpoint import load_manifest, restore
    from retrolog.checkpoint.capture import capture, uncapturable
    from retrolog.checkpoint.format import write_checkpoint
    from retrolog.objects import open_object_store

    torch.manual_seed(0)
    model = torch.nn.Sequential(torch.nn.Linear(3, 2), torch.nn.Linear(2, 1))
    model(torch.randn(4, 3)).sum().backward()
    model[1].bias.grad = None
    carried = {
        "loss": torch.tensor(0.25),
        "batch": (torch.randn(2, 3), np.arange(3)),
        "history": [1, 2.5, "x", None, b"\x00"],
        "table": {1: (2, 3), "k": [np.float32(1.5)]},
    }
    assert all(uncapturable(v) is None for v in carried.values())
    store = open_object_store(str(tmp_path / "objects"))
    state = capture({"model": model}, locals=carried, grads={"model": model})
    digest = write_checkpoint(store, "k", state).digest
    expected = {
        name: p.grad.clone() if p.grad is not None else None for name, p in model.named_parameters()
    }
    model.zero_grad(set_to_none=False)
    values = restore(store, load_manifest(store, digest), {"model": model})
    assert values is not None and set(values) == set(carried)
    assert type(values["batch"]) is tuple and type(values["history"]) is list
    assert torch.equal(values["loss"], carried["loss"])
    assert torch.equal(values["batch"][0], carried["batch"][0])
    assert np.array_equal(values["batch"][1], carried["batch"][1])
    assert values["history"] == carried["history"] and values["table"] == carried["table"]
    for name, param in model.named_parameters():
        want = expected[name]
        assert (param.grad is None) if want is None else torch.equal(param.grad, want)
    # a checkpoint without carried state restores as before and returns None
    plain = write_checkpoint(store, "p", capture({"model": model})).digest
    assert restore(store, plain, {"model": model}) is None


def test_what_a_checkpoint_cannot_carry_is_named() -> None:
    import collections

    import torch

    from retrolog.checkpoint.capture import uncapturable

    assert uncapturable(object()) == "builtins.object"
    assert uncapturable([1, (2, {"a": lambda: 0})]) == "builtins.function"
    assert uncapturable(collections.OrderedDict()) == "collections.OrderedDict"
    assert uncapturable(torch.nn.Parameter(torch.zeros(1))) is not None  # would lose its type
    assert uncapturable(torch.zeros(2, 2).to_sparse()) is not None
