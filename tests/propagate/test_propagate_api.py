"""propagate(): placement, renames, wrapping, multi-line and multiple statements, refusals."""

from __future__ import annotations

import ast
import json
import textwrap

import pytest

from retrolog.propagation import Placement, Propagation, PropagationError, propagate


def src(text: str) -> str:
    return textwrap.dedent(text).lstrip("\n")


def line_of(source: str, needle: str) -> int:
    hits = [i for i, line in enumerate(source.splitlines(), 1) if needle in line]
    assert len(hits) == 1, (needle, hits)
    return hits[0]


def inserted(old: str, new: str) -> list[str]:
    """Lines of ``new`` that are not in ``old`` (the insertion), checking nothing else moved."""
    a, b = old.splitlines(keepends=True), new.splitlines(keepends=True)
    import difflib

    out = []
    for tag, i1, i2, j1, j2 in difflib.SequenceMatcher(None, a, b).get_opcodes():
        assert tag in ("equal", "insert"), (tag, a[i1:i2], b[j1:j2])
        if tag == "insert":
            out.extend(b[j1:j2])
    return out


NEW = src('''
    import torch
    import retrolog


    def train(model, loader, opt):
        """Train one epoch."""
        model.train()
        for epoch in range(10):
            for x, y in loader:
                opt.zero_grad()
                out = model(x)
                loss = torch.nn.functional.cross_entropy(out, y)
                loss.backward()
                retrolog.log("loss", loss.item())
                opt.step()
            print("epoch", epoch)
''')

OLD = src('''
    import torch
    import retrolog


    def train(net, loader, optimizer):
        """Train one epoch."""
        net.train()
        for epoch in range(10):
            for x, y in loader:
                optimizer.zero_grad()
                # forward pass
                output = net(x)
                loss = torch.nn.functional.cross_entropy(output,  y)
                loss.backward()
                optimizer.step()
            print('epoch', epoch)
''')


def test_inserts_after_the_counterpart_of_the_preceding_statement() -> None:
    r = propagate(NEW, OLD, line_of(NEW, "retrolog.log"))
    assert r.ok and r.refused is None
    assert inserted(OLD, r.source) == ['            retrolog.log("loss", loss.item())\n']
    p = r.placement
    assert isinstance(p, Placement)
    assert p.kind == "insert"
    assert p.anchor == "loss.backward()"
    assert p.scope == ("train", "for epoch", "for x, y")
    assert p.after_line == line_of(OLD, "loss.backward()")
    assert p.line == p.after_line + 1
    assert r.source.splitlines()[p.line - 1].strip().startswith("retrolog.log")
    assert 0.0 < r.confidence <= 1.0


def test_renames_identifiers_the_old_version_calls_differently() -> None:
    new = NEW.replace(
        'retrolog.log("loss", loss.item())',
        'retrolog.log("pred", out.mean().item(), model.training)',
    )
    r = propagate(new, OLD, line_of(new, "retrolog.log"))
    assert r.renames == {"model": "net", "out": "output"}
    assert inserted(OLD, r.source) == [
        '            retrolog.log("pred", output.mean().item(), net.training)\n'
    ]
    assert r.placement is not None and r.placement.renames == r.renames


def test_attribute_renames_and_attribute_to_name() -> None:
    new = src("""
        import retrolog


        class Trainer:
            def fit(self):
                for epoch in range(self.epochs):
                    train_loss = self.train_epoch(epoch)
                    acc = self.test(epoch)
                    self.scheduler.step()
                    retrolog.log("lr", self.scheduler.get_last_lr()[0])
                    print(epoch, train_loss, acc)
    """)
    old = src("""
        import retrolog

        for epoch in range(args.epochs):
            train_loss = train_epoch(epoch)
            acc = test(epoch)
            scheduler.step()
            print(epoch, train_loss, acc)
    """)
    r = propagate(new, old, line_of(new, "retrolog.log"))
    assert inserted(old, r.source) == ['    retrolog.log("lr", scheduler.get_last_lr()[0])\n']
    assert r.renames == {"self.scheduler": "scheduler"}


def test_wrap_expression_rewrites_only_that_expression() -> None:
    new = NEW.replace(
        "loss = torch.nn.functional.cross_entropy(out, y)",
        'loss = retrolog.log("loss", torch.nn.functional.cross_entropy(out, y))',
    ).replace('            retrolog.log("loss", loss.item())\n', "")
    r = propagate(new, OLD, line_of(new, "loss = retrolog.log"))
    assert r.ok
    assert r.placement is not None and r.placement.kind == "wrap"
    old_lines, out_lines = OLD.splitlines(), r.source.splitlines()
    assert len(old_lines) == len(out_lines)
    changed = [(a, b) for a, b in zip(old_lines, out_lines) if a != b]
    assert changed == [
        (
            "            loss = torch.nn.functional.cross_entropy(output,  y)",
            '            loss = retrolog.log("loss", torch.nn.functional.cross_entropy(output,  y))',
        )
    ]


def test_wrap_a_loop_iterable() -> None:
    new = NEW.replace("for epoch in range(10):", 'for epoch in retrolog.loop("epoch", range(10)):')
    r = propagate(new, OLD, line_of(new, "retrolog.loop"))
    assert r.placement is not None and r.placement.kind == "wrap"
    assert 'for epoch in retrolog.loop("epoch", range(10)):' in r.source
    assert r.source.replace('retrolog.loop("epoch", range(10))', "range(10)") == OLD


def test_wrap_of_an_already_wrapped_expression_is_present() -> None:
    new = NEW.replace("out = model(x)", 'out = retrolog.log("out", model(x))')
    old = OLD.replace("output = net(x)", 'output = retrolog.log("out", net(x))')
    r = propagate(new, old, line_of(new, "out = retrolog.log"))
    assert r.ok and r.source == old
    assert r.placement is not None and r.placement.kind == "present"


def test_wrapped_statement_missing_in_the_old_version_is_inserted_whole() -> None:
    new = NEW.replace(
        'retrolog.log("loss", loss.item())', 'norm = retrolog.log("norm", loss.detach().norm())'
    )
    r = propagate(new, OLD, line_of(new, "norm = retrolog.log"))
    assert inserted(OLD, r.source) == [
        '            norm = retrolog.log("norm", loss.detach().norm())\n'
    ]


def test_multi_line_statement_keeps_its_shape_at_the_old_indentation() -> None:
    new = NEW.replace(
        '            retrolog.log("loss", loss.item())\n',
        '            retrolog.log(\n                "loss",\n                loss.item(),  # scalar\n            )\n',
    )
    old = OLD.replace("    ", "\t")
    r = propagate(new, old, line_of(new, '"loss",'))  # any line of the statement
    assert inserted(old, r.source) == [
        "\t\t\tretrolog.log(\n",
        '\t\t\t\t"loss",\n',
        "\t\t\t\tloss.item(),  # scalar\n",
        "\t\t\t)\n",
    ]
    assert r.placement is not None and r.placement.lines == 4
    ast.parse(r.source)


def test_multi_line_string_interior_is_copied_verbatim() -> None:
    new = NEW.replace(
        '            retrolog.log("loss", loss.item())\n',
        '            retrolog.log("note", """first\n  second\nthird""")\n',
    )
    r = propagate(new, OLD, line_of(new, 'retrolog.log("note"'))
    assert inserted(OLD, r.source) == [
        '            retrolog.log("note", """first\n',
        "  second\n",
        'third""")\n',
    ]


def test_several_statements_at_once_keep_their_order() -> None:
    new = NEW.replace(
        '            retrolog.log("loss", loss.item())\n',
        '            retrolog.log("a", 1)\n            retrolog.log("b", 2)\n',
    ).replace(
        '        print("epoch", epoch)\n',
        '        print("epoch", epoch)\n        retrolog.log("c", epoch)\n',
    )
    lines = [line_of(new, '"a"'), line_of(new, '"c"'), line_of(new, '"b"')]
    r = propagate(new, OLD, lines)
    assert r.ok and len(r.placements) == 3
    assert inserted(OLD, r.source) == [
        '            retrolog.log("a", 1)\n',
        '            retrolog.log("b", 2)\n',
        '        retrolog.log("c", epoch)\n',
    ]
    for p in r.placements:
        assert r.source.splitlines()[p.line - 1].strip().startswith("retrolog.log")


def test_refuses_when_the_enclosing_loop_does_not_exist() -> None:
    new = NEW.replace(
        '        print("epoch", epoch)\n',
        "        for x, y in val_loader:\n            vout = model(x)\n"
        '            retrolog.log("val", vout.mean())\n        print("epoch", epoch)\n',
    )
    r = propagate(new, OLD, line_of(new, 'retrolog.log("val"'))
    assert not r.ok
    assert r.source == OLD
    assert r.refused_line == line_of(new, 'retrolog.log("val"')
    assert r.refusal_code == "no-context"
    assert "for x, y" in (r.refused or "") and "no counterpart" in (r.refused or "")
    with pytest.raises(PropagationError) as err:
        r.raise_if_refused()
    assert err.value.line == r.refused_line and err.value.reason == r.refused


def test_multiple_lines_refuse_naming_the_failing_one() -> None:
    new = NEW.replace(
        '        print("epoch", epoch)\n',
        '        for x, y in val_loader:\n            retrolog.log("val", 1)\n'
        '        print("epoch", epoch)\n',
    )
    bad = line_of(new, 'retrolog.log("val"')
    r = propagate(new, OLD, [line_of(new, 'retrolog.log("loss"'), bad])
    assert not r.ok and r.refused_line == bad and r.source == OLD
    assert f"line {bad}" in (r.refused or "")


def test_refuses_a_new_else_branch() -> None:
    new = src("""
        import retrolog
        for i in range(3):
            if i % 2:
                print(i)
            else:
                retrolog.log("even", i)
    """)
    old = src("""
        import retrolog
        for i in range(3):
            if i % 2:
                print(i)
    """)
    r = propagate(new, old, line_of(new, "retrolog.log"))
    assert not r.ok and "else" in (r.refused or "")


def test_lifts_a_new_if_block_holding_only_logging() -> None:
    new = NEW.replace(
        '            retrolog.log("loss", loss.item())\n',
        '            if epoch % 5 == 0:\n                retrolog.log("loss", loss.item())\n',
    )
    r = propagate(new, OLD, line_of(new, 'retrolog.log("loss"'))
    assert inserted(OLD, r.source) == [
        "            if epoch % 5 == 0:\n",
        '                retrolog.log("loss", loss.item())\n',
    ]
    p = r.placement
    assert p is not None and p.lifted == "if epoch % 5 == 0" and p.lines == 2
    assert r.source.splitlines()[p.line - 1].strip() == 'retrolog.log("loss", loss.item())'
    # both lines of the block asked for: one insertion, each placement on its own line
    r2 = propagate(new, OLD, [line_of(new, "if epoch % 5"), line_of(new, 'retrolog.log("loss"')])
    assert r2.source == r.source


def test_does_not_lift_a_new_block_with_other_code() -> None:
    new = NEW.replace(
        '            retrolog.log("loss", loss.item())\n',
        "            if epoch % 5 == 0:\n                acc = evaluate(model)\n"
        '                retrolog.log("acc", acc)\n',
    )
    r = propagate(new, OLD, line_of(new, 'retrolog.log("acc"'))
    assert not r.ok and "other new code" in (r.refused or "")


def test_new_wrapper_around_existing_code_is_transparent() -> None:
    new = NEW.replace(
        "            out = model(x)\n            loss = torch.nn.functional.cross_entropy(out, y)\n",
        "            with torch.autocast('cuda'):\n                out = model(x)\n"
        "                loss = torch.nn.functional.cross_entropy(out, y)\n"
        '                retrolog.log("amp_loss", loss.item())\n',
    )
    r = propagate(new, OLD, line_of(new, '"amp_loss"'))
    assert inserted(OLD, r.source) == ['            retrolog.log("amp_loss", loss.item())\n']
    assert r.placement is not None
    assert r.placement.anchor == "loss = torch.nn.functional.cross_entropy(output,  y)"
    assert any("without its new enclosing" in w for w in r.warnings)


def test_start_of_block_goes_after_a_docstring() -> None:
    new = src('''
        import retrolog


        def train(model):
            """Doc."""
            retrolog.log("start", 1)
            model.train()
    ''')
    old = src('''
        import retrolog


        def train(net):
            """Doc, reworded."""

            net.fit()
            net.train()
    ''')
    r = propagate(new, old, line_of(new, "retrolog.log"))
    assert r.ok
    body = ast.parse(r.source).body[1].body  # type: ignore[attr-defined]
    assert isinstance(body[0], ast.Expr) and isinstance(body[0].value, ast.Constant)
    assert ast.unparse(body[1]) == "retrolog.log('start', 1)"


def test_identical_file_is_a_no_op() -> None:
    r = propagate(NEW, NEW, line_of(NEW, "retrolog.log"))
    assert r.ok and r.source == NEW
    assert r.placement is not None and r.placement.kind == "present"
    assert r.placement.line == line_of(NEW, "retrolog.log")


def test_adds_the_import_the_statement_needs() -> None:
    old = OLD.replace("import retrolog\n", "")
    r = propagate(NEW, old, line_of(NEW, "retrolog.log"))
    assert r.imports == ("import retrolog",)
    assert inserted(old, r.source) == [
        "import retrolog\n",
        '            retrolog.log("loss", loss.item())\n',
    ]
    assert r.placement is not None
    assert r.source.splitlines()[r.placement.line - 1].strip().startswith("retrolog.log")


def test_warns_about_names_the_old_version_lacks() -> None:
    new = NEW.replace('retrolog.log("loss", loss.item())', 'retrolog.log("g", grad_norm)')
    r = propagate(new, OLD, line_of(new, "retrolog.log"))
    assert r.ok
    assert any("grad_norm" in w for w in r.warnings)


def test_keeps_crlf_line_endings_and_no_final_newline() -> None:
    old = OLD.replace("\n", "\r\n").rstrip("\r\n")
    new = NEW.replace("        print", "        retrolog.log('e', epoch)\n        print")
    new = new.replace('            retrolog.log("loss", loss.item())\n', "")
    r = propagate(new, old, line_of(new, "retrolog.log('e'"))
    assert r.ok
    assert r.source.count("\r\n") == old.count("\r\n") + 1
    assert "\n" not in r.source.replace("\r\n", "")
    r2 = propagate(NEW + "retrolog.log('end', 1)\n", OLD.rstrip("\n"), NEW.count("\n") + 1)
    assert r2.source == OLD.rstrip("\n") + "\nretrolog.log('end', 1)"


def test_refuses_inserting_into_a_single_line_block() -> None:
    new = src("""
        import retrolog
        for i in range(3):
            print(i)
            retrolog.log("i", i)
    """)
    old = "import retrolog\nfor i in range(3): print(i)\n"
    r = propagate(new, old, line_of(new, "retrolog.log"))
    assert not r.ok and r.refusal_code == "single-line-block"


@pytest.mark.parametrize(
    ("new", "old", "line", "code"),
    [
        ("x = 1\n", "x = 1\n", 5, "no-statement"),
        ("x = 1\n\n# c\ny = 2\n", "x = 1\n", 3, "no-statement"),
        ("x = (\n", "x = 1\n", 1, "parse-error"),
        ("x = 1\n", "x = (\n", 1, "parse-error"),
    ],
)
def test_bad_input_is_a_refusal_with_a_code(new: str, old: str, line: int, code: str) -> None:
    r = propagate(new, old, line)
    assert not r.ok and r.refusal_code == code and r.source == old


def test_to_dict_is_json_and_records_are_immutable() -> None:
    r = propagate(NEW, OLD, line_of(NEW, "retrolog.log"))
    d = json.loads(json.dumps(r.to_dict()))
    assert d["ok"] is True and d["placements"][0]["scope"] == ["train", "for epoch", "for x, y"]
    assert "source" not in d
    with pytest.raises(AttributeError):
        r.confidence = 1.0  # type: ignore[misc]
    assert r == propagate(NEW, OLD, line_of(NEW, "retrolog.log"))
    assert "Propagation(" in repr(r)
    refused = propagate(NEW, OLD, 3)
    assert isinstance(refused, Propagation) and refused.to_dict()["ok"] is False


def test_function_extracted_in_the_new_version() -> None:
    new = src("""
        import retrolog


        def evaluate(model, loader):
            correct = 0
            for x, y in loader:
                correct += (model(x).argmax(1) == y).sum().item()
            acc = correct / len(loader.dataset)
            retrolog.log("acc", acc)
            return acc


        for epoch in range(10):
            train(model)
            acc = evaluate(model, test_loader)
            print(epoch, acc)
    """)
    old = src("""
        import retrolog

        for epoch in range(10):
            train(model)
            correct = 0
            for x, y in test_loader:
                correct += (model(x).argmax(1) == y).sum().item()
            acc = correct / len(test_loader.dataset)
            print(epoch, acc)
    """)
    r = propagate(new, old, line_of(new, "retrolog.log"))
    assert inserted(old, r.source) == ['    retrolog.log("acc", acc)\n']
    assert r.placement is not None and r.placement.anchor.startswith("acc = correct")
