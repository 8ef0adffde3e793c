"""``propagate()``: put today's statement into an older version of the same script.

The result is a :class:`Propagation`: the old source with the statement inserted (or an
expression wrapped in ``retrolog.log``), where it went, which identifiers were renamed, and a
confidence; or a refusal with its reason.  Nothing raises for a statement that cannot be
placed: replay code checks ``result.refused`` or calls ``result.raise_if_refused()``.
"""

from __future__ import annotations

import ast
import gc
from collections.abc import Sequence

from .describe import scope_path
from .engine import Engine, Plan
from .insert import Edit, Wrap, apply_edits, first_line_of, split_lines
from .matcher import MIN_DICE, MIN_HEIGHT
from .place import Refusal
from .result import Placement, Propagation, PropagationError
from .targets import contains, find_statement, log_names, wrappers

__all__ = ["THRESHOLD", "Placement", "Propagation", "PropagationError", "propagate"]

#: Placements with a confidence below this are refused unless ``min_confidence`` is lowered
#: (``retrolog replay --accept-low-confidence`` passes 0).  A floor set from the corpus's
#: confidence-vs-correctness table (docs/propagation.md, "Calibration and the threshold"): it
#: refuses the placements made with the least evidence; >= 0.9 is where placements are right.
THRESHOLD = 0.6


def _refusal(old_source: str, reason: str, line: int | None, code: str) -> Propagation:
    return Propagation(
        source=old_source, refused=reason, refused_line=line, refusal_code=code, confidence=0.0
    )


def propagate(
    new_source: str,
    old_source: str,
    line: int | Sequence[int],
    *,
    min_height: int = MIN_HEIGHT,
    min_dice: float = MIN_DICE,
    min_confidence: float = THRESHOLD,
) -> Propagation:
    """Insert the statement(s) at ``line`` of ``new_source`` into ``old_source``.

    ``line`` is a 1-based line of the new file (any line of a multi-line statement; the header
    line of a compound statement propagates the whole statement); a sequence propagates several
    statements at once, all or nothing.  ``min_height`` and ``min_dice`` are the GumTree
    parameters (see docs/propagation.md).  A placement whose confidence is below
    ``min_confidence`` (default :data:`THRESHOLD`) is refused with code ``low-confidence``;
    the refusal keeps the confidence and the warnings.  Never raises for a statement that
    cannot be placed: the returned :class:`Propagation` says why in ``refused``.
    """
    lines = [line] if isinstance(line, int) else list(line)
    if not lines:
        raise ValueError("no line given")
    # The two syntax trees allocate tens of thousands of objects and no cycles: the cyclic
    # garbage collector would only rescan them (about a fifth of the time on large files).
    collecting = gc.isenabled()
    gc.disable()
    try:
        result = _propagate(new_source, old_source, lines, min_height, min_dice)
        return _below(result, old_source, min_confidence)
    finally:
        if collecting:
            gc.enable()


def _below(result: Propagation, old_source: str, min_confidence: float) -> Propagation:
    """``result``, or a ``low-confidence`` refusal if a placement is below the threshold."""
    if not result.ok or result.confidence >= min_confidence:
        return result
    worst = min(result.placements, key=lambda p: p.confidence)
    where = f"after `{worst.anchor}`" if worst.anchor else "at the start of its block"
    scope = " > ".join(worst.scope)
    return Propagation(
        source=old_source,
        refused=(
            f"line {worst.new_line}: the best place found ({where}"
            + (f" in {scope}" if scope else "")
            + f") has confidence {worst.confidence:.2f}, below the threshold "
            f"{min_confidence:.2f}; `--accept-low-confidence` places it anyway"
        ),
        refused_line=worst.new_line,
        refusal_code="low-confidence",
        confidence=result.confidence,
        warnings=result.warnings,
        renames=result.renames,
    )


def _propagate(
    new_source: str, old_source: str, lines: list[int], min_height: int, min_dice: float
) -> Propagation:
    """The body of :func:`propagate`, run with the garbage collector paused."""
    try:
        new_mod = ast.parse(new_source)
    except SyntaxError as exc:
        return _refusal(old_source, f"the new file does not parse: {exc}", None, "parse-error")
    try:
        old_mod = ast.parse(old_source)
    except SyntaxError as exc:
        return _refusal(old_source, f"the old file does not parse: {exc}", None, "parse-error")
    new_text_lines = split_lines(new_source)
    targets: list[tuple[int, ast.stmt]] = []
    for n in lines:
        stmt = find_statement(new_mod.body, n)
        if stmt is None:
            what = (
                "is out of range"
                if not 1 <= n <= len(new_text_lines)
                else "holds no statement (blank, comment or part of a block header)"
            )
            return _refusal(old_source, f"line {n} of the new file {what}", n, "no-statement")
        targets.append((n, stmt))
    # one statement per target; a statement inside another target goes with it
    chosen: list[tuple[int, ast.stmt]] = []
    for n, stmt in targets:
        if any(s is stmt for _, s in chosen):
            continue
        chosen.append((n, stmt))
    chosen = [
        (n, s) for n, s in chosen if not any(o is not s and contains(o, s) for _, o in chosen)
    ]
    names = log_names(new_mod)
    inserts: list[ast.stmt] = []
    unwrap: dict[int, ast.expr] = {}
    kinds: list[list[tuple[ast.Call, ast.expr]]] = []
    for _n, stmt in chosen:
        found = wrappers(stmt, names)
        kinds.append(found)
        if found:
            for call, inner in found:
                unwrap[id(call)] = inner
        else:
            inserts.append(stmt)
    # the top-level statements holding a chosen one (by line span: walking them is slow)
    keep = {
        id(top)
        for top in new_mod.body
        for _n, st in chosen
        if first_line_of(top) <= st.lineno <= (top.end_lineno or top.lineno)
    }
    engine = Engine(
        new_source, old_source, new_mod, old_mod, inserts, unwrap, keep, min_height, min_dice
    )
    plans: list[Plan] = []
    for (n, stmt), found in zip(chosen, kinds):
        try:
            if found:
                plans.append(engine.plan_wrap(n, stmt, found))
            else:
                block, index = engine.tn.holes[id(stmt)]
                plans.append(engine.plan_insert(n, stmt, block, index))
        except Refusal as r:
            return _refusal(old_source, f"line {n}: {r.reason}", n, r.code)
    return _assemble(engine, old_source, plans)


def _check_parses(old_mod: ast.Module, source: str, edits: list[Edit], wraps: list[Wrap]) -> None:
    """Raise SyntaxError if the edited source does not parse, re-parsing only what changed.

    The old file parsed, so only the top-level statements that received an edit (or the
    inserted lines themselves, between top-level statements) need parsing again; each
    top-level statement starts at column 0 and parses on its own.
    """
    lines = split_lines(source)

    def out_line(x: int) -> int:  # output line of old line x (1-based)
        return x + sum(len(e.lines) for e in edits if e.pos < x)

    spans: set[tuple[int, int]] = set()
    tops = [(first_line_of(s), s.end_lineno or s.lineno) for s in old_mod.body]
    points = [(e.pos, e) for e in edits] + [(w.start[0] - 1, None) for w in wraps]
    for pos, e in points:
        inside = [(a, b) for a, b in tops if a <= pos + (e is None) <= b]
        if inside:
            a, b = inside[0]
            # up to the line before old line b + 1: includes lines inserted right after b
            spans.add((out_line(a), out_line(b + 1) - 1))
        elif e is not None:
            first = out_line(pos + 1) - len(e.lines)
            spans.add((first, first + len(e.lines) - 1))
    for a, b in sorted(spans):
        ast.parse("".join(lines[a - 1 : b]))


def _assemble(engine: Engine, old_source: str, plans: list[Plan]) -> Propagation:
    """Apply the planned edits and describe them."""
    edits: list[Edit] = []
    wraps: list[Wrap] = []
    seen: dict[int, int] = {}  # id(subject) -> its edit
    edit_of: dict[int, int] = {}
    imports: list[str] = []
    for p in plans:
        if p.kind != "present":
            imports.extend(i for i in p.imports if i not in imports)
    if imports:
        edits.append(engine.import_edit(imports))
    for i, p in enumerate(plans):
        if p.edit is not None:
            if id(p.subject) in seen:  # two lines of one lifted block: one insertion
                edit_of[i] = seen[id(p.subject)]
                continue
            seen[id(p.subject)] = edit_of[i] = len(edits)
            edits.append(p.edit)
        wraps.extend(p.wraps)
    source, first_lines = apply_edits(engine.old_lines, edits, wraps)
    try:
        _check_parses(engine.old_mod, source, edits, wraps)
    except SyntaxError as exc:  # a safety net: never hand back code that does not parse
        return _refusal(
            old_source, f"the result would not parse ({exc.msg}); refusing", None, "bad-result"
        )
    placements = []
    renames: dict[str, str] = {}
    warnings: list[str] = []
    for i, p in enumerate(plans):
        if p.kind == "insert" and i in edit_of:
            out_line = first_lines[edit_of[i]] + p.offset
            count = len(edits[edit_of[i]].lines)
        elif p.kind == "wrap":
            out_line = p.after_line + sum(len(e.lines) for e in edits if e.pos < p.after_line)
            count = 0
        else:
            out_line = p.present_line + sum(len(e.lines) for e in edits if e.pos < p.present_line)
            count = 0
        renames.update(p.names)
        warnings.extend(f"line {p.new_line}: {w}" for w in p.warnings)
        placements.append(
            Placement(
                new_line=p.new_line,
                kind=p.kind,
                line=out_line,
                after_line=p.after_line,
                scope=tuple(scope_path(engine.to, p.block)) if p.block >= 0 else (),
                anchor=p.anchor_text,
                lines=count,
                confidence=p.confidence,
                renames=dict(p.names),
                lifted=p.lifted,
                warnings=tuple(p.warnings),
            )
        )
    confidence = min((p.confidence for p in placements), default=0.0)
    return Propagation(
        source=source,
        placements=tuple(placements),
        renames=renames,
        confidence=confidence,
        warnings=tuple(warnings),
        imports=tuple(imports),
    )
