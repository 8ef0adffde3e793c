"""A recorded run as the planner sees it: its args, loops, timings and checkpoints (``RunData``,
loaded once for planning and collecting), and the code structure of each version (``Structures``).
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

from ..record.values import from_cell
from ..store import planning as reads
from .analysis import ScriptStructure
from .codebase import VersionScript, imported_files
from .layout import Trees
from .plan import RunTimings

if TYPE_CHECKING:
    from ..store.lite import Database


@dataclass
class RunData:
    """What the store recorded about one run, loaded once for planning and collecting."""

    key: int
    run_id: str
    script: str
    version: str | None
    argv: list[str]
    cwd: str | None
    args: dict[str, Any]
    main_loop: str | None = None  # the loop the run ran at depth 1 (its first, by name)
    paths: dict[int, tuple[tuple[str, int], ...]] = field(
        default_factory=dict
    )  # ctx -> coordinates
    main_ctx: dict[int, int] = field(default_factory=dict)  # main iteration -> ctx id
    nested_loops: set[str] = field(default_factory=set)  # loops run inside main iterations
    timings: RunTimings = field(default_factory=RunTimings)
    checkpoints: list[tuple[int, str, str]] = field(default_factory=list)
    checkpoint_bytes: dict[int, dict[str, int]] = field(default_factory=dict)
    main_exit: tuple[str, int] | None = None  # (manifest, bytes)


def load_run(store: Database, row: Any, main_loop: str | None = None) -> RunData:
    """A run's recorded loops, timings and checkpoints. The main loop is the loop the run ran at
    depth 1 (``parent_id = 0``; the first one, as recording counts only it), unless named."""
    key = int(row.id)
    args = {name: from_cell(t, n, x) for name, t, n, x in reads.run_args(store, key)}
    data = RunData(
        key,
        row.run_id,
        row.script,
        row.version,
        json.loads(row.argv or "[]"),
        row.cwd,
        args,
        main_loop,
    )
    loops = reads.run_loops(store, key)
    if data.main_loop is None:
        data.main_loop = next((name for _c, parent, name, _i in loops if not parent), None)
    for ctx_id, parent, name, iteration in loops:
        base = data.paths.get(parent, ()) if parent else ()
        data.paths[ctx_id] = (*base, (name, iteration))
        if not parent and name == data.main_loop:
            data.main_ctx[iteration] = ctx_id
    main_ctxs = set(data.main_ctx.values())
    data.nested_loops = {name for _c, parent, name, _i in loops if parent in main_ctxs}
    ctx_to_main = {ctx: index for index, ctx in data.main_ctx.items()}
    timings = data.timings
    for kind, loop, ctx_id, iteration, seconds in reads.run_timings(store, key):
        if kind == "startup":
            timings.startup = seconds
        elif kind == "prefix":
            timings.prefix = seconds
        elif kind == "suffix":
            timings.suffix = seconds
        elif kind == "iteration" and iteration is not None:
            timings.iterations[int(iteration)] = seconds
        elif kind == "nested" and ctx_id in ctx_to_main:
            per_loop = timings.nested.setdefault(ctx_to_main[ctx_id], {})
            per_loop[loop] = per_loop.get(loop, 0.0) + seconds
    start_end = reads.run_span(store, key)
    if start_end[0] and start_end[1]:
        timings.total = (
            start_end[1] - start_end[0] + timings.prefix
        )  # prefix counts from process start
    for ctx_id, loop, iteration, manifest, nbytes in reads.run_checkpoints(store, key):
        if iteration is None and ctx_id == 0:
            data.main_exit = (manifest, int(nbytes or 0))
        elif iteration is not None:
            data.checkpoints.append((int(iteration), loop, manifest))
            data.checkpoint_bytes.setdefault(int(iteration), {})[loop] = int(nbytes or 0)
    return data


class Structures:
    """``ScriptStructure`` per version and recorded loop names (runs of a version share it)."""

    def __init__(self, script: str, versions: dict[str, VersionScript]) -> None:
        self.script = script
        self.versions = versions
        self._cache: dict[tuple[str, str | None, tuple[str, ...]], ScriptStructure] = {}
        self._trees = Trees()  # files the versions share are parsed once

    def get(self, version: str, data: RunData | None) -> ScriptStructure:
        main = data.main_loop if data else None
        nested = tuple(sorted(data.nested_loops)) if data and main else ()
        key = (version, main, nested)
        if key not in self._cache:
            vs = self.versions[version]
            every = {**vs.modules, **vs.files, self.script: vs.source}
            modules = imported_files(self.script, every, self._trees)
            modules.pop(self.script, None)
            self._cache[key] = ScriptStructure(
                vs.source, self.script, modules, main, nested if main else None, self._trees
            )
        return self._cache[key]
