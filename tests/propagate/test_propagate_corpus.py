"""The labelled corpus of bench/propagation as a test: accuracy floor, no false insert, kinds."""

from __future__ import annotations

import ast
import sys
from pathlib import Path

import pytest

from retrolog.propagation import propagate

BENCH = Path(__file__).resolve().parents[2] / "bench" / "propagation"
sys.path.insert(0, str(BENCH))

from corpus import check, make_pairs, only_insertions  # noqa: E402

FLOOR = 0.97  # placement of statements that have a place (issue 11: >= 97%)
KINDS = ("loop-absent", "anchor-after", "absent-context", "names-bound", "rename")


@pytest.fixture(scope="module")
def results() -> list[tuple[object, dict, str | None]]:
    out = []
    for pair in make_pairs(directions=("backward",)):
        r = propagate(pair.new_source, pair.old_source, pair.line)
        source = r.source if r.ok else None
        out.append((pair, check(pair, source), source))
    return out


def test_corpus_is_large_enough(results: list) -> None:
    assert len(results) >= 300
    assert sum(1 for p, _, _ in results if p.refuse) >= 30
    for kind in KINDS:  # every hard kind of real histories has at least 20 labelled pairs
        assert sum(1 for p, _, _ in results if p.category == kind) >= 20, kind


def test_hard_kinds(results: list) -> None:
    """Statements in a new micro-step loop are placed; names are bound where they go."""
    for kind in ("loop-absent", "names-bound", "rename"):
        sel = [v["status"] for p, v, _ in results if p.category == kind]
        assert sel.count("correct") / len(sel) >= FLOOR, kind


def test_placement_accuracy_floor(results: list) -> None:
    placeable = [(p, v) for p, v, _ in results if not p.refuse]
    correct = sum(v["status"] == "correct" for _, v in placeable)
    wrong = [p.name for p, v in placeable if v["status"] not in ("correct", "false_refusal")]
    assert correct / len(placeable) >= FLOOR, wrong
    overall = sum(v["status"] in ("correct", "refused_ok") for _, v, _ in results)
    assert overall / len(results) >= FLOOR


def test_never_places_a_statement_whose_context_is_missing(results: list) -> None:
    wrong = [p.name for p, v, _ in results if p.refuse and v["status"] != "refused_ok"]
    assert wrong == []


def test_outputs_parse_and_only_insert(results: list) -> None:
    for pair, _verdict, source in results:
        if source is None:
            continue
        ast.parse(source)
        assert only_insertions(pair.old_source, source), pair.name
