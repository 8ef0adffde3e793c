"""The GumTree phases one by one: trees, top-down, bottom-up, recovery, headers and gaps."""

from __future__ import annotations

import ast
import textwrap

from retrolog.propagation.mapping import Mapping, dice
from retrolog.propagation.matcher import bottom_up, match, top_down
from retrolog.propagation.recovery import lcs, match_gaps, match_headers, recover
from retrolog.propagation.tree import Tree, build_tree


def tree(code: str) -> Tree:
    return build_tree(ast.parse(textwrap.dedent(code)))


def stmt_at(t: Tree, line: int, kind: str | None = None) -> int:
    """The tree id of the (outermost) statement starting on ``line``."""
    for n in range(len(t)):
        if isinstance(t.node[n], ast.stmt) and t.line[n] == line and (kind in (None, t.kind[n])):
            return n
    raise AssertionError(f"no statement on line {line}")


def partner(m: Mapping, t1: Tree, line: int, t2: Tree) -> int | None:
    """Line of the old statement the new statement on ``line`` is matched to."""
    b = m.fwd[stmt_at(t1, line)]
    return None if b == -1 else t2.line[b]


# --------------------------------------------------------------------------- tree
def test_tree_is_preorder_with_blocks_and_folded_operators() -> None:
    t = tree("""
        for i in range(3):
            x = i + 1
    """)
    assert t.kind[:3] == ["Module", "Module.body", "For"]
    loop = 2
    body = [c for c in t.children[loop] if t.is_block(c)]
    assert [t.kind[b] for b in body] == ["For.body"]
    assign = t.children[body[0]][0]
    assert t.kind[assign] == "Assign"
    binop = t.children[assign][1]
    assert (t.kind[binop], t.label[binop]) == ("BinOp", "Add")
    # descendants are a pre-order interval
    assert list(t.descendants(loop)) == list(range(loop + 1, loop + t.size[loop]))
    assert all(t.contains(loop, d) for d in t.descendants(loop))
    assert t.postorder[-1] == 0 and t.postorder.index(assign) < t.postorder.index(loop)


def test_isomorphism_and_fuzzy_classes() -> None:
    t = tree("""
        out = model(x)
        output = net(x)
        out = model(x)
    """)
    a, b, c = (t.children[1][i] for i in range(3))
    assert t.iso[a] == t.iso[c] != t.iso[b]
    assert t.fuzzy[a] == t.fuzzy[b]  # same code up to variable names
    assert t.shape[a] == t.shape[b]


# --------------------------------------------------------------------------- top-down
def test_top_down_maps_unique_isomorphic_subtrees() -> None:
    t1 = tree("""
        a = compute(1, 2)
        b = other(3)
    """)
    t2 = tree("""
        b = other(3)
        z = 0
        a = compute(1, 2)
    """)
    m = Mapping(t1, t2)
    top_down(m)
    assert partner(m, t1, 2, t2) == 4
    assert partner(m, t1, 3, t2) == 2
    # every node of a matched subtree is matched to its counterpart
    s = stmt_at(t1, 2)
    assert all(m.fwd[s + i] == m.fwd[s] + i for i in range(t1.size[s]))


def test_top_down_respects_min_height() -> None:
    t1, t2 = tree("x = y\nz = 1\n"), tree("x = y\nw = 2\n")
    m = Mapping(t1, t2)
    top_down(m, min_height=3)  # Assign(Name, Name) has height 2
    assert m.fwd[stmt_at(t1, 1)] == -1
    m2 = Mapping(t1, t2)
    top_down(m2, min_height=2)
    assert m2.fwd[stmt_at(t1, 1)] == stmt_at(t2, 1)


def test_top_down_resolves_ambiguity_by_parent_similarity() -> None:
    new = """
        def train():
            opt.zero_grad()
            loss = crit(model(x), y)
            loss.backward()

        def evaluate():
            opt.zero_grad()
            acc = metric(model(x), y)
    """
    old = """
        def evaluate():
            opt.zero_grad()
            acc = metric(model(x), y)

        def train():
            opt.zero_grad()
            loss = crit(model(x), y)
            loss.backward()
    """
    t1, t2 = tree(new), tree(old)
    m = Mapping(t1, t2)
    top_down(m)
    # ``opt.zero_grad()`` appears twice on both sides: each goes to the one in its function
    assert partner(m, t1, 3, t2) == 7
    assert partner(m, t1, 8, t2) == 3


def test_fuzzy_top_down_matches_renamed_statements() -> None:
    t1 = tree("""
        out = model(x)
        loss = loss_fn(out, y)
    """)
    t2 = tree("""
        output = net(x)
        loss = loss_fn(output, y)
    """)
    m = Mapping(t1, t2)
    top_down(m)
    assert partner(m, t1, 2, t2) is None
    top_down(m, min_height=3, fuzzy=True)
    assert partner(m, t1, 2, t2) == 2
    assert partner(m, t1, 3, t2) == 3


def test_fuzzy_candidates_prefer_consistent_renames() -> None:
    t1 = tree("""
        gen = Generator(nz)
        disc = Discriminator()
        gen.apply(init)
        disc.apply(init)
    """)
    t2 = tree("""
        netG = Generator(nz)
        netD = Discriminator()
        netD.apply(init)
        netG.apply(init)
    """)
    m = match(t1, t2)
    assert partner(m, t1, 4, t2) == 5  # gen.apply -> netG.apply, despite the order
    assert partner(m, t1, 5, t2) == 4


# --------------------------------------------------------------------------- bottom-up
def test_bottom_up_matches_a_modified_container_by_dice() -> None:
    t1 = tree("""
        for batch in loader:
            opt.zero_grad()
            loss = crit(model(batch.x), batch.y)
            loss.backward()
            clip(model.parameters(), 1.0)
            opt.step()
    """)
    t2 = tree("""
        for batch in train_loader:
            opt.zero_grad()
            loss = crit(model(batch.x), batch.y)
            loss.backward()
            opt.step()
    """)
    m = Mapping(t1, t2)
    top_down(m)
    loop1, loop2 = stmt_at(t1, 2), stmt_at(t2, 2)
    assert m.fwd[loop1] == -1
    assert dice(m, loop1, loop2) >= 0.5
    bottom_up(m)
    assert m.fwd[loop1] == loop2
    # recovery then matched the loop variable and the new clip() stays unmatched
    assert partner(m, t1, 6, t2) is None


def test_bottom_up_leaves_dissimilar_containers_alone() -> None:
    t1 = tree("""
        for a in xs:
            total = total + a
            seen.add(a)
            print(a, total)
            log(a)
    """)
    t2 = tree("""
        for a in xs:
            total = total + a
        while queue:
            item = queue.pop()
            handle(item)
    """)
    m = match(t1, t2)
    assert m.fwd[stmt_at(t1, 2)] == stmt_at(t2, 2)
    assert m.bwd[stmt_at(t2, 4)] == -1  # the while loop has nothing in common


def test_bottom_up_falls_back_to_matched_descendants_for_grown_loops() -> None:
    # five new statements around three kept ones: dice < 0.5, matched-descendant dice passes
    t1 = tree("""
        for x, y in loader:
            x, y = x.to(dev), y.to(dev)
            with autocast():
                logits = model(x)
                loss = crit(logits, y)
            scaler.scale(loss).backward()
            scaler.unscale_(opt)
            clip(model.parameters(), 1.0)
            scaler.step(opt)
            scaler.update()
    """)
    t2 = tree("""
        for x, y in loader:
            x, y = x.to(dev), y.to(dev)
            logits = model(x)
            loss = crit(logits, y)
            loss.backward()
            opt.step()
    """)
    m = match(t1, t2)
    assert m.fwd[stmt_at(t1, 2)] == stmt_at(t2, 2)


# --------------------------------------------------------------------------- recovery
def test_lcs() -> None:
    assert lcs([1, 2, 3, 4], [2, 4, 5], lambda a, b: a == b) == [(2, 2), (4, 4)]
    assert lcs([], [1], lambda a, b: True) == []


def test_recovery_matches_renamed_children_by_shape_and_unique_kind() -> None:
    t1 = tree("""
        def f(model, data):
            out = model(data)
            print(out)
    """)
    t2 = tree("""
        def f(net, data):
            output = net(data)
            print(output)
    """)
    m = Mapping(t1, t2)
    m.add(0, 0)
    recover(m, 0, 0)
    f1, f2 = stmt_at(t1, 2), stmt_at(t2, 2)
    assert m.fwd[f1] == f2  # unique FunctionDef, then recursively its children
    assert partner(m, t1, 3, t2) == 3
    assert partner(m, t1, 4, t2) == 4
    labels = {(t1.label[a], t2.label[b]) for a, b in m.pairs() if t1.kind[a] in ("Name", "arg")}
    assert ("model", "net") in labels and ("out", "output") in labels


def test_recovery_does_not_pair_unrelated_statements_of_the_same_shape() -> None:
    t1 = tree("""
        def f():
            scaler.update()
    """)
    t2 = tree("""
        def f():
            loss.backward()
    """)
    m = match(t1, t2)
    assert partner(m, t1, 3, t2) is None


def test_recovery_aligns_statements_by_label_similarity() -> None:
    t1 = tree("""
        def step():
            opt.zero_grad(set_to_none=True)
            scaler.scale(loss).backward()
            scaler.step(opt)
    """)
    t2 = tree("""
        def step():
            opt.zero_grad()
            loss.backward()
            opt.step()
    """)
    m = match(t1, t2)
    assert partner(m, t1, 3, t2) == 3
    assert partner(m, t1, 4, t2) == 4
    assert partner(m, t1, 5, t2) == 5


# --------------------------------------------------------------------------- headers, gaps
def test_headers_match_a_loop_whose_body_was_extracted() -> None:
    t1 = tree("""
        def main():
            setup()
            for epoch in range(args.epochs):
                train_epoch(model)
                evaluate(model)
    """)
    t2 = tree("""
        setup()
        for epoch in range(args.epochs):
            model.train()
            for x in data:
                step(x)
    """)
    m = Mapping(t1, t2)
    top_down(m)
    bottom_up(m)
    loop1, loop2 = stmt_at(t1, 4), stmt_at(t2, 3)
    match_headers(m)
    assert m.fwd[loop1] == loop2


def test_gaps_align_statements_between_matched_neighbours() -> None:
    t1 = tree("""
        def main():
            data = load()
            for step in range(cfg["steps"]):
                run(step)
            save(model)
    """)
    t2 = tree("""
        data = load()
        for step in range(args.steps):
            model.train()
            run(step)
        save(model)
    """)
    m = Mapping(t1, t2)
    top_down(m)
    top_down(m, 3, fuzzy=True)
    bottom_up(m)
    m.fwd[stmt_at(t1, 4)] = -1  # make sure the loop is only found by the gap
    m.bwd[stmt_at(t2, 3)] = -1
    match_gaps(m)
    assert partner(m, t1, 4, t2) == 3


def test_match_is_complete_on_identical_trees() -> None:
    code = """
        import torch

        def f(a, b=2):
            for i in range(a):
                if i % b:
                    yield i * b
    """
    t1, t2 = tree(code), tree(code)
    m = match(t1, t2)
    assert m.fwd == list(range(len(t1)))
    assert len(m) == len(t1)
