"""``retrolog doctor``: check a project's store and say what is wrong in plain words; ``--repair``
rebuilds what can be rebuilt and reports what was lost.

Checks: the SQLite file's integrity (``PRAGMA integrity_check``), the schema version, journals
of runs that ended without being stored (and damaged journal tails), the code versions (git
commits and ``refs/retrolog/runs/*``) runs point to, the checkpoint objects they point to (each
blob re-hashed), and the value digests (store/digest.py): every run whose stored values changed
since they were recorded is named.

Repair never deletes anything: a damaged SQLite file is recovered (``store.recover``) into a new
file that takes its place, and the old file is kept next to it as ``retrolog.damaged-<time>.db``; journals of ended runs are
ingested; the digests then tell which runs lost rows.
"""

from __future__ import annotations

import os
import shutil
import sqlite3
import subprocess
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from .errors import StoreError
from .project import Project
from .record.journal import inspect_journal, is_orphan, journal_paths, recover_orphans
from .store import digest
from .store import maintenance as stored
from .store.ingest import SCHEMA_VERSION
from .store.recover import recover_sqlite

OK, WARNING, PROBLEM = "ok", "warning", "problem"


@dataclass
class Finding:
    """One result: its level, the check it belongs to, and a sentence for the user."""

    level: str
    check: str
    text: str


@dataclass
class Report:
    """What ``check`` found, and with ``repair`` what was done and what was lost."""

    store: str
    findings: list[Finding] = field(default_factory=list)
    repaired: list[str] = field(default_factory=list)
    lost: list[str] = field(default_factory=list)

    def add(self, level: str, check: str, text: str) -> None:
        self.findings.append(Finding(level, check, text))

    @property
    def problems(self) -> list[Finding]:
        return [f for f in self.findings if f.level == PROBLEM]

    def lines(self) -> list[str]:
        """The plain-words report, one line per finding."""
        out = [f"store: {self.store}"]
        out += [f"  {f.level:<8} {f.check}: {f.text}" for f in self.findings]
        out += [f"  repaired {line}" for line in self.repaired]
        out += [f"  lost     {line}" for line in self.lost]
        if not self.problems:
            out.append("no problems found" if not self.repaired else "the store is sound now")
        else:
            hint = "" if self.repaired else "; `retrolog doctor --repair` rebuilds what can be"
            out.append(f"{len(self.problems)} problem(s){hint}")
        return out


def _sqlite_path(project: Project) -> Path | None:
    url = project.db_url
    return Path(url[len("sqlite:///") :]) if url.startswith("sqlite:///") else None


def check(project: Project, verify_objects: bool = True) -> Report:
    """Check ``project``'s store without changing anything."""
    path = _sqlite_path(project)
    report = Report(str(path) if path is not None else _safe_url(project.db_url))
    store = None
    if path is not None:
        if not path.exists():
            report.add(OK, "store", "no store yet (nothing recorded)")
        elif _check_sqlite_file(path, report):
            store = _open(project, report)
    else:
        store = _open(project, report)
    _check_journals(project, report)
    if store is None:
        return report
    try:
        _check_schema(store, report)
        _check_versions(project, store, report)
        if verify_objects:
            _check_checkpoints(project, store, report)
        _check_digests(store, report)
    finally:
        store.dispose()
    return report


def repair(project: Project) -> Report:
    """Rebuild what can be: recover a damaged SQLite file into a new one (keeping the old one),
    ingest the journals of ended runs; then check again and report what was lost."""
    path = _sqlite_path(project)
    before = check(project, verify_objects=False)
    repaired: list[str] = []
    lost: list[str] = []
    damaged = any(f.check == "integrity" and f.level == PROBLEM for f in before.findings)
    if path is not None and damaged:
        repaired += recover_sqlite(path)
    store = _open(project, Report(""))
    if store is not None:
        try:
            recovered = recover_orphans(project.journal_dir, store)
            if recovered:
                repaired.append(f"stored the journals of {len(recovered)} ended run(s)")
            lost += _lost_rows(store)
            if damaged:
                repaired.append(_holdings(store))
                lost += _orphan_rows(store)
                lost.append(
                    "whatever else was on the unreadable pages: runs with no surviving digest "
                    "cannot be counted (the damaged file is kept for other tools)"
                )
        finally:
            store.dispose()
    report = check(project)
    report.repaired, report.lost = repaired, lost
    return report


# -- checks ----------------------------------------------------------------------------------
def _check_sqlite_file(path: Path, report: Report) -> bool:
    """Integrity of the SQLite file; True when it can be used."""
    try:
        rows = stored.integrity_check(path, 20)
    except sqlite3.DatabaseError as exc:
        report.add(PROBLEM, "integrity", f"the file cannot be read as a database ({exc})")
        return False
    if rows == ["ok"]:
        report.add(OK, "integrity", "SQLite's integrity check found nothing wrong")
        return True
    report.add(PROBLEM, "integrity", f"the file is damaged: {'; '.join(rows[:3])}")
    return False


def _open(project: Project, report: Report) -> Any:
    from .store.store import Store

    try:
        return Store(project.db_url)
    except StoreError as exc:
        report.add(PROBLEM, "store", str(exc))
        return None


def _check_schema(store: Any, report: Report) -> None:
    version = stored.schema_version(store)
    if store.migrated:
        report.add(OK, "schema", f"migrated to version {version}: {'; '.join(store.migrated)}")
    elif version == SCHEMA_VERSION:
        report.add(OK, "schema", f"version {version} (current)")
    else:
        report.add(PROBLEM, "schema", f"version {version}, this retrolog uses {SCHEMA_VERSION}")


def _check_journals(project: Project, report: Report) -> None:
    orphans, live, damaged = [], 0, []
    for path in journal_paths(project.journal_dir):
        if not is_orphan(path):
            live += 1
            continue
        orphans.append(path.stem)
        events, good, total = inspect_journal(path)
        if good < total:
            damaged.append(f"{path.name} ({total - good} bytes after event {events})")
    if orphans:
        report.add(
            PROBLEM,
            "journals",
            f"{len(orphans)} journal(s) of runs that ended without being stored "
            f"({', '.join(orphans[:5])}); any command, or `--repair`, stores them",
        )
    if damaged:
        report.add(
            WARNING,
            "journals",
            "damaged tails, unreadable and lost (a kill mid-write leaves one): "
            + ", ".join(damaged[:5]),
        )
    if not orphans:
        running = f"; {live} of running runs" if live else ""
        report.add(OK, "journals", f"no journal of an ended run left unstored{running}")


def _check_versions(project: Project, store: Any, report: Report) -> None:
    runs = stored.run_versions(store)
    if not runs:
        report.add(OK, "versions", "no run points to a code version")
        return
    if not project.in_git or shutil.which("git") is None:
        report.add(WARNING, "versions", f"{len(runs)} run(s) have code versions, but no git here")
        return
    from .versions.git import GitRepo

    repo = GitRepo(project.root)
    commits = sorted({v for _r, v in runs})
    missing_commits = set(_missing_commits(project.root, commits))
    refs = repo.run_refs()
    no_ref = [r for r, _v in runs if r not in refs]
    gone = [r for r, v in runs if v in missing_commits]
    if gone:
        report.add(
            PROBLEM,
            "versions",
            f"{len(gone)} run(s) point to code versions missing from git "
            f"({', '.join(gone[:5])}): they cannot be replayed; `retrolog pull` may fetch them",
        )
    if no_ref:
        report.add(
            WARNING,
            "versions",
            f"{len(no_ref)} run(s) have no refs/retrolog/runs/ ref ({', '.join(no_ref[:5])}); "
            "git gc may remove their versions",
        )
    if not gone and not no_ref:
        report.add(OK, "versions", f"{len(runs)} run(s) point to {len(commits)} present version(s)")


def _missing_commits(root: Path, commits: list[str]) -> list[str]:
    """Commits git does not have, asked in one ``cat-file --batch-check``."""
    proc = subprocess.run(
        ["git", "-C", str(root), "cat-file", "--batch-check=%(objecttype)"],
        input="".join(f"{c}\n" for c in commits),
        capture_output=True,
        text=True,
        env=dict(os.environ, GIT_OPTIONAL_LOCKS="0"),
    )
    answers = proc.stdout.splitlines()
    return [c for c, a in zip(commits, answers) if a.strip() != "commit"]


def _check_checkpoints(project: Project, store: Any, report: Report) -> None:
    rows = stored.run_manifests(store)
    if not rows:
        report.add(OK, "checkpoints", "no checkpoints")
        return
    from .checkpoint.errors import CheckpointUnavailable
    from .checkpoint.format import load_manifest
    from .objects import open_object_store
    from .objects.store import ObjectStoreError

    objects = open_object_store(project.objects_url)
    bad_blobs: dict[str, str] = {}
    bad_manifests: dict[str, str] = {}
    for manifest_digest in sorted({m for _r, m in rows}):
        try:
            manifest = load_manifest(objects, manifest_digest)
        except CheckpointUnavailable as exc:
            bad_manifests[manifest_digest] = str(exc)
            continue
        for blob in manifest.blobs:
            if blob in bad_blobs:
                bad_manifests[manifest_digest] = bad_blobs[blob]
                continue
            try:
                objects.get(blob)  # re-hashes the bytes
            except (ObjectStoreError, OSError) as exc:
                bad_blobs[blob] = str(exc)
                bad_manifests[manifest_digest] = str(exc)
    affected = sorted({r for r, m in rows if m in bad_manifests})
    if affected:
        first = next(iter(bad_manifests.values()))
        report.add(
            PROBLEM,
            "checkpoints",
            f"{len(bad_manifests)} of {len({m for _r, m in rows})} checkpoint(s) are missing or "
            f"corrupt (first: {first}); runs affected: {', '.join(affected[:5])} "
            "(replay re-executes instead of restoring them)",
        )
    else:
        report.add(OK, "checkpoints", f"{len(rows)} checkpoint(s), every object hashes right")


def _digest_rows(store: Any) -> list[tuple[Any, ...]]:
    return stored.digest_rows(store)


def _recomputed(store: Any, run_key: int, scope: str) -> tuple[int, str]:
    return digest.recompute(stored.digest_scope_rows(store, run_key, scope))


def _check_digests(store: Any, report: Report) -> None:
    changed: list[str] = []
    checked = 0
    for run_key, run_id, scope, count, expected in _digest_rows(store):
        checked += 1
        actual_count, actual = _recomputed(store, int(run_key), scope)
        if actual != expected:
            where = f"run {run_id}" + (f" (replay {scope})" if scope else "")
            detail = (
                f"{count} rows recorded, {actual_count} stored"
                if actual_count != int(count)
                else f"{count} rows, values differ"
            )
            changed.append(f"{where}: {detail}")
    if changed:
        report.add(
            PROBLEM,
            "values",
            f"stored values changed since they were recorded in {len(changed)} place(s): "
            + "; ".join(changed[:10]),
        )
    else:
        report.add(OK, "values", f"{checked} value digest(s) match the stored rows")


def _lost_rows(store: Any) -> list[str]:
    """After a recovery: runs whose rows are fewer than their digest counted."""
    lost = []
    for run_key, run_id, scope, count, _expected in _digest_rows(store):
        actual_count, _ = _recomputed(store, int(run_key), scope)
        if actual_count < int(count):
            where = f"run {run_id}" + (f" (replay {scope})" if scope else "")
            lost.append(f"{where}: {int(count) - actual_count} of {count} rows")
    return lost


def _holdings(store: Any) -> str:
    runs, logs = stored.holdings(store)
    return f"the recovered store holds {runs} run(s) and {logs} logged value(s)"


def _orphan_rows(store: Any) -> list[str]:
    """Rows whose run row did not survive."""
    count = stored.orphan_log_rows(store)
    return [f"{count} logged value(s) whose run's own row was lost"] if count else []


# -- repair ----------------------------------------------------------------------------------
def _safe_url(url: str) -> str:
    from .store.lite import hide_password

    return hide_password(url)
