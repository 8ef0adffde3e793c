"""Models out of runs: ``retrolog.load`` and ``retrolog checkpoints``.

A run checkpoints its registered objects (``retrolog.checkpointing(model=..., ...)``) at the exits
of the loops nested in its main loop and at the main loop's exit (docs/checkpoints.md). ``load``
puts the state of one of those checkpoints back into the caller's live objects, in place, through
``checkpoint.restore`` (safetensors blobs and a JSON manifest: nothing is unpickled). A main-loop
iteration can hold several checkpoints (one per nested loop that exited in it); the one written
last in the iteration is its state.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any

from ..errors import NotFoundError, UsageError
from ..project import Project
from ..store import query as reads
from .access import open_store, resolve_project
from .runref import find_run

__all__ = ["Checkpoint", "checkpoints", "load"]


@dataclass(frozen=True)
class Checkpoint:
    """One stored checkpoint of a run. ``iteration`` is None for the main loop's exit."""

    loop: str  # the loop whose exit it captured
    iteration: int | None  # the main-loop iteration it belongs to
    manifest: str  # object-store digest
    bytes_total: int | None
    order: int  # position in the run (later checkpoints have larger values)


def _checkpoints(store: Any, run_key: int) -> list[Checkpoint]:
    rows = reads.checkpoint_rows(store, run_key)
    found = [
        Checkpoint(loop, None if it is None else int(it), manifest, total, int(last or 0))
        for loop, it, manifest, total, last in rows
    ]
    # by iteration (the exit last), then in the order the nested loops ran
    return sorted(found, key=lambda c: (c.iteration is None, c.iteration or 0, c.order))


def _main_loop(store: Any, run_key: int) -> str | None:
    return reads.first_main_loop(store, run_key)


def _last_iteration(store: Any, run_key: int, main: str | None) -> int | None:
    return reads.last_iteration(store, run_key, main)


def checkpoints(
    run: str, project: Project | str | Path | None = None, with_time: bool = True
) -> list[dict[str, Any]]:
    """The checkpoints of a run (id, unique id prefix or name), in order: iteration (None: the
    main loop's exit), loop, size in bytes, and when it was written (from its manifest)."""
    proj = resolve_project(project)
    store = open_store(proj)
    row = find_run(store, run)._mapping
    found = _checkpoints(store, int(row["id"]))
    objects = None
    if with_time and found:
        from ..objects import open_object_store

        objects = open_object_store(proj.objects_url)
    out = []
    for ckpt in found:
        created = None
        if objects is not None:
            from ..checkpoint import CheckpointUnavailable, load_manifest

            try:
                created = load_manifest(objects, ckpt.manifest).created
            except CheckpointUnavailable:  # collected or unreadable: listed, without a time
                created = None
        out.append(
            {
                "run_id": row["run_id"],
                "iteration": ckpt.iteration,
                "loop": ckpt.loop,
                "bytes": ckpt.bytes_total,
                "created": created,
                "manifest": ckpt.manifest,
            }
        )
    return out


def load(
    run: str,
    at: dict[str, int] | int | None = None,
    *,
    project: Project | str | Path | None = None,
    rng: bool = False,
    **objects: Any,
) -> dict[str, Any]:
    """Restore a run's checkpointed state into live objects, in place.

    ``retrolog.load("baseline", at={"epoch": 5}, model=net, optimizer=opt)`` loads the state the
    objects registered as ``model`` and ``optimizer`` had at the end of iteration 5 of the main
    loop ``epoch``; without ``at``, their state at the main loop's exit (else its last
    checkpointed iteration). ``run`` is a run id, a unique id prefix or a run name. The live
    objects must have the checkpointed shapes (a model built by the same code). ``rng`` restores
    the global random states too. Returns which checkpoint was loaded.

    Raises NotFoundError when the run has no checkpoint there (naming the nearest ones) and
    UsageError when an object was not checkpointed or does not fit.
    """
    if not objects:
        raise UsageError("load() needs the objects to restore, e.g. load(run, model=net)")
    proj = resolve_project(project)
    store = open_store(proj)
    row = find_run(store, run)._mapping
    run_id, run_key = row["run_id"], int(row["id"])
    found = _checkpoints(store, run_key)
    if not found:
        raise NotFoundError(
            f"run {run_id} has no checkpoints (it registered nothing with "
            "retrolog.checkpointing(...), or recorded with RETROLOG_CHECKPOINT_BUDGET=0)"
        )
    main = _main_loop(store, run_key)
    chosen = _choose(
        found, _iteration(at, main, run_id), main, _last_iteration(store, run_key, main), run_id
    )
    from ..checkpoint import CheckpointUnavailable, restore
    from ..objects import open_object_store

    try:
        restore(open_object_store(proj.objects_url), chosen.manifest, objects, rng=rng)
    except CheckpointUnavailable as exc:
        raise UsageError(f"cannot load run {run_id}'s checkpoint: {exc}") from None
    return {
        "run_id": run_id,
        "loop": chosen.loop,
        "iteration": chosen.iteration,
        "manifest": chosen.manifest,
        "objects": sorted(objects),
    }


def _iteration(at: dict[str, int] | int | None, main: str | None, run_id: str) -> int | None:
    """The main-loop iteration ``at`` asks for (None: the end of the run)."""
    if at is None:
        return None
    if isinstance(at, dict):
        if len(at) != 1:
            raise UsageError(f"at= names one loop, the main loop ({main!r}): at={{{main!r}: N}}")
        ((loop, value),) = at.items()
        if main is not None and loop != main:
            raise UsageError(
                f"run {run_id} checkpoints per iteration of its main loop {main!r}, not {loop!r}: "
                f"use at={{{main!r}: N}}"
            )
        at = value
    if isinstance(at, bool) or not isinstance(at, int):
        raise UsageError(f"at= takes a main-loop iteration number, got {at!r}")
    return at


def _choose(
    found: list[Checkpoint],
    iteration: int | None,
    main: str | None,
    last_main: int | None,
    run_id: str,
) -> Checkpoint:
    exits = [c for c in found if c.iteration is None]
    per_iteration = [c for c in found if c.iteration is not None]
    if iteration is None:
        return exits[-1] if exits else per_iteration[-1]
    if iteration < 0:
        raise UsageError(f"at= takes a main-loop iteration >= 0, got {iteration}")
    here = [c for c in per_iteration if c.iteration == iteration]
    if here:
        return here[-1]
    if exits and iteration == last_main:  # the main loop's exit is the end of its last iteration
        return exits[-1]
    raise NotFoundError(_nearest_message(per_iteration, bool(exits), iteration, main, run_id))


def _nearest_message(
    per_iteration: list[Checkpoint], has_exit: bool, iteration: int, main: str | None, run_id: str
) -> str:
    its = sorted({c.iteration for c in per_iteration if c.iteration is not None})
    below = [i for i in its if i < iteration]
    above = [i for i in its if i > iteration]
    near = []
    if below:
        near.append(f"{main}={below[-1]}")
    if above:
        near.append(f"{main}={above[0]}")
    if has_exit:
        near.append(f"the exit of {main!r} (at=None)")
    listed = " and ".join(near) if near else "none"
    return (
        f"run {run_id} has no checkpoint at {main}={iteration}; the nearest: {listed} "
        f"(`retrolog checkpoints {run_id}` lists all {len(its) + int(has_exit)})"
    )
