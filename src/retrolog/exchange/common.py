"""Writing imported runs into the store, whatever they come from.

An importer turns its source into ``ImportedRun`` objects; ``write_runs`` stores each one through
``Store.ingest`` as journal-format events (``run``, ``arg``, ``ctx``, ``log``, ``end``), so the
rows, the run's value digest and its high-water mark are exactly what a recorded run gets. Only
what the event format cannot carry is inserted beside it, in its own transaction: values a replay
produced (``logs.replay_id``, with their replay digest), the ``replays`` rows they point to, and
rows of tables keyed by run that the store has (tags, names, environments, timings, ...).

Every imported run has status ``imported`` and no code version, so the replay planner skips it.
"""

from __future__ import annotations

import hashlib
import json
import re
from dataclasses import dataclass, field
from typing import Any

from ..errors import UsageError
from ..record.values import Cell, UnsupportedValue, normalise, to_cell
from ..store import exchange as stored
from ..store.ingest import RUN_FACTS
from ..store.runs import run_ids, run_key

IMPORTED = "imported"

_ALPHABET = "0123456789ABCDEFGHJKMNPQRSTVWXYZ"

# runs columns the ``run`` event carries, less the status and version an import sets itself
EVENT_FACTS = tuple(f for f in RUN_FACTS if f not in ("version", "status"))
EVENT_FACTS = (
    "script",
    "argv",
    "cwd",
    "start_time",
    "host",
    "pid",
    "python",
    "packages",
    "git_head",
    "git_branch",
    "git_dirty",
)


@dataclass
class ImportedRun:
    """One run to store. ``loops`` rows: ``(ctx_id, parent_id, depth, name, iteration,
    value_json, start_time)``; ``logs`` rows: ``(seq, ctx_id, name, vtype, num, text,
    replay_id)``; ``extra``: table name -> rows (dicts without ``run``) for tables keyed by run."""

    run_id: str
    facts: dict[str, Any] = field(default_factory=dict)
    end_time: float | None = None
    error: str | None = None
    args: list[tuple[str, Cell]] = field(default_factory=list)
    loops: list[tuple[Any, ...]] = field(default_factory=list)
    logs: list[tuple[Any, ...]] = field(default_factory=list)
    extra: dict[str, list[dict[str, Any]]] = field(default_factory=dict)
    run_columns: dict[str, Any] = field(default_factory=dict)  # runs columns no event carries
    tags: dict[str, str] = field(default_factory=dict)  # stored only where run_tags exists


@dataclass
class ImportResult:
    """What an import stored and what it left out, in words for the CLI."""

    source: str
    imported: list[str] = field(default_factory=list)
    present: list[str] = field(default_factory=list)  # already in the store: left alone
    values: int = 0
    notes: list[str] = field(default_factory=list)

    def lines(self) -> list[str]:
        out = [f"imported {len(self.imported)} run(s), {self.values} value(s) from {self.source}"]
        if self.present:
            out.append(f"{len(self.present)} run(s) already in the store were left alone")
        out.extend(dict.fromkeys(self.notes))
        return out


def stable_run_id(start_time: float | None, source: str) -> str:
    """A run id in retrolog's layout (48 bits of start milliseconds, 80 bits) whose random part is
    a hash of ``source`` (the tool and its own run id), so importing the same run twice finds it
    already there instead of storing it again."""
    millis = int((start_time or 0.0) * 1000) & ((1 << 48) - 1)
    tail = int.from_bytes(hashlib.sha256(source.encode()).digest()[:10], "big")
    value = (millis << 80) | tail
    chars = []
    for _ in range(26):
        chars.append(_ALPHABET[value & 31])
        value >>= 5
    return "".join(reversed(chars))


_INT = re.compile(r"[+-]?\d+")
_FLOAT = re.compile(r"[+-]?(\d+\.?\d*|\.\d+)([eE][+-]?\d+)?|[+-]?(nan|inf|infinity)", re.I)


def parse_param(text: str) -> Any:
    """A parameter another tool stored as text, as the value it most likely was: integers whose
    text is canonical (``"007"`` stays text), floats, ``True``/``False``, ``None``; else text."""
    if _INT.fullmatch(text) and str(int(text)) == text.lstrip("+"):
        return int(text)
    if _FLOAT.fullmatch(text):
        return float(text)
    if text in ("True", "true", "False", "false"):
        return text.lower() == "true"
    if text in ("None", "null"):
        return None
    return text


def cell(value: Any) -> Cell | None:
    """The store cell of a value another tool logged, or None when retrolog cannot store it."""
    try:
        return to_cell(normalise(value))
    except (UnsupportedValue, TypeError, ValueError):
        return None


def loop_value(value: Any) -> str | None:
    """``loops.value``: JSON of a scalar loop item."""
    if value is None or isinstance(value, (bool, int, float, str)):
        return json.dumps(value)
    return None


def write_runs(store: Any, runs: list[ImportedRun], result: ImportResult) -> None:
    """Store ``runs`` (see the module docstring); runs whose id the store has are left alone."""
    existing = run_ids(store)
    for run in runs:
        if run.run_id in existing:
            result.present.append(run.run_id)
            continue
        store.ingest(run.run_id, _events(run))
        key = run_key(store, run.run_id)
        assert key is not None  # just ingested
        by_replay: dict[str, list[dict[str, Any]]] = {}
        for seq, ctx, name, vtype, num, text, replay_id in run.logs:
            if replay_id is None:
                continue
            by_replay.setdefault(replay_id, []).append(
                {
                    "run": key,
                    "seq": seq,
                    "ctx_id": ctx,
                    "name": name,
                    "vtype": vtype,
                    "value_num": num,
                    "value_text": text,
                    "replay_id": replay_id,
                }
            )
        stored.store_run_extras(store, key, run.run_columns, by_replay, run.extra, run.tags)
        existing.add(run.run_id)
        result.imported.append(run.run_id)
        result.values += len(run.logs)


def insert_ignoring_present(store: Any, table: str, rows: list[dict[str, Any]]) -> None:
    """Rows of a table not keyed by run (``replays``, ``environments``): a row whose key the store
    has already is kept as it is (``store.exchange``)."""
    stored.insert_ignoring_present(store, table, rows)


def store_tables(store: Any) -> dict[str, tuple[str, ...]]:
    """The tables this retrolog's schema defines, with their columns (only those the store has:
    the schema is created and migrated when the store opens)."""
    return stored.schema_tables()


def _events(run: ImportedRun) -> list[tuple[Any, ...]]:
    """Journal-format events of one run (docs/data-model.md, "Journals"). Every event has a
    sequence number above 0 (the new run's high-water mark); recorded log rows keep their own."""
    facts = {k: v for k, v in run.facts.items() if k in EVENT_FACTS}
    events: list[tuple[Any, ...]] = [(1, "run", facts)]
    events += [(1, "arg", name, *c) for name, c in run.args]
    events += [(1, "ctx", *row) for row in run.loops]
    recorded = [r for r in run.logs if r[6] is None]
    events += [
        (seq, "log", ctx, name, vtype, num, text)
        for seq, ctx, name, vtype, num, text, _r in recorded
    ]
    top = max([1] + [int(r[0]) for r in run.logs])
    events.append((top, "end", IMPORTED, run.end_time, run.error))
    return events


def need(module: str, kind: str) -> Any:
    """Import a tool's reader library, or a one-line error naming what to install."""
    import importlib

    try:
        return importlib.import_module(module)
    except ImportError:
        raise UsageError(
            f"importing {kind} history needs {module.split('.')[0]}: pip install it"
        ) from None
