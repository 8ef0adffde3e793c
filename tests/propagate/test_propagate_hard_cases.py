"""The hard cases of real histories (issue 11): absent contexts, new inner loops, scopes, names."""

from __future__ import annotations

import subprocess
import sys
import textwrap
from pathlib import Path

from retrolog.propagation import THRESHOLD, propagate


def src(text: str) -> str:
    return textwrap.dedent(text).lstrip("\n")


def line_of(source: str, needle: str) -> int:
    hits = [i for i, line in enumerate(source.splitlines(), 1) if needle in line]
    assert len(hits) == 1, (needle, hits)
    return hits[0]


def inserted_after(old: str, out: str) -> tuple[str, str]:
    """(the old line right before the single inserted line, the inserted line), both stripped."""
    a, b = old.splitlines(), out.splitlines()
    assert len(b) == len(a) + 1
    i = next((k for k in range(len(a)) if a[k] != b[k]), len(a))
    assert b[i + 1 :] == a[i:]
    return (a[i - 1].strip() if i else ""), b[i]


# today's script: clipping inside ``if grad_clip``, accumulation micro-steps, AMP
NEW = src("""
    import time

    import torch

    import retrolog
    from model import GPT

    decay_lr = True
    grad_clip = 1.0
    grad_accum = 4


    def get_batch(split):
        ix = torch.randint(1000, (8,))
        return ix, ix + 1


    model = GPT()
    optimizer = torch.optim.AdamW(model.parameters())
    scaler = torch.cuda.amp.GradScaler()
    X, Y = get_batch("train")
    retrolog.log("n_params", sum(p.numel() for p in model.parameters()))
    t0 = time.time()
    for it in range(100):
        if decay_lr:
            lr = 0.1 / (it + 1)
            for group in optimizer.param_groups:
                group["lr"] = lr
        for micro_step in range(grad_accum):
            logits, loss = model(X, Y)
            loss = loss / grad_accum
            X, Y = get_batch("train")
            scaler.scale(loss).backward()
            retrolog.log("micro_loss", loss.item())
        if grad_clip != 0.0:
            scaler.unscale_(optimizer)
            norm = torch.nn.utils.clip_grad_norm_(model.parameters(), grad_clip)
            retrolog.log("grad_norm", norm)
        scaler.step(optimizer)
        scaler.update()
        optimizer.zero_grad(set_to_none=True)
        t1 = time.time()
        dt, t0 = t1 - t0, t1
""")

# an older version: no clipping, no accumulation, no AMP, the model called ``net``
OLD = src("""
    import time

    import torch

    import retrolog
    from model import GPT

    decay_lr = True


    def get_batch(split):
        ix = torch.randint(1000, (8,))
        return ix, ix + 1


    net = GPT()
    optimizer = torch.optim.AdamW(net.parameters())
    t0 = time.time()
    for it in range(100):
        if decay_lr:
            lr = 0.1 / (it + 1)
            for group in optimizer.param_groups:
                group["lr"] = lr
        X, Y = get_batch("train")
        logits, loss = net(X, Y)
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        optimizer.step()
        t1 = time.time()
        dt, t0 = t1 - t0, t1
""")


def test_statement_in_a_new_clipping_block_is_refused_not_put_into_another_if() -> None:
    r = propagate(NEW, OLD, line_of(NEW, '"grad_norm"'))
    assert not r.ok and r.source == OLD
    assert r.refusal_code == "no-context"
    # the reason says what is missing: the name it reads and the line that made it
    assert r.refused is not None
    assert "`if grad_clip != 0.0`" in r.refused
    assert "`norm`" in r.refused and "clip_grad_norm_" in r.refused


def test_a_variant_reading_only_existing_names_is_refused_too() -> None:
    """No ``norm``: the statement observes the clipping only through its position."""
    new = NEW.replace(
        'retrolog.log("grad_norm", norm)',
        'retrolog.log("grad_norm", torch.nn.utils.get_total_norm([p.grad for p in '
        "model.parameters()]))",
    )
    r = propagate(new, OLD, line_of(new, '"grad_norm"'))
    assert not r.ok
    assert "if grad_clip != 0.0" in (r.refused or "")


def test_a_statement_in_a_new_micro_step_loop_goes_after_the_same_backward_call() -> None:
    r = propagate(NEW, OLD, line_of(NEW, '"micro_loss"'))
    assert r.ok, r.refused
    before, line = inserted_after(OLD, r.source)
    assert before == "loss.backward()"
    assert line == '    retrolog.log("micro_loss", loss.item())'
    assert r.placement is not None and r.placement.scope == ("for it",)
    assert any("loop absent" in w and "for micro_step" in w for w in r.warnings)
    report = r.to_dict()
    assert report["warnings"] and 0 < float(report["confidence"]) <= 1  # type: ignore[arg-type]


def test_a_statement_reading_the_loop_variable_of_a_new_loop_is_refused() -> None:
    new = NEW.replace(
        'retrolog.log("micro_loss", loss.item())', 'retrolog.log("micro_step", micro_step)'
    )
    r = propagate(new, OLD, line_of(new, '"micro_step"'))
    assert not r.ok
    assert "`micro_step`" in (r.refused or "")


def test_module_level_statement_stays_at_module_level_when_the_line_before_it_is_new() -> None:
    """The line before it calls ``get_batch``, which both versions define: never enter it."""
    r = propagate(NEW, OLD, line_of(NEW, '"n_params"'))
    assert r.ok, r.refused
    before, line = inserted_after(OLD, r.source)
    assert before == "optimizer = torch.optim.AdamW(net.parameters())"
    assert line == 'retrolog.log("n_params", sum(p.numel() for p in net.parameters()))'
    assert r.placement is not None and r.placement.scope == ()
    assert r.renames == {"model": "net"}


def test_a_rename_is_followed_and_a_look_alike_is_not_a_rename() -> None:
    """``scaler.step(optimizer)`` matches ``optimizer.step()``; ``scaler`` is not ``optimizer``."""
    new = NEW.replace(
        "scaler.update()\n", 'scaler.update()\n    retrolog.log("scale", scaler.get_scale())\n'
    )
    r = propagate(new, OLD, line_of(new, '"scale"'))
    assert not r.ok
    assert "`scaler`" in (r.refused or "")
    logits = NEW.replace(
        "logits, loss = model(X, Y)\n",
        'logits, loss = model(X, Y)\n        retrolog.log("w", model.head.weight.norm())\n',
    )
    r = propagate(logits, OLD, line_of(logits, '"w"'))
    assert r.ok, r.refused
    before, line = inserted_after(OLD, r.source)
    assert before == "logits, loss = net(X, Y)"
    assert line.strip() == 'retrolog.log("w", net.head.weight.norm())'


def test_names_bound_later_in_the_old_block_move_the_statement_after_their_producer() -> None:
    new = src("""
        import retrolog

        for step in range(10):
            loss = model(x)
            loss.backward()
            norm = clip(model)
            optimizer.step()
            optimizer.zero_grad()
            retrolog.log("norm", norm)
    """)
    old = src("""
        import retrolog

        for step in range(10):
            optimizer.zero_grad()
            loss = model(x)
            loss.backward()
            norm = clip(model)
            optimizer.step()
    """)
    r = propagate(new, old, line_of(new, "retrolog.log"))
    assert r.ok, r.refused
    before, _ = inserted_after(old, r.source)
    assert before == "norm = clip(model)"
    assert any("binds `norm`" in w for w in r.warnings)


def test_low_confidence_is_refused_unless_accepted() -> None:
    """Code extracted into a new function, four new lines before the statement: 0.55."""
    new = src("""
        import retrolog


        def prepare(data):
            a = data.copy()
            b = a * 2
            c = b + 1
            d = c - 3
            e = d / 4
            retrolog.log("a", a.sum())
            return e


        result = prepare(load())
    """)
    old = src("""
        import retrolog

        data = load()
        a = data.copy()
        result = a * 2
    """)
    line = line_of(new, "retrolog.log")
    accepted = propagate(new, old, line, min_confidence=0.0)
    assert accepted.ok
    assert accepted.confidence < THRESHOLD
    r = propagate(new, old, line)
    assert not r.ok and r.refusal_code == "low-confidence" and r.source == old
    assert r.confidence == accepted.confidence
    assert "--accept-low-confidence" in (r.refused or "")
    assert f"{accepted.confidence:.2f}" in (r.refused or "")


def test_cli_exit_codes_and_the_accept_flag(tmp_path: Path) -> None:
    new_file, old_file = tmp_path / "new.py", tmp_path / "old.py"
    new_file.write_text(NEW)
    old_file.write_text(OLD)

    def run(*args: str) -> subprocess.CompletedProcess[str]:
        cmd = [sys.executable, "-m", "retrolog.propagation", *args]
        return subprocess.run(cmd, capture_output=True, text=True, timeout=60)

    ok = run("--line", str(line_of(NEW, '"micro_loss"')), str(new_file), str(old_file))
    assert ok.returncode == 0 and 'retrolog.log("micro_loss"' in ok.stdout
    assert "loop absent" in ok.stderr
    refused = run("--line", str(line_of(NEW, '"grad_norm"')), str(new_file), str(old_file))
    assert refused.returncode == 3 and "refused" in refused.stderr and refused.stdout == ""
    still = run(
        "--accept-low-confidence",
        "--line",
        str(line_of(NEW, '"grad_norm"')),
        str(new_file),
        str(old_file),
    )
    assert still.returncode == 3  # a missing context is not a matter of confidence


def test_a_loop_the_new_version_dropped_puts_the_statement_after_that_loop() -> None:
    """The other direction: the older file has the micro-step loop, the newer one does not."""
    newer = OLD.replace(
        "    loss.backward()\n", '    loss.backward()\n    retrolog.log("loss", loss.item())\n'
    )
    base = NEW.replace('        retrolog.log("micro_loss", loss.item())\n', "")
    r = propagate(newer, base, line_of(newer, '"loss"'))
    assert r.ok, r.refused
    out = r.source.splitlines()
    i = out.index('    retrolog.log("loss", loss.item())')
    assert out[i - 1].strip() == "scaler.scale(loss).backward()" or out[i + 1].startswith(
        "    if grad_clip"
    )
    assert any("loop absent in the new version" in w for w in r.warnings)
