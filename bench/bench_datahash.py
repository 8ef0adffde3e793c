"""Re-hashing an unchanged 1 GB dataset directory: cold (empty cache) vs cached (docs/benchmarks.md).

Generates ``--files`` files of random bytes (no sparse regions) totalling ``--gb`` GiB in a fresh
directory under /tmp, with mtimes an hour old (a dataset written earlier; files modified in the last
two seconds are never trusted to the cache), then times ``record.data.version_of`` (what
``retrolog.data`` does: walk, hash or look up each file, DVC look-up) with an empty cache once,
and with the filled cache ``--repeat`` times, each through a newly opened cache (as a new run
opens it). The directory is deleted at the end. The data stays in the OS page cache (nothing
here can drop it), so "cold" measures hashing, not the disk.

    .venv/bin/python bench/bench_datahash.py [--gb 1] [--files 256] [--repeat 7]
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import shutil
import statistics
import tempfile
import time
from pathlib import Path

from retrolog.record.data import HashCache, hash_algorithm, version_of

CHUNK = 1 << 22


def make_dataset(top: Path, gib: float, files: int) -> int:
    per_file = int(gib * (1 << 30)) // files
    old = time.time() - 3600
    total = 0
    for i in range(files):
        path = top / f"shard{i % 16:02d}" / f"part{i:05d}.bin"
        path.parent.mkdir(parents=True, exist_ok=True)
        with open(path, "wb") as fh:
            left = per_file
            while left:
                n = min(CHUNK, left)
                fh.write(os.urandom(n))
                left -= n
        os.utime(path, (old, old))
        total += per_file
    return total


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--gb", type=float, default=1.0)
    parser.add_argument("--files", type=int, default=256)
    parser.add_argument("--repeat", type=int, default=7)
    opts = parser.parse_args()
    scratch = Path(tempfile.mkdtemp(prefix="retrolog-datahash-", dir="/tmp"))
    try:
        top = scratch / "dataset"
        written = make_dataset(top, opts.gb, opts.files)
        cache_path = scratch / "datahash.sqlite"
        cache = HashCache(cache_path)
        start = time.perf_counter()
        cold = version_of("train", top, scratch, cache)
        cold_s = time.perf_counter() - start
        cold_read = cache.files_read
        cache.close()
        cached: list[float] = []
        for _ in range(opts.repeat):
            cache = HashCache(cache_path)
            start = time.perf_counter()
            warm = version_of("train", top, scratch, cache)
            cached.append(time.perf_counter() - start)
            assert warm.digest == cold.digest and cache.files_read == 0, "the cache missed"
            cache.close()
        result = {
            "algo": hash_algorithm()[0],
            "bytes": written,
            "files": opts.files,
            "cold_seconds": round(cold_s, 3),
            "cold_files_read": cold_read,
            "cold_gb_per_s": round(written / cold_s / 1e9, 2),
            "cached_ms_median": round(statistics.median(cached) * 1000, 2),
            "cached_ms_max": round(max(cached) * 1000, 2),
            "cached_files_read": 0,
            "python": platform.python_version(),
            "load": os.getloadavg()[0],
        }
        print(json.dumps(result, indent=2))
    finally:
        shutil.rmtree(scratch, ignore_errors=True)


if __name__ == "__main__":
    main()
