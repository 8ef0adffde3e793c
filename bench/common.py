"""Shared helpers of the benchmarks: peers' venvs, scratch git repos, subprocesses, statistics.

Every tool runs in a subprocess with its own interpreter: retrolog from this repository's venv,
the peers from the venvs that ``bench/peers/setup.sh`` builds. Workers take their parameters from
the ``BENCH_PARAMS`` environment variable (JSON; flordb parses ``sys.argv`` at import, so nothing
goes on the command line) and write one JSON object to the file named by ``BENCH_OUT``.
"""

from __future__ import annotations

import datetime as dt
import json
import os
import platform
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable, Sequence
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any, TypeVar

BENCH_DIR = Path(__file__).resolve().parent
REPO_ROOT = BENCH_DIR.parent
WORKERS = BENCH_DIR / "workers"
PEER_FILES = BENCH_DIR / "peers"
RESULTS = BENCH_DIR / "results"
PEERS_DIR = Path(os.environ.get("RETROLOG_PEERS", "/tmp/retrolog-peers"))
SCRATCH = Path(os.environ.get("RETROLOG_BENCH_SCRATCH", tempfile.gettempdir())) / "retrolog-bench"

# Single-threaded BLAS/OpenMP everywhere: the reference workload uses one torch thread and the
# machine has two cores, so a second busy thread would only add noise.
_THREAD_ENV = {"OMP_NUM_THREADS": "1", "MKL_NUM_THREADS": "1", "OPENBLAS_NUM_THREADS": "1"}


class PeerMissing(RuntimeError):
    """The peer's venv is not there: the benchmark skips it with this message."""


def python_of(tool: str) -> str:
    """The interpreter a tool runs with (raises PeerMissing for an absent peer venv)."""
    if tool == "retrolog":
        return sys.executable
    exe = PEERS_DIR / tool / "bin" / "python"
    if not exe.is_file():
        raise PeerMissing(f"{tool}: no venv at {exe.parent.parent} (run bash bench/peers/setup.sh)")
    return str(exe)


def peer_version(tool: str) -> str:
    """Version of the tool's package in its venv ('-' when absent)."""
    package = {"retrolog": "retrolog", "flordb": "flordb", "mlflow": "mlflow"}[tool]
    try:
        exe = python_of(tool)
    except PeerMissing:
        return "-"
    code = f"from importlib.metadata import version; print(version({package!r}))"
    proc = subprocess.run([exe, "-c", code], capture_output=True, text=True, check=False)
    return proc.stdout.strip() or "?"


def scratch_repo(name: str, files: dict[str, Path | str], root: Path | None = None) -> Path:
    """A fresh git repository (under SCRATCH, or at ``root``) holding ``files`` (name -> source
    path or text), committed once, as a user's project would be."""
    SCRATCH.mkdir(parents=True, exist_ok=True)
    if root is None:
        root = Path(tempfile.mkdtemp(prefix=f"{name}-", dir=SCRATCH))
    else:
        root.mkdir(parents=True)
    for rel, source in files.items():
        target = root / rel
        target.parent.mkdir(parents=True, exist_ok=True)
        if isinstance(source, Path):
            shutil.copyfile(source, target)
        else:
            target.write_text(source)
    env = dict(os.environ, **git_identity())
    for args in (["init", "-q", "-b", "main"], ["add", "-A"], ["commit", "-q", "-m", "init"]):
        subprocess.run(["git", *args], cwd=root, env=env, check=True, capture_output=True)
    return root


def git_identity() -> dict[str, str]:
    return {
        "GIT_AUTHOR_NAME": "bench",
        "GIT_AUTHOR_EMAIL": "bench@localhost",
        "GIT_COMMITTER_NAME": "bench",
        "GIT_COMMITTER_EMAIL": "bench@localhost",
    }


def tool_env(extra: dict[str, str] | None = None) -> dict[str, str]:
    """Environment of a worker: ours, single-threaded, no user-level retrolog/MLflow settings."""
    env = {k: v for k, v in os.environ.items() if not k.startswith(("RETROLOG_", "MLFLOW_"))}
    env.update(_THREAD_ENV)
    env.update(git_identity())
    # Compiled bytecode is cached (outside the repositories) and reused, as in a normal install:
    # the peers' site-packages come with .pyc files, and retrolog's editable src/ must not pay
    # for compiling its modules in every measured process.
    env.pop("PYTHONDONTWRITEBYTECODE", None)
    env["PYTHONPYCACHEPREFIX"] = str(SCRATCH / "pycache")
    env["RETROLOG_PROGRESS"] = "0"
    env.pop("VIRTUAL_ENV", None)
    env.update(extra or {})
    return env


def pinned(core: int | None) -> list[str]:
    """The command prefix that pins a process to ``core`` (nothing for None)."""
    return ["taskset", "-c", str(core)] if core is not None else []


def pair_cores(concurrent: bool = True) -> list[int]:
    """The two cores a concurrent pair runs on; empty (run the pair one after the other) when
    ``concurrent`` is off or the machine has fewer than two."""
    cores = sorted(os.sched_getaffinity(0))[:2]
    return cores if concurrent and len(cores) == 2 else []


PAIR = ("bare", "tracked")
T = TypeVar("T")


def run_pair(one: Callable[[str, int | None], T], pair: int, cores: list[int]) -> dict[str, T]:
    """Run ``one(mode, core)`` for both modes of PAIR: started together, one per core, when
    ``cores`` (pair_cores) has two, else one after the other; the order (and so the cores)
    swapped every other pair, so neither mode keeps the faster core or the first start."""
    order = PAIR if pair % 2 == 0 else PAIR[::-1]
    if not cores:
        return {mode: one(mode, None) for mode in order}
    with ThreadPoolExecutor(max_workers=2) as pool:
        futures = {mode: pool.submit(one, mode, core) for mode, core in zip(order, cores)}
        return {mode: future.result() for mode, future in futures.items()}


def run_timed(cmd: list[str], cwd: Path, env: dict[str, str], log: Path) -> tuple[float, float]:
    """Run ``cmd`` to completion; return (wall s, CPU s = user + system of it and the children
    it waited for, e.g. git). Output goes to ``log``; a non-zero exit raises with its tail."""
    with open(log, "ab") as fh:
        start = time.perf_counter()
        proc = subprocess.Popen(
            cmd, cwd=cwd, env=env, stdin=subprocess.DEVNULL, stdout=fh, stderr=fh
        )
        _, status, usage = os.wait4(proc.pid, 0)
        wall = time.perf_counter() - start
    proc.returncode = os.waitstatus_to_exitcode(status)
    if proc.returncode != 0:
        tail = log.read_text(errors="replace")[-3000:]
        raise RuntimeError(f"{' '.join(cmd)} failed ({proc.returncode}) in {cwd}:\n{tail}")
    return wall, usage.ru_utime + usage.ru_stime


def run_worker(
    tool: str,
    script: Path | str,
    params: dict[str, Any],
    cwd: Path,
    timeout: float = 1800,
    extra_env: dict[str, str] | None = None,
) -> tuple[dict[str, Any], float]:
    """Run ``script`` (a path inside ``cwd``) with the tool's interpreter; return its JSON and
    the process's wall time in seconds. Its stdout/stderr go to a log file next to it."""
    out = cwd / f".bench-out-{time.monotonic_ns()}.json"
    env = tool_env({"BENCH_PARAMS": json.dumps(params), "BENCH_OUT": str(out), **(extra_env or {})})
    log = cwd.parent / f"{cwd.name}.log"
    wall, _ = run_timed([python_of(tool), str(script)], cwd, env, log)
    result = json.loads(out.read_text()) if out.exists() else {}
    out.unlink(missing_ok=True)
    return result, wall


def remove_tree(path: Path) -> None:
    shutil.rmtree(path, ignore_errors=True)


# -- statistics ------------------------------------------------------------------------------
def median(xs: Sequence[float]) -> float:
    return statistics.median(xs) if xs else float("nan")


def quantile(xs: Sequence[float], q: float) -> float:
    """Linear-interpolated quantile (q in [0, 1])."""
    if not xs:
        return float("nan")
    s = sorted(xs)
    pos = q * (len(s) - 1)
    lo = int(pos)
    hi = min(lo + 1, len(s) - 1)
    return s[lo] + (s[hi] - s[lo]) * (pos - lo)


def spread(xs: Sequence[float]) -> dict[str, float]:
    """Median, min, max, p10, p90 of a sample."""
    return {
        "median": median(xs),
        "min": min(xs) if xs else float("nan"),
        "max": max(xs) if xs else float("nan"),
        "p10": quantile(xs, 0.1),
        "p90": quantile(xs, 0.9),
        "n": len(xs),
    }


def ratio(a: float, b: float) -> float:
    return a / b if b else float("nan")


# -- reporting -------------------------------------------------------------------------------
def fmt(x: float | None, digits: int = 3) -> str:
    if x is None or (isinstance(x, float) and x != x):
        return "-"
    if abs(x) >= 1000:
        return f"{x:,.0f}"
    return f"{x:.{digits}g}"


def table(headers: Sequence[str], rows: Sequence[Sequence[Any]]) -> str:
    """A markdown table."""
    lines = ["| " + " | ".join(headers) + " |", "|" + "|".join("---" for _ in headers) + "|"]
    lines += ["| " + " | ".join(str(c) for c in row) + " |" for row in rows]
    return "\n".join(lines)


def machine() -> dict[str, Any]:
    cpu = "?"
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                cpu = line.split(":", 1)[1].strip()
                break
    except OSError:
        pass
    return {
        "nproc": os.cpu_count(),
        "cpu": cpu,
        "machine": platform.machine(),
        "python": platform.python_version(),
        "date": dt.date.today().isoformat(),
        "load_avg_at_start": os.getloadavg(),
    }


def code_state() -> dict[str, Any]:
    """Which retrolog code was measured: HEAD and whether src/ has uncommitted changes."""

    def git(*args: str) -> str:
        proc = subprocess.run(["git", *args], cwd=REPO_ROOT, capture_output=True, text=True)
        return proc.stdout.strip()

    changed = git("status", "--porcelain", "--", "src")
    return {
        "head": git("rev-parse", "--short", "HEAD"),
        "src_changed_files": len(changed.splitlines()),
    }


def save(name: str, payload: dict[str, Any]) -> Path:
    """Write results to bench/results/<name>-<timestamp>.json and <name>-latest.json."""
    RESULTS.mkdir(parents=True, exist_ok=True)
    stamp = dt.datetime.now().strftime("%Y%m%d-%H%M%S")
    text = json.dumps(payload, indent=2, default=str)
    path = RESULTS / f"{name}-{stamp}.json"
    path.write_text(text)
    (RESULTS / f"{name}-latest.json").write_text(text)
    return path
