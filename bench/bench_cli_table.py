"""`retrolog df NAME` as a table at 3x10^5 rows (issue 13: was 297 s, target <= 3 s).

One recorded run logs ``loss`` 300,000 times (300 epochs x 1,000 steps); then, as whole
processes: ``retrolog df loss`` in the default table format written to a pipe (every row, as a
redirect gets it), the same with ``--all``, and ``--format csv`` for comparison. Median of 3.

Usage: python bench/bench_cli_table.py [--rows N]
"""

from __future__ import annotations

import argparse
import statistics
import subprocess
import time
from pathlib import Path

import common as C

TRAIN = """
import retrolog

for epoch in retrolog.loop("epoch", range({epochs})):
    for step in retrolog.loop("step", range(1000)):
        retrolog.log("loss", (epoch * 1000 + step) * 1e-6)
"""


def timed(cmd: list[str], cwd: Path, env: dict[str, str]) -> tuple[float, int]:
    start = time.perf_counter()
    proc = subprocess.run(cmd, cwd=cwd, env=env, capture_output=True, text=True, check=True)
    return time.perf_counter() - start, proc.stdout.count("\n")


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--rows", type=int, default=300_000)
    opts = parser.parse_args()
    epochs = max(1, opts.rows // 1000)
    repo = C.scratch_repo("cli-table", {"train.py": TRAIN.format(epochs=epochs)})
    env = C.tool_env()
    python = C.python_of("retrolog")
    C.run_timed([python, "train.py"], repo, env, repo.parent / "cli-table.log")
    cli = [python, "-m", "retrolog", "df", "loss"]
    timed([*cli, "--format", "csv"], repo, env)  # warm: the dataframe cache exists afterwards
    rows = []
    for label, extra in (
        ("table, piped", []),
        ("table, --all", ["--all"]),
        ("csv", ["--format", "csv"]),
    ):
        walls, lines = [], 0
        for _ in range(3):
            wall, lines = timed([*cli, *extra], repo, env)
            walls.append(wall)
        rows.append([label, f"{lines:,}", C.fmt(statistics.median(walls))])
    C.remove_tree(repo)
    print(C.table(["retrolog df loss", "lines out", "wall s (median of 3)"], rows))
    C.save(
        "cli-table",
        {"machine": C.machine(), "code": C.code_state(), "rows": epochs * 1000, "results": rows},
    )


if __name__ == "__main__":
    main()
