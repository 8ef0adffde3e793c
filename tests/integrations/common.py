"""Helpers shared by the integration tests: a versioned history recorded as a user would, the
same runs re-executed with the statements from the start (the reference), values per run."""

from __future__ import annotations

import hashlib
import re
import subprocess
import sys
import textwrap
from pathlib import Path
from typing import Any

import retrolog

from ..conftest import git, script_env

RECORD_ENV = {"OMP_NUM_THREADS": "1", "RETROLOG_CHECKPOINT_BUDGET": "1.0"}


def doc_example(page: Path) -> str:
    """The first python block of a docs page (the example a user copies)."""
    match = re.search(r"```python\n(.*?)```", page.read_text(), re.S)
    assert match is not None, f"no python block in {page}"
    return match.group(1)


def run_all(jobs: list[tuple[Path, list[str]]], **env: str) -> None:
    """Run scripts (directory, command) as real subprocesses, all at once."""
    procs = [
        subprocess.Popen(
            [sys.executable, *command],
            cwd=cwd,
            env=script_env(**{**RECORD_ENV, **env}),
            stdout=subprocess.PIPE,
            stderr=subprocess.STDOUT,
            text=True,
        )
        for cwd, command in jobs
    ]
    for proc in procs:
        out, _ = proc.communicate(timeout=300)
        assert proc.returncode == 0, out


RUNNER = """
import runpy, sys
import retrolog
for script, args in {runs!r}:
    sys.argv = [script, *args]
    runpy.run_path(script, run_name="__main__")
    retrolog.commit()
"""

Versions = list[tuple[str, list[list[str]]]]


def record(repo: Path, versions: Versions, reference: Path, with_statements: Versions) -> None:
    """Record ``versions`` in ``repo`` as a user would (commit each version's train.py, run its
    runs: those of one version at once), and in ``reference`` the same runs with the statements
    written in from the start, in one process for all (each run starts from its seeds, as in its
    own process), alongside the last version's runs (the machine has two cores)."""
    reference.mkdir(parents=True)
    git(reference, "init", "-q", "-b", "main")
    runs = []
    for index, (source, commands) in enumerate(with_statements):
        name = f"train_v{index + 1}.py"
        (reference / name).write_text(source)
        runs += [(name, command[1:]) for command in commands]
    (reference / "runner.py").write_text(textwrap.dedent(RUNNER.format(runs=runs)))
    repo.mkdir(parents=True)
    git(repo, "init", "-q", "-b", "main")
    (repo / ".gitignore").write_text("out/\nlightning_logs/\n")
    for index, (source, commands) in enumerate(versions):
        (repo / "train.py").write_text(source)
        git(repo, "add", ".gitignore", "train.py")
        git(repo, "commit", "-q", "-m", f"version {index + 1}")
        jobs = [(repo, command) for command in commands]
        if index == len(versions) - 1:
            jobs.append((reference, ["runner.py"]))
        run_all(jobs)


def values_by_arg(project: Path, name: str, arg: str) -> dict[Any, list[tuple[Any, float]]]:
    """Per run, keyed by the run's value of ``arg`` (runs of one version start together, so
    their order is not fixed): the sorted (loop coordinates, value) pairs logged as ``name``."""
    args = retrolog.query(
        "SELECT run_id, value FROM run_args WHERE name = :a", {"a": arg}, project=project
    )
    order = list(
        retrolog.query("SELECT run_id FROM runs ORDER BY start_time", project=project).run_id
    )
    key = dict(zip(args.run_id, args.value, strict=True))
    return {
        key[run]: values for run, values in zip(order, values_by_run(project, name), strict=True)
    }


def values_by_run(project: Path, name: str) -> list[list[tuple[Any, float]]]:
    """Per run (in recording order): the sorted (loop coordinates, value) pairs logged as
    ``name``, recorded or filled in by a replay."""
    loops = retrolog.query(
        "SELECT r.run_id, l.ctx_id, l.parent_id, l.name, l.iteration FROM loops l "
        "JOIN runs r ON r.id = l.run",
        project=project,
    )
    paths: dict[tuple[str, int], tuple[tuple[str, int], ...]] = {}
    for run_id, ctx, parent, loop, iteration in sorted(
        loops.itertuples(index=False), key=lambda r: (r[0], r[1])
    ):
        paths[(run_id, int(ctx))] = (*paths.get((run_id, int(parent)), ()), (loop, int(iteration)))
    rows = retrolog.query(
        "SELECT run_id, value, ctx_id FROM metrics WHERE name = :name",
        {"name": name},
        project=project,
    )
    order = list(
        retrolog.query("SELECT run_id FROM runs ORDER BY start_time", project=project).run_id
    )
    per_run: dict[str, list[tuple[Any, float]]] = {run: [] for run in order}
    for run_id, value, ctx in rows.itertuples(index=False):
        ctx_id = int(ctx) if ctx == ctx else 0
        per_run[run_id].append((paths.get((run_id, ctx_id), ()), float(value)))
    return [sorted(per_run[run]) for run in order]


def tree_digest(root: Path) -> dict[str, str]:
    """sha256 of every file of the user's project outside .git and .retrolog."""
    return {
        str(path.relative_to(root)): hashlib.sha256(path.read_bytes()).hexdigest()
        for path in sorted(root.rglob("*"))
        if path.is_file()
        and path.relative_to(root).parts[0] not in (".git", ".retrolog")
        and "__pycache__" not in path.parts
    }
