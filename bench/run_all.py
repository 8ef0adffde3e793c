"""Run retrolog's benchmarks against flordb and MLflow (``make bench``); see docs/benchmarks.md.

    .venv/bin/python bench/run_all.py                 # all three, full size (~20 min)
    .venv/bin/python bench/run_all.py --quick         # small sizes, a few minutes
    .venv/bin/python bench/run_all.py --only percall  # one (or more: repeat --only)

Peers run from their own venvs (``bash bench/peers/setup.sh`` creates them under
/tmp/retrolog-peers, or $RETROLOG_PEERS); a peer whose venv is missing is skipped with a message.
Results go to bench/results/<name>-<timestamp>.json (and <name>-latest.json); the markdown
tables are printed and also written to bench/results/report-latest.md.
"""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))

import bench_dataframe  # noqa: E402
import bench_e2e  # noqa: E402
import bench_percall  # noqa: E402
import common as C  # noqa: E402

BENCHMARKS = {
    "percall": ("1. Per-call cost of log inside nested loops", bench_percall),
    "e2e": ("2. End-to-end record overhead on the reference workload", bench_e2e),
    "dataframe": ('3. dataframe("loss") over many runs', bench_dataframe),
}


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--only", action="append", choices=sorted(BENCHMARKS), help="run only this")
    parser.add_argument("--quick", action="store_true", help="small sizes, one repetition")
    parser.add_argument(
        "--fresh-stores", action="store_true", help="rebuild the dataframe benchmark's stores"
    )
    args = parser.parse_args(argv)
    names = [n for n in BENCHMARKS if not args.only or n in args.only]
    machine = C.machine()
    versions = {t: C.peer_version(t) for t in ("retrolog", "flordb", "mlflow")}
    code = C.code_state()
    print(
        f"machine: {machine['nproc']} cores, {machine['cpu']}, Python {machine['python']}, "
        f"{machine['date']}; versions: {versions}; retrolog at {code['head']} "
        f"({code['src_changed_files']} uncommitted files under src/)",
        flush=True,
    )
    sections = []
    started = time.perf_counter()
    for name in names:
        title, module = BENCHMARKS[name]
        print(f"\n## {title}{' (quick)' if args.quick else ''}", flush=True)
        t0 = time.perf_counter()
        if module is bench_dataframe:
            results = module.run(args.quick, fresh_stores=args.fresh_stores)
        else:
            results = module.run(args.quick)
        seconds = time.perf_counter() - t0
        payload = {
            "benchmark": name,
            "quick": args.quick,
            "machine": machine,
            "versions": versions,
            "code": code,
            "seconds": seconds,
            "results": results,
        }
        path = C.save(name, payload)
        text = module.report(results)
        print(f"\n{text}\n\n({seconds:.0f} s; raw results: {path.relative_to(C.REPO_ROOT)})")
        sections.append(f"## {title}\n\n{text}\n")
    total = time.perf_counter() - started
    print(f"\ntotal: {total / 60:.1f} min", flush=True)
    C.RESULTS.mkdir(parents=True, exist_ok=True)
    header = (
        f"machine: {machine}\n\nversions: {versions}\n\nretrolog code: {code}\n\n"
        f"total: {total / 60:.1f} min\n\n"
    )
    (C.RESULTS / "report-latest.md").write_text(header + "\n".join(sections))
    return 0


if __name__ == "__main__":
    sys.exit(main())
