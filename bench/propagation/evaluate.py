"""Evaluate statement propagation on the corpus: retrolog next to flordb 4.0.1.

    .venv/bin/python bench/propagation/evaluate.py [--no-flordb] [--forward] [--cli-runs N]

Prints markdown tables (placement accuracy, correct refusals, wrong placements, byte
preservation, parse rate, time per pair; per family; the CLI time on a synthetic 1,000-line
script) and writes the details to ``bench/results/propagation.json``.  flordb runs in its own
virtual environment (``/tmp/flordb-venv`` or ``$FLORDB_VENV``) through a subprocess; without
it that column is skipped with a message.
"""

from __future__ import annotations

import argparse
import hashlib
import json
import os
import platform
import statistics
import subprocess
import sys
import tempfile
import time
from collections import defaultdict
from pathlib import Path

HERE = Path(__file__).resolve().parent
ROOT = HERE.parents[1]
sys.path.insert(0, str(HERE))
sys.path.insert(0, str(ROOT / "src"))

from corpus import Pair, check, make_pairs, only_insertions  # noqa: E402

from retrolog.propagation import THRESHOLD, propagate  # noqa: E402

FLORDB_VENV = Path(os.environ.get("FLORDB_VENV", "/tmp/flordb-venv"))


def run_retrolog(pairs: list[Pair], min_confidence: float | None = None) -> list[dict]:
    """Propagate every pair in-process; judge placement, bytes and parse status.

    ``min_confidence``: passed to ``propagate`` (``None``: its default threshold).
    """
    results = []
    kwargs = {} if min_confidence is None else {"min_confidence": min_confidence}
    for p in pairs:
        started = time.perf_counter()
        try:
            r = propagate(p.new_source, p.old_source, p.line, **kwargs)
            error = None
        except Exception as exc:  # a crash counts against the tool
            r, error = None, f"{type(exc).__name__}: {exc}"
        seconds = time.perf_counter() - started
        out = None if r is None or r.refused is not None else r.source
        verdict = check(p, out)
        results.append(
            {
                "pair": p.name,
                "family": p.family,
                "category": p.category,
                "direction": p.direction,
                "refuse_expected": p.refuse,
                "status": "error" if error else verdict["status"],
                "exact": verdict["exact"],
                "parses": verdict["status"] != "unparsable",
                "bytes_kept": out is None or only_insertions(p.old_source, out),
                "seconds": seconds,
                "reason": (r.refused if r is not None else error),
                "refusal_code": r.refusal_code if r is not None else None,
                "confidence": r.confidence if r is not None else None,
                "warnings": list(r.warnings) if r is not None else [],
            }
        )
    return results


def run_flordb(pairs: list[Pair]) -> list[dict] | None:
    """Run flordb's backprop on every pair through its own interpreter; None if unavailable."""
    python = FLORDB_VENV / "bin" / "python"
    if not python.exists():
        print(
            f"_flordb column skipped: no flordb venv at {FLORDB_VENV} "
            "(python3 -m venv /tmp/flordb-venv && /tmp/flordb-venv/bin/pip install "
            "flordb==4.0.1)_\n"
        )
        return None
    cache_path = ROOT / "bench" / "results" / "flordb_cache.json"
    cache: dict[str, dict] = json.loads(cache_path.read_text()) if cache_path.exists() else {}
    keys = [_key(p) for p in pairs]
    todo = [i for i, k in enumerate(keys) if k not in cache]
    if todo:
        print(f"_running flordb on {len(todo)} pairs (cached: {len(pairs) - len(todo)})_\n")
        with tempfile.TemporaryDirectory() as tmp:
            # flordb refuses to import outside a git repository
            subprocess.run(["git", "init", "-q", tmp], check=True)
            jobs = []
            for i in todo:
                p = pairs[i]
                new, old, out = (Path(tmp) / f"{i}.{n}.py" for n in ("new", "old", "out"))
                new.write_text(p.new_source)
                old.write_text(p.old_source)
                jobs.append({"new": str(new), "old": str(old), "line": p.line, "out": str(out)})
            proc = subprocess.run(
                [str(python), str(HERE / "flordb_driver.py")],
                input=json.dumps(jobs),
                capture_output=True,
                text=True,
                cwd=tmp,
            )
            lines = [json.loads(x) for x in proc.stdout.splitlines() if x.startswith("{")]
            if len(lines) != len(jobs):
                print(f"_flordb driver failed: {proc.stderr[-500:]}_\n")
                return None
            for i, job, res in zip(todo, jobs, lines):
                out_path = Path(job["out"])
                res["out"] = out_path.read_text() if res["ok"] and out_path.exists() else None
                cache[keys[i]] = res
        cache_path.parent.mkdir(parents=True, exist_ok=True)
        cache_path.write_text(json.dumps(cache))
    results = []
    for p, k in zip(pairs, keys):
        res = cache[k]
        out = res["out"]
        verdict = check(p, out)
        results.append(
            {
                "pair": p.name,
                "family": p.family,
                "direction": p.direction,
                "refuse_expected": p.refuse,
                "status": verdict["status"],
                "exact": verdict["exact"],
                "parses": verdict["status"] != "unparsable",
                "bytes_kept": out is None or only_insertions(p.old_source, out),
                "seconds": res["seconds"],
                "reason": res["error"],
            }
        )
    return results


def _key(p: Pair) -> str:
    """Cache key of a pair for flordb: its inputs."""
    h = hashlib.sha256()
    for part in (p.new_source, p.old_source, str(p.line)):
        h.update(part.encode())
        h.update(b"\0")
    return h.hexdigest()


def summarize(results: list[dict]) -> dict:
    """Counts and rates over one tool's results."""
    placeable = [r for r in results if not r["refuse_expected"]]
    refusals = [r for r in results if r["refuse_expected"]]
    produced = [r for r in results if r["status"] not in ("refused_ok", "false_refusal", "error")]
    times = sorted(r["seconds"] for r in results)
    correct = sum(r["status"] == "correct" for r in placeable)
    ok_refusals = sum(r["status"] == "refused_ok" for r in refusals)
    return {
        "pairs": len(results),
        "placeable": len(placeable),
        "refuse": len(refusals),
        "correct": correct,
        "exact": sum(r["exact"] for r in placeable),
        "false_refusals": sum(r["status"] == "false_refusal" for r in placeable),
        "wrong": sum(r["status"] in ("wrong", "unparsable") for r in placeable),
        "errors": sum(r["status"] == "error" for r in results),
        "correct_refusals": ok_refusals,
        "wrong_on_refuse": sum(r["status"] == "wrong" for r in refusals),
        "overall": correct + ok_refusals,
        "produced": len(produced),
        "parsed": sum(r["parses"] for r in produced),
        "bytes_kept": sum(r["bytes_kept"] for r in produced),
        "median_ms": 1000 * statistics.median(times) if times else 0.0,
        "p95_ms": 1000 * times[int(0.95 * (len(times) - 1))] if times else 0.0,
    }


def _pct(n: int, d: int) -> str:
    return f"{n}/{d} ({100.0 * n / d:.1f}%)" if d else "n/a"


def table(rows: list[tuple[str, ...]], header: tuple[str, ...]) -> str:
    """A markdown table."""
    out = ["| " + " | ".join(header) + " |", "|" + "|".join("---" for _ in header) + "|"]
    out += ["| " + " | ".join(r) + " |" for r in rows]
    return "\n".join(out)


def summary_table(ours: dict, theirs: dict | None) -> str:
    """The side-by-side summary of both tools."""
    metrics = [
        (
            "pairs (placeable + refuse)",
            lambda s: f"{s['pairs']} ({s['placeable']} + {s['refuse']})",
        ),
        ("correct overall (placement or refusal)", lambda s: _pct(s["overall"], s["pairs"])),
        ("correct placement", lambda s: _pct(s["correct"], s["placeable"])),
        ("... and exact statement (renames right)", lambda s: _pct(s["exact"], s["placeable"])),
        ("wrong placement", lambda s: _pct(s["wrong"], s["placeable"])),
        ("false refusal", lambda s: _pct(s["false_refusals"], s["placeable"])),
        ("correct refusal", lambda s: _pct(s["correct_refusals"], s["refuse"])),
        ("placed although it should refuse", lambda s: _pct(s["wrong_on_refuse"], s["refuse"])),
        ("crashes", lambda s: str(s["errors"])),
        ("outputs that parse", lambda s: _pct(s["parsed"], s["produced"])),
        ("outputs byte-preserving", lambda s: _pct(s["bytes_kept"], s["produced"])),
        ("time per pair, median / p95 (ms)", lambda s: f"{s['median_ms']:.1f} / {s['p95_ms']:.1f}"),
    ]
    rows = []
    for name, f in metrics:
        rows.append((name, f(ours), f(theirs) if theirs else "skipped"))
    return table(rows, ("metric", "retrolog", "flordb 4.0.1"))


def family_table(ours: list[dict], theirs: list[dict] | None) -> str:
    """Per-family overall accuracy."""
    by: dict[str, list[dict]] = defaultdict(list)
    for r in ours:
        by[r["family"]].append(r)
    by2: dict[str, list[dict]] = defaultdict(list)
    for r in theirs or []:
        by2[r["family"]].append(r)
    rows = []
    for fam in sorted(by):
        a = summarize(by[fam])
        b = summarize(by2[fam]) if theirs else None
        rows.append(
            (
                fam,
                str(a["pairs"]),
                _pct(a["overall"], a["pairs"]),
                str(a["wrong"] + a["wrong_on_refuse"]),
                _pct(b["overall"], b["pairs"]) if b else "skipped",
                str(b["wrong"] + b["wrong_on_refuse"]) if b else "skipped",
            )
        )
    return table(
        rows,
        ("family", "pairs", "retrolog correct", "retrolog wrong", "flordb correct", "flordb wrong"),
    )


KINDS = (
    ("loop-absent", "over-cautious refusal: the statement is in a loop the old version lacks"),
    ("anchor-after", "over-cautious refusal / misplaced: the line before it is new"),
    ("absent-context", "false insert: its context is missing, it must be refused"),
    ("names-bound", "misplaced: the nearest mapped line comes before what it reads"),
    ("rename", "misplaced: identifiers it uses are called differently there"),
    ("regular", "the rest of the corpus"),
)


def kind_table(results: list[dict]) -> str:
    """Per-kind results (kinds of docs/propagation.md; a pair's kind is set in its spec)."""
    rows = []
    for kind, what in KINDS:
        sel = [r for r in results if r.get("category") == kind]
        if not sel:
            continue
        s = summarize(sel)
        times = sorted(r["seconds"] for r in sel)
        rows.append(
            (
                f"`{kind}`",
                what,
                str(s["pairs"]),
                _pct(s["overall"], s["pairs"]),
                str(s["false_refusals"]),
                str(s["wrong"]),
                str(s["wrong_on_refuse"]),
                f"{1000 * statistics.median(times):.1f} / {1000 * times[-1]:.1f}",
            )
        )
    header = (
        "kind",
        "what",
        "pairs",
        "correct",
        "false refusals",
        "misplaced",
        "false inserts",
        "ms per pair, median / max",
    )
    return table(rows, header)


BINS = (0.0, 0.5, 0.6, 0.7, 0.8, 0.9, 1.0001)


def calibration(results: list[dict]) -> list[dict]:
    """Placements made without a threshold, binned by confidence: how many were right."""
    out = []
    placed = [r for r in results if r["status"] not in ("refused_ok", "false_refusal", "error")]
    for lo, hi in zip(BINS, BINS[1:]):
        sel = [r for r in placed if lo <= (r["confidence"] or 0.0) < hi]
        out.append(
            {
                "low": lo,
                "high": min(hi, 1.0),
                "placed": len(sel),
                "right": sum(r["status"] == "correct" for r in sel),
            }
        )
    return out


def calibration_table(backward: list[dict], forward: list[dict] | None) -> str:
    """Confidence vs correctness, backward pairs (the real use) and forward pairs."""
    rows = []
    fw = forward or [{"placed": 0, "right": 0}] * len(backward)
    for b, f in zip(backward, fw):
        rng = f"[{b['low']:.1f}, {b['high']:.1f}" + ("]" if b["high"] >= 1.0 else ")")
        rows.append(
            (
                rng,
                _pct(b["right"], b["placed"]) if b["placed"] else "0 placed",
                _pct(f["right"], f["placed"]) if f["placed"] else "0 placed",
            )
        )
    return table(rows, ("confidence", "backward: right / placed", "forward: right / placed"))


STUB = (
    "import sys, types; p = types.ModuleType('retrolog'); p.__path__ = [{path!r}]; "
    "sys.modules['retrolog'] = p; from retrolog.propagation.cli import main; "
    "sys.exit(main(sys.argv[1:]))"
)


def _measure(cmd: list[str], env: dict[str, str], runs: int) -> tuple[list[float], list[float]]:
    """Wall-clock and CPU (user + system) milliseconds of ``runs`` runs of ``cmd``."""
    import resource

    subprocess.run(cmd, env=env, capture_output=True, check=True)  # warm the byte-code cache
    wall, cpu = [], []
    for _ in range(runs):
        before = resource.getrusage(resource.RUSAGE_CHILDREN)
        t = time.perf_counter()
        subprocess.run(cmd, env=env, capture_output=True, check=True)
        wall.append(1000 * (time.perf_counter() - t))
        after = resource.getrusage(resource.RUSAGE_CHILDREN)
        cpu.append(1000 * (after.ru_utime - before.ru_utime + after.ru_stime - before.ru_stime))
    return wall, cpu


def cli_timing(runs: int) -> dict:
    """Time ``python -m retrolog.propagation`` on the synthetic 1,000-line pair.

    Byte code is cached as after an install (``PYTHONDONTWRITEBYTECODE`` unset, cache in a
    temporary ``PYTHONPYCACHEPREFIX``).  Wall-clock and CPU times are both reported: on a
    shared VM the wall clock includes waiting for a CPU.  Also timed: the same command with
    the ``retrolog`` package's ``__init__`` bypassed (what a lazy ``__init__`` would give),
    ``import retrolog`` alone and a bare interpreter start.
    """
    from synth import make_pair

    new, old, line, _anchor = make_pair()
    with tempfile.TemporaryDirectory() as tmp:
        new_p, old_p = Path(tmp) / "new.py", Path(tmp) / "old.py"
        new_p.write_text(new)
        old_p.write_text(old)
        env = dict(os.environ)
        env.pop("PYTHONDONTWRITEBYTECODE", None)
        env["PYTHONPYCACHEPREFIX"] = str(Path(tmp) / "pycache")
        args = ["--line", str(line), str(new_p), str(old_p)]
        cmd = [sys.executable, "-m", "retrolog.propagation", *args]
        stub = [sys.executable, "-c", STUB.format(path=str(ROOT / "src" / "retrolog")), *args]
        result = subprocess.run(cmd, env=env, capture_output=True, text=True, check=True)
        placed_ok = 'retrolog.log("grad_norm"' in result.stdout
        out = {"lines_new": len(new.splitlines()), "lines_old": len(old.splitlines()), "runs": runs}
        for name, c in (
            ("cli", cmd),
            ("cli_lazy_init", stub),
            ("import_retrolog", [sys.executable, "-c", "import retrolog"]),
            ("python", [sys.executable, "-c", "pass"]),
        ):
            wall, cpu = _measure(c, env, runs)
            out[name] = {
                "wall_median_ms": statistics.median(wall),
                "wall_min_ms": min(wall),
                "cpu_median_ms": statistics.median(cpu),
            }
        t0 = time.perf_counter()
        for _ in range(runs):
            propagate(new, old, line)
        out["in_process_mean_ms"] = 1000 * (time.perf_counter() - t0) / runs
        out["placed"] = placed_ok
        out["load_average"] = os.getloadavg()
    return out


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--no-flordb", action="store_true", help="skip the flordb column")
    ap.add_argument("--forward", action="store_true", help="also evaluate forward pairs")
    ap.add_argument("--cli-runs", type=int, default=15, help="CLI timing runs (0: skip)")
    ap.add_argument("--failures", action="store_true", help="list retrolog's failures")
    args = ap.parse_args(argv)
    report: dict = {
        "date": time.strftime("%Y-%m-%d"),
        "python": platform.python_version(),
        "machine": f"{platform.machine()}, {os.cpu_count()} CPUs",
    }
    print("## Propagation evaluation\n")
    print(f"Python {report['python']}, {report['machine']}.\n")
    for direction in ("backward", "forward") if args.forward else ("backward",):
        pairs = make_pairs(directions=(direction,))
        ours = run_retrolog(pairs)
        theirs = None if args.no_flordb else run_flordb(pairs)
        s_ours = summarize(ours)
        s_theirs = summarize(theirs) if theirs else None
        title = "new -> old (backward)" if direction == "backward" else "old -> new (forward)"
        print(f"### Corpus, {title}\n")
        print(summary_table(s_ours, s_theirs) + "\n")
        print(family_table(ours, theirs) + "\n")
        print(f"Per kind ({title}):\n")
        print(kind_table(ours) + "\n")
        report[direction] = {
            "retrolog": s_ours,
            "flordb": s_theirs,
            "pairs": ours,
            "flordb_pairs": theirs,
        }
        if args.failures:
            bad = [r for r in ours if r["status"] not in ("correct", "refused_ok")]
            for r in bad:
                print(f"- {r['pair']}: {r['status']} {r['reason'] or ''}")
            print()
    # confidence vs correctness: every placement made without a threshold
    cal = {}
    for direction in ("backward", "forward"):
        unthresholded = run_retrolog(make_pairs(directions=(direction,)), min_confidence=0.0)
        cal[direction] = calibration(unthresholded)
    report["calibration"] = cal
    print(f"### Confidence vs correctness (threshold {THRESHOLD})\n")
    print(calibration_table(cal["backward"], cal["forward"]) + "\n")
    if args.cli_runs:
        t = cli_timing(args.cli_runs)
        report["cli"] = t
        print("### Speed: synthetic 1,000-line script, CLI as used\n")
        rows = [("script size (new / old lines)", f"{t['lines_new']} / {t['lines_old']}")]
        for key, name in (
            ("cli", "`python -m retrolog.propagation --line N new old`"),
            ("cli_lazy_init", "same, `retrolog/__init__` bypassed"),
            ("import_retrolog", "`python -c 'import retrolog'`"),
            ("python", "`python -c pass`"),
        ):
            v = t[key]
            rows.append(
                (
                    name,
                    f"{v['wall_median_ms']:.0f} (min {v['wall_min_ms']:.0f})",
                    f"{v['cpu_median_ms']:.0f}",
                )
            )
        rows.append(("`propagate()` in process, mean", f"{t['in_process_mean_ms']:.0f}", ""))
        print(
            f"{t['runs']} runs each; load average during the runs: "
            + ", ".join(f"{x:.1f}" for x in t["load_average"])
            + f"; placed correctly: {t['placed']}.\n"
        )
        print(table(rows, ("measure", "wall median ms", "CPU median ms")) + "\n")
    out_dir = ROOT / "bench" / "results"
    out_dir.mkdir(parents=True, exist_ok=True)
    (out_dir / "propagation.json").write_text(json.dumps(report, indent=1, default=str))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
