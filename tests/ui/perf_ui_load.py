"""Page-load timings of the UI over a large store: 1,000 runs x 1,000 points each.

Not collected by pytest (no ``test_`` prefix). Run it with::

    .venv/bin/python tests/ui/perf_ui_load.py [--dir /tmp/retrolog-perf] [--runs 1000]

It builds (once, then reuses) a git project whose store holds ``--runs`` runs, each with 4 args,
a main loop ``epoch`` (10 iterations) around a nested loop ``step`` (100 iterations) logging
``loss`` at every step (1,000 points per run) and ``acc`` / ``val_loss`` per epoch, written through
``Store.ingest`` exactly as recorded runs are. Then it starts the real server (uvicorn, 127.0.0.1,
a free port) and times what each page load fetches: the HTML and, for chart pages, the JSON the
page's script requests: the first load after the server started (caches cold) and the median of
5 more (the UI caches the runs table and name lists until the store changes). With Chromium at
/usr/bin/chromium it also times full browser loads until the charts have drawn.
"""

from __future__ import annotations

import argparse
import json
import math
import random
import statistics
import subprocess
import sys
import time
from pathlib import Path
from typing import Any
from urllib.parse import urlencode

import httpx

from retrolog.store import Store


def git(repo: Path, *args: str) -> str:
    env = {
        "GIT_AUTHOR_NAME": "perf",
        "GIT_AUTHOR_EMAIL": "perf@example.com",
        "GIT_COMMITTER_NAME": "perf",
        "GIT_COMMITTER_EMAIL": "perf@example.com",
        "PATH": "/usr/bin:/bin",
    }
    return subprocess.run(
        ["git", "-C", str(repo), *args], check=True, capture_output=True, text=True, env=env
    ).stdout.strip()


def build(root: Path, n_runs: int, epochs: int = 10, steps: int = 100) -> None:
    """A project with ``n_runs`` runs over 5 code versions (skipped when it already exists)."""
    marker = root / ".retrolog" / f"perf-{n_runs}x{epochs * steps}.done"
    if marker.exists():
        return
    root.mkdir(parents=True, exist_ok=True)
    git(root, "init", "-q", "-b", "main")
    versions = []
    for v in range(5):
        (root / "train.py").write_text(f"# version {v}\nimport retrolog\n")
        git(root, "add", "train.py")
        git(root, "commit", "-q", "-m", f"version {v}")
        versions.append(git(root, "rev-parse", "HEAD"))
    store = Store(f"sqlite:///{root / '.retrolog' / 'retrolog.db'}")
    rng = random.Random(0)
    started = time.time()
    for r in range(n_runs):
        events: list[tuple[Any, ...]] = []

        def add(*event: Any, events: list[tuple[Any, ...]] = events) -> None:
            events.append((len(events) + 1, *event))

        start = 1.79e9 + r * 120.0
        add(
            "run",
            {
                "script": "train.py",
                "argv": ["train.py"],
                "start_time": start,
                "host": "perf",
                "pid": 1,
                "python": "3.11",
                "version": versions[r * 5 // n_runs],
                "git_head": versions[r * 5 // n_runs],
                "git_branch": "main",
                "git_dirty": 0,
                "status": "running",
            },
        )
        lr = 10 ** -rng.uniform(1, 4)
        add("arg", "lr", "f", lr, None)
        add("arg", "batch", "i", float(32 * (1 + r % 4)), None)
        add("arg", "optimizer", "s", None, ("sgd", "adam")[r % 2])
        add("arg", "seed", "i", float(r), None)
        ctx = 0
        for e in range(epochs):
            ctx += 1
            epoch_ctx = ctx
            add("ctx", epoch_ctx, 0, 1, "epoch", e, None, start + e * 10.0)
            for s in range(steps):
                ctx += 1
                add("ctx", ctx, epoch_ctx, 2, "step", s, None, start + e * 10.0 + s * 0.1)
                t = e * steps + s
                add("log", ctx, "loss", "f", math.exp(-lr * t * 20) + rng.random() * 0.05, None)
            add("log", epoch_ctx, "acc", "f", 1 - math.exp(-lr * (e + 1) * 200), None)
            add("log", epoch_ctx, "val_loss", "f", math.exp(-lr * (e + 1) * 150), None)
        add("end", "finished" if r % 50 else "failed", start + epochs * 10.0, None)
        store.ingest(f"perf{r:06d}", events)
        if r % 100 == 99:
            print(f"  built {r + 1} runs ({time.time() - started:.0f} s)", file=sys.stderr)
    store.dispose()
    marker.write_text("ok\n")


def timed(client: httpx.Client, url: str, repeat: int = 5) -> tuple[float, float, int]:
    """(first load, median of ``repeat`` later loads, bytes) of one URL."""
    t0 = time.perf_counter()
    client.get(url).raise_for_status()
    first = time.perf_counter() - t0
    times = []
    size = 0
    for _ in range(repeat):
        t0 = time.perf_counter()
        response = client.get(url)
        times.append(time.perf_counter() - t0)
        response.raise_for_status()
        size = len(response.content)
    return first, statistics.median(times), size


def serve(root: Path) -> tuple[str, subprocess.Popen[str]]:
    """``retrolog.ui.serve`` in its own process, as ``retrolog ui`` runs it; returns its URL."""
    code = "import sys; from retrolog.ui import serve; serve(sys.argv[1])"
    proc = subprocess.Popen(
        [sys.executable, "-c", code, str(root)], stdout=subprocess.PIPE, text=True
    )
    assert proc.stdout is not None
    line = proc.stdout.readline()
    url = line.split(" at ", 1)[1].split()[0].rstrip("/")
    return url, proc


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--dir", type=Path, default=Path("/tmp/retrolog-perf"))
    parser.add_argument("--runs", type=int, default=1000)
    opts = parser.parse_args()
    root = opts.dir / f"p{opts.runs}"
    print(f"building / reusing {root} ...", file=sys.stderr)
    build(root, opts.runs)
    base, server = serve(root)
    client = httpx.Client(base_url=base, timeout=120)
    t0 = time.perf_counter()
    client.get("/runs").raise_for_status()
    cold = time.perf_counter() - t0  # the very first request: builds the runs table cache
    runs = client.get("/api/runs").json()["runs"]
    ids = [r["run_id"] for r in runs]
    one = ids[len(ids) // 2]
    metrics_page = "/metrics?names=loss"
    html = client.get(metrics_page).text
    default_ids = json.loads(html.split('data-runs="')[1].split('"')[0].replace("&#34;", '"'))
    where = "lr > 1e-3 AND status = 'finished'"
    cases = [
        ("runs page (1,000 rows, args + last values)", ["/runs"]),
        ("runs page filtered: " + where, ["/runs?" + urlencode({"where": where})]),
        (
            "metric explorer, default view (20 newest runs)",
            [
                metrics_page,
                "/api/metrics?" + urlencode({"names": "loss", "runs": default_ids}, doseq=True),
            ],
        ),
        (
            "metric explorer, 100 selected runs, x=epoch",
            [
                "/api/metrics?"
                + urlencode({"names": "loss", "runs": ids[:100], "x": "epoch"}, doseq=True)
            ],
        ),
        (
            "metric explorer, 3 names x 20 runs, x=wall",
            [
                "/api/metrics?"
                + urlencode(
                    {"names": ["loss", "acc", "val_loss"], "runs": default_ids, "x": "wall"},
                    doseq=True,
                )
            ],
        ),
        (
            "metric explorer, ALL 1,000 runs (1M points in, 200k out)",
            ["/api/metrics?" + urlencode({"names": "loss", "runs": ids}, doseq=True)],
        ),
        (
            "run page (+ its small charts)",
            [
                f"/runs/{one}",
                "/api/metrics?"
                + urlencode(
                    {"names": ["acc", "loss", "val_loss"], "runs": one, "max_points": 400},
                    doseq=True,
                ),
            ],
        ),
        ("versions page", ["/versions"]),
        ("replays page", ["/replays"]),
    ]
    print(f"\n{len(ids)} runs, {root}\n")
    print(f"{'page load':62} {'first':>9} {'repeat':>9} {'bytes':>11}")
    results = []
    for label, urls in cases:
        first = repeat = 0.0
        size = 0
        for url in urls:
            one_first, one_repeat, nbytes = timed(client, url)
            first += one_first
            repeat += one_repeat
            size += nbytes
        if label.startswith("runs page (1,000"):
            first = cold
        results.append(
            {"page": label, "first": round(first, 3), "repeat": round(repeat, 3), "bytes": size}
        )
        print(f"{label:62} {first * 1000:6.0f} ms {repeat * 1000:6.0f} ms {size:>11,}")
    browser = browser_timings(base, one)
    for label, seconds in browser:
        print(f"{'browser: ' + label:62} {'':9} {seconds * 1000:6.0f} ms")
    server.terminate()
    server.wait()
    print("\n| page load | first | repeat (median of 5) | bytes |\n|---|---:|---:|---:|")
    for r in results:
        first_ms, repeat_ms = r["first"] * 1000, r["repeat"] * 1000
        print(f"| {r['page']} | {first_ms:.0f} ms | {repeat_ms:.0f} ms | {r['bytes']:,} |")
    for label, seconds in browser:
        print(f"| Chromium: {label} | | {seconds * 1000:.0f} ms | |")
    print(json.dumps({"server": results, "browser": dict(browser)}))


def browser_timings(base: str, run_id: str) -> list[tuple[str, float]]:
    """Navigation to drawn charts in headless Chromium (skipped when it is not installed)."""
    if not Path("/usr/bin/chromium").exists():
        return []
    from playwright.sync_api import sync_playwright

    args = ["--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run"]
    out = []
    with sync_playwright() as pw:
        browser = pw.chromium.launch(executable_path="/usr/bin/chromium", args=args)
        page = browser.new_page(viewport={"width": 1440, "height": 900})
        for label, url, ready in [
            ("runs page until loaded", "/runs", "#runs-table"),
            ("metric explorer until chart drawn", "/metrics?names=loss", "[data-drawn='1']"),
            ("run page until small charts drawn", f"/runs/{run_id}", "figure.mini[data-drawn='1']"),
        ]:
            page.goto(base + url)  # warm-up
            page.wait_for_selector(ready)
            samples = []
            for _ in range(3):
                t0 = time.perf_counter()
                page.goto(base + url)
                page.wait_for_selector(ready)
                samples.append(time.perf_counter() - t0)
            out.append((label, statistics.median(samples)))
        browser.close()
    return out


if __name__ == "__main__":
    main()
