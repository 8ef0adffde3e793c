"""The recorded neighbour of a new statement decides the iterations it can log in."""

from __future__ import annotations

import textwrap

from retrolog.replaying.siblings import sibling_names

SCRIPT = textwrap.dedent(
    """\
    import retrolog
    for it in retrolog.loop("iter"):
        if it % 4 == 0:
            losses = estimate_loss()
            retrolog.log("val_loss", losses["val"])
            ppl = math.exp(losses["val"])
            retrolog.log("val_ppl", ppl)
        for micro in retrolog.loop("micro", range(3)):
            loss = step()
        retrolog.log("grad", 1.0)
        if it > 2:
            retrolog.log("late", it)
    """
)


def line_of(text: str) -> int:
    return next(i for i, ln in enumerate(SCRIPT.splitlines(), 1) if text in ln)


def test_a_statement_next_to_a_recorded_one_takes_its_iterations() -> None:
    assert sibling_names(SCRIPT, [line_of('"val_ppl"')], {"val_ppl"}) == ["val_loss"]


def test_a_branch_or_loop_between_them_breaks_the_link() -> None:
    # "grad" follows the micro loop: nothing simple links it to a recorded statement
    assert sibling_names(SCRIPT, [line_of('"grad"')], {"grad"}) is None
    # "late" is alone in its block
    assert sibling_names(SCRIPT, [line_of('"late"')], {"late"}) is None


def test_new_statements_are_not_neighbours_and_all_need_one() -> None:
    lines = [line_of('"val_ppl"'), line_of('"grad"')]
    assert sibling_names(SCRIPT, lines, {"val_ppl", "grad"}) is None
    assert sibling_names(SCRIPT, [line_of('"val_ppl"')], {"val_ppl", "val_loss"}) is None
