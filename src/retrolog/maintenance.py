"""Deleting runs and reclaiming checkpoint space: ``retrolog rm``, ``retrolog gc``, ``retrolog du``.

Deleting a run removes its rows from every table and its snapshot ref; the blobs of its
checkpoints stay until ``gc`` sweeps what no remaining run references (blobs are shared between
runs through deduplication, so they cannot be deleted with the run).

Code-version refs are shared through git remotes (``retrolog push``/``pull``), so deleting one
here never deletes it anywhere else: ``rm`` says when the remote still holds the deleted runs'
refs (other clones keep theirs too), and ``gc`` never deletes refs; it reports the local refs
whose runs this store does not have (recorded against another store, or deleted elsewhere),
which another clone or store may still need.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

from .errors import UsageError
from .project import Project
from .relational.access import open_store, resolve_project
from .relational.cache import drop_cache
from .relational.describe import find_run
from .store import maintenance as stored
from .store.runs import run_ids as stored_run_ids
from .store.runs import run_states
from .versions import GitRepo


class MaintenanceError(UsageError, RuntimeError):
    """The operation is unsafe right now; the message says why."""


@dataclass
class RunUsage:
    run_id: str
    status: str
    checkpoints: int
    bytes: int  # unique bytes its checkpoints reference (shared blobs counted in each run)


def delete_runs(run_ids: Sequence[str], project: Project | str | Path | None = None) -> list[str]:
    """Delete runs (ids or unique prefixes) and everything recorded or replayed for them."""
    proj = resolve_project(project)
    store = open_store(proj)
    rows = [find_run(store, run_id) for run_id in run_ids]
    for row in rows:
        if row.status == "running":
            raise MaintenanceError(f"run {row.run_id} is still running")
    keys = [int(row.id) for row in rows]
    ids = [row.run_id for row in rows]
    stored.delete_run_rows(store, keys, ids)
    if store.path is not None:  # its marks assume rows are only ever added
        drop_cache(store.path)
    if proj.in_git:
        repo = GitRepo(proj.root)
        for run_id in ids:
            repo.delete_run_ref(run_id)
    return ids


def collect_garbage(
    project: Project | str | Path | None = None, dry_run: bool = False
) -> tuple[int, int]:
    """Remove checkpoint blobs no remaining run references; returns (blobs, bytes) removed."""
    from .checkpoint import gc
    from .objects import open_object_store

    proj = resolve_project(project)
    store = open_store(proj)
    running = store.running_runs()
    if running:
        raise MaintenanceError(
            f"{len(running)} run(s) are recording into this project ({running[0][0]}...); "
            "gc would delete the blobs of checkpoints they are writing. Run it when they finish."
        )
    objects = open_object_store(proj.objects_url)
    live = stored.checkpoint_manifests(store)
    return gc(objects, live, dry_run=dry_run)


def disk_usage(project: Project | str | Path | None = None) -> tuple[list[RunUsage], int]:
    """Checkpoint bytes per run, and the unique total across all runs."""
    from .checkpoint import usage
    from .objects import open_object_store

    proj = resolve_project(project)
    store = open_store(proj)
    objects = open_object_store(proj.objects_url)
    manifests = stored.manifests_by_run(store)
    out = []
    for key, run_id, status in run_states(store):
        digests = manifests.get(key, [])
        out.append(
            RunUsage(run_id, status, len(digests), usage(objects, digests) if digests else 0)
        )
    total = usage(objects, [d for ds in manifests.values() for d in ds])
    return out, total


def shared_ref_note(project: Project | str | Path | None, run_ids: Sequence[str]) -> str | None:
    """After ``delete_runs``: a line naming the deleted runs whose version refs the default
    remote still holds (other clones may still use them), or None. Never raises."""
    from .versions.remote import DEFAULT_REMOTE, remote_run_refs

    proj = resolve_project(project)
    if not proj.in_git or not run_ids:
        return None
    try:
        remote = remote_run_refs(proj.root)
    except Exception:  # noqa: BLE001 - an unreachable remote only costs the note
        return None
    kept = [r for r in run_ids if remote and r in remote]
    if not kept:
        return None
    refs = " ".join(f":refs/retrolog/runs/{r}" for r in kept[:3])
    return (
        f"the code versions of {len(kept)} deleted run(s) are still on {DEFAULT_REMOTE} and in "
        f"clones that pulled them (kept: other clones may use them); to delete them there too: "
        f"git push {DEFAULT_REMOTE} {refs}{' ...' if len(kept) > 3 else ''}"
    )


def unreferenced_refs(project: Project | str | Path | None = None) -> list[str]:
    """Run ids with a local version ref but no run in this store (``gc`` keeps and reports them)."""
    proj = resolve_project(project)
    if not proj.in_git or not GitRepo.available():
        return []
    refs = GitRepo(proj.root).run_refs()
    if not refs:
        return []
    known = stored_run_ids(open_store(proj))
    return sorted(r for r in refs if r not in known)


def kept_refs_note(project: Project | str | Path | None = None) -> str | None:
    """The line ``gc`` prints about version refs it kept although no run of this store uses them."""
    orphans = unreferenced_refs(project)
    if not orphans:
        return None
    return (
        f"kept {len(orphans)} code-version ref(s) of runs this store does not have "
        f"({', '.join(orphans[:3])}{', ...' if len(orphans) > 3 else ''}): another clone or store "
        "may still need them; gc never deletes refs (git update-ref -d refs/retrolog/runs/ID does)"
    )
