"""Benchmark 2: end-to-end record overhead on the reference workload (examples/train_digits.py).

Variants, each a whole ``python train.py`` process timed by the harness (wall clock, import to
exit), each run in a fresh scratch git repo holding only the committed script:

* bare: the reference script with retrolog removed (generated from it by an AST rewrite, so the
  training code is the same by construction: ``retrolog.arg(n, d)`` -> ``d``, ``retrolog.loop(n,
  it)`` -> ``it``, ``retrolog.log(n, v)`` -> ``v``, the ``checkpointing`` block unwrapped);
* retrolog: the reference script as is; retrolog, no checkpointing: the block unwrapped only;
* flordb / mlflow: bench/peers/train_digits_{flordb,mlflow}.py in the peers' venvs (same torch,
  numpy and scikit-learn versions as ours; checked and recorded).

One round runs every variant once, in an order rotated each round; the overhead of a variant is
the median over rounds of (its wall - the same round's bare wall), as % of the median bare wall.
After each run the harness checks (untimed) that the tool stored all 440 per-step losses.
"""

from __future__ import annotations

import ast
import os
import sqlite3
import subprocess
from pathlib import Path
from typing import Any

import common as C

REFERENCE = C.REPO_ROOT / "examples" / "train_digits.py"
STEPS = 440  # 10 epochs x ceil(1400 / 32) batches


class _Strip(ast.NodeTransformer):
    """Remove retrolog from a script: all calls (``calls=True``) or only ``checkpointing``."""

    def __init__(self, calls: bool) -> None:
        self.calls = calls

    @staticmethod
    def _is(node: ast.AST, attr: str) -> bool:
        return (
            isinstance(node, ast.Call)
            and isinstance(node.func, ast.Attribute)
            and isinstance(node.func.value, ast.Name)
            and node.func.value.id == "retrolog"
            and node.func.attr == attr
        )

    def visit_Call(self, node: ast.Call) -> ast.AST:
        self.generic_visit(node)
        if self.calls and any(self._is(node, a) for a in ("arg", "loop", "log")):
            return node.args[1]
        return node

    def visit_With(self, node: ast.With) -> Any:
        self.generic_visit(node)
        if any(self._is(item.context_expr, "checkpointing") for item in node.items):
            return node.body
        return node

    def visit_Import(self, node: ast.Import) -> Any:
        if self.calls and [a.name for a in node.names] == ["retrolog"]:
            return None
        return node


def strip_retrolog(source: str, calls: bool) -> str:
    tree = _Strip(calls).visit(ast.parse(source))
    if calls and any(isinstance(n, ast.Name) and n.id == "retrolog" for n in ast.walk(tree)):
        raise RuntimeError("bare workload: the reference script uses retrolog in new ways")
    return ast.unparse(ast.fix_missing_locations(tree)) + "\n"


def variants() -> list[dict[str, Any]]:
    source = REFERENCE.read_text()
    return [
        {"name": "bare", "tool": "retrolog", "source": strip_retrolog(source, calls=True)},
        {"name": "retrolog", "tool": "retrolog", "source": source},
        {
            "name": "retrolog, no checkpointing block",
            "tool": "retrolog",
            "source": strip_retrolog(source, calls=False),
        },
        {"name": "flordb", "tool": "flordb", "source": C.PEER_FILES / "train_digits_flordb.py"},
        {
            "name": "mlflow (sqlite)",
            "tool": "mlflow",
            "source": C.PEER_FILES / "train_digits_mlflow.py",
        },
    ]


def _stored(tool: str, repo: Path) -> int:
    """Per-step losses the tool stored (read after the run, untimed)."""
    if tool == "retrolog":
        db, sql = repo / ".retrolog" / "retrolog.db", "SELECT count(*) FROM logs WHERE name='loss'"
    elif tool == "flordb":
        db = next((repo / ".flor").glob("*.db"))
        sql = "SELECT count(*) FROM logs WHERE value_name='loss'"
    else:
        db, sql = repo / "mlflow.db", "SELECT count(*) FROM metrics WHERE key='loss'"
    with sqlite3.connect(db) as conn:
        return int(conn.execute(sql).fetchone()[0])


def _run(variant: dict[str, Any]) -> dict[str, float]:
    repo = C.scratch_repo("e2e", {"train.py": variant["source"]})
    exe = C.python_of(variant["tool"])
    env = C.tool_env()
    log = repo.parent / f"{repo.name}.log"
    if variant["tool"] == "mlflow":
        _mlflow_db(repo)
    load = os.getloadavg()[0]
    wall, cpu = C.run_timed([exe, "train.py"], repo, env, log)
    if variant["name"] != "bare":
        stored = _stored(variant["tool"], repo)
        if stored != STEPS:
            raise RuntimeError(f"{variant['name']}: stored {stored} losses, expected {STEPS}")
    C.remove_tree(repo)
    log.unlink(missing_ok=True)
    return {"wall": wall, "cpu": cpu, "load": load}


def _versions(tool: str) -> str:
    code = "import torch, numpy, sklearn; print(torch.__version__, numpy.__version__, sklearn.__version__)"
    proc = subprocess.run([C.python_of(tool), "-c", code], capture_output=True, text=True)
    return proc.stdout.strip()


def run(quick: bool) -> dict[str, Any]:
    rounds = 0 if quick else 5  # quick mode: only the recording-calls-only measurement
    todo, skipped = [], []
    for v in variants():
        try:
            C.python_of(v["tool"])
            todo.append(v)
        except C.PeerMissing as exc:
            skipped.append(str(exc))
            print(f"  skipped: {exc}", flush=True)
    stacks = {t: _versions(t) for t in sorted({v["tool"] for v in todo})}
    runs: dict[str, list[dict[str, float]]] = {v["name"]: [] for v in todo}
    for rnd in range(rounds):
        order = todo[rnd % len(todo) :] + todo[: rnd % len(todo)]
        for v in order:
            r = _run(v)
            runs[v["name"]].append(r)
            print(
                f"  round {rnd + 1}/{rounds} {v['name']}: wall {r['wall']:.2f}s "
                f"cpu {r['cpu']:.2f}s (load {r['load']:.1f})",
                flush=True,
            )
    bare = runs["bare"]
    cases = []
    for v in todo if rounds else []:
        mine = runs[v["name"]]
        case: dict[str, Any] = {"name": v["name"], "tool": v["tool"], "runs": mine}
        for key in ("wall", "cpu"):
            diffs = [a[key] - b[key] for a, b in zip(mine, bare, strict=True)]
            base = C.median([b[key] for b in bare])
            case[key] = {
                "median": C.median([a[key] for a in mine]),
                "diffs": diffs,
                "median_diff": C.median(diffs),
                "overhead_pct": 100 * C.median(diffs) / base,
            }
        cases.append(case)
    skeleton = _skeleton(1 if quick else 4, sorted({v["tool"] for v in todo}))
    return {
        "rounds": rounds,
        "stacks": stacks,
        "cases": cases,
        "skeleton": skeleton,
        "skipped": skipped,
    }


SKELETON = [("retrolog", "retrolog"), ("retrolog-nockpt", "retrolog"), ("flordb", "flordb")]
SKELETON += [("mlflow", "mlflow")]


def _skeleton(rounds: int, tools: list[str]) -> dict[str, Any]:
    """What recording adds to a process, timed inside it (bench/workers/skeleton.py), for a run
    into a project whose store exists (an untimed first run creates it; MLflow's database is
    created directly). MLflow, whose 440 synchronous SQLite writes take ~15 s, gets half the
    rounds."""
    todo = [(name, tool) for name, tool in SKELETON if tool in tools]
    samples: dict[str, list[dict[str, float]]] = {name: [] for name, _ in todo}
    for rnd in range(rounds):
        for name, tool in todo[rnd % len(todo) :] + todo[: rnd % len(todo)]:
            if tool == "mlflow" and rnd % 2:  # MLflow: every other round
                continue
            repo = C.scratch_repo("skel", {"skeleton.py": C.WORKERS / "skeleton.py"})
            if tool == "mlflow":
                _mlflow_db(repo)
            else:  # a project's first run creates its store: a one-time cost, as for MLflow's
                C.run_worker(tool, "skeleton.py", {"tool": name}, repo)
            out, _ = C.run_worker(tool, "skeleton.py", {"tool": name}, repo)
            samples[name].append(out)
            C.remove_tree(repo)
            (repo.parent / f"{repo.name}.log").unlink(missing_ok=True)
        print(f"  recording-calls-only round {rnd + 1}/{rounds} done", flush=True)
    return {
        name: {key: C.spread([g[key] for g in got]) for key in ("wall", "cpu")}
        for name, got in samples.items()
    }


def _mlflow_db(repo: Path) -> None:
    """Create MLflow's database (alembic migrations, seconds) before the timed run: that is a
    one-time cost of a project, not of a run."""
    init = "import mlflow; mlflow.MlflowClient('sqlite:///mlflow.db').search_experiments()"
    subprocess.run(
        [C.python_of("mlflow"), "-c", init],
        cwd=repo,
        env=C.tool_env(),
        check=True,
        capture_output=True,
    )


def report(results: dict[str, Any]) -> str:
    cases = results["cases"]
    ours = next((c for c in cases if c["name"] == "retrolog"), None)
    rows = []
    for c in cases:
        w, u = c["wall"], c["cpu"]
        if c["name"] == "bare":
            rows.append(["bare", C.fmt(w["median"]), "-", "-", "-", C.fmt(u["median"]), "-", "-"])
            continue
        ratio = "-"
        if ours is not None and c is not ours and ours["wall"]["median_diff"] > 0:
            ratio = f"{C.fmt(C.ratio(w['median_diff'], ours['wall']['median_diff']))}x"
        rows.append(
            [
                c["name"],
                C.fmt(w["median"]),
                C.fmt(w["median_diff"]),
                f"{C.fmt(min(w['diffs']))} .. {C.fmt(max(w['diffs']))}",
                f"**{w['overhead_pct']:+.2f}%**",
                C.fmt(u["median"]),
                f"{u['overhead_pct']:+.2f}%",
                ratio,
            ]
        )
    head = [
        "variant",
        "wall s (median)",
        "paired wall diff s (median)",
        "diff range s",
        "wall overhead % of bare",
        "CPU s (median)",
        "CPU overhead % of bare",
        "wall diff vs retrolog",
    ]
    loads = [r["load"] for c in cases for r in c["runs"]] or [float("nan")]
    out = [
        C.table(head, rows) if rows else "(quick mode: no full-workload rounds)",
        f"\n{results['rounds']} rounds; 1-min load average during the runs: "
        f"{C.fmt(min(loads))} .. {C.fmt(max(loads))}. torch/numpy/sklearn per venv:",
    ]
    out += [f"- {tool}: {stack}" for tool, stack in results["stacks"].items()]
    skel = results.get("skeleton")
    bare = next((c for c in cases if c["name"] == "bare"), None)
    if skel:
        base_wall = bare["wall"]["median"] if bare is not None else float("nan")
        rows = []
        for name, e in skel.items():
            w, u = e["wall"], e["cpu"]
            rows.append(
                [
                    name,
                    str(w["n"]),
                    f"{C.fmt(w['median'])} ({C.fmt(w['min'])} .. {C.fmt(w['max'])})",
                    f"{C.fmt(u['median'])} ({C.fmt(u['min'])} .. {C.fmt(u['max'])})",
                    "-"
                    if bare is None
                    else f"{100 * w['median'] / base_wall:+.2f}% / {100 * u['median'] / base_wall:+.2f}%",
                ]
            )
        head = [
            "recording calls only",
            "runs",
            "in-process wall s, median (min .. max)",
            "CPU s incl. git, median (min .. max)",
            "wall / CPU as % of the bare workload's median wall",
        ]
        out += [
            "\nWhat recording adds to a process, timed inside it without the training "
            "(bench/workers/skeleton.py):\n",
            C.table(head, rows),
        ]
    out += [f"\nskipped: {s}" for s in results["skipped"]]
    return "\n".join(out)
